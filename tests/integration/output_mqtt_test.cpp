// outputs.mqtt against a real mosquitto (tests/support/mosquitto.hpp) and a real subscriber
// (Paho): MQTT 5 user properties and 3.1.1 envelopes, topics per input, a topic the broker does
// not authorize (dead-lettered), TLS with verification and mutual TLS, configuration errors.

#include <catch2/catch.hpp>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <map>
#include <set>
#include <sstream>

#include "queue/queue.hpp"
#include "support/http_upstream.hpp"
#include "support/input_helpers.hpp"
#include "support/mosquitto.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

std::string file_input(const TempDir& dir, const std::string& name, const std::string& format, int first, int count) {
  std::string text;
  for (int i = first; i < first + count; ++i) {
    text += (format == "json" ? fmt::format(R"({{"n":{}}})", i) : fmt::format("line {}", i)) + "\n";
  }
  write_file(dir / (name + ".log"), text);
  return fmt::format(
      "[[inputs.file]]\nname = \"{}\"\npaths = [\"{}\"]\nformat = \"{}\"\nread_from = \"beginning\"\n"
      "poll_interval = \"50ms\"\n\n",
      name, (dir / (name + ".log")).string(), format);
}

std::string mqtt_output(const std::string& servers, const std::string& extra) {
  return fmt::format(
      "[[outputs.mqtt]]\nname = \"cloud\"\nservers = [\"{}\"]\nbatch_max_records = 300\nlinger = \"0s\"\n"
      "retry_initial = \"20ms\"\nretry_max = \"200ms\"\nbreaker_failures = 1000\n{}\n",
      servers, extra);
}

// A batch as the subscriber got it: its key and its records, from MQTT 5 properties or the
// 3.1.1 envelope.
struct Batch {
  std::string key;
  std::string content_type;
  std::string encoding;
  std::size_t records = 0;
  std::vector<std::string> lines;
};

Batch decode(const MqttCollector::Message& m, int version) {
  Batch b;
  std::string body = m.payload;
  if (version == 5) {
    b.key = m.user_property("idempotency-key");
    b.content_type = m.content_type;
    b.encoding = m.user_property("content-encoding");
    b.records = std::stoul(m.user_property("records"));
  } else {
    const auto newline = body.find('\n');
    REQUIRE(newline != std::string::npos);
    const auto envelope = boost::json::parse(body.substr(0, newline)).as_object();
    b.key = std::string(envelope.at("idempotency_key").as_string());
    b.content_type = std::string(envelope.at("content_type").as_string());
    if (envelope.contains("content_encoding")) b.encoding = std::string(envelope.at("content_encoding").as_string());
    b.records = static_cast<std::size_t>(envelope.at("records").as_int64());
    body = body.substr(newline + 1);
  }
  std::istringstream in(decompress_body(b.encoding, body));
  for (std::string line; std::getline(in, line);) b.lines.push_back(line);
  return b;
}

std::set<int> numbers(const std::vector<MqttCollector::Message>& messages, int version) {
  std::set<int> seen;
  for (const auto& m : messages) {
    for (const auto& line : decode(m, version).lines) {
      seen.insert(static_cast<int>(boost::json::parse(line).at("n").as_int64()));
    }
  }
  return seen;
}

double metric(const std::string& address, const std::string& sample) {
  return metric_value(scrape(address), sample).value_or(-1);
}

}  // namespace

TEST_CASE("outputs.mqtt with MQTT 5: QoS 1 batches with the idempotency-key user property and a topic per input",
          "[integration][outputs][mqtt]") {
  Mosquitto broker;
  MqttCollector collector(broker.uri(), "tank/#", 5);
  TempDir dir;
  const auto config = write_test_config(
      dir, file_input(dir, "plant", "json", 0, 2000) + file_input(dir, "syslog", "text", 0, 500) +
               mqtt_output(broker.uri(), "topic = \"tank/{agent_id}/{output}/{input}\"\n"));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  auto lines = [&] {
    std::size_t n = 0;
    for (const auto& m : collector.messages()) n += decode(m, 5).lines.size();
    return n;
  };
  CHECK(wait_until([&] { return lines() >= 2500; }, std::chrono::seconds(60)));
  CHECK(metric(metrics, R"(tank_output_records_total{output="cloud",result="delivered",type="mqtt"})") == 2500);
  CHECK(tank.stop() == 0);
  INFO(tank.process().err());
  std::set<int> plant;
  std::size_t syslog = 0;
  std::set<std::string> keys;
  for (const auto& m : collector.messages()) {
    const Batch b = decode(m, 5);
    CHECK(keys.insert(b.key).second);  // no failures here: no key twice
    CHECK(b.key.starts_with("test-agent/cloud/"));
    CHECK(b.content_type == "application/x-ndjson");
    CHECK(b.encoding == "zstd");
    CHECK(b.records == b.lines.size());
    CHECK(b.records <= 300);
    if (m.topic == "tank/test-agent/cloud/plant") {
      for (const auto& l : b.lines) plant.insert(static_cast<int>(boost::json::parse(l).at("n").as_int64()));
    } else {
      CHECK(m.topic == "tank/test-agent/cloud/syslog");  // each batch holds one input
      for (const auto& l : b.lines) CHECK(l.starts_with("{\"message\":\"line "));
      syslog += b.lines.size();
    }
  }
  CHECK(plant.size() == 2000);
  CHECK(syslog == 500);
}

