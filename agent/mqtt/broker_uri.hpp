#pragma once

// Broker URIs (tcp://, mqtt://, ssl://, mqtts://), for inputs.mqtt and outputs.mqtt.
//
// In namespace tank::input, not tank::mqtt: outputs.mqtt includes this beside Paho, whose
// namespace is ::mqtt, and a tank::mqtt here would hide it inside namespace tank.

#include <optional>
#include <string>

namespace tank::input {

// A broker URI split up: scheme tcp:// or mqtt:// (port 1883 by default), ssl:// or mqtts://
// (TLS, port 8883). nullopt with `error` set when it is not one, or when it holds credentials
// (user:password@, which would not be sent: the username and password options are); the error
// shows the URI without them (strings::redact_url_userinfo).
struct BrokerAddress {
  bool tls = false;
  std::string host;
  std::string port;
};
std::optional<BrokerAddress> parse_broker_uri(const std::string& uri, std::string& error);

}  // namespace tank::input
