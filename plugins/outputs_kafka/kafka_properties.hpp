#pragma once

// The librdkafka properties of outputs.kafka: what tank sets so that a batch counts as delivered
// only when Kafka has every message of it, with librdkafka's own queue bounded to the batch in
// flight, and the checks on the properties a user adds (a table `[outputs.kafka.librdkafka]`,
// `linger.ms = 20`).
//
// Set by tank (a user cannot change them, and `tank check` says why):
//   enable.idempotence = true, acks = all      ordered, deduplicated retries within a producer
//                                              session; acknowledged by every in-sync replica
//   max.in.flight.requests.per.connection = 5  the most idempotence allows
//   queue.buffering.max.messages / .kbytes     from batch_max_records / batch_max_bytes times
//                                              max_in_flight: librdkafka never holds more than the
//                                              batches being sent, tank's queue is the buffer
//   message.timeout.ms                         from delivery_timeout: librdkafka gives up on a
//                                              message only with a delivery report tank sees
//   bootstrap.servers, security.protocol,      from brokers and the TLS and SASL options
//   sasl.username, sasl.password
// compression.codec comes from the output's compression (zstd, gzip, none); a user's
// compression.codec = "lz4" (or snappy) overrides it.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/tls.hpp"
#include "config/document.hpp"

namespace tank::plugins::kafka {

struct KafkaSettings {
  std::vector<std::string> brokers;             // host:port, ...
  std::string topic;                            // {agent_id}, {output}, {input} not yet replaced
  std::string key_field;                        // a top-level field of JSON records; "": no key
  std::string compression = "zstd";             // zstd, gzip, none (the output's common option)
  std::string security_protocol = "plaintext";  // plaintext, ssl, sasl_plaintext, sasl_ssl
  std::string sasl_mechanism = "PLAIN";         // PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
  std::string username;
  std::string password;
  tls::ClientSettings tls;
  std::chrono::milliseconds delivery_timeout{30000};
  std::chrono::milliseconds stop_timeout{5000};
  config::PropertyTable librdkafka;      // other librdkafka properties: name, value
  std::size_t batch_max_records = 10000;  // the output's common options
  std::size_t batch_max_bytes = 4 << 20;
  unsigned batches_in_flight = 1;  // the output's max_in_flight: batches librdkafka may hold at once
};

using Properties = std::vector<std::pair<std::string, std::string>>;

// Why a user may not set property `name` (one tank sets for its guarantees); nullopt when they may.
std::optional<std::string_view> refusal(std::string_view name);

// Every property of a producer for `settings`, in the order to set them (the user's last).
// `client_id`: "tank-<agent id>-<output>[-<instance>]".
Properties producer_properties(const KafkaSettings& settings, const std::string& client_id);

}  // namespace tank::plugins::kafka
