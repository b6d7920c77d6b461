// Data reduction after the queue (issue 22): processors.deadband, dedup and throttle, each
// decision by its handler (with a recording StageOutput), and the record stage that runs them
// (agent/process/record_stage.hpp) on a real queue: chained stages read each other's records,
// state survives a restart, a hold keeps records in the queue.

#include <catch2/catch.hpp>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <cmath>
#include <map>

#include "metrics/registry.hpp"
#include "process/json_schema.hpp"
#include "process/record_key.hpp"
#include "processors_deadband/deadband.hpp"
#include "processors_dedup/dedup.hpp"
#include "processors_throttle/throttle.hpp"
#include "process/record_stage.hpp"
#include "queue/queue.hpp"
#include "support/queue_helpers.hpp"

using namespace tank;
using namespace tank::test;
using namespace tank::plugins;
namespace json = boost::json;

namespace {

constexpr std::int64_t kSecond = 1'000'000'000;
constexpr std::int64_t kT0 = 1'800'000'000LL * kSecond;

// What a handler did with each record: "pass", "emit:<json>", "drop:<reason>", "dead:<reason>".
struct Recorder final : process::StageOutput {
  std::vector<std::string> calls;
  void pass() override { calls.push_back("pass"); }
  void emit(std::string_view json, std::span<const queue::Attribute>) override {
    calls.push_back("emit:" + std::string(json));
  }
  void drop(std::string_view reason) override { calls.push_back("drop:" + std::string(reason)); }
  void dead_letter(std::string_view reason, std::string) override { calls.push_back("dead:" + std::string(reason)); }
};

// Feeds records to a handler as the stage does: decoded when it needs JSON, one call per record.
struct Driver {
  explicit Driver(process::RecordHandler& h) : handler(h) {}
  process::RecordHandler& handler;
  process::JsonDecoder decoder;
  Recorder out;
  std::uint64_t seq = 0;

  // The decision on `payload` ingested at `ingest_ns` ("hold" when held).
  std::string feed(std::string_view payload, std::int64_t ingest_ns = kT0, std::string_view input = "in") {
    queue::RecordView r;
    r.seq = ++seq;
    r.ingest_ns = ingest_ns;
    r.input = input;
    r.payload = payload;
    const json::value* doc = nullptr;
    if (handler.needs_json(input)) {
      process::DecodeError error;
      doc = decoder.decode(payload, &error);
      REQUIRE(doc != nullptr);
    }
    out.calls.clear();
    if (handler.process(r, doc, out) == process::RecordHandler::Decision::hold) return "hold";
    REQUIRE(out.calls.size() == 1);
    return out.calls[0];
  }

  // The handler's committed state, as the stage would save it.
  std::vector<std::pair<std::string, std::string>> saved;
  void save() {
    std::vector<std::pair<std::string, std::string>> puts;
    std::vector<std::string> deletes;
    handler.take_changes(puts, deletes);
    for (const auto& d : deletes) std::erase_if(saved, [&](const auto& e) { return e.first == d; });
    for (auto& [k, v] : puts) {
      std::erase_if(saved, [&](const auto& e) { return e.first == k; });
      saved.emplace_back(k, v);
    }
  }
};

std::string reading(std::string_view id, double temp, std::string_view state = "on") {
  return fmt::format(R"({{"id":"{}","temp":{},"state":"{}"}})", id, temp, state);
}

}  // namespace

TEST_CASE("deadband: the first record of a group passes, then only moves out of the band", "[unit][deadband]") {
  deadband::Settings s;
  s.fields = {"temp", "state"};
  s.group_by = {"id"};
  s.absolute = 0.5;
  deadband::Handler h(s);
  Driver d{h};
  CHECK(d.feed(reading("a", 20.0)) == "pass");         // first of a
  CHECK(d.feed(reading("b", 20.0)) == "pass");         // first of b
  CHECK(d.feed(reading("a", 20.4)) == "drop:deadband");
  CHECK(d.feed(reading("a", 20.5)) == "drop:deadband");  // exactly the band: not more than it
  CHECK(d.feed(reading("a", 19.4)) == "pass");         // 0.6 below the reference 20.0
  CHECK(d.feed(reading("a", 19.8)) == "drop:deadband");  // the reference is now 19.4
  CHECK(d.feed(reading("a", 19.8, "off")) == "pass");  // a non-numeric change
  CHECK(d.feed(reading("b", 20.3)) == "drop:deadband");
}

