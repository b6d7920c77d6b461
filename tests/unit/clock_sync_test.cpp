// Clocks that lie: ClockSync's rule (adjtimex flags, the build-time floor, hosts without NTP),
// the attribute every input's commit path adds while the clock is not synchronised, and
// processors.aggregate holding such records, correcting their times once the clock is
// synchronised and emitting each window exactly once (also across a stop and start during the
// hold), passing them with on_unsynced_clock = "pass", and dead-lettering those of another boot.
// Every clock is injected (ManualClock, FakeProbe): nothing here depends on this machine's NTP.

#include <catch2/catch.hpp>

#include <sys/timex.h>

#include <atomic>
#include <cerrno>
#include <limits>
#include <map>
#include <mutex>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "common/clock_sync.hpp"
#include "engine/agent_config.hpp"
#include "input/queue_side.hpp"
#include "metrics/registry.hpp"
#include "plugin/registry.hpp"
#include "process/event_time.hpp"
#include "support/helpers.hpp"
#include "support/queue_helpers.hpp"

using namespace tank;
using namespace tank::test;

namespace {

constexpr std::int64_t kSecond = 1'000'000'000;
// The build's time in these tests, and a real time well after it.
constexpr std::int64_t kFloor = 1'790'000'000 * kSecond;
constexpr std::int64_t kReal = 1'798'761'600 * kSecond;  // 2027-01-01T00:00:00Z

class FakeProbe final : public ClockProbe {
 public:
  struct State {
    std::atomic<bool> readable{true};
    std::atomic<bool> unsynchronized{false};
    std::atomic<bool> service{false};
    std::atomic<bool> synchronized_this_boot{false};
    std::atomic<std::int64_t> boottime{10 * kSecond};
    std::string boot = "boot-1";
  };
  explicit FakeProbe(State& s) : s_(s) {}
  KernelClock kernel() const override {
    KernelClock k;
    k.readable = s_.readable;
    k.unsynchronized = s_.unsynchronized;
    if (!k.readable) k.error = "adjtimex: Operation not permitted";
    return k;
  }
  bool sync_service_present() const override { return s_.service; }
  bool synchronized_this_boot() const override { return s_.synchronized_this_boot; }
  std::int64_t boottime_ns() const override { return s_.boottime; }
  std::string boot_id() const override { return s_.boot; }

 private:
  State& s_;
};

struct SyncRig {
  explicit SyncRig(ClockTrust trust = ClockTrust::automatic, std::int64_t wall = kReal) : trust(trust), clock(wall) {
    restart();
  }
  // A new ClockSync on the probe's state now (as at a start of tank).
  void restart() { sync = std::make_unique<ClockSync>(trust, clock, std::make_unique<FakeProbe>(state), kFloor); }
  // Both clocks move on by `ns` (CLOCK_BOOTTIME with them).
  void advance(std::int64_t ns) {
    clock.advance(ns);
    state.boottime += ns;
  }
  ClockTrust trust;
  FakeProbe::State state;
  ManualClock clock;
  std::unique_ptr<ClockSync> sync;
};

}  // namespace

TEST_CASE("clock sync: adjtimex's answer", "[clock]") {
  CHECK_FALSE(kernel_clock_from(TIME_OK, 0).unsynchronized);
  CHECK(kernel_clock_from(TIME_OK, 0).readable);
  CHECK(kernel_clock_from(TIME_ERROR, STA_UNSYNC).unsynchronized);  // what a host without NTP says
  CHECK(kernel_clock_from(TIME_OK, STA_UNSYNC | STA_PLL).unsynchronized);
  CHECK(kernel_clock_from(TIME_ERROR, 0).unsynchronized);  // STA_CLOCKERR and the like
  CHECK_FALSE(kernel_clock_from(TIME_INS, STA_PLL).unsynchronized);
  const KernelClock blocked = kernel_clock_from(-1, 0, EPERM);
  CHECK_FALSE(blocked.readable);
  CHECK_FALSE(blocked.unsynchronized);
  CHECK(blocked.error == "adjtimex: Operation not permitted");
  CHECK(parse_clock_trust("auto") == ClockTrust::automatic);
  CHECK(parse_clock_trust("ntp") == ClockTrust::ntp);
  CHECK(parse_clock_trust("trust") == ClockTrust::trust);
  CHECK_FALSE(parse_clock_trust("yes"));
}

