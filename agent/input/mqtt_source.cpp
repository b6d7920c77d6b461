#include "input/mqtt_source.hpp"

#include <openssl/ssl.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <random>
#include <thread>

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl.hpp>
#include <fmt/format.h>

#include "common/log.hpp"
#include "common/units.hpp"
#include "input/batch.hpp"
#include "input/input_metrics.hpp"
#include "mqtt/packets.hpp"
#include "queue/queue.hpp"

namespace tank::input {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;
using Clock = std::chrono::steady_clock;

std::chrono::milliseconds reconnect_delay(unsigned attempt, std::chrono::milliseconds min_delay,
                                          std::chrono::milliseconds max_delay, std::uint64_t random) {
  const auto floor = std::max<std::int64_t>(1, min_delay.count() / 2);
  std::int64_t ceiling = min_delay.count();
  for (unsigned i = 0; i < attempt && ceiling < max_delay.count(); ++i) ceiling *= 2;
  ceiling = std::clamp<std::int64_t>(ceiling, floor, std::max<std::int64_t>(floor, max_delay.count()));
  const auto span = static_cast<std::uint64_t>(ceiling - floor + 1);
  return std::chrono::milliseconds(floor + static_cast<std::int64_t>(random % span));
}

std::optional<BrokerAddress> parse_broker_uri(const std::string& uri, std::string& error) {
  BrokerAddress a;
  std::string_view rest;
  if (uri.starts_with("tcp://") || uri.starts_with("mqtt://")) {
    rest = std::string_view(uri).substr(uri.find("://") + 3);
    a.port = "1883";
  } else if (uri.starts_with("ssl://") || uri.starts_with("mqtts://")) {
    rest = std::string_view(uri).substr(uri.find("://") + 3);
    a.tls = true;
    a.port = "8883";
  } else {
    error = fmt::format("\"{}\" is not a broker URI: write tcp://host:1883 or ssl://host:8883 (also mqtt://, mqtts://)",
                        uri);
    return std::nullopt;
  }
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.starts_with('[')) {  // [::1]:1883
    auto close = rest.find(']');
    if (close == std::string_view::npos) {
      error = fmt::format("\"{}\": an IPv6 address needs its closing ]", uri);
      return std::nullopt;
    }
    a.host = std::string(rest.substr(1, close - 1));
    rest.remove_prefix(close + 1);
    if (rest.starts_with(':')) a.port = std::string(rest.substr(1));
    else if (!rest.empty()) {
      error = fmt::format("\"{}\": unexpected text after the address", uri);
      return std::nullopt;
    }
  } else {
    auto colon = rest.rfind(':');
    a.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) a.port = std::string(rest.substr(colon + 1));
  }
  if (a.host.empty() || a.host.find('/') != std::string::npos) {
    error = fmt::format("\"{}\" names no host", uri);
    return std::nullopt;
  }
  if (a.port.empty() || a.port.find_first_not_of("0123456789") != std::string::npos || std::stoul(a.port) == 0 ||
      std::stoul(a.port) > 65535) {
    error = fmt::format("\"{}\" has no valid port", uri);
    return std::nullopt;
  }
  return a;
}

namespace {

// A connection problem worth a log line; ends the session.
struct SessionError : std::runtime_error {
  SessionError(std::string message, std::string_view metric_reason)
      : std::runtime_error(std::move(message)), reason(metric_reason) {}
  std::string_view reason;
};

class MqttSource final : public plugin::Input {
 public:
  MqttSource(const MqttSourceSettings& settings, const plugin::InputContext& context)
      : settings_(settings),
        name_(context.name),
        queue_(context.queue),
        clock_(context.clock),
        metrics_(context.metrics, context.name, "mqtt"),
        batch_limit_(input::batch_limit(context.queue)),
        component_("input " + context.name),
        connect_failures_(component_, log::Level::warn),
        commit_failures_(component_, log::Level::error),
        refused_(component_, log::Level::warn),
        wake_(io_),
        backoff_(io_),
        keep_alive_timer_(io_),
        outbox_signal_(io_) {
    for (const auto& uri : settings_.servers) {
      std::string error;
      auto a = parse_broker_uri(uri, error);
      if (!a) throw plugin::StartError(error);
      addresses_.push_back(*a);
    }
    // Large enough for every message up to max_message_bytes; longer ones are skipped while
    // read, their first bytes dead-lettered.
    max_packet_ = settings_.max_message_bytes + 65536 + 1024;
  }

