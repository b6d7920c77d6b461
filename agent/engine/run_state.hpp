#pragma once

// data_dir/run.json: what the last tank process in this data directory was doing, so that the
// next one knows how its predecessor ended, and so that `tank status` and tests can find the
// running agent (its pid and metrics address).

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "queue/queue.hpp"

namespace tank::engine {

struct RunState {
  std::string state = "starting";  // "starting", "running", "stopping", "stopped"
  long pid = 0;
  std::string boot_id;
  std::string version;
  std::string agent_id;
  std::string metrics_address;  // "" when the endpoint is off
  // Where each listening input listens (input name -> address or path).
  std::vector<std::pair<std::string, std::string>> inputs;
  std::int64_t started_ns = 0;
  // How many runs in a row before this one ended without stopping (crash, kill -9, power loss,
  // or death during start-up).
  int unclean_exits = 0;
  // The queue reported damage while running: check it fully at the next start.
  bool corruption_detected = false;
};

std::filesystem::path run_state_path(const std::filesystem::path& data_dir);

// nullopt when there is no file; sets `error` when it exists but cannot be read or parsed.
std::optional<RunState> read_run_state(const std::filesystem::path& path, std::string* error);

// Atomically replaces the file. Returns "" or why it failed.
std::string write_run_state(const std::filesystem::path& path, const RunState& state);

struct VerificationChoice {
  queue::Verification depth = queue::Verification::quick;
  std::string reason;
};

// How many runs in a row ended without stopping, counting the previous one.
int unclean_exits(const std::optional<RunState>& previous);

// How thoroughly to check the queue at start-up, given how the previous run ended:
//   - stopped cleanly, or first start: quick;
//   - ended without stopping, same boot (a process crash or kill -9): quick, since the OS
//     kept every write;
//   - ended without stopping, and the machine rebooted since (maybe a power loss): full;
//   - the previous run saw damage, or the last two runs both ended without stopping (a crash
//     that repeats may come from damaged pages): full.
VerificationChoice choose_verification(const std::optional<RunState>& previous, const std::string& boot_id);

}  // namespace tank::engine