TEST_CASE("clock sync: a wall clock before the build is not synchronized, whatever the kernel says", "[clock]") {
  SyncRig rig(ClockTrust::automatic, 120 * kSecond);  // booted in 1970, two minutes ago
  CHECK_FALSE(rig.sync->synchronized());
  CHECK(rig.sync->reason().find("is before this build") != std::string::npos);
  rig.clock.set_wall(kReal);  // NTP answered
  CHECK(rig.sync->check());
  CHECK(rig.sync->reason().empty());

  SyncRig ntp(ClockTrust::ntp, 120 * kSecond);
  CHECK_FALSE(ntp.sync->synchronized());
  SyncRig trusted(ClockTrust::trust, 120 * kSecond);
  CHECK(trusted.sync->synchronized());
}

TEST_CASE("clock sync: auto believes the kernel's STA_UNSYNC only while a time-sync service has not synchronized yet",
          "[clock]") {
  SyncRig rig;
  rig.state.unsynchronized = true;
  rig.restart();  // started before NTP answered
  SECTION("no time-sync service (a container, a CI machine): the flag stays set for ever, the clock is trusted") {
    CHECK(rig.sync->check());
    SyncRig ntp(ClockTrust::ntp);
    ntp.state.unsynchronized = true;
    CHECK_FALSE(ntp.sync->check());  // also after it was seen synchronized  // agent.clock = "ntp" believes the kernel alone
  }
  SECTION("a service that has not synchronized: not synchronized, until it has; losing the server later is not") {
    rig.state.service = true;
    CHECK_FALSE(rig.sync->check());
    CHECK(rig.sync->reason().find("STA_UNSYNC") != std::string::npos);
    rig.state.unsynchronized = false;
    CHECK(rig.sync->check());
    rig.state.unsynchronized = true;  // hours without its server: the clock drifts, it is not unset
    CHECK(rig.sync->check());
  }
  SECTION("systemd-timesyncd's marker says it synchronized in this boot (a restart of tank after that)") {
    rig.state.service = true;
    rig.state.synchronized_this_boot = true;
    CHECK(rig.sync->check());
  }
  SECTION("adjtimex blocked (seccomp): only the build-time rule") {
    rig.state.service = true;
    rig.state.readable = false;
    CHECK(rig.sync->check());
    rig.clock.set_wall(kSecond);
    CHECK_FALSE(rig.sync->check());
  }
  SECTION("agent.clock changes on a reload") {
    rig.state.service = true;
    CHECK_FALSE(rig.sync->check());
    rig.sync->set_trust(ClockTrust::trust);
    CHECK(rig.sync->check());
  }
}

TEST_CASE("clock sync: a stamp gives the real time of its moment in the same boot, nothing in another", "[clock]") {
  SyncRig rig(ClockTrust::automatic, 100 * kSecond);
  const std::string stamp = rig.sync->stamp();
  CHECK(stamp == "boot-1/10000000000");
  rig.advance(30 * kSecond);
  rig.clock.set_wall(kReal);  // the jump
  REQUIRE(rig.sync->check());
  CHECK(rig.sync->real_time_of(stamp) == kReal - 30 * kSecond);
  CHECK_FALSE(rig.sync->real_time_of("boot-0/10000000000"));
  CHECK_FALSE(rig.sync->real_time_of("boot-1/ten"));
  CHECK_FALSE(rig.sync->real_time_of("nothing"));
}

