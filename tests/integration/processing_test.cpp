// The real tank binary with decoding, processors.validate and the dead-letter commands:
// bad records are dead-lettered with their specific reason and detail, `tank dlq replay` puts
// them back through the running agent after a schema fix (those that still fail return to the
// store), `tank dlq purge` deletes them, and both also work with no agent running.

#include <catch2/catch.hpp>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "engine/run_state.hpp"
#include "support/input_helpers.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

// The contract of the tests: temp at most `max_temp` (the "schema fix" raises it).
std::string schema_with_max(int max_temp) {
  return R"({
  "$schema": "http://json-schema.org/draft-07/schema#",
  "type": "object",
  "required": ["device", "ts", "temp"],
  "properties": {
    "device": {"type": "string", "pattern": "^d[0-9]+$"},
    "ts": {"type": "integer"},
    "temp": {"type": "number", "minimum": -50, "maximum": )" + std::to_string(max_temp) + R"(}
  }
})";
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::multiset<std::string> reasons_of(const std::vector<boost::json::object>& letters) {
  std::multiset<std::string> out;
  for (const auto& d : letters) out.insert(std::string(d.at("reason").as_string()));
  return out;
}

std::vector<std::string> payloads_of(const std::filesystem::path& queue_dir) {
  std::vector<std::string> out;
  for (auto& r : records_in(queue_dir)) out.push_back(r.payload);
  return out;
}

}  // namespace

