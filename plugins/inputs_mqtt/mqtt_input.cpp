// inputs.mqtt: messages from MQTT brokers, each committed before the broker gets its PUBACK
// (see mqtt_source.hpp).

#include <fmt/format.h>

#include "mqtt/broker_uri.hpp"
#include "mqtt_source.hpp"
#include "plugin/registry.hpp"
#include "plugin/tls_options.hpp"

namespace tank::plugins {
namespace {

using config::Option;
using config::Type;

constexpr std::string_view kVersions[] = {"3.1.1", "5"};

const Option kOwnOptions[] = {
    plugin::format_option("\"json\""),
    {.name = "servers",
     .type = Type::string_list,
     .default_value = "",
     .description = "Broker URIs, tried in order (failover): `tcp://host:1883` or `mqtt://host` (port 1883), "
                    "`ssl://host:8883` or `mqtts://host` (TLS, port 8883). IPv6: `tcp://[::1]:1883`.",
     .required = true},
    {.name = "client_id",
     .type = Type::string,
     .default_value = "\"\"",
     .description = "The MQTT client id; the broker keeps the session under it, so it must be stable and unique per "
                    "broker. Empty: `tank-<agent id>-<input name>`."},
    {.name = "protocol_version",
     .type = Type::choice,
     .default_value = "\"3.1.1\"",
     .description = "MQTT protocol version: \"3.1.1\" or \"5\".",
     .choices = kVersions},
    {.name = "topics",
     .type = Type::string_list,
     .default_value = "[]",
     .description = "Topic filters (wildcards `+` and `#` allowed) subscribed at QoS 1: each message is committed "
                    "to the queue before the broker gets its PUBACK. The topic is kept as the `topic` attribute "
                    "(and `retained = \"true\"` for retained messages)."},
    {.name = "topics_qos0",
     .type = Type::string_list,
     .default_value = "[]",
     .description = "Topic filters subscribed at QoS 0 (at most once: the broker does not keep these messages for "
                    "tank, and does not resend them)."},
    {.name = "clean_session",
     .type = Type::boolean,
     .default_value = "false",
     .description = "false: a persistent session, so the broker keeps QoS 1 messages while tank is away "
                    "(MQTT 5: for session_expiry). true: every connect starts afresh."},
    {.name = "session_expiry",
     .type = Type::duration,
     .default_value = "\"7d\"",
     .description = "MQTT 5: how long the broker keeps the session after a disconnect.",
     .min = "0",
     .max = "24855d"},
    {.name = "keep_alive",
     .type = Type::duration,
     .default_value = "\"30s\"",
     .description = "MQTT keep-alive interval.",
     .min = "1s",
     .max = "18h"},
    {.name = "connect_timeout",
     .type = Type::duration,
     .default_value = "\"10s\"",
     .description = "How long one connection attempt may take.",
     .min = "1s",
     .max = "5m"},
    {.name = "username", .type = Type::string, .default_value = "\"\"", .description = "User name for the broker."},
    {.name = "password",
     .type = Type::string,
     .default_value = "\"\"",
     .description = "Password for the broker.",
     .secret = true},
    {.name = "reconnect_min",
     .type = Type::duration,
     .default_value = "\"500ms\"",
     .description = "The first delay before reconnecting; it doubles per failed attempt up to reconnect_max, with "
                    "random jitter so that a fleet does not reconnect in step.",
     .min = "10ms",
     .max = "1h"},
    {.name = "reconnect_max",
     .type = Type::duration,
     .default_value = "\"60s\"",
     .description = "The longest delay between reconnect attempts.",
     .min = "10ms",
     .max = "1h"},
    {.name = "max_message_bytes",
     .type = Type::size,
     .default_value = "\"1MiB\"",
     .description = "Larger messages go to the dead-letter store with reason `message_too_large` (first 64 KiB "
                    "kept) and are acknowledged.",
     .min = "1B",
     .max = "256MiB"},
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
  plugin::check_tls_client_options(values, diagnostics);
}

const std::vector<Option> kOptions = plugin::with_tls_client_options(kOwnOptions);

const config::Section kSection{
    .path = "inputs.mqtt",
    .summary = "Messages from MQTT 3.1.1 and 5 brokers. A QoS 1 message is committed to the queue before the "
               "broker gets its PUBACK, and the session is persistent by default, so nothing the broker accepted "
               "is lost when tank is killed or the queue is full. Reconnects with capped, jittered backoff.",
    .options = kOptions,
    .common = plugin::input_common_options(),
    .repeated = true,
    .check = check,
};

std::unique_ptr<plugin::Input> create(const config::SectionValues& v, const plugin::InputContext& context) {
  input::MqttSourceSettings s;
  s.servers = v.strings("servers");
  s.client_id = v.string("client_id");
  if (s.client_id.empty()) s.client_id = "tank-" + context.agent_id + "-" + context.name;
  s.protocol_version = v.choice("protocol_version") == "5" ? 5 : 4;
  s.topics_qos1 = v.strings("topics");
  s.topics_qos0 = v.strings("topics_qos0");
  s.clean_session = v.boolean("clean_session");
  s.session_expiry = std::chrono::duration_cast<std::chrono::seconds>(v.duration("session_expiry"));
  s.keep_alive = std::chrono::duration_cast<std::chrono::seconds>(v.duration("keep_alive"));
  s.connect_timeout = std::chrono::duration_cast<std::chrono::seconds>(v.duration("connect_timeout"));
  s.username = v.string("username");
  s.password = v.string("password");
  s.tls = plugin::tls_client_settings(v);
  s.reconnect_min = std::chrono::duration_cast<std::chrono::milliseconds>(v.duration("reconnect_min"));
  s.reconnect_max = std::chrono::duration_cast<std::chrono::milliseconds>(v.duration("reconnect_max"));
  s.max_message_bytes = v.size("max_message_bytes");
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
