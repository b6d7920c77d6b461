#pragma once

// The options of a connection to an MQTT broker, which inputs.mqtt and outputs.mqtt share:
// declared once, so they are named, bounded and documented alike.
//
//   servers, client_id, protocol_version, keep_alive, connect_timeout, username,
//   password (secret), and the TLS options (plugin/tls_options.hpp)
//
// Each binds to a member of the plugin's Settings; the plugins place them in their own tables
// (the order of a table is the order of docs/configuration.md). Where the two plugins say
// different things (which servers are tried, the client id when empty, the default protocol), the
// plugin adds its own .describe() and .default_value().

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "config/bind.hpp"

namespace tank::plugin::mqtt_options {

inline constexpr std::string_view kProtocolVersions[] = {"3.1.1", "5"};
// The protocol level of each version, as MQTT and Paho (MQTTVERSION_3_1_1, MQTTVERSION_5) number it.
inline constexpr int kProtocolLevels[] = {4, 5};

// Broker URIs (tcp://, mqtt://, ssl://, mqtts://), tried in order; required.
template <class S>
config::Declaration<S> servers(std::vector<std::string> S::*member) {
  auto option = config::string_list("servers", member);
  option.required();
  return option;
}

// The MQTT client id; empty: the plugin makes one from the agent id and the instance name.
template <class S>
config::Declaration<S> client_id(std::string S::*member) {
  auto option = config::string("client_id", member);
  option.default_value("");
  return option;
}

// "3.1.1" or "5", bound as the protocol level (4 or 5).
template <class S>
config::Declaration<S> protocol_version(int S::*member) {
  return config::choice("protocol_version", kProtocolVersions, member, kProtocolLevels);
}

template <class S, class Duration>
config::Declaration<S> keep_alive(Duration S::*member) {
  auto option = config::duration("keep_alive", member);
  option.default_value("30s").describe("MQTT keep-alive interval.").min("1s").max("18h");
  return option;
}

// How long one connection attempt may take.
template <class S, class Duration>
config::Declaration<S> connect_timeout(Duration S::*member) {
  auto option = config::duration("connect_timeout", member);
  option.default_value("10s").describe("How long one connection attempt may take.").min("1s").max("5m");
  return option;
}

template <class S>
config::Declaration<S> username(std::string S::*member) {
  auto option = config::string("username", member);
  option.default_value("").describe("User name for the broker.");
  return option;
}

template <class S>
config::Declaration<S> password(std::string S::*member) {
  auto option = config::string("password", member);
  option.default_value("").describe("Password for the broker.").secret();
  return option;
}

}  // namespace tank::plugin::mqtt_options