TEST_CASE("validate: bad records are dead-lettered with their reason and a replay after a schema fix brings them back",
          "[integration][processing][dlq]") {
  TempDir dir;
  const auto data = dir / "data";
  write_file(dir / "schema.json", schema_with_max(200));
  const std::string extra = fmt::format(
      "[[inputs.tcp]]\nname = \"plant\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
      "[[processors.validate]]\nname = \"contract\"\ninputs = [\"plant\"]\nschema = \"{}\"\n"
      "time_field = \"ts\"\ntime_format = \"unix_ms\"\nmax_record_bytes = \"1KiB\"\n",
      (dir / "schema.json").string());
  const auto config = write_test_config(dir, extra);

  const std::int64_t now = now_ms();
  const std::string good = fmt::format(R"({{"device":"d1","ts":{},"temp":20.5}})", now);
  const std::string too_hot = fmt::format(R"({{"device":"d2","ts":{},"temp":500}})", now);
  const std::string no_device = fmt::format(R"({{"ts":{},"temp":1}})", now);
  const std::string from_2085 = R"({"device":"d3","ts":3629145600000,"temp":1})";
  const std::string no_time = R"({"device":"d4","temp":1})";
  const std::string not_json = R"({"device": "d5", "ts": )";
  const std::string oversized = fmt::format(R"({{"device":"d6","ts":{},"temp":1,"pad":"{}"}})", now,
                                            std::string(2000, 'x'));

  {
    TankProcess tank(config);
    const std::string metrics = tank.wait_running(data);
    int fd = tcp_connect(input_address(data, "plant"));
    REQUIRE(fd >= 0);
    REQUIRE(send_all(fd, good + "\n" + too_hot + "\n" + no_device + "\n" + from_2085 + "\n" + no_time + "\n" + not_json +
                             "\n" + oversized + "\n"));
    ::close(fd);
    REQUIRE(wait_until([&] { return dead_letters_in(data).size() == 6; }, std::chrono::seconds(30)));
    CHECK(payloads_of(data / "queue") == std::vector<std::string>{good});

    auto letters = dead_letters_in(data);
    CHECK(reasons_of(letters) == std::multiset<std::string>{"schema_violation", "schema_violation", "time_out_of_range",
                                                           "time_invalid", "decode_error", "record_too_large"});
    for (const auto& d : letters) {
      const std::string reason(d.at("reason").as_string());
      const std::string detail(d.at("detail").as_string());
      CHECK(d.at("input").as_string() == "plant");
      INFO(reason << ": " << detail);
      if (reason == "decode_error") {
        CHECK(detail.find("not JSON") != std::string::npos);
        CHECK(detail.find("at byte 2") != std::string::npos);  // the end of the 23 bytes
      } else {
        CHECK(detail.find("processor \"contract\"") != std::string::npos);
      }
      if (reason == "time_out_of_range") CHECK(detail.find("2085-01-01") != std::string::npos);
    }
    // Every violation is a JSON pointer and a message.
    std::set<std::string> schema_details;
    for (const auto& d : letters) {
      if (d.at("reason").as_string() == "schema_violation") schema_details.insert(std::string(d.at("detail").as_string()));
    }
    REQUIRE(schema_details.size() == 2);
    auto any_has = [&](const std::string& what) {
      return std::any_of(schema_details.begin(), schema_details.end(),
                         [&](const std::string& d) { return d.find(what) != std::string::npos; });
    };
    CHECK(any_has("/temp"));
    CHECK(any_has("device"));

    const std::string scraped = scrape(metrics);
    CHECK(metric_value(scraped, R"(tank_dead_letters_total{input="plant",reason="schema_violation"})") == 2);
    CHECK(metric_value(scraped, R"(tank_dead_letters_total{input="plant",reason="decode_error"})") == 1);
    CHECK(metric_value(scraped,
                       R"(tank_processor_dead_letters_total{processor="contract",reason="time_out_of_range",type="validate"})") ==
          1);
    CHECK(metric_value(scraped, R"(tank_processor_records_in_total{processor="contract",type="validate"})") == 6);
    CHECK(metric_value(scraped, R"(tank_processor_records_out_total{processor="contract",type="validate"})") == 1);
    CHECK(tank.stop() == 0);
  }

  // The schema is fixed (temp up to 1000) and tank restarted: a replay through the running agent
  // turns the record that is now valid into a record, and the one still invalid returns to the
  // store with a new id.
  write_file(dir / "schema.json", schema_with_max(1000));
  {
    TankProcess tank(config);
    tank.wait_running(data);
    const auto before = dead_letters_in(data);
    auto r = run({tank_binary(), "dlq", "replay", "--reason", "schema_violation", "-c", config.string(), "--json"});
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    auto reply = boost::json::parse(r.out).as_object();
    CHECK(reply.at("replayed").as_int64() == 1);
    CHECK(reply.at("failed_again").as_int64() == 1);
    CHECK(payloads_of(data / "queue") == std::vector<std::string>{good, too_hot});
    auto after = dead_letters_in(data);
    CHECK(after.size() == before.size() - 1);
    CHECK(reasons_of(after) == std::multiset<std::string>{"schema_violation", "time_out_of_range", "time_invalid",
                                                         "decode_error", "record_too_large"});
    std::uint64_t max_before = 0;
    for (const auto& d : before) max_before = std::max<std::uint64_t>(max_before, d.at("id").as_int64());
    for (const auto& d : after) {
      if (d.at("reason").as_string() == "schema_violation") CHECK(static_cast<std::uint64_t>(d.at("id").as_int64()) > max_before);
    }

    // A purge by reason, through the agent.
    r = run({tank_binary(), "dlq", "purge", "--reason", "decode_error", "-c", config.string()});
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("purged 1 entry") != std::string::npos);
    CHECK(reasons_of(dead_letters_in(data)).count("decode_error") == 0);

    // Usage errors say what is wrong.
    r = run({tank_binary(), "dlq", "replay", "-c", config.string()});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("which entries?") != std::string::npos);
    CHECK(tank.stop() == 0);
  }

  // No agent running: the command does it on the queue itself.
  auto r = run({tank_binary(), "dlq", "replay", "--all", "-c", config.string(), "--json"});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  auto reply = boost::json::parse(r.out).as_object();
  CHECK(reply.at("replayed").as_int64() == 0);
  CHECK(reply.at("failed_again").as_int64() == 4);
  r = run({tank_binary(), "dlq", "purge", "--all", "-c", config.string()});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("purged 4 entries") != std::string::npos);
  CHECK(dead_letters_in(data).empty());
  r = run({tank_binary(), "dlq", "purge", "--all", "--data-dir", data.string()});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("no agent is running") != std::string::npos);
}