TEST_CASE("clock sync: an event time is moved only when the wrong clock wrote it", "[clock]") {
  const process::TimeRebase rebase{100 * kSecond, kReal};
  CHECK(rebase.apply(95 * kSecond) == kReal - 5 * kSecond);             // the gateway's clock: moved
  CHECK(rebase.apply(-3 * kSecond) == kReal - 103 * kSecond);            // even before 1970
  CHECK(rebase.apply(kReal - 7 * kSecond) == kReal - 7 * kSecond);       // a device's own good clock: kept
  CHECK(rebase.apply(kReal / 2 + 60 * kSecond) == kReal / 2 + 60 * kSecond);  // nearer the real time: kept
  const process::TimeRebase none{kReal, kReal};
  CHECK(none.apply(5) == 5);

  // The ends of the int64 range saturate instead of wrapping (no 128-bit arithmetic: armhf has
  // none).
  constexpr auto kMin = std::numeric_limits<std::int64_t>::min();
  constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
  const process::TimeRebase forward{kMin + 10, kMax - 10};
  CHECK(forward.apply(kMin) == kMax - 20);
  CHECK(forward.apply(kMin + 30) == kMax);
  const process::TimeRebase back{kMax - 10, kMin + 10};
  CHECK(back.apply(kMax) == kMin + 20);
  CHECK(back.apply(kMax - 30) == kMin);
  CHECK(back.apply(kMin + 5) == kMin + 5);
}

TEST_CASE("clock sync: records committed through an input's commit path carry clock_unsynced while it is not",
          "[clock]") {
  TempDir dir;
  SyncRig rig(ClockTrust::automatic, 100 * kSecond);
  metrics::Registry registry;
  auto q = queue::Queue::open(small_queue(dir / "q"), rig.clock, &registry);
  plugin::InputContext context{"sensors", *q, registry, rig.clock, "agent", dir.path()};
  context.clock_sync = rig.sync.get();
  input::QueueSide side(context, "test", "the test fails");
  const queue::Attribute peer[] = {{"peer", "10.0.0.7:5000"}};

  input::PendingBatch batch = side.batch();  // what every input commits through
  batch.add("one", rig.clock.wall_ns(), peer);
  rig.advance(kSecond);
  batch.add("two", rig.clock.wall_ns());
  REQUIRE(side.committer.commit(batch).stored_records == 2);
  rig.clock.set_wall(kReal);
  REQUIRE(rig.sync->check());
  input::PendingBatch after = side.batch();
  after.add("three", rig.clock.wall_ns(), peer);
  REQUIRE(side.committer.commit(after).stored_records == 1);

  const queue::ReadBatch read = q->read(0, queue::ReadLimits{});
  REQUIRE(read.records().size() == 3);
  const auto& r = read.records();
  CHECK(r[0].attribute("clock_unsynced") == std::optional<std::string_view>("boot-1/10000000000"));
  CHECK(r[0].attribute("peer") == std::optional<std::string_view>("10.0.0.7:5000"));
  CHECK(r[1].attribute("clock_unsynced") == std::optional<std::string_view>("boot-1/11000000000"));
  CHECK_FALSE(r[2].attribute("clock_unsynced"));
  CHECK(r[2].attribute("peer") == std::optional<std::string_view>("10.0.0.7:5000"));
}

namespace {

// A queue and one processors.aggregate stage built from TOML through the registry, with an
// injected clock and clock state. Records are committed as an input would (with clock_unsynced
// while the clock is not synchronised).
struct StageRig {
  explicit StageRig(const std::string& extra_options, TempDir& dir) : dir_(dir) {
    plugin::register_builtin(plugins);
    open(extra_options);
  }
  ~StageRig() { close(); }

