// The power-cut tier (label "powerloss", tests/powerloss/README.md): for each fsync mode, record
// tank under load, explore the disk states a power cut could leave, and check the durability
// promise on each (explorer.hpp). Then show that the simulator catches a queue that does not
// sync. CI runs a fixed-seed sample; tests/powerloss/run-long.sh explores thousands.
//
// Knobs (environment): TANK_POWERLOSS_STATES (per mode for always and interval; never gets a
// quarter, the self-tests a fifth), TANK_POWERLOSS_SEED, TANK_POWERLOSS_PARALLEL,
// TANK_POWERLOSS_DURATION_MS (load before the kill), TANK_POWERLOSS_NAMES (posix | journaled),
// TANK_POWERLOSS_KEEP (where failing states are kept; default BUILD_DIR/powerloss-failures),
// TANK_POWERLOSS_SUMMARY (a file the summary lines are appended to).

#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "powerloss/explorer.hpp"
#include "support/tank_process.hpp"

namespace tank::powerloss {
namespace {

using namespace std::chrono_literals;

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::stoull(v) : fallback;
}

struct Profile {
  std::size_t states = env_number("TANK_POWERLOSS_STATES", 200);
  std::uint64_t seed = env_number("TANK_POWERLOSS_SEED", 1);
  unsigned parallel = static_cast<unsigned>(env_number("TANK_POWERLOSS_PARALLEL", 2));
  std::chrono::milliseconds duration{env_number("TANK_POWERLOSS_DURATION_MS", 4000)};
  Names names = std::getenv("TANK_POWERLOSS_NAMES") != nullptr && std::string(std::getenv("TANK_POWERLOSS_NAMES")) == "journaled"
                    ? Names::journaled
                    : Names::posix;
  std::filesystem::path keep = std::getenv("TANK_POWERLOSS_KEEP") != nullptr ? std::getenv("TANK_POWERLOSS_KEEP")
                                                                              : TANK_BUILD_DIR "/powerloss-failures";
};

Summary run_mode(RecordOptions record, std::size_t states, std::optional<Names> names = std::nullopt, std::string label = {}) {
  const Profile p;
  record.duration = p.duration;
  const Recording recording(std::move(record));
  std::cout << "powerloss recording: " << recording.describe() << std::endl;
  ExploreOptions options;
  options.label = std::move(label);
  options.states = states;
  options.seed = p.seed;
  options.parallel = p.parallel;
  options.names = names.value_or(p.names);
  options.keep_dir = p.keep;
  const Summary s = explore(recording, options);
  std::string text = s.line() + (options.names == Names::journaled ? " [names: journaled]" : "") + "\n";
  for (const auto& e : s.examples) text += "  example: " + e + "\n";
  std::cout << text << std::flush;
  if (const char* file = std::getenv("TANK_POWERLOSS_SUMMARY")) std::ofstream(file, std::ios::app) << text;
  return s;
}

std::string examples(const Summary& s) {
  std::string out = s.line();
  for (const auto& e : s.examples) out += "\n" + e;
  return out;
}

// Whether this tank honours a test switch: it must say so in its log when the switch is set
// (the queue's test switches are announced with a warning at start).
bool announces(const std::string& variable) {
  test::TempDir dir;
  const auto config = test::write_test_config(dir, "[queue]\nmax_disk_bytes = \"16MiB\"\n");
  test::TankProcess tank(config, {{variable, "1"}});
  tank.wait_running(dir / "data");
  tank.stop();
  return tank.process().err().find(variable) != std::string::npos;
}

TEST_CASE("fsync = always loses no acknowledged record and always opens the queue", "[powerloss]") {
  const Summary s = run_mode({.fsync = "always"}, Profile().states);
  INFO(examples(s));
  CHECK(s.states >= Profile().states);
  CHECK(s.required > 0);
  CHECK(s.data_name_synced);  // queue/ is synced once LMDB created data.mdb in it
  CHECK(s.failed_states == 0);
}

TEST_CASE("fsync = interval loses at most the last interval and never the backlog", "[powerloss]") {
  const Summary s = run_mode({.fsync = "interval", .fsync_interval = 50ms}, Profile().states);
  INFO(examples(s));
  CHECK(s.required > 0);
  CHECK(s.recovery_point);
  CHECK(s.failed_states == 0);
}

TEST_CASE("fsync = never keeps the queue and what was flushed", "[powerloss]") {
  const Summary s = run_mode({.fsync = "never"}, std::max<std::size_t>(20, Profile().states / 4));
  INFO(examples(s));
  CHECK(s.recovery_point);
  CHECK(s.failed_states == 0);
}

TEST_CASE("mode = memory opens after a power cut and repeats nothing", "[powerloss]") {
  // The records held in RAM are lost by any crash (docs/queue.md); positions, state and spilled
  // records live in LMDB with the same recovery point as disk mode.
  const Summary s = run_mode({.fsync = "interval", .mode = "memory"}, std::max<std::size_t>(20, Profile().states / 4),
                             std::nullopt, "memory-interval");
  INFO(examples(s));
  CHECK(s.recovery_point);
  CHECK(s.failed_states == 0);
}

TEST_CASE("the simulator finds the records lost by a queue whose syncs do nothing", "[powerloss][self-test]") {
  // The recorder turns data.mdb's fsync/fdatasync into no-ops and drops O_DSYNC: tank believes
  // it synced. Names as a journal persists them, so that only the missing syncs can lose data.
  const Summary s = run_mode({.fsync = "always", .recorder_env = {{"TANK_RECORD_SKIP_SYNC", "data.mdb"}}},
                             std::max<std::size_t>(20, Profile().states / 5), Names::journaled, "always-skip-sync");
  INFO(examples(s));
  CHECK(s.violations.contains("lost"));
  CHECK(s.lost > 0);
}

TEST_CASE("TANK_TEST_SKIP_FLUSH (the queue never syncs) is caught", "[powerloss][self-test]") {
  if (!announces("TANK_TEST_SKIP_FLUSH")) {
    WARN("skipped: this tank does not announce TANK_TEST_SKIP_FLUSH in its log (not implemented yet)");
    return;
  }
  const Summary s = run_mode({.fsync = "always", .env = {{"TANK_TEST_SKIP_FLUSH", "1"}}},
                             std::max<std::size_t>(20, Profile().states / 5), Names::journaled, "always-skip-flush");
  INFO(examples(s));
  CHECK(s.violations.contains("lost"));
}

TEST_CASE("TANK_TEST_NO_PIN (recovery points without pinned snapshots) is caught", "[powerloss][self-test]") {
  if (!announces("TANK_TEST_NO_PIN")) {
    WARN("skipped: this tank does not announce TANK_TEST_NO_PIN in its log (not implemented yet)");
    return;
  }
  const Summary s = run_mode({.fsync = "interval", .fsync_interval = 50ms, .env = {{"TANK_TEST_NO_PIN", "1"}}},
                             std::max<std::size_t>(20, Profile().states / 5), Names::journaled, "interval-no-pin");
  INFO(examples(s));
  CHECK(s.recovery_point);
  CHECK((s.violations.contains("lost") || s.violations.contains("moved-aside")));
}

}  // namespace
}  // namespace tank::powerloss
