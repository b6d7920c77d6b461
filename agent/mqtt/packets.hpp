#pragma once

// MQTT 3.1.1 and 5 control packets: what a client sends (CONNECT, SUBSCRIBE, PUBACK, PINGREQ,
// DISCONNECT) and parses (CONNACK, SUBACK, PUBLISH, PINGRESP, DISCONNECT), as the specifications
// (OASIS MQTT 3.1.1 and 5.0) define them.
//
// tank speaks the protocol itself for inputs.mqtt because it must decide when a PUBACK leaves:
// only after the message is committed. Paho C (1.3.11) does send the PUBACK after its message
// callback, but it runs the callbacks of every client in the process on one thread, under one
// lock: a callback that waits for the queue would stop every other Paho client, including an
// MQTT output that has to drain that queue.
//
// Parsing never trusts the peer: every length is checked against the bytes present, and a
// malformed packet is reported as an error with what was wrong (the connection is then closed).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tank::mqtt {

enum class PacketType : std::uint8_t {
  connect = 1,
  connack = 2,
  publish = 3,
  puback = 4,
  pubrec = 5,
  pubrel = 6,
  pubcomp = 7,
  subscribe = 8,
  suback = 9,
  unsubscribe = 10,
  unsuback = 11,
  pingreq = 12,
  pingresp = 13,
  disconnect = 14,
  auth = 15,
};

constexpr int kVersion311 = 4;
constexpr int kVersion5 = 5;

// The message the broker publishes for a client whose connection ends without a DISCONNECT
// (MQTT 3.1.1 section 3.1.2.5; MQTT 5 section 3.1.3.2, sent without will properties).
struct Will {
  std::string topic;
  std::string payload;
  int qos = 1;  // 0 or 1
  bool retain = false;
};

struct ConnectOptions {
  int version = kVersion311;
  std::string client_id;
  bool clean_start = false;
  std::uint16_t keep_alive_seconds = 30;
  std::optional<std::string> username;
  std::optional<std::string> password;
  std::uint32_t session_expiry_seconds = 0;  // MQTT 5
  std::uint16_t receive_maximum = 0;         // MQTT 5; 0: not sent (the default, 65535)
  std::uint32_t maximum_packet_size = 0;     // MQTT 5; 0: not sent (no limit)
  std::optional<Will> will;
};

struct Subscription {
  std::string filter;
  int qos = 1;
};

std::string encode_connect(const ConnectOptions& options);
std::string encode_subscribe(std::uint16_t packet_id, const std::vector<Subscription>& subscriptions, int version);
std::string encode_puback(std::uint16_t packet_id);
std::string encode_pingreq();
std::string encode_disconnect(int version);
// PUBLISH with QoS 0 or 1 (inputs.mqtt's Sparkplug STATE and NCMD; tests and tools).
std::string encode_publish(std::string_view topic, std::string_view payload, int qos, std::uint16_t packet_id,
                           bool retain, int version);

// One packet split off the front of a byte stream.
struct RawPacket {
  PacketType type{};
  std::uint8_t flags = 0;  // the fixed header's low four bits
  std::string_view body;   // the variable header and payload
  std::size_t size = 0;    // bytes of the whole packet
};

struct FrameResult {
  std::optional<RawPacket> packet;  // nullopt: more bytes needed (or an error)
  std::string error;                // set when the stream is not MQTT
  // The remaining length announced by a packet whose body is not complete yet (0 if unknown):
  // lets the reader refuse packets over its limit without buffering them.
  std::uint64_t announced = 0;
  std::size_t header_size = 0;
};

// Splits the first packet off `bytes`.
FrameResult frame(std::string_view bytes);

struct Connack {
  bool session_present = false;
  int code = 0;  // 3.1.1: return code; 5: reason code
  std::string reason;  // MQTT 5 reason string, or the meaning of the code
  std::optional<std::string> assigned_client_id;
  std::optional<std::uint16_t> server_keep_alive;
};

struct Suback {
  std::uint16_t packet_id = 0;
  std::vector<int> codes;  // granted QoS, or >= 0x80 for a refusal
};

struct Publish {
  std::string_view topic;
  std::string_view payload;
  int qos = 0;
  bool retain = false;
  bool dup = false;
  std::uint16_t packet_id = 0;
};

struct Disconnect {
  int code = 0;
  std::string reason;
};

// Each returns nullopt and sets `error` for a malformed packet.
std::optional<Connack> parse_connack(const RawPacket& p, int version, std::string& error);
std::optional<Suback> parse_suback(const RawPacket& p, int version, std::string& error);
std::optional<Publish> parse_publish(const RawPacket& p, int version, std::string& error);
Disconnect parse_disconnect(const RawPacket& p, int version);

// What a CONNACK code means, for log lines.
std::string connack_meaning(int code, int version);
// What a SUBACK code means: the QoS granted, or why the subscription was refused.
std::string suback_meaning(int code, int version);

}  // namespace tank::mqtt