TEST_CASE("deadband: percent of the reference, both bands, and no band (report by exception)", "[unit][deadband]") {
  SECTION("percent") {
    deadband::Settings s;
    s.fields = {"v"};
    s.percent = 1;
    deadband::Handler h(s);
    Driver d{h};
    CHECK(d.feed(R"({"v":200})") == "pass");
    CHECK(d.feed(R"({"v":201.9})") == "drop:deadband");
    CHECK(d.feed(R"({"v":197.9})") == "pass");  // 2.1 > 1 % of 200
    CHECK(d.feed(R"({"v":0})") == "pass");
    CHECK(d.feed(R"({"v":0.0001})") == "pass");  // a reference of 0: any change
  }
  SECTION("either band passes") {
    deadband::Settings s;
    s.fields = {"v"};
    s.percent = 10;
    s.absolute = 1;
    deadband::Handler h(s);
    Driver d{h};
    CHECK(d.feed(R"({"v":100})") == "pass");
    CHECK(d.feed(R"({"v":101.5})") == "pass");  // > absolute, < percent
  }
  SECTION("no band: any change") {
    deadband::Settings s;
    s.fields = {"v"};
    deadband::Handler h(s);
    Driver d{h};
    CHECK(d.feed(R"({"v":1})") == "pass");
    CHECK(d.feed(R"({"v":1.0})") == "drop:deadband");  // the same number
    CHECK(d.feed(R"({"v":1.000001})") == "pass");
  }
}

TEST_CASE("deadband: missing fields, type changes, huge numbers and records that are not objects",
          "[unit][deadband]") {
  deadband::Settings s;
  s.fields = {"v"};
  s.absolute = 10;
  deadband::Handler h(s);
  Driver d{h};
  CHECK(d.feed(R"({"v":1})") == "pass");
  CHECK(d.feed(R"({"w":1})") == "pass");           // v went away
  CHECK(d.feed(R"({"w":2})") == "drop:deadband");  // still missing
  CHECK(d.feed(R"({"v":1})") == "pass");           // it came back
  CHECK(d.feed(R"({"v":"1"})") == "pass");         // a string now
  CHECK(d.feed(R"({"v":"1"})") == "drop:deadband");
  CHECK(d.feed(R"({"v":null})") == "pass");
  CHECK(d.feed(R"({"v":1e400})") == "pass");  // infinity (too large for a double) is a number
  CHECK(d.feed(R"({"v":1e400})") == "drop:deadband");
  CHECK(d.feed(R"({"v":5})") == "pass");
  CHECK(d.feed(R"({"v":"NaN"})") == "pass");  // JSON has no NaN: a sensor's "NaN" is a string, a change
  CHECK(d.feed(R"({"v":"NaN"})") == "drop:deadband");
  CHECK(d.feed(R"([1,2])") == "dead:not_an_object");
}

TEST_CASE("deadband: fields = [\"*\"] watches every field but the group's and the time's", "[unit][deadband]") {
  deadband::Settings s;
  s.fields = {"*"};
  s.group_by = {"id"};
  s.time_field = "ts";
  s.absolute = 1;
  deadband::Handler h(s);
  Driver d{h};
  CHECK(d.feed(R"({"id":"a","ts":1800000000,"t":1,"h":5})") == "pass");
  CHECK(d.feed(R"({"ts":1800000001,"id":"a","h":5.5,"t":1.5})") == "drop:deadband");  // order and ts do not matter
  CHECK(d.feed(R"({"id":"a","ts":1800000002,"t":1,"h":5,"x":0})") == "pass");      // a new field
  CHECK(d.feed(R"({"id":"a","ts":1800000003,"t":1,"h":5})") == "pass");            // and gone again
}

