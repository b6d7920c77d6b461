// outputs.kafka: one Kafka message per record through librdkafka, idempotent, acknowledged by
// every in-sync replica, counted as delivered only from the delivery reports
// (kafka_producer.hpp); what tank sets in librdkafka and why (kafka_properties.hpp).

#include <fmt/format.h>
#include <librdkafka/rdkafka.h>

#include "kafka_producer.hpp"
#include "kafka_properties.hpp"
#include "plugin/registry.hpp"
#include "plugin/tls_options.hpp"

namespace tank::plugins {
namespace {

using S = kafka::KafkaSettings;

constexpr std::string_view kSecurityProtocols[] = {"plaintext", "ssl", "sasl_plaintext", "sasl_ssl"};
constexpr std::string_view kSaslMechanisms[] = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"};

const config::Options<S> kOptions{
    config::string_list("brokers", &S::brokers)
        .required()
        .describe("Bootstrap brokers, host:port, e.g. [\"kafka-1:9092\", \"kafka-2:9092\"]."),
    config::string("topic", &S::topic)
        .default_value("tank.{agent_id}")
        .describe("The topic of every record; {agent_id}, {output} and {input} (the record's input) are replaced."),
    config::string("key_field", &S::key_field)
        .default_value("")
        .describe("A top-level field of JSON records used as the message key (e.g. the device id), so one "
                  "device's records stay in order in one partition. A string is the key as it is, another "
                  "value its JSON text. Empty, or a record without it: no key (librdkafka's partitioner)."),
    config::choice("security_protocol", kSecurityProtocols, &S::security_protocol)
        .default_value("plaintext")
        .describe("plaintext, ssl (TLS, and mutual TLS with tls_cert_file), sasl_plaintext or sasl_ssl."),
    config::choice("sasl_mechanism", kSaslMechanisms, &S::sasl_mechanism)
        .default_value("PLAIN")
        .describe("With sasl_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."),
    config::string("username", &S::username).default_value("").describe("With sasl_*: the SASL user name."),
    config::string("password", &S::password).default_value("").describe("With sasl_*: the SASL password.").secret(),
    config::nested(&S::tls, plugin::tls_client_bindings()),
    config::duration("delivery_timeout", &S::delivery_timeout)
        .default_value("30s")
        .describe("How long a message may wait for Kafka's acknowledgement (librdkafka's message.timeout.ms). "
                  "Past it the whole batch is sent again under the same keys.")
        .min("1s")
        .max("1h"),
    config::duration("stop_timeout", &S::stop_timeout)
        .default_value("5s")
        .describe("At shutdown, how long a batch being sent may still wait for its acknowledgements; what is "
                  "not acknowledged by then stays in the queue and is sent after the restart.")
        .min("0s")
        .max("5m"),
    config::property_table("librdkafka", &S::librdkafka)
        .default_value("{}")
        .describe("Other librdkafka properties, as a table [outputs.kafka.librdkafka] after the output's own "
                  "options (linger.ms = 20, compression.level = 6, \"batch.size\" = 1000000). Those tank sets for "
                  "its guarantees are refused with the reason; librdkafka checks the others."),
};

void check(const config::SectionValues& v, config::Diagnostics& diagnostics) {
  if (v.has("brokers") && v.strings("brokers").empty()) {
    diagnostics.error(v.location_of("brokers"), v.path() + ".brokers", "give at least one broker (host:port)");
  }
  if (v.string("topic").empty()) diagnostics.error(v.location_of("topic"), v.path() + ".topic", "the topic must not be empty");
  plugin::check_topic_template(v, diagnostics, "topic");
  // Each extra property: name=value, not one tank sets, and one librdkafka knows with a value it takes.
  rd_kafka_conf_t* scratch = rd_kafka_conf_new();
  for (const auto& [name, value] : v.property_table("librdkafka")) {
    std::string error;
    char message[512];
    if (auto why = kafka::refusal(name)) {
      error = fmt::format("cannot be set here: {}", *why);
    } else if (rd_kafka_conf_set(scratch, name.c_str(), value.c_str(), message, sizeof message) != RD_KAFKA_CONF_OK) {
      error = message;
    }
    if (!error.empty()) {
      diagnostics.error(v.location_of("librdkafka"), fmt::format("{}.librdkafka.{}", v.path(), name), error);
    }
  }
  rd_kafka_conf_destroy(scratch);
  if (v.choice("security_protocol").starts_with("sasl") && v.string("username").empty()) {
    diagnostics.error(v.location_of("security_protocol"), v.path() + ".username",
                      "security_protocol = \"" + v.choice("security_protocol") + "\" needs username and password");
  }
  plugin::check_tls_client_options(v, diagnostics);
}

const config::Section kSection{
    .path = "outputs.kafka",
    .summary = "Sends every record as one Kafka message (librdkafka, idempotent producer, acks = all), counted as "
               "delivered only from Kafka's delivery reports; headers idempotency-key and tank-record "
               "(\"<batch key>#<index>\") let a consumer drop duplicates exactly. compression (zstd, gzip, none) is "
               "Kafka's codec; for lz4 or snappy set compression.codec = \"lz4\" in [outputs.kafka.librdkafka].",
    .options = kOptions.all(),
    .common = plugin::output_common_options(),
    .repeated = true,
    .check = check,
};

std::unique_ptr<plugin::Output> create(const config::SectionValues& v, const plugin::OutputContext& context) {
  S settings = kOptions.read(v);
  settings.compression = v.choice("compression");
  settings.batch_max_records = static_cast<std::size_t>(v.integer("batch_max_records"));
  settings.batch_max_bytes = static_cast<std::size_t>(v.size("batch_max_bytes"));
  settings.batches_in_flight = context.instances;
  return kafka::make_kafka_output(settings, context);
}

}  // namespace

void register_outputs_kafka(plugin::Registry& registry) {
  registry.add({.kind = plugin::Kind::output,
                .name = "kafka",
                .section = &kSection,
                .summary = "one Kafka message per record, idempotent, acknowledged by the delivery reports",
                .create_output = create,
                .sends_records = true,
                .hands_off_in_order = true,
                // Four batches awaited at once through the one producer: queue order kept, and the
                // next batches are read, keyed and queued in librdkafka while Kafka answers.
                .default_max_in_flight = 4});
}

}  // namespace tank::plugins