TEST_CASE("outputs.mqtt with MQTT 3.1.1: the idempotency key in the envelope line before the body",
          "[integration][outputs][mqtt]") {
  Mosquitto broker;
  MqttCollector collector(broker.uri(), "batches/#", 4);
  TempDir dir;
  const auto config = write_test_config(
      dir, file_input(dir, "plant", "json", 0, 1000) +
               mqtt_output(broker.uri(), "protocol_version = \"3.1.1\"\ntopic = \"batches/{agent_id}\"\n"
                                         "compression = \"gzip\"\nencoding = \"json_array\"\n"));
  TankProcess tank(config);
  tank.wait_running(dir / "data");
  auto count = [&] {
    std::size_t n = 0;
    for (const auto& m : collector.messages()) {
      const Batch b = decode(m, 4);
      for (const auto& l : b.lines) n += boost::json::parse(l).as_array().size();
    }
    return n;
  };
  CHECK(wait_until([&] { return count() >= 1000; }, std::chrono::seconds(60)));
  CHECK(tank.stop() == 0);
  for (const auto& m : collector.messages()) {
    CHECK(m.topic == "batches/test-agent");
    const Batch b = decode(m, 4);
    CHECK(b.key.starts_with("test-agent/cloud/"));
    CHECK(b.content_type == "application/json");
    CHECK(b.encoding == "gzip");
  }
}

TEST_CASE("outputs.mqtt: a topic the broker does not authorize is dead-lettered (MQTT 5 PUBACK 0x87) and the rest "
          "is delivered",
          "[integration][outputs][mqtt]") {
  TempDir acl_dir;
  write_file(acl_dir / "acl", "topic readwrite tank/test-agent/cloud/plant\ntopic read tank/#\n");
  Mosquitto broker("acl_file " + (acl_dir / "acl").string() + "\n");
  MqttCollector collector(broker.uri(), "tank/#", 5);
  TempDir dir;
  const auto config = write_test_config(
      dir, file_input(dir, "plant", "json", 0, 600) + file_input(dir, "secret", "text", 0, 100) +
               mqtt_output(broker.uri(), "topic = \"tank/{agent_id}/{output}/{input}\"\n"));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  CHECK(wait_until([&] { return numbers(collector.messages(), 5).size() == 600; }, std::chrono::seconds(60)));
  CHECK(wait_until([&] {
    return metric(metrics, R"(tank_output_records_total{output="cloud",result="rejected",type="mqtt"})") == 100;
  }));
  CHECK(tank.stop() == 0);
  INFO(tank.process().err());
  CHECK(tank.process().err().find("PUBACK reason code 0x87 (Not authorized)") != std::string::npos);
  ManualClock clock;
  auto q = queue::Queue::open_read_only(dir / "data" / "queue", clock);
  queue::DeadLetterQuery query;
  query.limit = 1000;
  const auto letters = q->dead_letters(query);
  REQUIRE(letters.size() == 100);
  for (const auto& d : letters) {
    CHECK(d.letter.reason == "upstream_rejected");
    CHECK(d.letter.input == "secret");
    CHECK(d.letter.detail.find("0x87") != std::string::npos);
  }
}