TEST_CASE("deadband: max_interval is a heartbeat by record time, and a bad time is dead-lettered",
          "[unit][deadband]") {
  deadband::Settings s;
  s.fields = {"v"};
  s.absolute = 100;
  s.max_interval_ns = 60 * kSecond;
  deadband::Handler h(s);
  Driver d{h};
  CHECK(d.feed(R"({"v":1})", kT0) == "pass");
  CHECK(d.feed(R"({"v":1})", kT0 + 59 * kSecond) == "drop:deadband");
  CHECK(d.feed(R"({"v":1})", kT0 + 60 * kSecond) == "pass");  // heartbeat
  CHECK(d.feed(R"({"v":1})", kT0 + 61 * kSecond) == "drop:deadband");
  CHECK(d.feed(R"({"v":1})", 0) == "pass");  // the clock was set back by years: passes too
  // The ends of the time range: 2^64 - 1 ns apart, no overflow (UBSan would say).
  CHECK(d.feed(R"({"v":1})", INT64_MIN) == "pass");
  CHECK(d.feed(R"({"v":1})", INT64_MAX) == "pass");
  CHECK(d.feed(R"({"v":1})", INT64_MAX) == "drop:deadband");

  deadband::Settings t = s;
  t.time_field = "ts";
  deadband::Handler h2(t);
  Driver d2{h2};
  CHECK(d2.feed(R"({"v":1,"ts":"2027-01-01T00:00:00Z"})") == "pass");
  CHECK(d2.feed(R"({"v":1,"ts":"2027-01-01T00:01:00Z"})") == "pass");
  CHECK(d2.feed(R"({"v":1})") == "dead:time_invalid");
  CHECK(d2.feed(R"({"v":1,"ts":"noon"})") == "dead:time_invalid");
}

TEST_CASE("deadband: the references survive a restart, and max_groups forgets the oldest group", "[unit][deadband]") {
  deadband::Settings s;
  s.fields = {"temp"};
  s.group_by = {"id"};
  s.absolute = 1;
  s.max_groups = 2;
  std::vector<std::pair<std::string, std::string>> saved;
  {
    deadband::Handler h(s);
    Driver d{h};
    CHECK(d.feed(reading("a", 10)) == "pass");
    CHECK(d.feed(reading("b", 10)) == "pass");
    CHECK(d.feed(reading("a", 12)) == "pass");  // a is now the most recent
    CHECK(d.feed(reading("c", 10)) == "pass");  // forgets b
    CHECK(h.evictions() == 1);
    CHECK(h.groups() == 2);
    d.save();
    saved = d.saved;
    CHECK(saved.size() == 2);
  }
  deadband::Handler h(s);
  h.restore(saved);
  Driver d{h};
  CHECK(d.feed(reading("a", 12.5)) == "drop:deadband");  // reference 12, restored
  CHECK(d.feed(reading("c", 10.5)) == "drop:deadband");
  CHECK(d.feed(reading("b", 10.5)) == "pass");  // forgotten: a first record again

  SECTION("other watched fields after the restart: the groups start afresh") {
    deadband::Settings other = s;
    other.fields = {"hum"};
    deadband::Handler h3(other);
    h3.restore(saved);
    CHECK(h3.groups() == 0);
  }
  SECTION("damaged state refuses the start") {
    deadband::Handler h4(s);
    CHECK_THROWS(h4.restore({{"00000000000000000000000000000001", "x"}}));
  }
}

