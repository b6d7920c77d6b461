#pragma once

// One MQTT client of inputs.mqtt (mqtt_source.hpp): the connection to the brokers, MQTT 3.1.1 / 5
// spoken by agent/mqtt/packets.hpp. It knows nothing of the queue: it hands every PUBLISH to its
// Receiver, and sends a message's PUBACK only when the receiver releases it (after its commit).
//
// Connection. One thread runs the connection: the servers are tried in order (failover), failed
// rounds are retried with capped exponential backoff and full jitter, the subscriptions are
// made again after every connect, and each change of state is logged once. A connect (TCP, TLS,
// CONNECT, CONNACK) gets connect_timeout. A lost session is followed by a reconnect at once,
// unless it lasted less than 10 s: then by the backoff, so that two clients with one client_id
// do not take the session from each other in a tight loop. A broker that stops answering is
// found by keep-alive: nothing received for 1.5 x keep_alive while a ping is outstanding ends
// the session. Every end of a session is logged with its cause and counted in
// tank_input_errors_total{reason} (connect_failed, connect_timeout, connect_refused, tls_error,
// keep_alive_timeout, disconnected_by_broker, protocol_error, connection_lost, ...). A refused
// subscription (SUBACK failure code) is logged as an error and counted (subscription_refused),
// never reported as subscribed, and asked for again at the next connect.
// TLS (OpenSSL through Boost.Asio) verifies the server's certificate and its name (a host name,
// or an IP address in the certificate's subjectAltName) unless tls_verify is off.
//
// Holding. While the receiver holds messages (hold(): the queue refuses them) the session reads
// nothing more and acknowledges nothing, but keeps pinging the broker; a stop then closes the
// connection without a DISCONNECT, and the broker delivers those messages again.
//
// Every member function but make_mqtt_session() runs on the io_context's thread.

#include <cstdint>
#include <memory>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include "input/input_metrics.hpp"
#include "mqtt/packets.hpp"
#include "mqtt_source.hpp"

namespace tank::input {

// The PUBACKs owed for messages read but not yet committed.
struct PendingAcks {
  std::string bytes;
  // Owes the PUBACK of `m` (nothing for QoS 0).
  void owe(const mqtt::Publish& m) {
    if (m.qos == 1) bytes += mqtt::encode_puback(m.packet_id);
  }
};

class MqttSession {
 public:
  // Where the messages go.
  class Receiver {
   public:
    virtual ~Receiver() = default;
    // The packets of a new read from the connection follow (what an earlier read left untaken,
    // because its session ended, is forgotten: none of it was acknowledged).
    virtual void begin_read() = 0;
    // One message; `payload_size` is its full size (an oversize message, skipped while read,
    // brings only its first bytes). The receiver owes its PUBACK (acks.owe) once the message is in
    // what it will commit, and releases the acks after a commit (release()).
    virtual boost::asio::awaitable<void> message(const mqtt::Publish& m, std::uint64_t payload_size,
                                                 PendingAcks& acks) = 0;
    // Every message of the read was handed over: commit them, then release the acks.
    virtual boost::asio::awaitable<void> end_of_read(PendingAcks& acks) = 0;
  };

  virtual ~MqttSession() = default;

  // Connects (and reconnects) until stop(). Throws plugin::StartError when the TLS context cannot
  // be made.
  virtual void start() = 0;
  // Ends the session: a DISCONNECT, or while holding a plain close. The connection loop then ends.
  virtual void stop() = 0;
  // A hold() in progress tries again now (the queue takes records again).
  virtual void wake() = 0;
  // The messages owed in `acks` are committed: sends their PUBACKs; the session holds no more.
  virtual void release(PendingAcks& acks) = 0;
  // The queue refused the receiver's messages: waits up to a second (or until wake()) before the
  // receiver tries again. Ends the session (throws) on stop() or when the connection ended.
  virtual boost::asio::awaitable<void> hold() = 0;
};

// Throws plugin::StartError when a server is not a broker URI. `oversize_payload_bytes`: how many
// first bytes of a message over max_message_bytes the receiver gets (for its dead letter).
std::unique_ptr<MqttSession> make_mqtt_session(const MqttSourceSettings& settings, boost::asio::io_context& io,
                                               InputMetrics& metrics, std::string component,
                                               MqttSession::Receiver& receiver, std::size_t oversize_payload_bytes);

}  // namespace tank::input
