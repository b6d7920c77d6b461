// The Sparkplug B host (plugins/inputs_mqtt/sparkplug/host.hpp): births build alias tables, data
// resolves them, gaps and stale deaths are told apart, what cannot be resolved is dead-lettered
// with its reason, the tables survive a reload from the queue, and a rollback undoes exactly the
// conversions not committed.

#include <catch2/catch.hpp>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <map>

#include "inputs_mqtt/sparkplug/host.hpp"
#include "inputs_mqtt/sparkplug/payload.hpp"
#include "support/queue_helpers.hpp"

using namespace tank;
using namespace tank::sparkplug;
using namespace tank::test;
namespace json = boost::json;

namespace {

constexpr std::int64_t kNow = 1'700'000'000'000'000'000;

Metric metric(std::optional<std::string> name, std::optional<std::uint64_t> alias, DataType type, json::value v) {
  Metric m;
  m.name = std::move(name);
  m.alias = alias;
  m.datatype = static_cast<std::uint32_t>(type);
  m.value = std::move(v);
  return m;
}

std::string payload(std::optional<std::uint64_t> seq, std::vector<Metric> metrics) {
  Payload p;
  p.timestamp_ms = 1'700'000'000'000;
  p.seq = seq;
  p.metrics = std::move(metrics);
  return encode(p);
}

std::string nbirth(std::uint64_t bdseq = 0) {
  return payload(0, {metric("bdSeq", std::nullopt, DataType::uint64, bdseq),
                     metric("temp", 1, DataType::float64, 20.5), metric("level", 2, DataType::int16, -5)});
}

struct Events {
  std::map<std::string, int> counts;
  std::function<void(std::string_view)> sink() {
    return [this](std::string_view e) { ++counts[std::string(e)]; };
  }
  int operator[](const std::string& e) const {
    auto it = counts.find(e);
    return it == counts.end() ? 0 : it->second;
  }
};

json::object record(const Conversion& c, std::size_t i) { return json::parse(c.records.at(i).json).as_object(); }

}  // namespace

TEST_CASE("Sparkplug topics are parsed into their parts, anything else is not one",
          "[unit][inputs][sparkplug]") {
  auto t = parse_topic("spBv1.0/plant/DDATA/edge1/pump");
  REQUIRE(t);
  CHECK(t->type == Topic::Type::ddata);
  CHECK(t->group == "plant");
  CHECK(t->node == "edge1");
  CHECK(t->device == "pump");
  t = parse_topic("spBv1.0/STATE/scada");
  REQUIRE(t);
  CHECK(t->type == Topic::Type::state);
  CHECK(t->node == "scada");
  CHECK_FALSE(parse_topic("spBv1.0/plant/NDATA/edge1/extra"));
  CHECK_FALSE(parse_topic("spBv1.0/plant/DDATA/edge1"));
  CHECK_FALSE(parse_topic("spBv1.0/plant/NFOO/edge1"));
  CHECK_FALSE(parse_topic("spAv1.0/plant/NDATA/edge1"));
  CHECK_FALSE(parse_topic("spBv1.0//NDATA/edge1"));
  CHECK_FALSE(parse_topic("sensors/1"));
}

TEST_CASE("Sparkplug host: a birth's aliases name later data, with the birth's type",
          "[unit][inputs][sparkplug]") {
  Events events;
  Host host({"plant"}, events.sink());
  auto birth = host.convert("spBv1.0/g/NBIRTH/n", nbirth(), kNow);
  REQUIRE(birth.records.size() == 3);
  CHECK_FALSE(birth.dead_letter);
  CHECK(record(birth, 1).at("metric") == json::value("temp"));
  CHECK(record(birth, 1).at("datatype") == json::value("Double"));
  CHECK(birth.state_puts.size() == 2);  // the node's table and its seq

  // Data by alias only, one metric without its datatype: the birth's Int16 reads -5 from the
  // low 16 bits of what was sent.
  // (By hand: tank's encoder always writes the datatype.) Payload {metrics: [{alias: 1,
  // double_value: 21.0}, {alias: 2, int_value: 65531}], seq: 1}.
  std::string bytes;
  const std::string first = std::string("\x10\x01\x69", 3) + std::string("\x00\x00\x00\x00\x00\x00\x35\x40", 8);
  const std::string second("\x10\x02\x50\xfb\xff\x03", 6);
  bytes += '\x12';
  bytes += static_cast<char>(first.size());
  bytes += first;
  bytes += '\x12';
  bytes += static_cast<char>(second.size());
  bytes += second;
  bytes += std::string("\x18\x01", 2);
  auto data = host.convert("spBv1.0/g/NDATA/n", bytes, kNow);
  REQUIRE(data.records.size() == 2);
  CHECK_FALSE(data.dead_letter);
  CHECK(record(data, 0).at("metric") == json::value("temp"));
  CHECK(record(data, 0).at("value").to_number<double>() == 21.0);
  CHECK(record(data, 1).at("metric") == json::value("level"));
  CHECK(record(data, 1).at("datatype") == json::value("Int16"));
  CHECK(record(data, 1).at("value") == json::value(-5));
  CHECK(record(data, 1).at("seq") == json::value(1));
  CHECK(events["seq_gap"] == 0);
}