TEST_CASE("dedup: equal within the window is dropped, and the first after it passes", "[unit][dedup]") {
  dedup::Settings s;
  s.window_ns = 10 * kSecond;
  dedup::Handler h(s);
  Driver d{h};
  CHECK_FALSE(h.needs_json("in"));  // whole records: bytes, no JSON needed
  CHECK(d.feed("a", kT0) == "pass");
  CHECK(d.feed("a", kT0 + 9 * kSecond) == "drop:duplicate");
  CHECK(d.feed("b", kT0 + 9 * kSecond) == "pass");
  CHECK(d.feed("a", kT0 + 10 * kSecond) == "pass");  // the window of the first one ended
  CHECK(d.feed("a", kT0 + 11 * kSecond) == "drop:duplicate");
  CHECK(d.feed("a", kT0 + 11 * kSecond, "other") == "pass");  // another input
  CHECK(d.feed("a", INT64_MIN) == "pass");  // the ends of the time range, no overflow
  CHECK(d.feed("a", INT64_MAX) == "pass");
}

TEST_CASE("dedup: by fields, JSON values compared as values, missing apart from null", "[unit][dedup]") {
  dedup::Settings s;
  s.fields = {"id", "v"};
  dedup::Handler h(s);
  Driver d{h};
  CHECK(d.feed(R"({"id":"a","v":1,"ts":1})") == "pass");
  CHECK(d.feed(R"({"ts":2,"v":1.0,"id":"a"})") == "drop:duplicate");
  CHECK(d.feed(R"({"id":"a","v":null})") == "pass");
  CHECK(d.feed(R"({"id":"a"})") == "pass");
  CHECK(d.feed(R"({"id":"a","v":"1"})") == "pass");
  CHECK(d.feed(R"({"id":"a","v":{"x":[1,2]}})") == "pass");
  CHECK(d.feed(R"({"id":"a","v":{"x":[1,2]}})") == "drop:duplicate");
}

TEST_CASE("dedup: max_keys forgets the oldest, expired keys are deleted, and the keys survive a restart",
          "[unit][dedup]") {
  dedup::Settings s;
  s.window_ns = 100 * kSecond;
  s.max_keys = 3;
  std::vector<std::pair<std::string, std::string>> saved;
  {
    dedup::Handler h(s);
    Driver d{h};
    for (int i = 0; i < 4; ++i) CHECK(d.feed(fmt::format("r{}", i), kT0 + i * kSecond) == "pass");
    CHECK(h.evictions() == 1);  // r0
    CHECK(h.keys() == 3);
    CHECK(d.feed("r0", kT0 + 5 * kSecond) == "pass");  // forgotten (counted), so it passes
    CHECK(d.feed("r3", kT0 + 6 * kSecond) == "drop:duplicate");
    d.save();
    saved = d.saved;
    CHECK(saved.size() == 3);
    // 100 s later every key is past its window: all are deleted.
    CHECK(d.feed("z", kT0 + 200 * kSecond) == "pass");
    d.save();
    CHECK(d.saved.size() == 1);
  }
  dedup::Handler h(s);
  h.restore(saved);
  Driver d{h};
  CHECK(d.feed("r3", kT0 + 7 * kSecond) == "drop:duplicate");
  CHECK(d.feed("r0", kT0 + 7 * kSecond) == "drop:duplicate");
  CHECK(d.feed("r1", kT0 + 7 * kSecond) == "pass");
}

TEST_CASE("throttle: a token bucket per group, hold says when, drop counts", "[unit][throttle]") {
  ManualClock clock;
  throttle::Settings s;
  s.rate = 2;
  s.per_ns = kSecond;
  s.group_by = {"id"};
  s.hold = false;
  throttle::Handler h(s, clock);
  Driver d{h};
  CHECK(d.feed(R"({"id":"a"})") == "pass");
  CHECK(d.feed(R"({"id":"a"})") == "pass");  // the burst
  CHECK(d.feed(R"({"id":"a"})") == "drop:rate_limit");
  CHECK(d.feed(R"({"id":"b"})") == "pass");  // its own rate
  clock.advance(kSecond / 2);
  CHECK(d.feed(R"({"id":"a"})") == "pass");  // one token back
  CHECK(d.feed(R"({"id":"a"})") == "drop:rate_limit");

  s.hold = true;
  s.group_by = {};
  throttle::Handler held(s, clock);
  Driver d2{held};
  CHECK_FALSE(held.needs_json("in"));
  CHECK(d2.feed("x") == "pass");
  CHECK(d2.feed("x") == "pass");
  CHECK(d2.feed("x") == "hold");
  CHECK(held.hold_until() == clock.steady_ns() + kSecond / 2);
  clock.advance(kSecond / 2);
  CHECK(d2.feed("x") == "pass");
}

