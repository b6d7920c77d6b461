#include "mqtt/packets.hpp"

#include <fmt/format.h>

namespace tank::mqtt {
namespace {

void put_u16(std::string& out, std::uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}

void put_u32(std::string& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

void put_varint(std::string& out, std::uint32_t v) {
  do {
    auto byte = static_cast<std::uint8_t>(v % 128);
    v /= 128;
    if (v > 0) byte |= 0x80;
    out.push_back(static_cast<char>(byte));
  } while (v > 0);
}

void put_string(std::string& out, std::string_view s) {
  put_u16(out, static_cast<std::uint16_t>(s.size()));
  out.append(s);
}

std::string packet(PacketType type, std::uint8_t flags, std::string_view body) {
  std::string out;
  out.reserve(body.size() + 5);
  out.push_back(static_cast<char>((static_cast<std::uint8_t>(type) << 4) | flags));
  put_varint(out, static_cast<std::uint32_t>(body.size()));
  out.append(body);
  return out;
}

// A cursor over a packet body; every read checks the bytes left.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  bool u8(std::uint8_t& v) {
    if (data_.size() - pos_ < 1) return false;
    v = static_cast<std::uint8_t>(data_[pos_++]);
    return true;
  }
  bool u16(std::uint16_t& v) {
    if (data_.size() - pos_ < 2) return false;
    v = static_cast<std::uint16_t>((static_cast<std::uint8_t>(data_[pos_]) << 8) |
                                   static_cast<std::uint8_t>(data_[pos_ + 1]));
    pos_ += 2;
    return true;
  }
  bool u32(std::uint32_t& v) {
    if (data_.size() - pos_ < 4) return false;
    v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<std::uint8_t>(data_[pos_ + i]);
    pos_ += 4;
    return true;
  }
  bool varint(std::uint32_t& v) {
    v = 0;
    for (int i = 0; i < 4; ++i) {
      std::uint8_t b;
      if (!u8(b)) return false;
      v |= static_cast<std::uint32_t>(b & 0x7f) << (7 * i);
      if ((b & 0x80) == 0) return true;
    }
    return false;
  }
  bool bytes(std::size_t n, std::string_view& out) {
    if (data_.size() - pos_ < n) return false;
    out = data_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool string(std::string_view& out) {
    std::uint16_t n;
    return u16(n) && bytes(n, out);
  }
  std::string_view rest() const { return data_.substr(pos_); }
  std::size_t left() const { return data_.size() - pos_; }

 private:
  std::string_view data_;
  std::size_t pos_ = 0;
};

// MQTT 5 properties: calls `on(id, reader)` for the ones the caller wants and skips the rest by
// their declared types. False when malformed.
template <class On>
bool read_properties(Reader& r, On on) {
  std::uint32_t length;
  std::string_view block;
  if (!r.varint(length) || !r.bytes(length, block)) return false;
  Reader p(block);
  while (p.left() > 0) {
    std::uint32_t id;
    if (!p.varint(id)) return false;
    std::uint8_t b;
    std::uint16_t s;
    std::uint32_t w;
    std::string_view text, text2;
    switch (id) {
      case 0x01: case 0x17: case 0x19: case 0x24: case 0x25: case 0x28: case 0x29: case 0x2A:
        if (!p.u8(b)) return false;
        on(id, std::string_view(), b);
        break;
      case 0x13: case 0x21: case 0x22: case 0x23:
        if (!p.u16(s)) return false;
        on(id, std::string_view(), s);
        break;
      case 0x02: case 0x11: case 0x18: case 0x27:
        if (!p.u32(w)) return false;
        on(id, std::string_view(), w);
        break;
      case 0x0B:
        if (!p.varint(w)) return false;
        break;
      case 0x03: case 0x08: case 0x09: case 0x12: case 0x15: case 0x16: case 0x1A: case 0x1C: case 0x1F:
        if (!p.string(text)) return false;
        on(id, text, 0u);
        break;
      case 0x26:
        if (!p.string(text) || !p.string(text2)) return false;
        break;
      default:
        return false;
    }
  }
  return true;
}

}  // namespace

std::string encode_connect(const ConnectOptions& o) {
  std::string body;
  put_string(body, "MQTT");
  body.push_back(static_cast<char>(o.version));
  std::uint8_t flags = 0;
  if (o.clean_start) flags |= 0x02;
  if (o.will) {
    flags |= 0x04;
    flags |= static_cast<std::uint8_t>((o.will->qos & 0x03) << 3);
    if (o.will->retain) flags |= 0x20;
  }
  if (o.password) flags |= 0x40;
  if (o.username) flags |= 0x80;
  body.push_back(static_cast<char>(flags));
  put_u16(body, o.keep_alive_seconds);
  if (o.version >= kVersion5) {
    std::string props;
    if (o.session_expiry_seconds > 0) {
      props.push_back(0x11);
      put_u32(props, o.session_expiry_seconds);
    }
    if (o.receive_maximum > 0) {
      props.push_back(0x21);
      put_u16(props, o.receive_maximum);
    }
    if (o.maximum_packet_size > 0) {
      props.push_back(0x27);
      put_u32(props, o.maximum_packet_size);
    }
    put_varint(body, static_cast<std::uint32_t>(props.size()));
    body += props;
  }
  put_string(body, o.client_id);
  if (o.will) {
    if (o.version >= kVersion5) put_varint(body, 0);  // no will properties
    put_string(body, o.will->topic);
    put_string(body, o.will->payload);  // binary data: a two-byte length, then the bytes
  }
  if (o.username) put_string(body, *o.username);
  if (o.password) put_string(body, *o.password);
  return packet(PacketType::connect, 0, body);
}

std::string encode_subscribe(std::uint16_t packet_id, const std::vector<Subscription>& subscriptions, int version) {
  std::string body;
  put_u16(body, packet_id);
  if (version >= kVersion5) put_varint(body, 0);
  for (const auto& s : subscriptions) {
    put_string(body, s.filter);
    body.push_back(static_cast<char>(s.qos & 0x03));
  }
  return packet(PacketType::subscribe, 0x02, body);
}

std::string encode_puback(std::uint16_t packet_id) {
  std::string body;
  put_u16(body, packet_id);  // MQTT 5: a remaining length of 2 means "success"
  return packet(PacketType::puback, 0, body);
}

std::string encode_pingreq() { return packet(PacketType::pingreq, 0, {}); }

std::string encode_disconnect(int version) {
  // MQTT 5: reason 0 (normal) may be left out with its properties.
  (void)version;
  return packet(PacketType::disconnect, 0, {});
}

std::string encode_publish(std::string_view topic, std::string_view payload, int qos, std::uint16_t packet_id,
                           bool retain, int version) {
  std::string body;
  put_string(body, topic);
  if (qos > 0) put_u16(body, packet_id);
  if (version >= kVersion5) put_varint(body, 0);
  body.append(payload);
  return packet(PacketType::publish, static_cast<std::uint8_t>((qos << 1) | (retain ? 1 : 0)), body);
}

FrameResult frame(std::string_view bytes) {
  FrameResult result;
  if (bytes.empty()) return result;
  const auto first = static_cast<std::uint8_t>(bytes[0]);
  const int type = first >> 4;
  if (type == 0) {
    result.error = "packet type 0 is reserved (the peer does not speak MQTT)";
    return result;
  }
  std::uint32_t length = 0;
  std::size_t i = 1;
  for (int shift = 0;; shift += 7) {
    if (i >= bytes.size()) return result;  // the length is not complete yet
    const auto b = static_cast<std::uint8_t>(bytes[i++]);
    length |= static_cast<std::uint32_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) break;
    if (shift == 21) {
      result.error = "the remaining length has more than four bytes";
      return result;
    }
  }
  result.announced = length;
  result.header_size = i;
  if (bytes.size() - i < length) return result;
  result.packet = RawPacket{static_cast<PacketType>(type), static_cast<std::uint8_t>(first & 0x0f),
                            bytes.substr(i, length), i + length};
  return result;
}

