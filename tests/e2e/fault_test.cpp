// The end-to-end fault scenarios of issue 7 (the harness: e2e/rig.hpp). Each runs the real
// tank binary between real peers under load from every kind of source, disturbs it, and takes
// its verdict from what the upstreams received. TANK_E2E_PROFILE=long runs the long profile
// (tests/e2e/run-long.sh); the default short profile runs in CI.

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <fmt/format.h>

#include <fstream>
#include <set>

#include "e2e/rig.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::e2e;
using namespace std::chrono_literals;

namespace {

// The scenario keeps its disturbance for this long: the length of an outage, not a wait for
// something to happen (those wait on conditions).
void hold(std::chrono::milliseconds d) { std::this_thread::sleep_for(d); }

std::optional<double> metric(Rig& rig, const std::string& sample) { return test::metric_value(rig.scrape(), sample); }

// The order in which the records of `source` first arrived delivered at the HTTP upstream is
// their order at the source (outputs keep it with max_in_flight = 1).
void check_order(const Rig& rig, const std::string& source) {
  std::set<std::uint64_t> seen;
  std::uint64_t last = 0;
  bool first = true;
  std::size_t out_of_order = 0;
  for (const auto& b : rig.http_batches()) {
    if (!b.delivered) continue;
    for (const auto& r : b.records) {
      if (r.source != source || !seen.insert(r.n).second) continue;
      if (!first && r.n < last) ++out_of_order;
      last = r.n;
      first = false;
    }
  }
  INFO(source << ": records that arrived after a later one: " << out_of_order);
  CHECK(out_of_order == 0);
  CHECK(!seen.empty());
}

}  // namespace

TEST_CASE("e2e: tank kill -9'd again and again under steady load from every source", "[e2e][kill]") {
  const auto profile = Profile::from_environment();
  Rig rig("kill -9 under load", profile, RigOptions{.mqtt_upstream = true});
  rig.start_tank();
  rig.start_load();
  const int kills = profile.pick(5, 20);
  const auto between = profile.pick(1500ms, 3000ms);
  for (int i = 0; i < kills; ++i) {
    // Every few seconds, once records are flowing.
    REQUIRE(rig.wait_for_progress(200));
    hold(between);
    rig.kill_tank();
    rig.start_tank();
  }
  REQUIRE(rig.wait_for_progress(500));
  rig.stop_load();
  CHECK(rig.wait_delivered(120s));
  auto v = rig.verdict(false);
  CHECK(v.tank_starts == static_cast<std::uint64_t>(kills + 1));
  rig.stop_tank();
}

#ifdef TANK_E2E_KAFKA
TEST_CASE("e2e: Kafka as a further upstream: a broker down, then tank kill -9'd, under load from every source",
          "[e2e][kafka]") {
  const auto profile = Profile::from_environment();
  Rig rig("Kafka upstream", profile, RigOptions{.kafka_upstream = true});
  rig.start_tank();
  rig.start_load();
  REQUIRE(rig.wait_for_progress(200));
  // The leader of a third of the partitions goes away: those batches time out and are retried.
  REQUIRE(rig.kafka()->command("broker_down 2") == "ok");
  hold(profile.pick(2000ms, 10000ms));
  REQUIRE(rig.kafka()->command("broker_up 2") == "ok");
  const int kills = profile.pick(2, 8);
  for (int i = 0; i < kills; ++i) {
    REQUIRE(rig.wait_for_progress(200));
    hold(profile.pick(1000ms, 3000ms));
    rig.kill_tank();
    rig.start_tank();
  }
  REQUIRE(rig.wait_for_progress(200));
  rig.stop_load();
  CHECK(rig.wait_delivered(120s));
  auto v = rig.verdict(false);
  CHECK(v.tank_starts == static_cast<std::uint64_t>(kills + 1));
  rig.stop_tank();
}
#endif

TEST_CASE("e2e: the upstream goes down for a while, the backlog drains in order when it is back", "[e2e][upstream]") {
  const auto profile = Profile::from_environment();
  Rig rig("upstream down", profile, RigOptions{});
  rig.start_tank();
  rig.start_load();
  REQUIRE(rig.wait_for_progress(500));
  rig.upstream().down();
  hold(profile.pick(8000ms, 120000ms));
  // The records kept coming meanwhile; they wait in the queue.
  CHECK(metric(rig, "tank_queue_records").value_or(0) > 0);
  CHECK(metric(rig, "tank_output_batches_total{output=\"cloud\",result=\"retried\",type=\"http\"}").value_or(0) > 0);
  rig.upstream().up();
  REQUIRE(rig.wait_for_progress(500));
  rig.stop_load();
  CHECK(rig.wait_delivered(profile.pick(60s, 300s)));
  rig.verdict(true);
  check_order(rig, "tcp");
  check_order(rig, "http");
  rig.stop_tank();
}