TEST_CASE("a replayed dead letter keeps its attributes", "[integration][processing][dlq]") {
  TempDir dir;
  const auto data = dir / "data";
  const auto config = write_test_config(dir, "[[inputs.tcp]]\nname = \"plant\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n");
  TankProcess tank(config);
  tank.wait_running(data);
  int fd = tcp_connect(input_address(data, "plant"));
  REQUIRE(fd >= 0);
  REQUIRE(send_all(fd, "not json\n{\"ok\":1}\n"));
  ::close(fd);
  REQUIRE(wait_until([&] { return dead_letters_in(data).size() == 1 && records_in(data / "queue").size() == 1; },
                     std::chrono::seconds(30)));
  const auto peer = records_in(data / "queue").front().attributes.at("peer");
  // Still not JSON: back to the store, with its peer attribute kept for the next replay.
  auto r = run({tank_binary(), "dlq", "replay", "--all", "-c", config.string(), "--json"});
  REQUIRE(r.exit_code == 0);
  CHECK(boost::json::parse(r.out).at("failed_again").as_int64() == 1);
  auto shown = run({tank_binary(), "dlq", "show", std::to_string(dead_letters_in(data).front().at("id").as_int64()),
                    "--data-dir", data.string(), "--json"});
  REQUIRE(shown.exit_code == 0);
  auto entry = boost::json::parse(shown.out).as_object();
  CHECK(entry.at("original").as_string() == "not json");
  CHECK(entry.at("attributes").at("peer").as_string() == peer);
  CHECK(tank.stop() == 0);
}

TEST_CASE("tank check --explain shows each input's pipeline", "[integration][processing][check]") {
  TempDir dir;
  write_file(dir / "schema.json", schema_with_max(200));
  const auto config = write_test_config(
      dir, fmt::format("[[inputs.tcp]]\nname = \"plant\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
                       "[[inputs.file]]\nname = \"logs\"\npaths = [\"/var/log/x.log\"]\n\n"
                       "[[processors.validate]]\nname = \"contract\"\ninputs = [\"plant\"]\nschema = \"{}\"\n\n"
                       "[[processors.aggregate]]\nname = \"minute\"\ninputs = [\"plant\"]\nwindow = \"1m\"\n"
                       "time_field = \"ts\"\ngroup_by = [\"device\"]\nfields = {{ temp = [\"min\", \"max\"] }}\n",
                       (dir / "schema.json").string()));
  auto r = run({tank_binary(), "check", "-c", config.string(), "--explain"});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("input \"plant\" (tcp, format json)") != std::string::npos);
  CHECK(r.out.find("validate \"contract\"") != std::string::npos);
  CHECK(r.out.find("aggregate \"minute\"") != std::string::npos);
  CHECK(r.out.find("input \"logs\" (file, format text)") != std::string::npos);
  // logs flows through neither processor.
  const auto logs = r.out.find("input \"logs\"");
  const auto logs_block = r.out.substr(logs, r.out.find("input \"", logs + 1) - logs);
  CHECK(logs_block.find("contract") == std::string::npos);
  CHECK(logs_block.find("minute") == std::string::npos);

  // A processor that reads fields refuses an input that is not JSON, and unknown inputs.
  const auto bad = write_test_config(
      dir,
      "[[inputs.file]]\nname = \"logs\"\npaths = [\"/var/log/x.log\"]\n\n"
      "[[processors.aggregate]]\nwindow = \"1m\"\ntime_field = \"ts\"\nfields = { temp = [\"mean\"] }\n\n"
      "[[processors.validate]]\ninputs = [\"plnat\"]\nmax_record_bytes = \"1KiB\"\n",
      "bad.toml");
  r = run({tank_binary(), "check", "-c", bad.string()});
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("input \"logs\" has format = \"text\"") != std::string::npos);
  CHECK(r.err.find("no input is named \"plnat\"") != std::string::npos);
  // An unknown function is named with the closest one.
  const auto unknown = write_test_config(
      dir,
      "[[inputs.tcp]]\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
      "[[processors.aggregate]]\nwindow = \"1m\"\ntime_field = \"ts\"\nfields = { temp = [\"mean\", \"median\"] }\n",
      "unknown.toml");
  r = run({tank_binary(), "check", "-c", unknown.string()});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("got \"median\" (did you mean \"mean\"?)") != std::string::npos);
  // A record may be in at most 1000 hopping windows.
  const auto dense = write_test_config(
      dir,
      "[[inputs.tcp]]\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
      "[[processors.aggregate]]\nwindow = \"1h\"\nhop = \"1s\"\ntime_field = \"ts\"\nfields = { temp = [\"mean\"] }\n",
      "dense.toml");
  r = run({tank_binary(), "check", "-c", dense.string()});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("window / hop is 3600") != std::string::npos);
}