std::string connack_meaning(int code, int version) {
  if (version < kVersion5) {
    switch (code) {
      case 0: return "accepted";
      case 1: return "unacceptable protocol version";
      case 2: return "client identifier rejected";
      case 3: return "server unavailable";
      case 4: return "bad user name or password";
      case 5: return "not authorized";
      default: return "unknown return code";
    }
  }
  switch (code) {
    case 0x00: return "success";
    case 0x80: return "unspecified error";
    case 0x81: return "malformed packet";
    case 0x82: return "protocol error";
    case 0x83: return "implementation specific error";
    case 0x84: return "unsupported protocol version";
    case 0x85: return "client identifier not valid";
    case 0x86: return "bad user name or password";
    case 0x87: return "not authorized";
    case 0x88: return "server unavailable";
    case 0x89: return "server busy";
    case 0x8A: return "banned";
    case 0x8B: return "server shutting down";
    case 0x8D: return "keep alive timeout";
    case 0x8E: return "session taken over";
    case 0x93: return "receive maximum exceeded";
    case 0x94: return "topic alias invalid";
    case 0x98: return "administrative action";
    case 0x8C: return "bad authentication method";
    case 0x90: return "topic name invalid";
    case 0x95: return "packet too large";
    case 0x97: return "quota exceeded";
    case 0x99: return "payload format invalid";
    case 0x9A: return "retain not supported";
    case 0x9B: return "QoS not supported";
    case 0x9C: return "use another server";
    case 0x9D: return "server moved";
    case 0x9F: return "connection rate exceeded";
    default: return "unknown reason code";
  }
}