  void open(const std::string& extra_options) {
    queue::Options o = small_queue(dir_ / "q", 8 << 20);
    o.consumers = {"out", "processor/agg"};
    registry = std::make_unique<metrics::Registry>();
    queue = queue::Queue::open(o, sync.clock, registry.get());
    const std::string toml = "[[inputs.tcp]]\nname = \"in\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
                             "[[processors.aggregate]]\nname = \"agg\"\nwindow = \"10s\"\ntime_field = \"ts\"\n"
                             "time_format = \"unix\"\nfields = { v = [\"count\", \"sum\"] }\nidle_timeout = \"10ms\"\n" +
                             extra_options;
    auto loaded = config::load_text(toml, "test.toml", engine::build_schema(plugins), {});
    if (!loaded.document) {
      std::string all;
      for (const auto& d : loaded.diagnostics.all()) all += d.to_string() + "\n";
      FAIL(all);
    }
    const plugin::Descriptor* d = plugins.find(plugin::Kind::processor, "aggregate");
    REQUIRE(d != nullptr);
    plugin::ProcessorContext context{"agg", {"in"}, queue.get(), *registry, sync.clock, "agent", dir_.path()};
    context.clock_sync = sync.sync.get();
    stage = d->create_stage(loaded.document->instances("processors.aggregate").at(0), context);
    stage->start();
  }
  void close() {
    if (stage) stage->stop();
    stage.reset();
    queue.reset();
  }

  // Commits records {"ts": <ts seconds>, "v": 1} as an input does, now.
  void commit(const std::vector<std::int64_t>& ts_seconds) {
    plugin::InputContext context{"in", *queue, *registry, sync.clock, "agent", dir_.path()};
    context.clock_sync = sync.sync.get();
    input::QueueSide side(context, "test", "");
    input::PendingBatch batch = side.batch();
    for (std::int64_t ts : ts_seconds) batch.add(fmt::format(R"({{"ts":{},"v":1}})", ts), sync.clock.wall_ns());
    REQUIRE(side.committer.commit(batch).stored_records == ts_seconds.size());
  }

  // The aggregates so far: window_start -> count, and every derived record's payload.
  std::map<std::string, std::int64_t> windows(std::vector<std::string>* passed = nullptr) const {
    std::map<std::string, std::int64_t> out;
    const queue::ReadBatch all = queue->read(0, queue::ReadLimits{100000, 64 << 20});
    for (const queue::RecordView& r : all.records()) {
      if (!r.derived()) continue;
      if (r.attribute("time_untrusted")) {
        if (passed != nullptr) passed->emplace_back(r.payload);
        continue;
      }
      const auto o = boost::json::parse(r.payload).as_object();
      out[std::string(o.at("window_start").as_string())] += o.at("count").to_number<std::int64_t>();
    }
    return out;
  }
  std::int64_t windowed_records() const {
    std::int64_t n = 0;
    for (const auto& [start, count] : windows()) n += count;
    return n;
  }
  double metric(const std::string& sample) const { return metric_value(registry->serialize(), sample).value_or(-1); }

  TempDir& dir_;
  SyncRig sync{ClockTrust::automatic, 1000 * kSecond};  // booted in 1970, NTP not answered yet
  std::unique_ptr<metrics::Registry> registry;
  plugin::Registry plugins;
  std::unique_ptr<queue::Queue> queue;
  std::unique_ptr<plugin::Stage> stage;
};

constexpr const char* kHolding = R"(tank_processor_holding{processor="agg",type="aggregate"})";

}  // namespace