TEST_CASE("aggregate: hopping windows, late = pass and idle_timeout in the running agent", "[integration][processing][aggregate]") {
  TempDir dir;
  const auto data = dir / "data";
  const auto config = write_test_config(
      dir, "[[inputs.tcp]]\nname = \"sensors\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
           "[[processors.aggregate]]\nname = \"agg\"\nwindow = \"10s\"\nhop = \"5s\"\ntime_field = \"ts\"\n"
           "time_format = \"unix_ms\"\ngroup_by = [\"device\"]\nfields = { v = [\"count\", \"sum\"] }\n"
           "late = \"pass\"\nidle_timeout = \"2s\"\n");
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(data);
  constexpr std::int64_t base = 1798761600000;  // 2027-01-01T00:00:00Z, a multiple of 10 s
  auto rec = [](std::int64_t ts, int v) { return fmt::format(R"({{"device":"a","ts":{},"v":{}}})", ts, v); };
  // 12 s moves the watermark past the windows ending at 5 s and 10 s; the record at 1 s then
  // belongs only to closed windows: late, passed on as it is. The rest closes when idle.
  const std::string late = rec(base + 1000, 100);
  int fd = tcp_connect(input_address(data, "sensors"));
  REQUIRE(fd >= 0);
  REQUIRE(send_all(fd, rec(base + 1000, 1) + "\n" + rec(base + 6000, 2) + "\n" + rec(base + 12000, 4) + "\n" + late +
                           "\n"));
  ::close(fd);

  std::vector<StoredRecord> derived;
  REQUIRE(wait_until([&] {
    derived.clear();
    for (auto& r : records_in(data / "queue")) {
      if (r.derived) derived.push_back(std::move(r));
    }
    return derived.size() == 5;
  }, std::chrono::seconds(30)));
  // Hopping windows of 10 s every 5 s: (start s, count, sum), in the order they closed.
  struct Want {
    std::string start, end;
    std::int64_t count, sum;
  };
  const Want want[] = {{"2026-12-31T23:59:55Z", "2027-01-01T00:00:05Z", 1, 1},
                       {"2027-01-01T00:00:00Z", "2027-01-01T00:00:10Z", 2, 3},
                       {"", "", 0, 0},  // the late record, passed
                       {"2027-01-01T00:00:05Z", "2027-01-01T00:00:15Z", 2, 6},
                       {"2027-01-01T00:00:10Z", "2027-01-01T00:00:20Z", 1, 4}};
  for (std::size_t i = 0; i < derived.size(); ++i) {
    INFO(i << ": " << derived[i].payload);
    CHECK(derived[i].input == "sensors");
    CHECK(derived[i].attributes.at("processor") == "agg");
    if (want[i].start.empty()) {
      CHECK(derived[i].payload == late);
      CHECK(derived[i].attributes.at("late") == "true");
      continue;
    }
    auto o = boost::json::parse(derived[i].payload).as_object();
    CHECK(o.at("window_start").as_string() == want[i].start);
    CHECK(o.at("window_end").as_string() == want[i].end);
    CHECK(o.at("count").to_number<std::int64_t>() == want[i].count);
    CHECK(o.at("device").as_string() == "a");
    CHECK(o.at("v_count").to_number<std::int64_t>() == want[i].count);
    CHECK(o.at("v_sum").to_number<double>() == static_cast<double>(want[i].sum));
  }
  CHECK(dead_letters_in(data).empty());

  const std::string scraped = scrape(metrics);
  CHECK(metric_value(scraped, R"(tank_processor_records_in_total{processor="agg",type="aggregate"})") == 4);
  CHECK(metric_value(scraped, R"(tank_processor_records_out_total{processor="agg",type="aggregate"})") == 5);
  CHECK(metric_value(scraped, R"(tank_processor_late_records_total{processor="agg",type="aggregate"})") == 1);
  CHECK(metric_value(scraped, R"(tank_processor_windows_open{processor="agg",type="aggregate"})") == 0);
  CHECK(tank.stop() == 0);
}