TEST_CASE("throttle: idle groups are forgotten first when max_groups is reached", "[unit][throttle]") {
  ManualClock clock;
  throttle::Settings s;
  s.rate = 1;
  s.group_by = {"id"};
  s.hold = false;
  s.max_groups = 2;
  throttle::Handler h(s, clock);
  Driver d{h};
  CHECK(d.feed(R"({"id":"a"})") == "pass");
  CHECK(d.feed(R"({"id":"b"})") == "pass");
  clock.advance(2 * kSecond);  // both buckets full again: as good as new
  CHECK(d.feed(R"({"id":"c"})") == "pass");
  CHECK(h.evictions() == 0);
  CHECK(d.feed(R"({"id":"d"})") == "pass");  // a and b forgotten at c; now c and d: full, one more...
  CHECK(d.feed(R"({"id":"e"})") == "pass");  // ...forgets a busy one, counted
  CHECK(h.evictions() == 1);
  CHECK(h.groups() == 2);
}

TEST_CASE("record key: hex round trip and distinct keys for missing, null and values", "[unit][record-key]") {
  const process::Key128 k = process::hash_key("abc");
  process::Key128 back;
  REQUIRE(process::from_hex(process::to_hex(k), back));
  CHECK(back == k);
  CHECK_FALSE(process::from_hex("xyz", back));
  CHECK_FALSE(process::from_hex(std::string(32, 'G'), back));
  std::string missing, null, one, one_double;
  process::append_value_key(missing, nullptr);
  const json::value n = nullptr, i = 1, f = 1.0;
  process::append_value_key(null, &n);
  process::append_value_key(one, &i);
  process::append_value_key(one_double, &f);
  CHECK(missing != null);
  CHECK(one == one_double);
}

namespace {

// Stages on a real queue, as the pipeline makes them.
struct StageRig {
  TempDir dir;
  ManualClock clock;
  metrics::Registry metrics;
  std::unique_ptr<queue::Queue> q;

  explicit StageRig(std::vector<std::string> consumers) {
    auto o = small_queue(dir / "queue", 8 << 20);
    o.consumers = std::move(consumers);
    q = queue::Queue::open(o, clock, nullptr);
  }

  std::unique_ptr<plugin::Stage> stage(const std::string& name, std::unique_ptr<process::RecordHandler> handler,
                                       std::string type, unsigned position) {
    plugin::ProcessorContext c{name, {"in"}, q.get(), metrics, clock, "test", dir.path()};
    c.positions = {position};
    return process::make_record_stage({std::move(type), std::move(handler)}, c);
  }

  void append(const std::vector<std::string>& payloads) {
    queue::EncodedRecords b;
    for (const auto& p : payloads) b.add("in", clock.wall_ns(), p);
    REQUIRE(q->append(b).status == queue::CommitStatus::committed);
  }

  // The payloads at chain `level`, in order.
  std::vector<std::string> at_level(unsigned level) const {
    std::vector<std::string> out;
    std::uint64_t after = 0;
    for (;;) {
      auto b = q->read(after, {10000, 64 << 20});
      if (b.empty()) break;
      for (const auto& r : b.records()) {
        if (queue::chain_level(r.flags) == level) out.emplace_back(r.payload);
      }
      after = b.scanned_to();
    }
    return out;
  }
};

std::unique_ptr<process::RecordHandler> deadband_on_temp() {
  deadband::Settings s;
  s.fields = {"temp"};
  s.group_by = {"id"};
  s.absolute = 1;
  return std::make_unique<deadband::Handler>(s);
}

std::unique_ptr<process::RecordHandler> dedup_on_id() {
  dedup::Settings s;
  s.fields = {"id"};
  return std::make_unique<dedup::Handler>(s);
}

}  // namespace

