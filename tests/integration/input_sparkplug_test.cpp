// inputs.mqtt as a Sparkplug B host application, against edge nodes made of the Eclipse Tahu
// JavaScript client (tests/sparkplug/edge.js, npm sparkplug-client 3.2.4 / sparkplug-payload
// 1.0.3) through a real mosquitto: every type Tahu encodes, data by alias, deaths, STATE online
// and offline, a seq gap answered by a rebirth, and kill -9 between a birth and its data.

#include <catch2/catch.hpp>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <csignal>
#include <map>
#include <sstream>

#include "support/input_helpers.hpp"
#include "support/mosquitto.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;
namespace json = boost::json;

namespace {

const std::string kSparkplugDir = TANK_SOURCE_DIR "/tests/sparkplug";

// The npm packages of tests/sparkplug, installed once (tests/sparkplug/setup.sh: npm ci when missing).
void install_peer() {
  static const bool installed = [] {
    const auto r = run({"/bin/sh", kSparkplugDir + "/setup.sh"}, {}, std::chrono::seconds(300));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return true;
  }();
  (void)installed;
}

// An edge node (tests/sparkplug/edge.js) playing `scenario`.
std::unique_ptr<Process> edge(const Mosquitto& broker, const std::string& node, const std::string& scenario,
                              std::map<std::string, std::string> env = {}) {
  install_peer();
  return std::make_unique<Process>(std::vector<std::string>{"/usr/bin/env", "node", kSparkplugDir + "/edge.js",
                                                            fmt::format("mqtt://127.0.0.1:{}", broker.port()),
                                                            "plant1", node, "tank-host", scenario},
                                   std::move(env));
}

std::string config_for(const TempDir& dir, const Mosquitto& broker, const std::string& extra = "") {
  return fmt::format(
      "[[inputs.mqtt]]\nname = \"plant\"\nservers = [\"{}\"]\ntopics = [\"spBv1.0/#\"]\nformat = \"sparkplug_b\"\n"
      "host_id = \"tank-host\"\nclient_id = \"tank-plant\"\nkeep_alive = \"5s\"\n{}\n"
      "[[outputs.file]]\nname = \"out\"\ndirectory = \"{}\"\ncompression = \"none\"\nbatch_max_records = 100\n"
      "linger = \"10ms\"\n",
      broker.uri(), extra, (dir / "out").string());
}

// Every record the file output wrote (support/input_helpers.hpp).
std::vector<json::object> records(const TempDir& dir) { return json_records_in(dir / "out"); }

std::vector<json::object> of_message(const std::vector<json::object>& all, std::string_view message) {
  std::vector<json::object> out;
  for (const auto& r : all) {
    if (r.at("message").as_string() == message) out.push_back(r);
  }
  return out;
}

const json::object* find(const std::vector<json::object>& rs, std::string_view metric) {
  for (const auto& r : rs) {
    if (r.at("metric").as_string() == metric) return &r;
  }
  return nullptr;
}

bool printed(Process& p, const std::string& line) { return p.out().find(line) != std::string::npos; }

double events(const std::string& metrics, const std::string& event) {
  return metric_value(scrape(metrics),
                      fmt::format(R"(tank_input_sparkplug_events_total{{event="{}",input="plant"}})", event))
      .value_or(0);
}

// The STATE messages a subscriber saw, as JSON.
std::vector<json::object> states(const MqttCollector& c) {
  std::vector<json::object> out;
  for (const auto& m : c.messages()) out.push_back(json::parse(m.payload).as_object());
  return out;
}

}  // namespace