TEST_CASE("aggregate: records of an unsynchronized clock are held, corrected once it is, and counted once",
          "[clock][aggregate]") {
  TempDir dir;
  const bool restart = GENERATE(false, true);
  INFO("stop and start during the hold: " << restart);
  StageRig rig("", dir);
  REQUIRE_FALSE(rig.sync.sync->synchronized());
  // The gateway's clock says 1970-01-01T00:16:40Z: records stamped by it (ts 1000, 1004, 1005) and
  // one from a device with a good clock of its own.
  rig.commit({1000, 1004});
  rig.sync.advance(5 * kSecond);
  rig.commit({1005, kReal / kSecond - 20});
  REQUIRE(wait_until([&] { return rig.metric(kHolding) == 1; }));
  if (restart) {
    rig.close();
    rig.open("");
    REQUIRE(wait_until([&] { return rig.metric(kHolding) == 1; }));
  }
  // Nothing was taken for late data, nothing emitted, nothing dead-lettered; the records wait.
  CHECK(rig.windows().empty());
  CHECK(rig.queue->dead_letters({}).empty());
  CHECK(rig.queue->position("processor/agg") == 0u);

  // NTP answers 60 s later: the wall clock jumps to 2027-01-01T00:00:00Z.
  rig.sync.advance(60 * kSecond);
  rig.sync.clock.set_wall(kReal);
  REQUIRE(rig.sync.sync->check());
  REQUIRE(wait_until([&] { return rig.windowed_records() == 4 && rig.metric(kHolding) == 0; }));
  // Committed 65 s and 60 s before the jump: ts 1000 and 1004 happened at kReal - 65 s and - 61 s,
  // 1005 at kReal - 60 s; the device's own time (nearer the real time than the wrong one) is kept.
  const auto got = rig.windows();
  std::map<std::string, std::int64_t> expected;
  auto window_of = [](std::int64_t t) { return process::format_rfc3339_ns(t - t % (10 * kSecond)); };
  expected[window_of(kReal - 65 * kSecond)] += 1;
  expected[window_of(kReal - 61 * kSecond)] += 1;
  expected[window_of(kReal - 20 * kSecond)] += 1;
  expected[window_of(kReal - 60 * kSecond)] += 1;
  CHECK(got == expected);
  CHECK(rig.queue->dead_letters({}).empty());

  // Later records of a synchronized clock go on as usual, and no window is emitted twice.
  rig.commit({kReal / kSecond + 3});
  REQUIRE(wait_until([&] { return rig.windowed_records() == 5; }));
  std::map<std::string, std::int64_t> more = expected;
  more[window_of(kReal + 3 * kSecond)] += 1;
  CHECK(rig.windows() == more);
}

TEST_CASE("aggregate: on_unsynced_clock = \"pass\" passes such records on, marked, never as late", "[clock][aggregate]") {
  TempDir dir;
  StageRig rig("on_unsynced_clock = \"pass\"\n", dir);
  rig.commit({1000, 1001});
  std::vector<std::string> passed;
  REQUIRE(wait_until([&] {
    passed.clear();
    rig.windows(&passed);
    return passed.size() == 2;
  }));
  CHECK(passed[0] == R"({"ts":1000,"v":1})");
  CHECK(rig.windows().empty());
  CHECK(rig.queue->dead_letters({}).empty());
  CHECK(rig.metric(R"(tank_processor_late_records_total{processor="agg",type="aggregate"})") == 0);
  const queue::ReadBatch all = rig.queue->read(0, queue::ReadLimits{});
  for (const auto& r : all.records()) {
    if (!r.derived()) continue;
    CHECK(r.attribute("time_untrusted") == std::optional<std::string_view>("true"));
    CHECK(r.attribute("clock_unsynced"));
    CHECK(r.attribute("processor") == std::optional<std::string_view>("agg"));
  }
}

TEST_CASE("aggregate: a record of an unsynchronized clock of another boot cannot be corrected: dead-lettered",
          "[clock][aggregate]") {
  TempDir dir;
  StageRig rig("", dir);
  rig.stage->stop();
  rig.commit({1000});
  // The gateway rebooted before NTP answered: the stamp's boot is not this one.
  rig.close();
  rig.sync.state.boot = "boot-2";
  rig.sync.restart();
  rig.open("");
  std::vector<queue::StoredDeadLetter> letters;
  REQUIRE(wait_until([&] {
    letters = rig.queue->dead_letters({});
    return letters.size() == 1;
  }));
  CHECK(letters[0].letter.reason == "time_untrusted");
  CHECK(letters[0].letter.detail.find("another boot") != std::string::npos);
  CHECK(rig.windows().empty());
}
