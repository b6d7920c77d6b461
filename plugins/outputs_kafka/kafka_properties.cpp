#include "kafka_properties.hpp"

#include <algorithm>
#include <array>

#include <fmt/format.h>

namespace tank::plugins::kafka {
namespace {

struct Refused {
  std::string_view name;
  std::string_view why;
};

// What tank sets itself, with the reason a user may not change it.
constexpr std::array kRefused{
    Refused{"enable.idempotence", "tank keeps it on: retries within a producer session are neither reordered nor duplicated"},
    Refused{"acks", "tank sends with acks = all: a message counts once every in-sync replica has it"},
    Refused{"request.required.acks", "tank sends with acks = all: a message counts once every in-sync replica has it"},
    Refused{"max.in.flight.requests.per.connection", "idempotence allows at most 5; tank sets 5"},
    Refused{"max.in.flight", "idempotence allows at most 5; tank sets 5"},
    Refused{"retries", "librdkafka's retries must stay on for idempotence; tank retries batches itself"},
    Refused{"message.send.max.retries", "librdkafka's retries must stay on for idempotence; tank retries batches itself"},
    Refused{"queue.buffering.max.messages", "tank bounds librdkafka's queue to the batches in flight (batch_max_records x max_in_flight)"},
    Refused{"queue.buffering.max.kbytes", "tank bounds librdkafka's queue to the batches in flight (batch_max_bytes x max_in_flight)"},
    Refused{"message.timeout.ms", "use delivery_timeout"},
    Refused{"delivery.timeout.ms", "use delivery_timeout"},
    Refused{"transactional.id", "outputs.kafka does not use transactions (idempotence and tank-record headers instead)"},
    Refused{"enable.gapless.guarantee", "tank resends a batch that failed; a gap stops nothing"},
    Refused{"queuing.strategy", "only FIFO keeps a device's records in order"},
    Refused{"bootstrap.servers", "use brokers"},
    Refused{"metadata.broker.list", "use brokers"},
    Refused{"security.protocol", "use security_protocol"},
    Refused{"sasl.username", "use username"},
    Refused{"sasl.password", "use password (or password_file)"},
    Refused{"dr_cb", "tank reads the delivery reports"},
    Refused{"dr_msg_cb", "tank reads the delivery reports"},
};

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) {
    if (!out.empty()) out += ',';
    out += p;
  }
  return out;
}

}  // namespace

std::optional<std::string_view> refusal(std::string_view name) {
  auto refused = std::find_if(kRefused.begin(), kRefused.end(), [&](const Refused& r) { return r.name == name; });
  if (refused == kRefused.end()) return std::nullopt;
  return refused->why;
}

Properties producer_properties(const KafkaSettings& s, const std::string& client_id) {
  Properties p;
  p.emplace_back("bootstrap.servers", join(s.brokers));
  p.emplace_back("client.id", client_id);
  p.emplace_back("enable.idempotence", "true");
  p.emplace_back("acks", "all");
  p.emplace_back("max.in.flight.requests.per.connection", "5");
  p.emplace_back("compression.codec", s.compression);
  p.emplace_back("message.timeout.ms", std::to_string(s.delivery_timeout.count()));
  // librdkafka holds at most the batches in flight (records and bytes, with room for its own
  // per-message overhead); a produce beyond that returns QUEUE_FULL and waits for reports.
  const std::size_t batches = std::max(s.batches_in_flight, 1U);
  p.emplace_back("queue.buffering.max.messages", std::to_string(std::max<std::size_t>(s.batch_max_records, 1) * batches));
  p.emplace_back("queue.buffering.max.kbytes",
                 std::to_string(std::max<std::size_t>(
                     batches * ((s.batch_max_bytes + s.batch_max_records * 128) / 1024 + 1), 1024)));
  p.emplace_back("linger.ms", "5");
  // Per-broker state and round-trip time for tank's metrics (tank_output_kafka_broker_*).
  p.emplace_back("statistics.interval.ms", "5000");
  p.emplace_back("security.protocol", s.security_protocol);
  if (s.security_protocol.starts_with("sasl")) {
    p.emplace_back("sasl.mechanisms", s.sasl_mechanism);
    p.emplace_back("sasl.username", s.username);
    p.emplace_back("sasl.password", s.password);
  }
  if (s.security_protocol == "ssl" || s.security_protocol == "sasl_ssl") {
    if (!s.tls.ca_file.empty()) p.emplace_back("ssl.ca.location", s.tls.ca_file);
    if (!s.tls.cert_file.empty()) p.emplace_back("ssl.certificate.location", s.tls.cert_file);
    if (!s.tls.key_file.empty()) p.emplace_back("ssl.key.location", s.tls.key_file);
    if (!s.tls.key_password.empty()) p.emplace_back("ssl.key.password", s.tls.key_password);
    p.emplace_back("enable.ssl.certificate.verification", s.tls.verify ? "true" : "false");
    p.emplace_back("ssl.endpoint.identification.algorithm", s.tls.verify ? "https" : "none");
  }
  for (const auto& [name, value] : s.librdkafka) {
    if (!refusal(name)) p.emplace_back(name, value);
  }
  return p;
}

}  // namespace tank::plugins::kafka
