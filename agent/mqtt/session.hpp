#pragma once

// An MQTT client session that subscribes and receives (MQTT 3.1.1 / 5, spoken by
// agent/mqtt/packets.hpp: packets.hpp says why not Paho): the connection to the brokers, TLS,
// keep-alive and the read loop. It knows nothing of the queue: it hands every PUBLISH to its
// Receiver, and sends a message's PUBACK only when the receiver releases it (after its commit).
// inputs.mqtt (plugins/inputs_mqtt/mqtt_source.hpp) is its receiver.
//
// Connection. One thread runs the connection: the servers are tried in order (failover), failed
// rounds are retried with capped exponential backoff and full jitter, the subscriptions are
// made again after every connect, and each change of state is logged once. A connect (TCP, TLS,
// CONNECT, CONNACK) gets connect_timeout. A lost session is followed by a reconnect at once,
// unless it lasted less than 10 s: then by the backoff, so that two clients with one client_id
// do not take the session from each other in a tight loop. A broker that stops answering is
// found by keep-alive: nothing received for 1.5 x keep_alive while a ping is outstanding ends
// the session. Every end of a session is logged with its cause and reported to the receiver's
// failure() by reason (connect_failed, connect_timeout, connect_refused, tls_error,
// keep_alive_timeout, disconnected_by_broker, protocol_error, connection_lost, ...). A refused
// subscription (SUBACK failure code) is logged as an error and reported (subscription_refused),
// never reported as subscribed, and asked for again at the next connect.
// TLS (OpenSSL through Boost.Asio) verifies the server's certificate and its name (a host name,
// or an IP address in the certificate's subjectAltName) unless tls.verify is off.
//
// Publishing. The receiver may give a will for each CONNECT and publish messages of its own
// (inputs.mqtt's Sparkplug B host: its STATE and its rebirth requests), at QoS 0 or 1.
//
// Holding. While the receiver holds messages (hold(): the queue refuses them) the session reads
// nothing more and acknowledges nothing, but keeps pinging the broker; a stop then closes the
// connection without a DISCONNECT, and the broker delivers those messages again.
//
// Every member function but make_session() runs on the io_context's thread.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include "common/tls.hpp"
#include "mqtt/packets.hpp"

namespace tank::mqtt {

struct SessionSettings {
  std::vector<std::string> servers;        // tcp://, mqtt://, ssl://, mqtts:// URIs, tried in order
  std::string client_id;                   // stable across restarts (the broker keys the session by it)
  int protocol_version = kVersion311;      // 4 = MQTT 3.1.1, 5 = MQTT 5
  std::vector<Subscription> subscriptions;  // topic filters and their QoS (0 or 1)
  bool clean_session = false;
  std::chrono::seconds session_expiry{7 * 24 * 3600};  // MQTT 5 only, with clean_session = false
  std::chrono::seconds keep_alive{30};
  std::chrono::seconds connect_timeout{10};
  std::string username;  // "": none
  std::string password;  // "": none
  tls::ClientSettings tls;  // for ssl:// and mqtts:// servers
  std::chrono::milliseconds reconnect_min{500};
  std::chrono::milliseconds reconnect_max{60000};
  // Larger messages are skipped while read: the receiver gets their first bytes and full size.
  std::size_t max_message_bytes = 1 << 20;
};

// The PUBACKs owed for messages read but not yet committed.
struct PendingAcks {
  std::string bytes;
  // Owes the PUBACK of `m` (nothing for QoS 0).
  void owe(const Publish& m) {
    if (m.qos == 1) bytes += encode_puback(m.packet_id);
  }
};

class Session {
 public:
  // Where the messages go, and who hears of the session's state.
  class Receiver {
   public:
    virtual ~Receiver() = default;
    // The packets of a new read from the connection follow (what an earlier read left untaken,
    // because its session ended, is forgotten: none of it was acknowledged).
    virtual void begin_read() = 0;
    // One message; `payload_size` is its full size (an oversize message, skipped while read,
    // brings only its first bytes). The receiver owes its PUBACK (acks.owe) once the message is in
    // what it will commit, and releases the acks after a commit (release()).
    virtual boost::asio::awaitable<void> message(const Publish& m, std::uint64_t payload_size,
                                                 PendingAcks& acks) = 0;
    // Every message of the read was handed over: commit them, then release the acks.
    virtual boost::asio::awaitable<void> end_of_read(PendingAcks& acks) = 0;
    // The will of the next CONNECT (asked before each one), or nullopt for none.
    virtual std::optional<Will> will() { return std::nullopt; }
    // The broker answered this session's SUBSCRIBE; `all_granted`: every filter was granted (a
    // refused one is logged and reported as failure("subscription_refused") before this call).
    virtual void subscribed(bool /*all_granted*/) {}
    // A session began (CONNACK accepted) / a session that began has ended.
    virtual void session_up() {}
    virtual void session_down() {}
    // A failure by reason ("connect_failed", "connection_lost", "subscription_refused", ...),
    // already logged by the session: for the receiver's counters.
    virtual void failure(std::string_view /*reason*/) {}
  };

  virtual ~Session() = default;

  // Connects (and reconnects) until stop(). Throws std::runtime_error when the TLS context cannot
  // be made (a certificate or key file that cannot be read: the message says which).
  virtual void start() = 0;
  // Ends the session: a DISCONNECT, or while holding a plain close. The connection loop then ends.
  virtual void stop() = 0;
  // A hold() in progress tries again now (the queue takes records again).
  virtual void wake() = 0;
  // Publishes a message in the current session (QoS 0 or 1; a QoS 1 message's PUBACK is not
  // waited for, and it is not sent again in a later session). Returns false, sending nothing, when
  // no session is up. Messages and a stop() that follows leave in the order they were asked for.
  virtual bool publish(std::string_view topic, std::string_view payload, int qos, bool retain) = 0;
  // The messages owed in `acks` are committed: sends their PUBACKs; the session holds no more.
  virtual void release(PendingAcks& acks) = 0;
  // The queue refused the receiver's messages: waits up to a second (or until wake()) before the
  // receiver tries again. Ends the session (throws) on stop() or when the connection ended.
  virtual boost::asio::awaitable<void> hold() = 0;
};

// Throws std::invalid_argument when a server is not a broker URI (the message says which and
// why). `oversize_payload_bytes`: how many first bytes of a message over max_message_bytes the
// receiver gets (for its dead letter). `component` names the session in logs ("input plant").
std::unique_ptr<Session> make_session(const SessionSettings& settings, boost::asio::io_context& io,
                                      std::string component, Session::Receiver& receiver,
                                      std::size_t oversize_payload_bytes);

}  // namespace tank::mqtt
