#pragma once

// Modbus peers for inputs.modbus's tests and benchmark: pymodbus (support/modbus_server.py) as
// the server over TCP on 127.0.0.1, or over RTU on one end of a pty pair that socat makes (tank
// opens the other end). Neither is tank's code.

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "support/helpers.hpp"

namespace tank::test {

// Whether the peers can run here: /usr/bin/python3 with pymodbus, and socat (for RTU).
bool pymodbus_available();
bool socat_available();

// A pty pair: what one end writes the other reads, like a null-modem cable. Both ends are links
// (symlinks to /dev/pts/N) in `dir`.
class PtyPair {
 public:
  explicit PtyPair(const std::filesystem::path& dir);
  const std::filesystem::path& tank_end() const { return a_; }
  const std::filesystem::path& server_end() const { return b_; }

 private:
  std::filesystem::path a_;
  std::filesystem::path b_;
  std::unique_ptr<Process> socat_;
};

// A pymodbus server, started by the constructor and ready when it returns (or the test fails
// with its stderr); killed by the destructor or stop().
class ModbusServer {
 public:
  // `args`: modbus_server.py's arguments, e.g. {"--tcp", "5020", "--slaves", "2"}.
  explicit ModbusServer(std::vector<std::string> args);
  void stop();
  Process& process() { return *process_; }

 private:
  std::unique_ptr<Process> process_;
};

}  // namespace tank::test