TEST_CASE("e2e: a slow and flapping upstream", "[e2e][upstream]") {
  const auto profile = Profile::from_environment();
  RigOptions options;
  options.mqtt_upstream = true;
  options.http_output_toml = "response_timeout = \"2s\"\n";
  Rig rig("slow and flapping upstream", profile, options);
  // Replies take seconds (some beyond tank's response timeout, so the batch goes again), and
  // 503s and resets come in between.
  rig.upstream().chaos({.seed = 7, .status_503 = 0.1, .reset = 0.1, .slow = 0.25, .slow_delay = 2500ms});
  rig.start_tank();
  rig.start_load();
  const int flaps = profile.pick(3, 20);
  for (int i = 0; i < flaps; ++i) {
    REQUIRE(rig.wait_for_progress(200));
    rig.upstream().down();
    hold(1000ms);
    rig.upstream().up();
    hold(2000ms);
  }
  rig.stop_load();
  rig.upstream().chaos({.seed = 8});  // calm again: the rest drains
  CHECK(rig.wait_delivered(profile.pick(90s, 300s)));
  auto v = rig.verdict(true);
  CHECK(v.repeated_batches > 0);  // timeouts and resets made tank send batches again
  rig.stop_tank();
}

TEST_CASE("e2e: the source broker restarts while tank reads from it", "[e2e][mqtt]") {
  const auto profile = Profile::from_environment();
  Rig rig("source broker restarted", profile, RigOptions{.mqtt_upstream = true});
  rig.start_tank();
  rig.start_load();
  const int restarts = profile.pick(2, 6);
  for (int i = 0; i < restarts; ++i) {
    REQUIRE(rig.wait_for_progress(500));
    rig.source_broker().stop();
    hold(profile.pick(2000ms, 10000ms));
    rig.source_broker().start();
  }
  REQUIRE(rig.wait_for_progress(500));
  rig.stop_load();
  CHECK(rig.wait_delivered(90s));
  rig.verdict(true);
  rig.stop_tank();
}

TEST_CASE("e2e: the disk holding the queue fills up, tank waits and goes on when space returns", "[e2e][disk]") {
  const auto profile = Profile::from_environment();
  test::SmallFilesystem fs(64ull << 20);
  RigOptions options;
  options.data_dir = fs.path() / "data";
  options.queue_toml = "[queue]\nmax_disk_bytes = \"1GiB\"\n";
  options.rate = profile.pick(600.0, 1000.0);
  Rig rig("disk full", profile, options);
  rig.start_tank();
  rig.start_load();
  REQUIRE(rig.wait_for_progress(500));
  // The upstream goes away so the queue grows, and another file takes the rest of the device.
  rig.upstream().down();
  {
    std::ofstream filler(fs.path() / "filler", std::ios::binary);
    std::string block(1 << 20, 'f');
    for (int i = 0; i < 64 && filler.write(block.data(), static_cast<std::streamsize>(block.size())); ++i) {
    }
  }
  REQUIRE(test::wait_until(
      [&] { return metric(rig, "tank_queue_commit_failures_total").value_or(0) > 0; }, 120s));
  hold(profile.pick(3000ms, 30000ms));
  REQUIRE(rig.tank_running());  // full, refusing, but up
  CHECK(rig.tank_log().find("no space left on the device holding the queue") != std::string::npos);
  std::filesystem::remove(fs.path() / "filler");
  rig.upstream().up();
  REQUIRE(rig.wait_for_progress(500, 60s));
  rig.stop_load();
  CHECK(rig.wait_delivered(120s));
  rig.verdict(true);
  rig.stop_tank();
}