TEST_CASE("Sparkplug B: every Tahu type, data by alias, deaths, and STATE online then offline",
          "[integration][inputs][mqtt][sparkplug]") {
  Mosquitto broker;
  MqttCollector state(broker.uri(), "spBv1.0/STATE/tank-host", 4);
  TempDir dir;
  TankProcess tank(write_test_config(dir, config_for(dir, broker)));
  const std::string metrics = tank.wait_running(dir / "data");
  // Online once subscribed, retained.
  REQUIRE(wait_until([&] { return !states(state).empty(); }, std::chrono::seconds(20)));
  const auto online = states(state).front();
  CHECK(online.at("online").as_bool() == true);
  const std::int64_t stamp = online.at("timestamp").as_int64();

  auto node = edge(broker, "n1", "types");
  REQUIRE(wait_until([&] { return printed(*node, "done"); }, std::chrono::seconds(30)));
  INFO("edge node: " << node->out() << node->err());
  // NBIRTH 21 + bdSeq, DBIRTH 2, NDATA 21, DDATA 2, DDEATH 2 stale, NDEATH 22 stale.
  std::vector<json::object> all;
  REQUIRE(wait_until([&] {
    all = records(dir);
    return all.size() >= 71;
  }, std::chrono::seconds(30)));
  CHECK(all.size() == 71);
  const auto data = of_message(all, "NDATA");
  REQUIRE(data.size() == 21);
  auto value = [&](std::string_view metric) -> json::value {
    const json::object* r = find(data, metric);
    REQUIRE(r != nullptr);
    return r->at("value");
  };
  // Named by alias only: the names, types and values come from the birth and the payload.
  CHECK(value("int8") == json::value(-100));
  CHECK(value("int16") == json::value(-30000));
  CHECK(value("int32") == json::value(-2000000000));
  CHECK(value("int64") == json::value(-9000000000LL));
  CHECK(value("uint8") == json::value(250));
  CHECK(value("uint16") == json::value(65000));
  CHECK(value("uint32").to_number<std::uint64_t>() == 4000000000ULL);
  CHECK(value("uint64").to_number<std::uint64_t>() == 9000000000000ULL);
  CHECK(value("float").to_number<double>() == 1.5);
  CHECK(value("double").to_number<double>() == -2.25);
  CHECK(value("boolean") == json::value(true));
  CHECK(value("string") == json::value("grüße"));
  CHECK(value("datetime").to_number<std::uint64_t>() == 1700000000123ULL);
  CHECK(value("text") == json::value("a longer text"));
  CHECK(value("uuid") == json::value("123e4567-e89b-12d3-a456-426614174000"));
  CHECK(value("bytes") == json::value("AAEC/f7/"));
  CHECK(json::serialize(value("dataset")) ==
        R"({"columns":["a","b"],"types":["Int32","String"],"rows":[[1,"x"],[2,"y"]]})");
  const json::value tmpl = value("template");
  INFO("template: " << json::serialize(tmpl));
  CHECK(tmpl.at("template_ref") == json::value("Motor"));
  CHECK(tmpl.at("metrics").at(0).at("name") == json::value("rpm"));
  CHECK(tmpl.at("metrics").at(0).at("value") == json::value(1500));
  CHECK(value("nothing").is_null());
  CHECK(find(data, "nothing")->at("is_null") == json::value(true));
  const json::object* props = find(data, "with_properties");
  REQUIRE(props != nullptr);
  INFO("with properties: " << json::serialize(*props));
  CHECK(props->at("properties").at("engUnit") == json::value("°C"));
  const json::object* historical = find(data, "historical");
  REQUIRE(historical != nullptr);
  CHECK(historical->at("is_historical") == json::value(true));
  CHECK(historical->at("timestamp").to_number<std::int64_t>() == 1600000000000);
  for (const auto& r : data) {
    CHECK(r.at("group") == json::value("plant1"));
    CHECK(r.at("edge_node") == json::value("n1"));
    CHECK(r.at("device").is_null());
    CHECK(r.at("alias").is_number());
    CHECK(r.at("stale") == json::value(false));
  }
  CHECK(find(data, "int8")->at("datatype") == json::value("Int8"));
  const auto ddata = of_message(all, "DDATA");
  REQUIRE(ddata.size() == 2);
  CHECK(find(ddata, "temp")->at("value").to_number<double>() == 21.5);
  CHECK(find(ddata, "count")->at("value").to_number<std::uint64_t>() == 42);
  CHECK(find(ddata, "count")->at("device") == json::value("d1"));
  // Deaths mark every metric stale.
  const auto ddeath = of_message(all, "DDEATH");
  CHECK(ddeath.size() == 2);
  const auto ndeath = of_message(all, "NDEATH");
  CHECK(ndeath.size() == 22);
  for (const auto& r : ndeath) {
    CHECK(r.at("stale") == json::value(true));
    CHECK(r.at("value").is_null());
  }
  CHECK(events(metrics, "node_birth") == 1);
  CHECK(events(metrics, "device_birth") == 1);
  CHECK(events(metrics, "device_death") == 1);
  CHECK(events(metrics, "node_death") == 1);
  CHECK(events(metrics, "seq_gap") == 0);
  CHECK(events(metrics, "unknown_alias") == 0);
  CHECK(events(metrics, "state_message") >= 1);  // its own STATE: recognised, not decoded
  CHECK(metric_value(scrape(metrics), R"(tank_dead_letters_total{input="plant",reason="sparkplug_bad_payload"})")
            .value_or(0) == 0);

  // A stop says offline first, with the online message's timestamp.
  CHECK(tank.stop() == 0);
  REQUIRE(wait_until([&] { return states(state).size() >= 2; }, std::chrono::seconds(10)));
  const auto offline = states(state).back();
  CHECK(offline.at("online").as_bool() == false);
  CHECK(offline.at("timestamp").as_int64() == stamp);
}

