// outputs.kafka's librdkafka properties (plugins/outputs_kafka/kafka_properties.hpp): what tank
// sets for its guarantees, the TLS and SASL mapping, the user's additions, and that librdkafka
// itself accepts every one of them (a misspelt property name would only show at start-up).

#include <catch2/catch.hpp>

#include <map>

#include <librdkafka/rdkafka.h>

#include "outputs_kafka/kafka_properties.hpp"

using namespace tank::plugins::kafka;

namespace {

std::map<std::string, std::string> as_map(const Properties& p) {
  std::map<std::string, std::string> m;
  for (const auto& [k, v] : p) m[k] = v;  // later ones win, as in rd_kafka_conf_set
  return m;
}

// Sets every property on a fresh librdkafka configuration; "" when all were accepted.
std::string librdkafka_refusal(const Properties& p) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  std::string refused;
  char message[512];
  for (const auto& [k, v] : p) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), message, sizeof message) != RD_KAFKA_CONF_OK) {
      refused += k + ": " + message + "\n";
    }
  }
  rd_kafka_conf_destroy(conf);
  return refused;
}

}  // namespace

TEST_CASE("outputs.kafka properties: the guarantees, the bounds from the batch, TLS and SASL, all accepted by librdkafka",
          "[kafka][config]") {
  KafkaSettings s;
  s.brokers = {"k1:9093", "k2:9093"};
  s.compression = "gzip";
  s.security_protocol = "sasl_ssl";
  s.sasl_mechanism = "SCRAM-SHA-512";
  s.username = "gw";
  s.password = "pw";
  s.tls.ca_file = "/etc/tank/ca.pem";
  s.tls.verify = false;
  s.delivery_timeout = std::chrono::seconds(45);
  s.batch_max_records = 2000;
  s.batch_max_bytes = 1 << 20;
  s.librdkafka = {{"linger.ms", "20"}, {"compression.codec", "lz4"}};
  const Properties p = producer_properties(s, "tank-gw-fleet");
  const auto m = as_map(p);
  CHECK(m.at("bootstrap.servers") == "k1:9093,k2:9093");
  CHECK(m.at("client.id") == "tank-gw-fleet");
  CHECK(m.at("enable.idempotence") == "true");
  CHECK(m.at("acks") == "all");
  CHECK(m.at("max.in.flight.requests.per.connection") == "5");
  CHECK(m.at("message.timeout.ms") == "45000");
  CHECK(m.at("queue.buffering.max.messages") == "2000");  // one batch, no second buffer
  CHECK(m.at("queue.buffering.max.kbytes") == "1275");   // (1 MiB + 2000 x 128 B) / 1024 + 1
  CHECK(m.at("security.protocol") == "sasl_ssl");
  CHECK(m.at("sasl.mechanisms") == "SCRAM-SHA-512");
  CHECK(m.at("sasl.username") == "gw");
  CHECK(m.at("ssl.ca.location") == "/etc/tank/ca.pem");
  CHECK(m.at("enable.ssl.certificate.verification") == "false");
  CHECK(m.at("linger.ms") == "20");               // the user's, set after tank's 5
  CHECK(m.at("compression.codec") == "lz4");      // the user's codec over compression = "gzip"
  CHECK(librdkafka_refusal(p).empty());
  // Plaintext: no SASL or TLS property at all.
  KafkaSettings plaintext;
  plaintext.brokers = {"k:9092"};
  const auto plain = as_map(producer_properties(plaintext, "c"));
  CHECK(plain.count("sasl.username") == 0);
  CHECK(plain.count("ssl.ca.location") == 0);
  CHECK(plain.at("compression.codec") == "zstd");
}

TEST_CASE("outputs.kafka properties: the user may not change what the guarantees rest on", "[kafka][config]") {
  for (const char* refused : {"acks", "enable.idempotence", "retries", "queue.buffering.max.messages",
                              "message.timeout.ms", "transactional.id", "bootstrap.servers"}) {
    INFO(refused);
    const auto why = refusal(refused);
    REQUIRE(why);
    CHECK_FALSE(why->empty());
  }
  CHECK_FALSE(refusal("socket.keepalive.enable"));
  CHECK_FALSE(refusal("linger.ms"));
  // producer_properties leaves a refused one out (tank check has said so before start).
  KafkaSettings s;
  s.brokers = {"k:9092"};
  s.librdkafka = {{"acks", "0"}, {"socket.keepalive.enable", "true"}};
  const auto m = as_map(producer_properties(s, "c"));
  CHECK(m.at("acks") == "all");
  CHECK(m.at("socket.keepalive.enable") == "true");
}
