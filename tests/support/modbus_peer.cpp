#include "support/modbus_peer.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <csignal>

namespace tank::test {

bool pymodbus_available() {
  static const bool available = [] {
    if (::access("/usr/bin/python3", X_OK) != 0) return false;
    return run({"/usr/bin/python3", "-c", "import pymodbus.server, serial_asyncio"}).exit_code == 0;
  }();
  return available;
}

bool socat_available() { return ::access("/usr/bin/socat", X_OK) == 0; }

PtyPair::PtyPair(const std::filesystem::path& dir) : a_(dir / "tty-tank"), b_(dir / "tty-server") {
  socat_ = std::make_unique<Process>(std::vector<std::string>{
      "/usr/bin/socat", "pty,raw,echo=0,link=" + a_.string(), "pty,raw,echo=0,link=" + b_.string()});
  const bool ready = wait_until([&] { return std::filesystem::exists(a_) && std::filesystem::exists(b_); },
                                std::chrono::seconds(10));
  INFO(socat_->err());
  REQUIRE(ready);
}

ModbusServer::ModbusServer(std::vector<std::string> args) {
  std::vector<std::string> argv{"/usr/bin/python3", std::string(TANK_SOURCE_DIR) + "/tests/support/modbus_server.py"};
  argv.insert(argv.end(), args.begin(), args.end());
  process_ = std::make_unique<Process>(argv);
  const bool ready = wait_until([&] { return process_->out().find("ready") != std::string::npos || !process_->running(); },
                                std::chrono::seconds(20));
  INFO(process_->err());
  REQUIRE(ready);
  REQUIRE(process_->running());
}

void ModbusServer::stop() {
  if (process_ && process_->running()) {
    process_->signal(SIGKILL);
    process_->wait();
  }
}

}  // namespace tank::test
