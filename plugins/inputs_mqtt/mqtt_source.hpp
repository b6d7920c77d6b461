#pragma once

// Subscribing to MQTT brokers and committing every message to the queue before the broker
// learns that tank has it.
//
// Acknowledgement. tank speaks MQTT 3.1.1 / 5 itself here (agent/mqtt/packets.hpp says why not
// Paho): the messages of each read from the connection are committed in one queue transaction,
// and only then are their PUBACKs sent. While the queue refuses records, the input stops reading:
// the broker holds the messages (its in-flight window fills, TCP pushes back), keep-alive pings
// go on, and the PUBACKs of what was read but not committed are never sent. A stop or a lost
// connection then leaves those messages at the broker, which delivers them again.
//
// QoS. Subscriptions use QoS 0 or 1. QoS 2 is not offered: a QoS 2 publication reaches a QoS 1
// subscription at QoS 1, which is what tank's at-least-once promise needs.
//
// Session. With clean_session = false (the default) the broker keeps the subscription and the
// QoS 1 messages that arrive while tank is away (MQTT 5: for session_expiry). Messages committed
// but not yet acknowledged when tank dies are delivered again: at least once, never lost.
//
// Sparkplug B (format = "sparkplug_b"): each message becomes one record per metric, with the
// alias tables and sequence numbers committed with them (sparkplug/host.hpp). With host_id set,
// tank is a Sparkplug 3.0 host application: once the subscriptions are granted it publishes the
// retained STATE message {"online": true, "timestamp": T} on spBv1.0/STATE/<host_id>, with
// {"online": false, "timestamp": T} as its will (same T), and at a stop publishes the offline
// message itself before it disconnects; so edge nodes learn within keep-alive that tank is away,
// and buffer.
//
// Connection: one thread per input runs the client (agent/mqtt/session.hpp: failover,
// reconnects, keep-alive, TLS, and how each end of a session is logged; the input counts each in
// tank_input_errors_total{reason}).

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/tls.hpp"
#include "plugin/input.hpp"

namespace tank::input {

struct MqttSourceSettings {
  std::vector<std::string> servers;      // tcp://, mqtt://, ssl://, mqtts:// URIs
  std::string client_id;                 // stable across restarts (the broker keys the session by it)
  int protocol_version = 4;              // 4 = MQTT 3.1.1, 5 = MQTT 5
  std::vector<std::string> topics_qos1;  // topic filters subscribed at QoS 1
  std::vector<std::string> topics_qos0;  // topic filters subscribed at QoS 0
  bool clean_session = false;
  std::chrono::seconds session_expiry{7 * 24 * 3600};  // MQTT 5 only
  std::chrono::seconds keep_alive{30};
  std::chrono::seconds connect_timeout{10};
  std::string username;
  std::string password;
  tls::ClientSettings tls;  // for ssl:// and mqtts:// servers
  std::chrono::milliseconds reconnect_min{500};
  std::chrono::milliseconds reconnect_max{60000};
  std::size_t max_message_bytes = 1 << 20;  // larger messages are dead-lettered (message_too_large)
  // format = "sparkplug_b": a Sparkplug B host application (sparkplug/host.hpp).
  bool sparkplug = false;
  std::string host_id;    // "": publishes no STATE
  bool rebirth = false;   // ask nodes for a rebirth (an NCMD) on a gap or an unknown alias
  std::chrono::milliseconds rebirth_interval{10000};
};

std::unique_ptr<plugin::Input> make_mqtt_source(const MqttSourceSettings& settings,
                                                const plugin::InputContext& context);

}  // namespace tank::input