TEST_CASE("Sparkplug host: an unknown alias, data before birth and a bad topic are dead-lettered with a reason",
          "[unit][inputs][sparkplug]") {
  Events events;
  Host host({"plant"}, events.sink());
  auto early = host.convert("spBv1.0/g/NDATA/n", payload(5, {metric(std::nullopt, 1, DataType::float64, 1.0)}), kNow);
  CHECK(early.records.empty());
  REQUIRE(early.dead_letter);
  CHECK(early.dead_letter->reason == "sparkplug_no_birth");
  CHECK(early.publishes.empty());  // rebirth is off
  CHECK(events["no_birth"] == 1);

  host.convert("spBv1.0/g/NBIRTH/n", nbirth(), kNow);
  auto unknown = host.convert(
      "spBv1.0/g/NDATA/n",
      payload(1, {metric(std::nullopt, 1, DataType::float64, 1.0), metric(std::nullopt, 99, DataType::float64, 2.0)}),
      kNow);
  CHECK(unknown.records.size() == 1);  // the known one is kept
  REQUIRE(unknown.dead_letter);
  CHECK(unknown.dead_letter->reason == "sparkplug_unknown_alias");
  CHECK(unknown.dead_letter->detail.find("alias 99") != std::string::npos);

  auto device = host.convert("spBv1.0/g/DDATA/n/pump", payload(2, {metric("x", std::nullopt, DataType::int32, 1)}), kNow);
  REQUIRE(device.dead_letter);
  CHECK(device.dead_letter->reason == "sparkplug_no_birth");

  auto junk = host.convert("spBv1.0/g/NDATA/n", std::string("\xff\xff\xff", 3), kNow);
  REQUIRE(junk.dead_letter);
  CHECK(junk.dead_letter->reason == "sparkplug_bad_payload");

  Payload compressed;
  compressed.uuid = "SPBV1.0_COMPRESSED";
  compressed.body = std::string("\x78\x9c\x03\x00", 4);
  compressed.seq = 3;
  auto deflated = host.convert("spBv1.0/g/NDATA/n", encode(compressed), kNow);
  REQUIRE(deflated.dead_letter);
  CHECK(deflated.dead_letter->reason == "sparkplug_compressed");

  auto topic = host.convert("spBv1.0/g/WHAT/n", nbirth(), kNow);
  REQUIRE(topic.dead_letter);
  CHECK(topic.dead_letter->reason == "sparkplug_bad_topic");

  // STATE is JSON: recognised, not decoded, nothing recorded.
  auto state = host.convert("spBv1.0/STATE/other", R"({"online":true,"timestamp":1})", kNow);
  CHECK(state.records.empty());
  CHECK_FALSE(state.dead_letter);
  CHECK(events["state_message"] == 1);
}

TEST_CASE("Sparkplug host: a seq gap is counted and, with rebirth, asks for one at most once per interval",
          "[unit][inputs][sparkplug]") {
  Events events;
  Host host({"plant", true, std::chrono::hours(1)}, events.sink());
  host.convert("spBv1.0/g/NBIRTH/n", nbirth(), kNow);
  host.convert("spBv1.0/g/NDATA/n", payload(1, {metric(std::nullopt, 1, DataType::float64, 1.0)}), kNow);
  auto gap = host.convert("spBv1.0/g/NDATA/n", payload(7, {metric(std::nullopt, 1, DataType::float64, 1.0)}), kNow);
  CHECK(gap.records.size() == 1);  // the data is good: kept
  CHECK(events["seq_gap"] == 1);
  REQUIRE(gap.publishes.size() == 1);
  CHECK(gap.publishes[0].topic == "spBv1.0/g/NCMD/n");
  std::string error;
  auto request = decode(gap.publishes[0].payload, error);
  REQUIRE(request);
  REQUIRE(request->metrics.size() == 1);
  CHECK(request->metrics[0].name == std::optional<std::string>("Node Control/Rebirth"));
  CHECK(request->metrics[0].value == json::value(true));
  // Another gap within the interval asks nothing more.
  auto again = host.convert("spBv1.0/g/NDATA/n", payload(255, {metric(std::nullopt, 1, DataType::float64, 1.0)}), kNow);
  CHECK(events["seq_gap"] == 2);
  CHECK(again.publishes.empty());
  CHECK(events["rebirth_requested"] == 1);
  // 255 wraps to 0 without a gap.
  host.convert("spBv1.0/g/NDATA/n", payload(0, {metric(std::nullopt, 1, DataType::float64, 1.0)}), kNow);
  CHECK(events["seq_gap"] == 2);
}