TEST_CASE("Sparkplug B: kill -9 between a birth and its data, the aliases still resolve after the restart",
          "[integration][inputs][mqtt][sparkplug]") {
  Mosquitto broker;
  MqttCollector state(broker.uri(), "spBv1.0/STATE/tank-host", 4);
  TempDir dir;
  const auto config = write_test_config(dir, config_for(dir, broker));
  auto tank = std::make_unique<TankProcess>(config);
  tank->wait_running(dir / "data");
  auto births = edge(broker, "n2", "births");
  REQUIRE(births->wait(std::chrono::seconds(30)) == 0);
  INFO("edge node: " << births->out() << births->err());
  REQUIRE(printed(*births, "births seq 2"));
  REQUIRE(wait_until([&] { return records(dir).size() >= 24; }, std::chrono::seconds(30)));
  tank->process().signal(SIGKILL);
  tank->process().wait();
  // The broker publishes the will: offline.
  REQUIRE(wait_until([&] {
    const auto s = states(state);
    return !s.empty() && s.back().at("online").as_bool() == false;
  }, std::chrono::seconds(20)));

  tank = std::make_unique<TankProcess>(config);
  const std::string metrics = tank->wait_running(dir / "data");
  auto data = edge(broker, "n2", "data", {{"EDGE_SEQ", "2"}});
  REQUIRE(data->wait(std::chrono::seconds(30)) == 0);
  std::vector<json::object> all;
  REQUIRE(wait_until([&] {
    all = records(dir);
    return of_message(all, "NDATA").size() >= 21 && of_message(all, "DDATA").size() >= 2;
  }, std::chrono::seconds(30)));
  const auto ndata = of_message(all, "NDATA");
  REQUIRE(find(ndata, "int16") != nullptr);
  CHECK(find(ndata, "int16")->at("value") == json::value(-30000));
  CHECK(find(of_message(all, "DDATA"), "temp") != nullptr);
  // The sequence numbers were kept too: no gap, nothing unresolved.
  CHECK(events(metrics, "seq_gap") == 0);
  CHECK(events(metrics, "unknown_alias") == 0);
  CHECK(events(metrics, "no_birth") == 0);
  CHECK(tank->stop() == 0);
}

