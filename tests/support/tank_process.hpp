#pragma once

// Runs the real tank binary for integration and failure tests.

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/helpers.hpp"

namespace tank::test {

// A configuration file for a test agent: data_dir inside `dir`, metrics on a free port, plus
// `extra` TOML appended.
std::filesystem::path write_test_config(const TempDir& dir, const std::string& extra = "",
                                        const std::string& name = "tank.toml");

class TankProcess {
 public:
  // Starts `tank run -c config`, through `prefix` when it is not empty: a command that runs the
  // arguments after its own (e.g. unshare).
  explicit TankProcess(const std::filesystem::path& config, std::map<std::string, std::string> env = {},
                       std::vector<std::string> prefix = {});

  // Waits until data_dir/run.json says "running" for this process; returns the metrics
  // address, or fails the test with tank's stderr.
  std::string wait_running(const std::filesystem::path& data_dir);
  Process& process() { return *process_; }
  // Sends SIGTERM and waits for the exit code.
  std::optional<int> stop();

 private:
  std::unique_ptr<Process> process_;
};

// Scrapes /metrics.
std::string scrape(const std::string& address);

// Runs tank on `config` with TANK_FAILPOINTS=`point` (common/failpoint.hpp) until the failpoint
// kills it, checks that it did, and appends its stderr and a marker line to `logs`.
void run_until_failpoint(const std::filesystem::path& config, const std::string& point, std::string& logs);

// Where a running tank's input listens (from data_dir/run.json); fails the test when it does not.
std::string input_address(const std::filesystem::path& data_dir, const std::string& input);

}  // namespace tank::test