TEST_CASE("aggregate: a window of a large fleet closes over several commits", "[integration][processing][aggregate]") {
  // 20,000 devices in one window: some 3 MB of aggregates, more than one commit may hold with
  // max_disk_bytes = 64 MiB (1 MiB). The stage emits them in chunks with a commit in between.
  TempDir dir;
  const auto data = dir / "data";
  const auto config = write_test_config(
      dir, "[queue]\nmax_disk_bytes = \"64MiB\"\n\n"
           "[[inputs.tcp]]\nname = \"fleet\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
           "[[processors.aggregate]]\nname = \"agg\"\nwindow = \"10s\"\ntime_field = \"ts\"\n"
           "time_format = \"unix_ms\"\ngroup_by = [\"device\"]\n"
           "fields = { temperature_celsius = [\"min\", \"max\", \"mean\", \"stddev\"] }\n");
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(data);
  constexpr std::int64_t base = 1798761600000;
  constexpr int kDevices = 20000;
  std::string lines;
  for (int i = 0; i < kDevices; ++i) {
    lines += fmt::format(R"({{"device":"gateway-plant-{:06d}","ts":{},"temperature_celsius":{}.5}})", i, base + i % 9000,
                         i % 40) + "\n";
  }
  lines += fmt::format(R"({{"device":"clock","ts":{},"temperature_celsius":1}})", base + 25000) + "\n";
  int fd = tcp_connect(input_address(data, "fleet"));
  REQUIRE(fd >= 0);
  REQUIRE(send_all(fd, lines));
  ::close(fd);
  std::size_t derived = 0;
  CHECK(wait_until([&] {
    derived = 0;
    for (const auto& r : records_in(data / "queue")) derived += r.derived ? 1 : 0;
    return derived == kDevices;
  }, std::chrono::seconds(60)));
  CHECK(derived == kDevices);
  const std::string scraped = scrape(metrics);
  CHECK(metric_value(scraped, R"(tank_processor_records_out_total{processor="agg",type="aggregate"})") == kDevices);
  CHECK(metric_value(scraped, R"(tank_processor_windows_open{processor="agg",type="aggregate"})") == 1);
  CHECK(tank.process().err().find("failed") == std::string::npos);
  CHECK(tank.stop() == 0);
}

TEST_CASE("deadband, dedup and throttle in a chain: the output gets what the last one passes on",
          "[integration][processing][deadband][dedup][throttle]") {
  TempDir dir;
  const auto data = dir / "data";
  const auto out = dir / "out";
  const auto config = write_test_config(
      dir, fmt::format("[[inputs.tcp]]\nname = \"sensors\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
                       "[[inputs.tcp]]\nname = \"logs\"\nlisten = \"127.0.0.1:0\"\nformat = \"text\"\n\n"
                       "[[processors.deadband]]\nname = \"db\"\ninputs = [\"sensors\"]\nfields = [\"temp\"]\n"
                       "group_by = [\"device\"]\nabsolute = 1\n\n"
                       "[[processors.dedup]]\nname = \"dd\"\ninputs = [\"sensors\"]\nfields = [\"device\", \"temp\"]\n\n"
                       "[[processors.throttle]]\nname = \"th\"\nrate = 2\nper = \"1h\"\ngroup_by = []\nmode = \"drop\"\n\n"
                       "[[outputs.file]]\ndirectory = \"{}\"\ncompression = \"none\"\nlinger = \"10ms\"\n",
                       out.string()));
  auto r = run({tank_binary(), "check", "-c", config.string(), "--explain"});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("as consumer \"processor/th\"; reads what \"dd\" passes on)") != std::string::npos);
  CHECK(r.out.find("as consumer \"processor/th\"; reads the records committed)") != std::string::npos);  // logs

  TankProcess tank(config);
  const std::string metrics = tank.wait_running(data);
  auto rec = [](const char* device, double temp) { return fmt::format(R"({{"device":"{}","temp":{}}})", device, temp); };
  int fd = tcp_connect(input_address(data, "sensors"));
  REQUIRE(fd >= 0);
  // deadband passes a 10, a 12, a 10 (moved 2 from 12), b 5, b 7; dedup drops the second a 10;
  // throttle (2 per hour per input) passes a 10 and a 12 and drops b 5 and b 7.
  REQUIRE(send_all(fd, rec("a", 10) + "\n" + rec("a", 10.5) + "\n" + rec("a", 12) + "\n" + rec("a", 10) + "\n" +
                           rec("b", 5) + "\n" + rec("b", 7) + "\n"));
  ::close(fd);
  fd = tcp_connect(input_address(data, "logs"));
  REQUIRE(fd >= 0);
  REQUIRE(send_all(fd, "first line\nsecond line\nthird line\n"));
  ::close(fd);

  std::vector<boost::json::object> got;
  REQUIRE(wait_until([&] {
    const std::string scraped = scrape(metrics);
    return metric_value(scraped, R"(tank_processor_records_in_total{processor="th",type="throttle"})") == 7;
  }, std::chrono::seconds(30)));
  REQUIRE(wait_until([&] {
    got = json_records_in(out);
    return got.size() == 4;
  }, std::chrono::seconds(30)));
  std::multiset<std::string> texts;
  for (const auto& o : got) texts.insert(boost::json::serialize(o));
  // The text input's lines keep their format through the stage: {"message": ...}, not bare text.
  CHECK(texts == std::multiset<std::string>{R"({"device":"a","temp":10})", R"({"device":"a","temp":12})",
                                            R"({"message":"first line"})", R"({"message":"second line"})"});
  const std::string scraped = scrape(metrics);
  CHECK(metric_value(scraped, R"(tank_processor_dropped_records_total{processor="db",reason="deadband",type="deadband"})") == 1);
  CHECK(metric_value(scraped, R"(tank_processor_dropped_records_total{processor="dd",reason="duplicate",type="dedup"})") == 1);
  CHECK(metric_value(scraped, R"(tank_processor_dropped_records_total{processor="th",reason="rate_limit",type="throttle"})") == 3);
  CHECK(dead_letters_in(data).empty());
  CHECK(tank.stop() == 0);
}