TEST_CASE("Sparkplug host: deaths mark metrics stale, and an old session's NDEATH changes nothing",
          "[unit][inputs][sparkplug]") {
  Events events;
  Host host({"plant"}, events.sink());
  host.convert("spBv1.0/g/NBIRTH/n", nbirth(3), kNow);
  host.convert("spBv1.0/g/DBIRTH/n/pump", payload(1, {metric("rpm", 10, DataType::int32, 1500)}), kNow);
  // The will of the session before (bdSeq 2) arrives late.
  auto stale = host.convert("spBv1.0/g/NDEATH/n", payload(std::nullopt, {metric("bdSeq", std::nullopt, DataType::uint64, 2u)}), kNow);
  CHECK(stale.records.empty());
  CHECK(events["stale_death"] == 1);
  auto death = host.convert("spBv1.0/g/NDEATH/n", payload(std::nullopt, {metric("bdSeq", std::nullopt, DataType::uint64, 3u)}), kNow);
  REQUIRE(death.records.size() == 4);  // bdSeq, temp, level, and the device's rpm
  for (std::size_t i = 0; i < death.records.size(); ++i) {
    CHECK(record(death, i).at("stale") == json::value(true));
    CHECK(record(death, i).at("value").is_null());
  }
  CHECK(record(death, 3).at("device") == json::value("pump"));
  auto after = host.convert("spBv1.0/g/DDATA/n/pump", payload(2, {metric(std::nullopt, 10, DataType::int32, 1)}), kNow);
  REQUIRE(after.dead_letter);
  CHECK(after.dead_letter->reason == "sparkplug_no_birth");
}

TEST_CASE("Sparkplug host: the tables committed with the records come back from the queue, and a rollback "
          "undoes what was not committed",
          "[unit][inputs][sparkplug]") {
  TempDir dir;
  ManualClock clock;
  auto q = queue::Queue::open(small_queue(dir / "q"), clock, nullptr);
  Events events;
  {
    Host host({"plant"}, events.sink());
    host.load(*q);
    auto birth = host.convert("spBv1.0/g/NBIRTH/n", nbirth(), kNow);
    queue::WriteBatch w;
    for (const auto& r : birth.records) w.records.add("plant", kNow, r.json);
    w.state_puts = birth.state_puts;
    REQUIRE(q->commit(std::move(w)).status == queue::CommitStatus::committed);
    host.committed(host.mark());
  }
  Host host({"plant"}, events.sink());
  host.load(*q);
  auto data = host.convert("spBv1.0/g/NDATA/n", payload(1, {metric(std::nullopt, 2, DataType::int16, 7)}), kNow);
  REQUIRE(data.records.size() == 1);
  CHECK(record(data, 0).at("metric") == json::value("level"));
  CHECK(events["seq_gap"] == 0);  // seq 0 came back with the table

  // A rebirth that is never committed (its session ended while the queue refused it) is undone:
  // the old table and seq are back.
  host.committed(host.mark());
  host.convert("spBv1.0/g/NBIRTH/n", payload(0, {metric("other", 2, DataType::string, "x")}), kNow);
  host.rollback();
  auto again = host.convert("spBv1.0/g/NDATA/n", payload(2, {metric(std::nullopt, 2, DataType::int16, 8)}), kNow);
  REQUIRE(again.records.size() == 1);
  CHECK(record(again, 0).at("metric") == json::value("level"));
  CHECK(events["seq_gap"] == 0);
}

TEST_CASE("Sparkplug host: the alias tables of all nodes stay within kMaxTableBytes", "[unit][inputs][sparkplug]") {
  Events events;
  Host host({"plant"}, events.sink());
  // Births of 1,000 metrics with 1 KiB names: some 2 MiB of tables each.
  auto big_birth = [](int node) {
    std::vector<Metric> metrics;
    for (int i = 0; i < 1000; ++i) {
      metrics.push_back(metric(fmt::format("n{}/m{}/{}", node, i, std::string(1000, 'x')), static_cast<std::uint64_t>(i),
                               DataType::int32, 1));
    }
    return payload(0, std::move(metrics));
  };
  int refused_at = -1;
  for (int node = 0; node < 64 && refused_at < 0; ++node) {
    auto c = host.convert(fmt::format("spBv1.0/g/NBIRTH/n{}", node), big_birth(node), kNow);
    CHECK(c.records.size() == 1000);  // the values are stored either way
    if (c.dead_letter) {
      CHECK(c.dead_letter->reason == "sparkplug_table_limit");
      CHECK(c.state_puts.empty());
      refused_at = node;
    }
  }
  INFO("refused at node " << refused_at);
  CHECK(refused_at >= 20);
  CHECK(refused_at <= 40);
  CHECK(events["table_limit"] == 1);
  // A node born before may be born again with a table as large: it replaces its own.
  auto again = host.convert("spBv1.0/g/NBIRTH/n0", big_birth(0), kNow);
  CHECK_FALSE(again.dead_letter);
  // The refused node's data has no birth.
  auto data = host.convert(fmt::format("spBv1.0/g/NDATA/n{}", refused_at),
                           payload(1, {metric(std::nullopt, 1, DataType::int32, 2)}), kNow);
  REQUIRE(data.dead_letter);
  CHECK(data.dead_letter->reason == "sparkplug_no_birth");
}