TEST_CASE("e2e: the queue bound is reached under each overflow policy", "[e2e][overflow]") {
  const auto profile = Profile::from_environment();
  const std::string policy = GENERATE(as<std::string>{}, "block", "drop_oldest", "drop_newest");
  INFO("overflow = " << policy);
  RigOptions options;
  options.mqtt_source = options.file_source = options.tcp_source = false;  // one ordered, acknowledged source
  options.rate = 6000;
  options.http_input_toml = "max_body_bytes = \"64KiB\"\n";
  options.queue_toml = fmt::format("[queue]\nmax_disk_bytes = \"4MiB\"\noverflow = \"{}\"\n", policy);
  Rig rig("overflow = " + policy, profile, options);
  rig.start_tank();
  rig.upstream().down();
  rig.start_load();
  // Until the bound is reached, and a while beyond it.
  REQUIRE(test::wait_until(
      [&] {
        auto m = rig.scrape();
        return test::metric_value(m, "tank_queue_blocked").value_or(0) > 0 ||
               test::metric_value(m, "tank_queue_dropped_records_total{policy=\"" + policy + "\"}").value_or(0) > 0;
      },
      60s));
  hold(profile.pick(2000ms, 10000ms));
  rig.stop_load();
  const double dropped = metric(rig, "tank_queue_dropped_records_total{policy=\"" + policy + "\"}").value_or(0);
  rig.upstream().up();
  // What the policy kept arrives.
  REQUIRE(test::wait_until([&] { return metric(rig, "tank_queue_records").value_or(1) == 0; }, 60s));
  auto batches = rig.http_batches();
  std::set<std::uint64_t> delivered;
  for (const auto& b : batches) {
    if (!b.delivered) continue;
    for (const auto& r : b.records) delivered.insert(r.n);
  }
  std::uint64_t acknowledged = rig.acknowledged_total();
  std::uint64_t lost = 0, first_lost = UINT64_MAX, last_lost = 0;
  for (std::uint64_t n = 0; n < acknowledged; ++n) {
    if (!delivered.contains(n)) {
      ++lost;
      first_lost = std::min(first_lost, n);
      last_lost = n;
    }
  }
  INFO("acknowledged " << acknowledged << ", delivered " << delivered.size() << ", missing " << lost << " (" << first_lost
                       << ".." << last_lost << "), dropped by policy " << dropped);
  if (policy == "block") {
    CHECK(dropped == 0);
    CHECK(metric_sum(rig.scrape(), "tank_queue_refused_batches_total") > 0);  // the HTTP input was told 503
    rig.verdict(true);  // every acknowledged record arrived
  } else {
    CHECK(dropped > 0);
    // Every acknowledged record that did not arrive was dropped by the policy, and counted.
    CHECK(static_cast<double>(lost) <= dropped);
    CHECK(last_lost + 1 - first_lost == lost);  // one run
    if (policy == "drop_oldest") {
      CHECK(first_lost == 0);  // the oldest went
    } else {
      CHECK(last_lost + 1 == acknowledged);  // the newest were refused while the queue was full
    }
    // Records in = delivered + dropped, from tank's own counters (in the verdict).
    rig.verdict(true, static_cast<std::uint64_t>(dropped));
  }
  rig.stop_tank();
}

TEST_CASE("e2e: a reload with a changed configuration under load, then an invalid one", "[e2e][reload]") {
  const auto profile = Profile::from_environment();
  Rig rig("reload under load", profile, RigOptions{.mqtt_upstream = true});
  rig.start_tank();
  rig.start_load();
  const int reloads = profile.pick(2, 10);
  for (int i = 0; i < reloads; ++i) {
    REQUIRE(rig.wait_for_progress(500));
    // An extra header: the pipeline restarts on the same queue with it.
    rig.write_config(rig.config_text(fmt::format("headers = [\"X-Reload: {}\"]\n", i + 1)));
    // No note_disruption(): the TCP input keeps its connection across the reload
    // (input/handover.hpp), so every TCP record written must arrive.
    rig.signal_tank(SIGHUP);
    REQUIRE(test::wait_until(
        [&] { return metric(rig, "tank_reloads_total{result=\"applied\"}").value_or(0) == i + 1; }, 60s));
  }
  REQUIRE(rig.wait_for_progress(500));
  rig.write_config("[agent\nthis is not TOML\n");
  rig.signal_tank(SIGHUP);
  REQUIRE(test::wait_until([&] { return metric(rig, "tank_reloads_total{result=\"refused\"}").value_or(0) == 1; }, 60s));
  REQUIRE(rig.wait_for_progress(500));  // still running on the last good configuration
  rig.stop_load();
  CHECK(rig.wait_delivered(90s));
  auto v = rig.verdict(true);
  bool header_seen = false;
  for (const auto& r : rig.upstream().received()) header_seen |= r.header("X-Reload") == std::to_string(reloads);
  CHECK(header_seen);
  rig.stop_tank();
}

TEST_CASE("e2e: a damaged queue file at start is moved aside and tank goes on", "[e2e][damage]") {
  const auto profile = Profile::from_environment();
  RigOptions options;
  options.file_source = false;  // its read offsets live in the queue: a lost queue reads the files again
  Rig rig("damaged queue at start", profile, options);
  rig.start_tank();
  rig.start_load();
  REQUIRE(rig.wait_for_progress(1000));
  rig.stop_load();
  CHECK(rig.wait_delivered(60s));
  rig.stop_tank();
  // Both of LMDB's meta pages overwritten.
  {
    int fd = ::open((rig.data_dir() / "queue" / "data.mdb").c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    std::string junk(8192, '\xa5');
    REQUIRE(::pwrite(fd, junk.data(), junk.size(), 0) == static_cast<ssize_t>(junk.size()));
    ::close(fd);
  }
  rig.start_tank();
  CHECK(rig.tank_log().find("is damaged") != std::string::npos);
  CHECK(metric(rig, "tank_queue_damaged_recoveries_total").value_or(0) == 1);
  rig.start_load();
  REQUIRE(rig.wait_for_progress(1000));
  rig.stop_load();
  CHECK(rig.wait_delivered(60s));
  rig.verdict(true);
  rig.stop_tank();
}
