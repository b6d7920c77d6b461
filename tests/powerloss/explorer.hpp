#pragma once

// The power-cut exploration of the real tank binary (tests/powerloss/README.md).
//
// Recording: tank runs with the recorder preloaded, an [[inputs.http]] fed by a load generator
// (bodies of JSON records with unique ids; a body's records count as acknowledged at the
// CLOCK_MONOTONIC instant its 200 arrived) and an [[outputs.http]] to an upstream that goes down,
// answers 503 and is slow for a while (a backlog builds up and drains: deletes and page reuse),
// then tank is killed with SIGKILL.
//
// Exploration: states drawn from the recording (crash_state.hpp), each materialised in a fresh
// directory and started "as after a reboot" (TANK_BOOT_ID: another boot id) with a fresh upstream,
// until its queue drained; then stopped with SIGTERM. Each state is checked:
//   - tank reached running, exited 0, and did not move the queue aside;
//   - every REQUIRED record was delivered, before the cut (the recording's upstream read it and
//     answered 200) or after the restart. Required: fsync "always": acknowledged before the cut;
//     "interval" / "never": acknowledged before the pinned instant of the recovery point in force
//     at the cut (queue/recovery_point.hpp: the newest slot durable at the cut); while tank writes
//     no recovery point, before the start of the last fdatasync of data.mdb that completed by the
//     cut;
//   - with a recovery point, the loss window (cut - pinned) is at most fsync_interval + twice the
//     longest flush + 100 ms of scheduling slack (a point is replaced one interval after the
//     previous flush ended, and is in force only once its own flush ended);
//   - after the restart no record arrives twice, every line is one the generator sent, byte for
//     byte, and an idempotency key never comes with two bodies.
// No Catch2 assertion is made off the test's own thread: workers return what they found.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "powerloss/crash_state.hpp"
#include "powerloss/trace.hpp"
#include "support/helpers.hpp"

namespace tank::powerloss {

// The line the generator sends for record `id`; a delivered line must be exactly this.
std::string record_line(std::uint64_t id);

struct RecordOptions {
  std::string fsync = "always";  // "always" | "interval" | "never"
  std::string mode = "disk";     // queue.mode: "disk" | "memory" (records in RAM: none survive a crash)
  std::chrono::milliseconds fsync_interval{50};
  std::chrono::milliseconds duration{4000};  // of load before the kill
  std::size_t records_per_body = 100;
  std::size_t bodies_per_second = 50;
  std::map<std::string, std::string> env = {};           // for every tank started (TANK_TEST_*)
  std::map<std::string, std::string> recorder_env = {};  // for the recorded run only (TANK_RECORD_SKIP_SYNC)
};

// One body the generator posted.
struct Body {
  std::uint64_t first_id = 0;
  std::uint32_t records = 0;
  std::int64_t acked_ns = 0;  // CLOCK_MONOTONIC when its 200 arrived; 0: never acknowledged
};

// One request an upstream read.
struct Delivery {
  std::int64_t at_ns = 0;  // CLOCK_MONOTONIC when it was read
  bool ok = false;         // answered 200
  std::string key;
  std::string body;
};

class Recording {
 public:
  // Runs tank under load with the recorder, then kills it (duration + a second or two). Throws
  // std::runtime_error when tank does not reach running (with its log).
  explicit Recording(RecordOptions options);

  const RecordOptions& options() const { return options_; }
  const Trace& trace() const { return *trace_; }
  const std::vector<Body>& bodies() const { return bodies_; }
  const std::vector<Delivery>& deliveries() const { return deliveries_; }
  std::int64_t killed_ns() const { return killed_ns_; }
  const std::string& tank_log() const { return tank_log_; }
  const std::filesystem::path& log_path() const { return log_; }
  // tank's configuration for a data directory and an upstream (the same for every start).
  std::string config(const std::filesystem::path& data_dir, const std::string& upstream_url) const;
  // One line: records acknowledged, delivered, operations recorded, syncs, the log's size.
  std::string describe() const;

 private:
  RecordOptions options_;
  test::TempDir dir_;
  std::filesystem::path log_;
  std::unique_ptr<Trace> trace_;
  std::vector<Body> bodies_;
  std::vector<Delivery> deliveries_;
  std::int64_t killed_ns_ = 0;
  std::string tank_log_;
};

struct ExploreOptions {
  std::string label = {};  // names the summary and kept states (default: the fsync mode)
  std::size_t states = 200;
  std::uint64_t seed = 1;
  unsigned parallel = 2;
  Names names = Names::posix;
  std::filesystem::path keep_dir = {};  // failing states are built again under it (empty: none kept)
  std::size_t keep_max = 5;
  bool progress = true;  // a line on stdout every 50 states
};

struct Summary {
  std::string mode;
  std::size_t states = 0;
  std::size_t failed_states = 0;
  std::map<std::string, std::size_t> violations;  // kind -> states showing it
  std::uint64_t required = 0;  // summed over the states
  std::uint64_t lost = 0;
  bool recovery_point = false;        // the recording wrote recovery points
  bool data_name_synced = false;      // queue/ was fsynced after data.mdb was created in it
  std::vector<std::set<std::string>> failures;  // the kinds of each failed state
  std::int64_t max_window_ns = -1;    // the largest cut - anchor over the states (-1: none)
  std::int64_t window_bound_ns = 0;   // with a recovery point: what the window may be
  std::vector<std::string> examples;  // recipes and findings of the first failing states
  double seconds = 0;
  std::string line() const;
};

Summary explore(const Recording& recording, const ExploreOptions& options);

}  // namespace tank::powerloss