TEST_CASE("outputs.mqtt over TLS: a broker certificate from another CA is reported and retried and mutual TLS delivers",
          "[integration][outputs][mqtt][tls]") {
  TempDir pki;
  TestCa ca(pki / "ca", "tank-test-ca");
  TestCa other(pki / "other", "another-ca");
  const auto server = ca.issue_server("broker", {"DNS:localhost", "IP:127.0.0.1"});
  const auto client = ca.issue_client("gw-0042");
  Mosquitto broker("", Mosquitto::Tls{ca.ca_file(), server.cert_file, server.key_file, true});
  MqttCollector collector(broker.plain_uri(), "tank/#", 5);
  TempDir dir;
  const std::string input = file_input(dir, "plant", "json", 0, 500);
  {
    TankProcess tank(write_test_config(
        dir, input + mqtt_output(broker.uri(), fmt::format("tls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\n"
                                                           "tls_key_file = \"{}\"\n",
                                                           other.ca_file().string(), client.cert_file.string(),
                                                           client.key_file.string()))));
    const std::string metrics = tank.wait_running(dir / "data");
    CHECK(wait_until([&] {
      return metric(metrics, R"(tank_output_batches_total{output="cloud",result="retried",type="mqtt"})") >= 2;
    }));
    CHECK(tank.stop() == 0);
    INFO(tank.process().err());
    CHECK(tank.process().err().find("certificate verify failed") != std::string::npos);
    CHECK(tank.process().err().find("is the broker's certificate signed by a CA in tls_ca_file") != std::string::npos);
    CHECK(collector.messages().empty());
  }
  TankProcess tank(write_test_config(
      dir, input + mqtt_output(broker.uri(), fmt::format("tls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\n"
                                                         "tls_key_file = \"{}\"\n",
                                                         ca.ca_file().string(), client.cert_file.string(),
                                                         client.key_file.string()))));
  tank.wait_running(dir / "data");
  CHECK(wait_until([&] { return numbers(collector.messages(), 5).size() == 500; }, std::chrono::seconds(60)));
  CHECK(tank.stop() == 0);
  INFO(tank.process().err());
}

TEST_CASE("outputs.mqtt: configuration errors say what is wrong", "[integration][outputs][mqtt]") {
  TempDir dir;
  const auto config = write_test_config(dir,
                                        "[[inputs.tcp]]\nlisten = \"127.0.0.1:0\"\n\n"
                                        "[[outputs.mqtt]]\nname = \"a\"\nservers = [\"http://x\"]\n\n"
                                        "[[outputs.mqtt]]\nname = \"b\"\nservers = [\"tcp://x\"]\ntopic = \"t/#\"\n\n"
                                        "[[outputs.mqtt]]\nname = \"c\"\nservers = [\"tcp://x\"]\ntopic = \"t/{host}\"\n\n"
                                        "[[outputs.mqtt]]\nname = \"d\"\nservers = []\n");
  auto r = run({tank_binary(), "check", "-c", config.string()});
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("\"http://x\" is not a broker URI") != std::string::npos);
  CHECK(r.err.find("\"t/#\" is not a topic to publish to") != std::string::npos);
  CHECK(r.err.find("only {agent_id}, {output} and {input} may appear in braces") != std::string::npos);
  CHECK(r.err.find("give at least one broker") != std::string::npos);
}

TEST_CASE("outputs.mqtt: a broker that stops answering gets publish_timeout and the batch goes again on a new "
          "connection",
          "[integration][outputs][mqtt]") {
  Mosquitto broker;
  MqttCollector collector(broker.uri(), "tank/#", 5);
  TempDir dir;
  const auto config = write_test_config(
      dir, file_input(dir, "plant", "json", 0, 100) +
               mqtt_output(broker.uri(), "publish_timeout = \"500ms\"\nconnect_timeout = \"1s\"\n"));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  // The session is up and idle before the broker hangs: the next batch is published into it.
  REQUIRE(wait_until([&] { return numbers(collector.messages(), 5).size() == 100; }, std::chrono::seconds(30)));
  {
    PausedBroker hung(broker);  // SIGSTOP: connections stay open, nothing is answered
    std::string more;
    for (int i = 100; i < 300; ++i) more += fmt::format(R"({{"n":{}}})", i) + "\n";
    append_file(dir / "plant.log", more);
    CHECK(wait_until([&] {
      return tank.process().err().find("no PUBACK within 500 ms") != std::string::npos ||
             tank.process().err().find("connecting to") != std::string::npos;
    }));
    CHECK(metric(metrics, R"(tank_output_batches_total{output="cloud",result="retried",type="mqtt"})") >= 1);
  }
  CHECK(wait_until([&] { return numbers(collector.messages(), 5).size() == 300; }, std::chrono::seconds(60)));
  CHECK(tank.stop() == 0);
  INFO(tank.process().err());
  // Every key that came twice carried the same content.
  std::map<std::string, std::string> content;
  for (const auto& m : collector.messages()) {
    auto [it, fresh] = content.emplace(m.user_property("idempotency-key"), m.payload);
    if (!fresh) CHECK(it->second == m.payload);
  }
}