  ~MqttSource() override { stop(); }

  void start() override {
    if (std::any_of(addresses_.begin(), addresses_.end(), [](const BrokerAddress& a) { return a.tls; })) {
      make_tls_context();
    }
    asio::co_spawn(io_, supervise(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }

  void stop() override {
    if (!thread_.joinable()) return;
    asio::post(io_, [this] {
      stopping_ = true;
      wake_.cancel();
      backoff_.cancel();
      if (close_) close_(holding_);
    });
    thread_.join();
  }

  void set_paused(bool paused) override {
    metrics_.set_paused(paused);
    paused_ = paused;
    if (!paused) asio::post(io_, [this] { wake_.cancel(); });
  }

 private:
  void make_tls_context() {
    tls_.emplace(ssl::context::tls_client);
    auto& c = *tls_;
    boost::system::error_code ec;
    c.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                  ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    if (!settings_.tls_ca_file.empty()) {
      c.load_verify_file(settings_.tls_ca_file, ec);
      if (ec) {
        throw plugin::StartError(fmt::format("cannot load tls_ca_file {}: {} (a PEM file of CA certificates)",
                                             settings_.tls_ca_file, ec.message()));
      }
    } else {
      c.set_default_verify_paths(ec);
    }
    if (!settings_.tls_key_password.empty()) {
      c.set_password_callback([p = settings_.tls_key_password](std::size_t, ssl::context::password_purpose) { return p; });
    }
    if (!settings_.tls_cert_file.empty()) {
      c.use_certificate_chain_file(settings_.tls_cert_file, ec);
      if (ec) {
        throw plugin::StartError(fmt::format("cannot load tls_cert_file {}: {}", settings_.tls_cert_file, ec.message()));
      }
      c.use_private_key_file(settings_.tls_key_file, ssl::context::pem, ec);
      if (ec) {
        throw plugin::StartError(fmt::format("cannot load tls_key_file {}: {} (does it match the certificate? is "
                                             "its password right?)",
                                             settings_.tls_key_file, ec.message()));
      }
    }
    c.set_verify_mode(settings_.tls_verify ? ssl::verify_peer : ssl::verify_none);
  }

  awaitable<void> supervise() {
    std::mt19937_64 random(std::random_device{}());
    unsigned failed_rounds = 0;
    while (!stopping_) {
      std::string errors;
      for (std::size_t i = 0; i < addresses_.size() && !stopping_; ++i) {
        std::string error;
        bool was_up = false;
        try {
          if (addresses_[i].tls) {
            co_await connect_and_run<ssl::stream<tcp::socket>>(i, was_up);
          } else {
            co_await connect_and_run<tcp::socket>(i, was_up);
          }
        } catch (const SessionError& e) {
          error = e.what();
          metrics_.error(e.reason);
        } catch (const boost::system::system_error& e) {
          error = e.code() == asio::error::eof ? "the broker closed the connection" : e.code().message();
          if (!was_up) metrics_.error("connect_failed");
        } catch (const std::exception& e) {
          error = e.what();
          if (!was_up) metrics_.error("connect_failed");
        }
        if (stopping_) co_return;
        if (was_up) {
          metrics_.connection_closed();
          metrics_.error("connection_lost");
          log::warn(component_, "lost the connection to {}: {}; reconnecting", settings_.servers[i], error);
          failed_rounds = 0;
          i = static_cast<std::size_t>(-1);  // start again with the first server, at once
          continue;
        }
        errors += fmt::format("{}{}: {}", errors.empty() ? "" : "; ", settings_.servers[i], error);
      }
      if (stopping_) co_return;
      const auto delay =
          reconnect_delay(failed_rounds++, settings_.reconnect_min, settings_.reconnect_max, random());
      connect_failures_.occur(fmt::format("cannot connect ({}); retrying with backoff up to {}", errors,
                                          units::format_duration(settings_.reconnect_max)));
      boost::system::error_code ec;
      backoff_.expires_after(delay);
      co_await backoff_.async_wait(asio::redirect_error(use_awaitable, ec));
    }
  }

  template <class Stream>
  awaitable<void> connect_and_run(std::size_t index, bool& was_up) {
    const BrokerAddress& address = addresses_[index];
    const std::string& uri = settings_.servers[index];
    std::unique_ptr<Stream> holder;
    if constexpr (std::is_same_v<Stream, tcp::socket>) {
      holder = std::make_unique<Stream>(io_);
    } else {
      holder = std::make_unique<Stream>(io_, *tls_);
    }
    Stream& stream = *holder;
    auto& socket = stream_socket(stream);
    const int version = settings_.protocol_version;

    // Connect, TLS handshake, CONNECT and CONNACK within connect_timeout.
    asio::steady_timer deadline(io_);
    deadline.expires_after(settings_.connect_timeout);
    bool timed_out = false;
    deadline.async_wait([&](boost::system::error_code ec) {
      if (!ec) {
        timed_out = true;
        boost::system::error_code ignored;
        socket.close(ignored);
      }
    });
    close_ = [&](bool) {
      boost::system::error_code ignored;
      socket.close(ignored);
    };
    std::string buffer;
    mqtt::Connack connack;
    try {
      tcp::resolver resolver(io_);
      auto endpoints = co_await resolver.async_resolve(address.host, address.port, use_awaitable);
      co_await asio::async_connect(socket, endpoints, use_awaitable);
      socket.set_option(tcp::no_delay(true));
      if constexpr (!std::is_same_v<Stream, tcp::socket>) {
        if (!SSL_set_tlsext_host_name(stream.native_handle(), address.host.c_str())) {
          throw SessionError("cannot set the TLS server name", "tls_error");
        }
        if (settings_.tls_verify) stream.set_verify_callback(ssl::host_name_verification(address.host));
        try {
          co_await stream.async_handshake(ssl::stream_base::client, use_awaitable);
        } catch (const boost::system::system_error& e) {
          throw SessionError(fmt::format("TLS handshake failed: {}{}", e.code().message(),
                                         settings_.tls_verify ? " (is tls_ca_file the CA that signed the broker's "
                                                                "certificate, and does it name this host?)"
                                                              : ""),
                             "tls_error");
        }
      }
      mqtt::ConnectOptions o;
      o.version = version;
      o.client_id = settings_.client_id;
      o.clean_start = settings_.clean_session;
      o.keep_alive_seconds = static_cast<std::uint16_t>(std::min<std::int64_t>(settings_.keep_alive.count(), 65535));
      if (!settings_.username.empty()) o.username = settings_.username;
      if (!settings_.password.empty()) o.password = settings_.password;
      if (version >= mqtt::kVersion5 && !settings_.clean_session) {
        o.session_expiry_seconds =
            static_cast<std::uint32_t>(std::min<std::int64_t>(settings_.session_expiry.count(), 0xfffffffe));
      }
      const std::string connect = mqtt::encode_connect(o);
      co_await asio::async_write(stream, asio::buffer(connect), use_awaitable);
      // The first packet must be CONNACK.
      for (;;) {
        auto f = mqtt::frame(buffer);
        if (!f.error.empty()) throw SessionError("the broker does not speak MQTT: " + f.error, "protocol_error");
        if (f.packet) {
          if (f.packet->type != mqtt::PacketType::connack) {
            throw SessionError("the broker sent something else than CONNACK first", "protocol_error");
          }
          std::string error;
          auto c = mqtt::parse_connack(*f.packet, version, error);
          if (!c) throw SessionError(error, "protocol_error");
          connack = *c;
          buffer.erase(0, f.packet->size);
          break;
        }
        char chunk[4096];
        std::size_t n = co_await stream.async_read_some(asio::buffer(chunk), use_awaitable);
        buffer.append(chunk, n);
      }
    } catch (const boost::system::system_error& e) {
      deadline.cancel();
      close_ = nullptr;
      if (timed_out) {
        throw SessionError(fmt::format("no answer within connect_timeout = {}",
                                       units::format_duration(settings_.connect_timeout)),
                           "connect_failed");
      }
      throw;
    } catch (...) {
      deadline.cancel();
      close_ = nullptr;
      throw;
    }
    deadline.cancel();
    if (stopping_) {
      close_ = nullptr;
      co_return;
    }
    if (connack.code != 0) {
      close_ = nullptr;
      throw SessionError(fmt::format("the broker refused the connection: {} (code {}){}", connack.reason, connack.code,
                                     connack.code == 4 || connack.code == 5 || connack.code == 0x86 ||
                                             connack.code == 0x87
                                         ? "; check username and password"
                                         : ""),
                         "connect_refused");
    }
    was_up = true;
    metrics_.connection_opened();
    connect_failures_.end(fmt::format("connected to {}", uri));
    log::info(component_, "connected to {} as \"{}\" ({}), subscribing to {} filter(s)", uri, settings_.client_id,
              connack.session_present ? "the broker kept the session" : "a new session",
              settings_.topics_qos1.size() + settings_.topics_qos0.size());
    keep_alive_ = std::chrono::seconds(settings_.keep_alive);
    if (connack.server_keep_alive) keep_alive_ = std::chrono::seconds(std::max<int>(1, *connack.server_keep_alive));

    // Subscribe, then serve: reader, writer and keep-alive until one of them ends.
    std::vector<mqtt::Subscription> subscriptions;
    for (const auto& t : settings_.topics_qos1) subscriptions.push_back({t, 1});
    for (const auto& t : settings_.topics_qos0) subscriptions.push_back({t, 0});
    subscribe_id_ = static_cast<std::uint16_t>(subscribe_id_ % 65535 + 1);
    outbox_.clear();
    send(mqtt::encode_subscribe(subscribe_id_, subscriptions, version));
    ping_outstanding_ = false;
    last_sent_ = Clock::now();
    close_ = [this, &socket](bool holding) {
      if (holding || closing_) {
        boost::system::error_code ignored;
        socket.close(ignored);
      } else {
        // Stop: a DISCONNECT, then the writer closes the connection.
        closing_ = true;
        send(mqtt::encode_disconnect(settings_.protocol_version));
      }
    };
    closing_ = false;
    stream_open_ = [&socket] { return socket.is_open(); };
    struct Reset {
      MqttSource* self;
      ~Reset() {
        self->close_ = nullptr;
        self->stream_open_ = nullptr;
        self->holding_ = false;
      }
    } reset{this};
    session_over_ = false;
    co_await (reader(stream, std::move(buffer), subscriptions) || write_loop(stream) || keep_alive_loop());
  }

  template <class Stream>
  static tcp::socket& stream_socket(Stream& s) {
    if constexpr (std::is_same_v<Stream, tcp::socket>) {
      return s;
    } else {
      return s.next_layer();
    }
  }

  void send(std::string bytes) {
    outbox_.push_back(std::move(bytes));
    outbox_signal_.cancel();
  }

  template <class Stream>
  awaitable<void> write_loop(Stream& stream) {
    for (;;) {
      while (outbox_.empty()) {
        outbox_signal_.expires_at(Clock::time_point::max());
        boost::system::error_code ec;
        co_await outbox_signal_.async_wait(asio::redirect_error(use_awaitable, ec));
        if (session_over_) co_return;
      }
      std::string bytes;
      // Coalesce what is queued into one write.
      while (!outbox_.empty()) {
        bytes += outbox_.front();
        outbox_.pop_front();
      }
      try {
        co_await asio::async_write(stream, asio::buffer(bytes), use_awaitable);
      } catch (const boost::system::system_error&) {
        boost::system::error_code ignored;
        stream_socket(stream).close(ignored);  // the reader ends the session
        co_return;
      }
      last_sent_ = Clock::now();
      if (closing_ && outbox_.empty()) {
        boost::system::error_code ignored;
        stream_socket(stream).shutdown(tcp::socket::shutdown_send, ignored);
        stream_socket(stream).close(ignored);
        co_return;
      }
    }
  }

  awaitable<void> keep_alive_loop() {
    for (;;) {
      keep_alive_timer_.expires_after(std::max<Clock::duration>(std::chrono::milliseconds(250), keep_alive_ / 4));
      boost::system::error_code ec;
      co_await keep_alive_timer_.async_wait(asio::redirect_error(use_awaitable, ec));
      if (session_over_) co_return;
      const auto now = Clock::now();
      if (ping_outstanding_ && !holding_ && now - ping_sent_ > keep_alive_) {
        keep_alive_lapsed_ = true;
        if (close_) close_(true);  // the reader ends the session
        co_return;
      }
      if (now - last_sent_ >= keep_alive_ * 3 / 4 && !ping_outstanding_) {
        send(mqtt::encode_pingreq());
        ping_outstanding_ = true;
        ping_sent_ = now;
      } else if (holding_ && now - last_sent_ >= keep_alive_ * 3 / 4) {
        // Not reading while the queue refuses records: the PINGRESP waits unread, but the broker
        // still needs to hear from tank.
        send(mqtt::encode_pingreq());
        ping_sent_ = now;
      }
    }
  }

  // Runs the read loop; when it ends (for whatever reason) the writer and keep-alive loops end too.
  template <class Stream>
  awaitable<void> reader(Stream& stream, std::string buffer, const std::vector<mqtt::Subscription>& subscriptions) {
    keep_alive_lapsed_ = false;
    std::exception_ptr failure;
    try {
      co_await read_loop(stream, std::move(buffer), subscriptions);
    } catch (...) {
      failure = std::current_exception();
    }
    session_over_ = true;
    outbox_signal_.cancel();
    keep_alive_timer_.cancel();
    if (keep_alive_lapsed_) {
      throw SessionError(fmt::format("no answer to a ping within keep_alive = {}: the connection is dead",
                                     units::format_duration(keep_alive_)),
                         "keep_alive_timeout");
    }
    if (failure) std::rethrow_exception(failure);
  }

  // One message that arrived larger than max_packet_: skipped while read, its first bytes kept.
  struct Oversize {
    std::uint8_t first = 0;
    std::uint64_t left = 0;  // bytes of the packet still to come
    std::uint64_t body_size = 0;
    std::size_t header_size = 0;  // of the fixed header
    std::string head;             // the packet's first bytes (fixed header included)
  };
  // Enough of an oversize packet for its topic, packet id and a dead letter's worth of payload.
  static constexpr std::size_t kOversizeHead = queue::kMaxDeadLetterBytes + 65536;

  template <class Stream>
  awaitable<void> read_loop(Stream& stream, std::string buffer, const std::vector<mqtt::Subscription>& subscriptions) {
    const int version = settings_.protocol_version;
    std::vector<char> chunk(64 * 1024);
    std::optional<Oversize> oversize;
    for (;;) {
      Batch batch(name_, batch_limit_);
      std::string acks;
      std::size_t offset = 0;
      // Frame every complete packet in the buffer.
      for (;;) {
        std::string_view rest = std::string_view(buffer).substr(offset);
        if (oversize) {
          const auto take = static_cast<std::size_t>(std::min<std::uint64_t>(oversize->left, rest.size()));
          if (oversize->head.size() < kOversizeHead) {
            oversize->head.append(rest.substr(0, std::min(take, kOversizeHead - oversize->head.size())));
          }
          oversize->left -= take;
          offset += take;
          if (oversize->left > 0) break;
          co_await dead_letter_oversize(*oversize, batch, acks);
          oversize.reset();
          continue;
        }
        auto f = mqtt::frame(rest);
        if (!f.error.empty()) throw SessionError("the broker sent something that is not MQTT: " + f.error, "protocol_error");
        if (!f.packet) {
          if (f.announced + f.header_size > max_packet_) {
            if ((static_cast<std::uint8_t>(rest[0]) >> 4) != static_cast<int>(mqtt::PacketType::publish)) {
              throw SessionError(fmt::format("the broker sent a control packet of {} bytes", f.announced),
                                 "protocol_error");
            }
            oversize = Oversize{static_cast<std::uint8_t>(rest[0]), f.announced + f.header_size, f.announced,
                                f.header_size, {}};
            continue;
          }
          break;
        }
        const mqtt::RawPacket& p = *f.packet;
        switch (p.type) {
          case mqtt::PacketType::publish: {
            std::string error;
            auto m = mqtt::parse_publish(p, version, error);
            if (!m) throw SessionError("a malformed PUBLISH: " + error, "protocol_error");
            if (m->qos == 2) throw SessionError("the broker sent a QoS 2 message on a QoS 1 subscription", "protocol_error");
            co_await add_message(*m, m->payload.size(), batch, acks);
            break;
          }
          case mqtt::PacketType::suback: {
            std::string error;
            auto s = mqtt::parse_suback(p, version, error);
            if (!s) throw SessionError("a malformed SUBACK: " + error, "protocol_error");
            report_suback(*s, subscriptions);
            break;
          }
          case mqtt::PacketType::pingresp:
            ping_outstanding_ = false;
            break;
          case mqtt::PacketType::disconnect: {
            auto d = mqtt::parse_disconnect(p, version);
            throw SessionError(fmt::format("the broker ended the session: {} (code {})", d.reason, d.code),
                               "disconnected_by_broker");
          }
          case mqtt::PacketType::puback:
          case mqtt::PacketType::pubrec:
          case mqtt::PacketType::pubcomp:
          case mqtt::PacketType::unsuback:
          case mqtt::PacketType::auth:
            break;  // nothing tank asked for; harmless
          default:
            throw SessionError(fmt::format("the broker sent a packet of type {}, which only clients send",
                                           static_cast<int>(p.type)),
                               "protocol_error");
        }
        offset += p.size;
      }
      buffer.erase(0, offset);
      co_await commit(batch, acks);
      if (stopping_) co_return;
      std::size_t n = co_await stream.async_read_some(asio::buffer(chunk), use_awaitable);
      buffer.append(chunk.data(), n);
    }
  }

  void report_suback(const mqtt::Suback& s, const std::vector<mqtt::Subscription>& subscriptions) {
    for (std::size_t i = 0; i < s.codes.size() && i < subscriptions.size(); ++i) {
      if (s.codes[i] >= 0x80) {
        log::error(component_, "the broker refused the subscription to \"{}\" (code {}); check its ACL",
                   subscriptions[i].filter, s.codes[i]);
        metrics_.error("subscription_refused");
      } else if (s.codes[i] < subscriptions[i].qos) {
        log::warn(component_, "the broker granted QoS {} for \"{}\" instead of {}", s.codes[i],
                  subscriptions[i].filter, subscriptions[i].qos);
      }
    }
  }

  // Adds one message to the batch (committing first when it is full); its PUBACK waits in `acks`
  // for the commit.
  awaitable<void> add_message(const mqtt::Publish& m, std::uint64_t size, Batch& batch, std::string& acks) {
    if (size > settings_.max_message_bytes) {
      if (!batch.fits_dead_letter(m.payload.size())) co_await commit(batch, acks);
      batch.dead_letter("message_too_large",
                        fmt::format("a message of {} bytes on topic \"{}\" exceeds max_message_bytes = {}", size,
                                    m.topic, units::format_size(settings_.max_message_bytes)),
                        m.payload, size, clock_.wall_ns());
      metrics_.error("message_too_large");
    } else {
      const std::size_t attribute_bytes = m.topic.size() + 32;
      if (!batch.fits(m.payload.size(), attribute_bytes)) co_await commit(batch, acks);
      if (m.retain) {
        queue::Attribute attrs[] = {{"topic", m.topic}, {"retained", "true"}};
        batch.add(m.payload, clock_.wall_ns(), attrs);
      } else {
        queue::Attribute attrs[] = {{"topic", m.topic}};
        batch.add(m.payload, clock_.wall_ns(), attrs);
      }
    }
    if (m.qos == 1) acks += mqtt::encode_puback(m.packet_id);
    if (batch.full()) co_await commit(batch, acks);
  }

  awaitable<void> dead_letter_oversize(const Oversize& o, Batch& batch, std::string& acks) {
    // The head holds the fixed header, topic and packet id, then the payload's first bytes.
    mqtt::RawPacket partial{mqtt::PacketType::publish, static_cast<std::uint8_t>(o.first & 0x0f),
                            std::string_view(o.head).substr(o.header_size), o.head.size()};
    std::string error;
    auto m = mqtt::parse_publish(partial, settings_.protocol_version, error);
    if (!m) throw SessionError("a malformed PUBLISH: " + error, "protocol_error");
    const std::uint64_t payload_size = o.body_size - (partial.body.size() - m->payload.size());
    co_await add_message(*m, payload_size, batch, acks);
  }

  // Commits the batch, then queues its PUBACKs. While the queue refuses records this waits (not
  // reading, not acknowledging); a stop or a lost connection then leaves the messages with the
  // broker.
  awaitable<void> commit(Batch& batch, std::string& acks) {
    if (batch.empty()) {
      if (!acks.empty()) send(std::move(acks));
      acks.clear();
      co_return;
    }
    for (;;) {
      const queue::CommitResult r = queue_.commit(batch.write_batch());
      if (r.status == queue::CommitStatus::committed || r.status == queue::CommitStatus::dropped) {
        if (r.status == queue::CommitStatus::committed) {
          metrics_.committed(batch.records(), batch.payload_bytes());
        } else {
          metrics_.dropped("overflow_drop_newest", batch.records());
        }
        commit_failures_.end("committing to the queue works again");
        refused_.end("the queue takes messages again");
        holding_ = false;
        batch.clear();
        if (!acks.empty()) send(std::move(acks));
        acks.clear();
        co_return;
      }
      if (r.status == queue::CommitStatus::failed) {
        commit_failures_.occur(fmt::format(
            "committing to the queue failed ({}); the messages are not acknowledged to the broker and are retried",
            r.error));
        metrics_.error("commit_failed");
      } else {
        refused_.occur("the queue is full: holding the broker's messages back until it takes records again");
      }
      holding_ = true;
      if (stopping_) throw SessionError("stopped while the queue refuses records", "stopped");
      wake_.expires_after(std::chrono::seconds(1));
      boost::system::error_code ec;
      co_await wake_.async_wait(asio::redirect_error(use_awaitable, ec));
      if (stopping_) throw SessionError("stopped while the queue refuses records", "stopped");
      if (session_over_ || !stream_open_()) {
        throw SessionError("the connection ended while the queue refused records", "connection_lost");
      }
    }
  }

  MqttSourceSettings settings_;
  std::vector<BrokerAddress> addresses_;
  std::string name_;
  queue::Queue& queue_;
  const tank::Clock& clock_;
  InputMetrics metrics_;
  std::size_t batch_limit_;
  std::string component_;
  log::Episode connect_failures_;
  log::Episode commit_failures_;
  log::Episode refused_;
  std::size_t max_packet_ = 0;

  asio::io_context io_;
  std::optional<ssl::context> tls_;
  asio::steady_timer wake_;     // wakes a commit that waits for the queue
  asio::steady_timer backoff_;  // between reconnect rounds
  asio::steady_timer keep_alive_timer_;
  asio::steady_timer outbox_signal_;
  std::function<bool()> stream_open_;  // whether the session's connection is still open
  std::deque<std::string> outbox_;
  std::function<void(bool)> close_;
  std::thread thread_;
  std::atomic<bool> paused_{false};
  bool stopping_ = false;  // io thread only
  bool holding_ = false;   // read but not committed: nothing may be acknowledged
  bool closing_ = false;
  bool session_over_ = false;
  bool keep_alive_lapsed_ = false;
  bool ping_outstanding_ = false;
  std::uint16_t subscribe_id_ = 0;
  Clock::duration keep_alive_{};
  Clock::time_point last_sent_, ping_sent_;
};

}  // namespace

std::unique_ptr<plugin::Input> make_mqtt_source(const MqttSourceSettings& settings,
                                                const plugin::InputContext& context) {
  return std::make_unique<MqttSource>(settings, context);
}

}  // namespace tank::input