TEST_CASE("Sparkplug B: a seq gap asks the node for a rebirth, which it answers",
          "[integration][inputs][mqtt][sparkplug]") {
  Mosquitto broker;
  TempDir dir;
  TankProcess tank(write_test_config(dir, config_for(dir, broker, "rebirth = true\nrebirth_interval = \"100ms\"\n")));
  const std::string metrics = tank.wait_running(dir / "data");
  auto node = edge(broker, "n3", "gap");
  REQUIRE(wait_until([&] { return printed(*node, "rebirth answered"); }, std::chrono::seconds(30)));
  INFO("edge node: " << node->out() << node->err());
  REQUIRE(wait_until([&] { return of_message(records(dir), "NBIRTH").size() >= 44; }, std::chrono::seconds(30)));
  CHECK(events(metrics, "seq_gap") >= 1);
  CHECK(events(metrics, "rebirth_requested") >= 1);
  CHECK(events(metrics, "command_message") >= 1);  // its own NCMD, passed over
  CHECK(tank.stop() == 0);
}

TEST_CASE("Sparkplug B: historical metrics pass the aggregate stage marked, not dead-lettered as late",
          "[integration][inputs][mqtt][sparkplug]") {
  Mosquitto broker;
  TempDir dir;
  TankProcess tank(write_test_config(
      dir, config_for(dir, broker) +
               "\n[[processors.aggregate]]\nname = \"minute\"\ninputs = [\"plant\"]\nwindow = \"1m\"\n"
               "time_field = \"timestamp\"\ntime_format = \"unix_ms\"\ngroup_by = [\"metric\"]\n"
               "fields = { value = [\"count\"] }\nidle_timeout = \"200ms\"\n"));
  const std::string metrics = tank.wait_running(dir / "data");
  auto node = edge(broker, "n4", "types");
  REQUIRE(wait_until([&] { return printed(*node, "done"); }, std::chrono::seconds(30)));
  // The metric "historical" (is_historical, a 2020 timestamp) is in the NBIRTH and the NDATA:
  // both are late for the windows of today's data, and both pass, marked.
  std::vector<json::object> passed;
  REQUIRE(wait_until([&] {
    passed.clear();
    for (const auto& r : records(dir)) {
      // Records, not the aggregates (which carry "metric" too, as their group).
      if (r.contains("is_historical") && r.at("metric") == json::value("historical")) passed.push_back(r);
    }
    return passed.size() >= 2;
  }, std::chrono::seconds(30)));
  CHECK(passed.size() == 2);
  for (const auto& r : passed) CHECK(r.at("is_historical") == json::value(true));
  const std::string scraped = scrape(metrics);
  CHECK(metric_value(scraped, R"(tank_processor_late_records_total{processor="minute",type="aggregate"})") == 2);
  CHECK(metric_value(scraped, R"(tank_dead_letters_total{input="plant",reason="late"})").value_or(0) == 0);
  CHECK(tank.stop() == 0);
}

TEST_CASE("Sparkplug B options: tank check names what is wrong", "[integration][inputs][mqtt][sparkplug]") {
  TempDir dir;
  const auto config = write_test_config(
      dir,
      "[[inputs.mqtt]]\nservers = [\"tcp://127.0.0.1:1883\"]\ntopics = [\"spBv1.0/#\"]\nhost_id = \"a/b\"\n"
      "rebirth = true\n\n[[outputs.file]]\ndirectory = \"" + (dir / "out").string() + "\"\n");
  auto r = run({tank_binary(), "check", "-c", config.string()});
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("inputs.mqtt[0].host_id: host_id is a Sparkplug B option: set format = \"sparkplug_b\"") !=
        std::string::npos);
  CHECK(r.err.find("\"a/b\" cannot be a Sparkplug host id") != std::string::npos);
  CHECK(r.err.find("inputs.mqtt[0].rebirth: rebirth is a Sparkplug B option") != std::string::npos);
}