TEST_CASE("record stage: chained stages read what the one before passed on, and state survives a restart",
          "[unit][record-stage]") {
  StageRig rig({"processor/db", "processor/dd", "out"});
  rig.append({reading("a", 10), reading("a", 10.5), reading("b", 3), reading("a", 12), "not json"});
  {
    auto deadband = rig.stage("db", deadband_on_temp(), "deadband", 0);
    auto dedup = rig.stage("dd", dedup_on_id(), "dedup", 1);
    deadband->start();
    dedup->start();
    REQUIRE(wait_until([&] { return rig.q->position("processor/dd").value_or(0) >= 8; }, std::chrono::seconds(20)));
    deadband->stop();
    dedup->stop();
  }
  // Level 1: deadband passed a 10, b 3, a 12 (10.5 is within 1 of 10); "not json" is a dead letter.
  CHECK(rig.at_level(1) == std::vector<std::string>{reading("a", 10), reading("b", 3), reading("a", 12)});
  // Level 2: dedup by id passed the first a and b.
  CHECK(rig.at_level(2) == std::vector<std::string>{reading("a", 10), reading("b", 3)});
  CHECK(rig.q->dead_letter_stats().entries == 1);
  const std::string scraped = rig.metrics.serialize();
  CHECK(scraped.find(R"(tank_processor_dropped_records_total{processor="db",reason="deadband",type="deadband"} 1)") !=
        std::string::npos);
  CHECK(scraped.find(R"(tank_processor_dropped_records_total{processor="dd",reason="duplicate",type="dedup"} 1)") !=
        std::string::npos);
  CHECK(rig.q->state_with_prefix("deadband/db/").size() == 2);

  // A restart: the references are read back, so 12.9 stays within the band of 12.
  rig.append({reading("a", 12.9), reading("b", 5)});
  auto deadband = rig.stage("db", deadband_on_temp(), "deadband", 0);
  deadband->start();
  REQUIRE(wait_until([&] { return rig.at_level(1).size() == 4; }, std::chrono::seconds(20)));
  deadband->stop();
  CHECK(rig.at_level(1).back() == reading("b", 5));
}

TEST_CASE("record stage: throttle's hold keeps records in the queue until the rate allows them", "[unit][record-stage]") {
  StageRig rig({"processor/t", "out"});
  throttle::Settings s;
  s.rate = 2;
  s.per_ns = 3600 * kSecond;  // the manual clock decides when the next token comes
  rig.append({"1", "2", "3", "4"});
  auto stage = rig.stage("t", std::make_unique<throttle::Handler>(s, rig.clock), "throttle", 0);
  stage->start();
  REQUIRE(wait_until([&] { return rig.at_level(1).size() == 2; }, std::chrono::seconds(20)));
  REQUIRE(wait_until([&] { return rig.metrics.serialize().find(R"(tank_processor_holding{processor="t",type="throttle"} 1)") !=
                                  std::string::npos; },
                     std::chrono::seconds(20)));
  CHECK(rig.q->position("processor/t").value_or(0) == 2);  // records 3 and 4 wait
  rig.clock.advance(1800 * kSecond);                        // one token
  REQUIRE(wait_until([&] { return rig.at_level(1).size() == 3; }, std::chrono::seconds(20)));
  rig.clock.advance(1800 * kSecond);
  REQUIRE(wait_until([&] { return rig.at_level(1).size() == 4; }, std::chrono::seconds(20)));
  stage->stop();
  CHECK(rig.at_level(1) == std::vector<std::string>{"1", "2", "3", "4"});
}