std::string suback_meaning(int code, int version) {
  if (code < 0x80) return fmt::format("granted QoS {}", code);
  if (version < kVersion5) return "MQTT 3.1.1 gives no reason";  // one failure code, 0x80
  switch (code) {
    case 0x80: return "unspecified error";
    case 0x83: return "implementation specific error";
    case 0x87: return "not authorized";
    case 0x8F: return "topic filter invalid";
    case 0x91: return "packet identifier in use";
    case 0x97: return "quota exceeded";
    case 0x9E: return "shared subscriptions not supported";
    case 0xA1: return "subscription identifiers not supported";
    case 0xA2: return "wildcard subscriptions not supported";
    default: return "unknown reason code";
  }
}

std::optional<Connack> parse_connack(const RawPacket& p, int version, std::string& error) {
  Reader r(p.body);
  std::uint8_t flags, code;
  if (!r.u8(flags) || !r.u8(code)) {
    error = "CONNACK is shorter than 2 bytes";
    return std::nullopt;
  }
  Connack c;
  c.session_present = (flags & 0x01) != 0;
  c.code = code;
  c.reason = connack_meaning(code, version);
  if (version >= kVersion5 && r.left() > 0) {
    bool ok = read_properties(r, [&](std::uint32_t id, std::string_view text, std::uint32_t n) {
      if (id == 0x12) c.assigned_client_id = std::string(text);
      if (id == 0x13) c.server_keep_alive = static_cast<std::uint16_t>(n);
      if (id == 0x1F && !text.empty()) c.reason += ": " + std::string(text);
    });
    if (!ok) {
      error = "CONNACK has malformed properties";
      return std::nullopt;
    }
  }
  return c;
}

std::optional<Suback> parse_suback(const RawPacket& p, int version, std::string& error) {
  Reader r(p.body);
  Suback s;
  if (!r.u16(s.packet_id)) {
    error = "SUBACK has no packet identifier";
    return std::nullopt;
  }
  if (version >= kVersion5 && !read_properties(r, [](std::uint32_t, std::string_view, std::uint32_t) {})) {
    error = "SUBACK has malformed properties";
    return std::nullopt;
  }
  for (char c : r.rest()) s.codes.push_back(static_cast<std::uint8_t>(c));
  return s;
}

std::optional<Publish> parse_publish(const RawPacket& p, int version, std::string& error) {
  Reader r(p.body);
  Publish m;
  m.qos = (p.flags >> 1) & 0x03;
  m.retain = (p.flags & 0x01) != 0;
  m.dup = (p.flags & 0x08) != 0;
  if (m.qos == 3) {
    error = "PUBLISH with QoS 3";
    return std::nullopt;
  }
  if (!r.string(m.topic)) {
    error = "PUBLISH has a truncated topic";
    return std::nullopt;
  }
  if (m.qos > 0 && !r.u16(m.packet_id)) {
    error = "PUBLISH has no packet identifier";
    return std::nullopt;
  }
  if (version >= kVersion5) {
    bool alias = false;
    bool ok = read_properties(r, [&](std::uint32_t id, std::string_view, std::uint32_t) { alias = alias || id == 0x23; });
    if (!ok) {
      error = "PUBLISH has malformed properties";
      return std::nullopt;
    }
    if (alias && m.topic.empty()) {
      error = "PUBLISH uses a topic alias, which tank did not allow";
      return std::nullopt;
    }
  }
  m.payload = r.rest();
  return m;
}

Disconnect parse_disconnect(const RawPacket& p, int version) {
  Disconnect d;
  if (version < kVersion5 || p.body.empty()) return d;
  Reader r(p.body);
  std::uint8_t code = 0;
  r.u8(code);
  d.code = code;
  d.reason = connack_meaning(code, version);
  if (r.left() > 0) {
    read_properties(r, [&](std::uint32_t id, std::string_view text, std::uint32_t) {
      if (id == 0x1F && !text.empty()) d.reason += ": " + std::string(text);
    });
  }
  return d;
}

}  // namespace tank::mqtt
