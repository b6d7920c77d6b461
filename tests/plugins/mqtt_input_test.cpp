// inputs.mqtt in-process against a real mosquitto: records and attributes, the persistent
// session, backpressure that holds messages at the broker, reconnects, dead letters. TLS and the
// failure paths are in mqtt_failure_test.cpp.

#include <catch2/catch.hpp>

#include <algorithm>
#include <set>

#include <mqtt/async_client.h>

#include "mqtt/broker_uri.hpp"
#include "support/input_helpers.hpp"
#include "support/mosquitto.hpp"

using namespace tank;
using namespace tank::test;

namespace {

std::string mqtt_config(const Mosquitto& broker, const std::string& extra = "",
                        const std::string& client_id = "tank-test") {
  return "[[inputs.mqtt]]\nname = \"plant\"\nservers = [\"" + broker.uri() + "\"]\nclient_id = \"" + client_id +
         "\"\nreconnect_min = \"20ms\"\nreconnect_max = \"200ms\"\n" + extra;
}

std::vector<std::string> numbered(int from, int to, const std::string& prefix = "m-") {
  std::vector<std::string> out;
  for (int i = from; i < to; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

bool connected(InputRig& rig) {
  return wait_until([&] {
    return counter(rig.registry, "tank_input_connections{input=\"plant\",type=\"mqtt\"}") == 1;
  });
}

}  // namespace

TEST_CASE("mqtt: QoS 1 and QoS 0 messages become records with their topic", "[input][mqtt]") {
  Mosquitto broker;
  InputRig rig(mqtt_config(broker, "topics = [\"sensors/#\"]\ntopics_qos0 = [\"status/+\"]\n"),
               input_queue_options("q"));
  rig.input->start();
  REQUIRE(connected(rig));
  REQUIRE(publish_all(broker.uri(), "sensors/a/temp", numbered(0, 50)) == 50);
  REQUIRE(publish_all(broker.uri(), "status/gw1", {"online"}, 0) == 1);
  REQUIRE(publish_all(broker.uri(), "elsewhere", {"not subscribed"}) == 1);
  REQUIRE(wait_until([&] { return rig.queue->stats().records == 51; }));
  auto all = rig.queue->read(0, {1000, 1 << 20});
  std::vector<std::string> qos1;
  for (const auto& r : all.records()) {
    CHECK(r.input == "plant");
    if (r.attribute("topic") == "status/gw1") {
      CHECK(r.payload == "online");
    } else {
      CHECK(r.attribute("topic") == "sensors/a/temp");
      qos1.push_back(std::string(r.payload));
    }
  }
  CHECK(qos1 == numbered(0, 50));  // in order
  CHECK(counter(rig.registry, "tank_input_records_total{input=\"plant\",type=\"mqtt\"}") == 51);
}

TEST_CASE("mqtt: the persistent session keeps what is published while tank is away", "[input][mqtt]") {
  Mosquitto broker;
  TempDir qdir;
  auto options = input_queue_options(qdir / "q");
  options.dir = qdir / "q";
  {
    InputRig rig(mqtt_config(broker, "topics = [\"t\"]\n"), options);
    rig.input->start();
    REQUIRE(connected(rig));
  }
  REQUIRE(publish_all(broker.uri(), "t", numbered(0, 200)) == 200);
  InputRig rig(mqtt_config(broker, "topics = [\"t\"]\n"), options);
  rig.input->start();
  REQUIRE(wait_until([&] { return rig.queue->stats().records == 200; }));
  CHECK(all_payloads(*rig.queue) == numbered(0, 200));
}

TEST_CASE("mqtt: MQTT 5 with a session expiry keeps the session too", "[input][mqtt]") {
  Mosquitto broker;
  TempDir qdir;
  auto options = input_queue_options(qdir / "q");
  options.dir = qdir / "q";
  const std::string extra = "topics = [\"v5/#\"]\nprotocol_version = \"5\"\nsession_expiry = \"1h\"\n";
  {
    InputRig rig(mqtt_config(broker, extra), options);
    rig.input->start();
    REQUIRE(connected(rig));
  }
  REQUIRE(publish_all(broker.uri(), "v5/x", numbered(0, 20)) == 20);
  InputRig rig(mqtt_config(broker, extra), options);
  rig.input->start();
  REQUIRE(wait_until([&] { return rig.queue->stats().records == 20; }));
  CHECK(all_payloads(*rig.queue) == numbered(0, 20));
}

TEST_CASE("mqtt: a full queue holds messages at the broker, and a stop leaves them unacknowledged",
          "[input][mqtt][backpressure]") {
  Mosquitto broker;
  auto options = input_queue_options("q");
  options.max_disk_bytes = 256 << 10;
  const std::string pad(2000, 'p');
  std::vector<std::string> payloads = numbered(0, 400, "big-" + pad + "-");
  std::set<std::string> stored;
  {
    InputRig rig(mqtt_config(broker, "topics = [\"big\"]\n"), options);
    rig.connect_pressure();
    rig.input->start();
    REQUIRE(connected(rig));
    REQUIRE(publish_all(broker.uri(), "big", payloads) == payloads.size());
    REQUIRE(wait_until([&] { return rig.queue->blocked(); }));
    for (const auto& p : all_payloads(*rig.queue)) stored.insert(p);
    CHECK(stored.size() < payloads.size());
    CHECK(counter(rig.registry, "tank_input_paused{input=\"plant\",type=\"mqtt\"}") == 1);
    // The rig stops the input while it holds messages it could not commit: they were never
    // acknowledged, so the broker still has them.
  }
  // A second run with room takes over the session and gets everything the first did not store.
  InputRig rig(mqtt_config(broker, "topics = [\"big\"]\n"), input_queue_options("q"));
  rig.input->start();
  REQUIRE(wait_until([&] {
    std::set<std::string> all = stored;
    for (const auto& p : all_payloads(*rig.queue)) all.insert(p);
    return all.size() == payloads.size();
  }, std::chrono::seconds(60)));
}

TEST_CASE("mqtt: a broker restart is followed by a reconnect and the subscription", "[input][mqtt]") {
  Mosquitto broker;
  InputRig rig(mqtt_config(broker, "topics = [\"r\"]\n"), input_queue_options("q"));
  rig.input->start();
  REQUIRE(connected(rig));
  REQUIRE(publish_all(broker.uri(), "r", {"before"}) == 1);
  REQUIRE(wait_until([&] { return rig.queue->stats().records == 1; }));
  broker.stop();
  REQUIRE(wait_until([&] {
    return counter(rig.registry, "tank_input_connections{input=\"plant\",type=\"mqtt\"}") == 0;
  }));
  broker.start();
  REQUIRE(connected(rig));
  REQUIRE(publish_all(broker.uri(), "r", {"after"}) == 1);
  REQUIRE(wait_until([&] { return rig.queue->stats().records == 2; }));
  CHECK(all_payloads(*rig.queue) == std::vector<std::string>{"before", "after"});
  CHECK(counter(rig.registry, "tank_input_errors_total{input=\"plant\",reason=\"connection_lost\",type=\"mqtt\"}") ==
        1);
}

TEST_CASE("mqtt: a broker that is not there yet is connected to once it is", "[input][mqtt]") {
  Mosquitto broker;
  broker.stop();
  InputRig rig(mqtt_config(broker, "topics = [\"late\"]\n"), input_queue_options("q"));
  rig.input->start();  // does not fail: the broker may come later
  REQUIRE(wait_until([&] {
    return counter(rig.registry, "tank_input_errors_total{input=\"plant\",reason=\"connect_failed\",type=\"mqtt\"}") >=
           2;
  }));
  broker.start();
  REQUIRE(connected(rig));
  REQUIRE(publish_all(broker.uri(), "late", {"hello"}) == 1);
  REQUIRE(wait_until([&] { return rig.queue->stats().records == 1; }));
}

TEST_CASE("mqtt: a message over max_message_bytes is dead-lettered and acknowledged", "[input][mqtt]") {
  Mosquitto broker;
  InputRig rig(mqtt_config(broker, "topics = [\"d\"]\nmax_message_bytes = \"1KiB\"\n"), input_queue_options("q"));
  rig.input->start();
  REQUIRE(connected(rig));
  REQUIRE(publish_all(broker.uri(), "d", {std::string(5000, 'x'), "small"}) == 2);
  REQUIRE(wait_until([&] { return rig.queue->stats().records == 1; }));
  REQUIRE(wait_until([&] { return rig.queue->dead_letter_stats().entries == 1; }));
  auto letter = rig.queue->dead_letters({}).at(0).letter;
  CHECK(letter.reason == "message_too_large");
  CHECK(letter.input == "plant");
  CHECK(letter.original_size == 5000);
  CHECK(letter.detail.find("topic \"d\"") != std::string::npos);
}

TEST_CASE("mqtt: a broker URI's port is checked however long it is, never with an exception", "[input][mqtt]") {
  for (const std::string uri : {"tcp://h:123456789012345678901", "tcp://h:99999999999", "tcp://h:65536", "tcp://h:0",
                                "tcp://h:", "tcp://h:12a", "mqtts://[::1]:184467440737095516160"}) {
    INFO(uri);
    std::string error;
    CHECK_FALSE(input::parse_broker_uri(uri, error));
    CHECK(error.find("has no valid port") != std::string::npos);
  }
  std::string error;
  auto ok = input::parse_broker_uri("tcp://h:65535", error);
  REQUIRE(ok);
  CHECK(ok->port == "65535");
}

TEST_CASE("mqtt: a message larger than the read buffer is skipped while read and dead-lettered", "[input][mqtt]") {
  Mosquitto broker;
  InputRig rig(mqtt_config(broker, "topics = [\"huge\"]\nmax_message_bytes = \"1KiB\"\n"), input_queue_options("q"));
  rig.input->start();
  REQUIRE(connected(rig));
  // 300 KiB: well over max_message_bytes + 64 KiB, so it is never held whole.
  REQUIRE(publish_all(broker.uri(), "huge", {std::string(300 * 1024, 'h'), "after"}) == 2);
  REQUIRE(wait_until([&] { return rig.queue->stats().records == 1; }));
  CHECK(all_payloads(*rig.queue) == std::vector<std::string>{"after"});
  REQUIRE(wait_until([&] { return rig.queue->dead_letter_stats().entries == 1; }));
  auto letter = rig.queue->dead_letters({}).at(0).letter;
  CHECK(letter.reason == "message_too_large");
  CHECK(letter.original_size == 300 * 1024);
  CHECK(letter.original.size() == queue::kMaxDeadLetterBytes);
  CHECK(letter.detail.find("topic \"huge\"") != std::string::npos);
}
