// inputs.mqtt: messages from MQTT brokers, each committed before the broker gets its PUBACK
// (see mqtt_source.hpp).

#include <fmt/format.h>

#include "mqtt/broker_uri.hpp"
#include "mqtt_source.hpp"
#include "plugin/mqtt_options.hpp"
#include "plugin/registry.hpp"
#include "plugin/tls_options.hpp"

namespace tank::plugins {
namespace {

using S = input::MqttSourceSettings;
namespace mqtt = plugin::mqtt_options;

constexpr std::string_view kFormats[] = {"json", "text", "raw", "sparkplug_b"};

const config::Options<S> kOptions{
    config::Option{.name = "format",
                   .type = config::Type::choice,
                   .default_value = "\"json\"",
                   .description =
                       "How each message is decoded before it is committed: \"json\" (one JSON value; anything else "
                       "goes to the dead-letter store with reason `decode_error`), \"text\" (UTF-8), \"raw\" (any "
                       "bytes), or \"sparkplug_b\": tank is a Sparkplug B host application (Eclipse Sparkplug 3.0) and "
                       "each metric of NBIRTH, DBIRTH, NDATA and DDATA becomes a JSON record {group, edge_node, "
                       "device, metric, alias, timestamp, datatype, value, is_null, is_historical, seq, message, "
                       "stale}; NDEATH / DDEATH give stale records; aliases and sequence numbers are kept in the "
                       "queue with the records (docs/inputs.md, \"Sparkplug B\").",
                   .choices = kFormats},
    mqtt::servers(&S::servers)
        .describe("Broker URIs, tried in order (failover): `tcp://host:1883` or `mqtt://host` (port 1883), "
                  "`ssl://host:8883` or `mqtts://host` (TLS, port 8883). IPv6: `tcp://[::1]:1883`."),
    mqtt::client_id(&S::client_id)
        .describe("The MQTT client id; the broker keeps the session under it, so it must be stable and unique per "
                  "broker. Empty: `tank-<agent id>-<input name>`."),
    mqtt::protocol_version(&S::protocol_version)
        .default_value("3.1.1")
        .describe("MQTT protocol version: \"3.1.1\" or \"5\"."),
    config::string_list("topics", &S::topics_qos1)
        .default_value("[]")
        .describe("Topic filters (wildcards `+` and `#` allowed) subscribed at QoS 1: each message is committed "
                  "to the queue before the broker gets its PUBACK. The topic is kept as the `topic` attribute "
                  "(and `retained = \"true\"` for retained messages)."),
    config::string_list("topics_qos0", &S::topics_qos0)
        .default_value("[]")
        .describe("Topic filters subscribed at QoS 0 (at most once: the broker does not keep these messages for "
                  "tank, and does not resend them)."),
    config::boolean("clean_session", &S::clean_session)
        .default_value(false)
        .describe("false: a persistent session, so the broker keeps QoS 1 messages while tank is away "
                  "(MQTT 5: for session_expiry). true: every connect starts afresh."),
    config::duration("session_expiry", &S::session_expiry)
        .default_value("7d")
        .describe("MQTT 5: how long the broker keeps the session after a disconnect.")
        .min("0")
        .max("24855d"),
    mqtt::keep_alive(&S::keep_alive),
    mqtt::connect_timeout(&S::connect_timeout),
    mqtt::username(&S::username),
    mqtt::password(&S::password),
    config::duration("reconnect_min", &S::reconnect_min)
        .default_value("500ms")
        .describe("The first delay before reconnecting; it doubles per failed attempt up to reconnect_max, with "
                  "random jitter so that a fleet does not reconnect in step.")
        .min("10ms")
        .max("1h"),
    config::duration("reconnect_max", &S::reconnect_max)
        .default_value("60s")
        .describe("The longest delay between reconnect attempts.")
        .min("10ms")
        .max("1h"),
    config::size("max_message_bytes", &S::max_message_bytes)
        .default_value("1MiB")
        .describe("Larger messages go to the dead-letter store with reason `message_too_large` (first 64 KiB "
                  "kept) and are acknowledged.")
        .min("1B")
        .max("256MiB"),
    config::string("host_id", &S::host_id)
        .default_value("\"\"")
        .describe("With format = \"sparkplug_b\": the Sparkplug host id. tank then publishes the retained STATE "
                  "message {\"online\": true} on spBv1.0/STATE/<host_id> once its subscriptions are granted, with "
                  "{\"online\": false} as its MQTT will, so edge nodes that name this host as their primary buffer "
                  "while tank is away. Empty: no STATE (tank only listens)."),
    config::boolean("rebirth", &S::rebirth)
        .default_value(false)
        .describe("With format = \"sparkplug_b\": on a gap in a node's seq, an alias its birth did not define, "
                  "or data from a node or device not born, publish the NCMD \"Node Control/Rebirth\" = true to "
                  "that edge node (this writes to the plant: opt in). Off: such messages are only counted and "
                  "dead-lettered."),
    config::duration("rebirth_interval", &S::rebirth_interval)
        .default_value("10s")
        .describe("With rebirth = true: the least time between two rebirth requests to one edge node.")
        .min("100ms")
        .max("1d"),
    config::nested(&S::tls, plugin::tls_client_bindings()),
};

void check(const config::SectionValues& values, config::Diagnostics& diagnostics) {
  const std::string path = values.path();
  if (values.strings("servers").empty()) {
    diagnostics.error(values.location_of("servers"), path + ".servers", "give at least one broker URI");
  }
  for (const auto& uri : values.strings("servers")) {
    std::string error;
    if (!input::parse_broker_uri(uri, error)) diagnostics.error(values.location_of("servers"), path + ".servers", error);
  }
  if (values.strings("topics").empty() && values.strings("topics_qos0").empty()) {
    diagnostics.error(values.location_of("topics"), path + ".topics",
                      "subscribe to at least one topic filter (topics, or topics_qos0)");
  }
  for (const char* key : {"topics", "topics_qos0"}) {
    for (const auto& filter : values.strings(key)) {
      const auto hash = filter.find('#');
      bool bad = filter.empty() || (hash != std::string::npos && hash != filter.size() - 1) ||
                 (hash != std::string::npos && hash > 0 && filter[hash - 1] != '/');
      for (std::size_t i = 0; !bad && i < filter.size(); ++i) {
        if (filter[i] == '+') {
          bad = (i > 0 && filter[i - 1] != '/') || (i + 1 < filter.size() && filter[i + 1] != '/');
        }
      }
      if (bad) {
        diagnostics.error(values.location_of(key), path + "." + key,
                          fmt::format("\"{}\" is not a valid topic filter: `#` may only end it (after a `/`), `+` "
                                      "must fill a whole level",
                                      filter));
      }
    }
  }
  if (values.duration("reconnect_min") > values.duration("reconnect_max")) {
    diagnostics.error(values.location_of("reconnect_min"), path + ".reconnect_min",
                      "reconnect_min is longer than reconnect_max");
  }
  const bool sparkplug = values.choice("format") == "sparkplug_b";
  if (!sparkplug) {
    for (const char* key : {"host_id", "rebirth", "rebirth_interval"}) {
      if (values.is_set(key)) {
        diagnostics.error(values.location_of(key), path + "." + key,
                          fmt::format("{} is a Sparkplug B option: set format = \"sparkplug_b\", or remove it", key));
      }
    }
  }
  const std::string host_id = values.string("host_id");
  if (host_id.find_first_of("/+#") != std::string::npos) {
    diagnostics.error(values.location_of("host_id"), path + ".host_id",
                      fmt::format("\"{}\" cannot be a Sparkplug host id: it is one topic level, without '/', '+' or '#'",
                                  host_id));
  }
  plugin::check_tls_client_options(values, diagnostics);
}

const config::Section kSection{
    .path = "inputs.mqtt",
    .summary = "Messages from MQTT 3.1.1 and 5 brokers. A QoS 1 message is committed to the queue before the "
               "broker gets its PUBACK, and the session is persistent by default, so nothing the broker accepted "
               "is lost when tank is killed or the queue is full. Reconnects with capped, jittered backoff.",
    .options = kOptions.all(),
    .common = plugin::input_common_options(),
    .repeated = true,
    .check = check,
};

std::unique_ptr<plugin::Input> create(const config::SectionValues& v, const plugin::InputContext& context) {
  input::MqttSourceSettings s = kOptions.read(v);
  if (s.client_id.empty()) s.client_id = "tank-" + context.agent_id + "-" + context.name;
  s.sparkplug = v.choice("format") == "sparkplug_b";
  return input::make_mqtt_source(s, context);
}

}  // namespace

void register_inputs_mqtt(plugin::Registry& registry) {
  registry.add({.kind = plugin::Kind::input,
                .name = "mqtt",
                .section = &kSection,
                .summary = "messages from MQTT brokers",
                .create_input = create});
}

}  // namespace tank::plugins