TEST_CASE("tank check refuses bad deadband, dedup and throttle options with their place", "[integration][processing][check]") {
  TempDir dir;
  // Values out of range or of the wrong kind...
  const auto bad = write_test_config(
      dir,
      "[[inputs.tcp]]\nname = \"s\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
      "[[processors.deadband]]\nfields = [\"temp\"]\npercent = -1\n\n"
      "[[processors.dedup]]\nwindow = \"0s\"\n\n"
      "[[processors.throttle]]\nmode = \"wait\"\n");
  auto r = run({tank_binary(), "check", "-c", bad.string()});
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("processors.deadband[0].percent: must be at least 0, got -1") != std::string::npos);
  CHECK(r.err.find("processors.dedup[0].window: must be at least 1ms, got 0s") != std::string::npos);
  CHECK(r.err.find("processors.throttle[0].rate: required option is missing") != std::string::npos);
  CHECK(r.err.find("processors.throttle[0].mode: expected one of \"hold\" or \"drop\", got \"wait\"") != std::string::npos);
  // ...then what the values mean together, and with the inputs.
  const auto meaning = write_test_config(
      dir,
      "[[inputs.tcp]]\nname = \"s\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
      "[[inputs.tcp]]\nname = \"t\"\nlisten = \"127.0.0.1:0\"\n\n"
      "[[processors.deadband]]\ninputs = [\"s\"]\nfields = [\"*\", \"temp\"]\n\n"
      "[[processors.dedup]]\ninputs = [\"s\"]\nfields = [\"a..b\"]\n\n"
      "[[processors.throttle]]\ninputs = [\"t\"]\nrate = 5\n",
      "meaning.toml");
  r = run({tank_binary(), "check", "-c", meaning.string()});
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("processors.deadband[0].fields: \"*\" watches every field") != std::string::npos);
  CHECK(r.err.find("processors.dedup[0].fields[0]: \"a..b\" is not a field path") != std::string::npos);
  // throttle reads fields with group_by: a text input is refused.
  const auto text = write_test_config(
      dir,
      "[[inputs.tcp]]\nname = \"t\"\nlisten = \"127.0.0.1:0\"\n\n"
      "[[processors.throttle]]\nrate = 5\ngroup_by = [\"device\"]\n",
      "text.toml");
  r = run({tank_binary(), "check", "-c", text.string()});
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("throttle \"throttle\" reads fields of JSON records, but input \"t\" has format = \"text\"") !=
        std::string::npos);
}
