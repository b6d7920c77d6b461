#include "mqtt/session.hpp"

#include <algorithm>
#include <deque>
#include <functional>
#include <optional>
#include <stdexcept>

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/backoff.hpp"
#include "common/log.hpp"
#include "common/tls.hpp"
#include "common/units.hpp"
#include "mqtt/broker_uri.hpp"

namespace tank::mqtt {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;
using Clock = std::chrono::steady_clock;
using input::BrokerAddress;
using input::parse_broker_uri;

namespace {

// A session lost sooner than this after its CONNACK is followed by a backoff like a failed
// connect; a longer one by a reconnect at once.
constexpr std::chrono::seconds kStableSession{10};

// A connection problem worth a log line; ends the session.
struct SessionError : std::runtime_error {
  SessionError(std::string message, std::string_view metric_reason)
      : std::runtime_error(std::move(message)), reason(metric_reason) {}
  std::string_view reason;
};

class SessionImpl final : public Session {
 public:
  SessionImpl(const SessionSettings& settings, asio::io_context& io, std::string component, Receiver& receiver,
              std::size_t oversize_payload_bytes)
      : settings_(settings),
        io_(io),
        component_(std::move(component)),
        receiver_(receiver),
        connect_failures_(component_, log::Level::warn),
        oversize_head_(oversize_payload_bytes + 65536),
        wake_(io_),
        backoff_(io_),
        keep_alive_timer_(io_),
        outbox_signal_(io_) {
    for (const auto& uri : settings_.servers) {
      std::string error;
      auto a = parse_broker_uri(uri, error);
      if (!a) throw std::invalid_argument(error);
      addresses_.push_back(*a);
    }
    // Large enough for every message up to max_message_bytes; longer ones are skipped while
    // read, their first bytes dead-lettered.
    max_packet_ = settings_.max_message_bytes + 65536 + 1024;
  }

  void start() override {
    if (std::any_of(addresses_.begin(), addresses_.end(), [](const BrokerAddress& a) { return a.tls; })) {
      make_tls_context();
    }
    asio::co_spawn(io_, supervise(), asio::detached);
  }

  void stop() override {
    stopping_ = true;
    wake_.cancel();
    backoff_.cancel();
    if (close_) close_(holding_);
  }

  void wake() override { wake_.cancel(); }

  bool publish(std::string_view topic, std::string_view payload, int qos, bool retain) override {
    if (!stream_open_ || closing_ || session_over_) return false;
    const std::uint16_t id = qos > 0 ? next_packet_id() : 0;
    send(mqtt::encode_publish(topic, payload, qos, id, retain, settings_.protocol_version));
    return true;
  }

  void release(PendingAcks& acks) override {
    holding_ = false;
    if (!acks.bytes.empty()) send(std::move(acks.bytes));
    acks.bytes.clear();
  }

  // Holding messages while the queue refuses them: nothing is acknowledged meanwhile.
  awaitable<void> hold() override {
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

 private:
  void make_tls_context() {
    tls_.emplace(tls::make_client_context(settings_.tls));
  }

  awaitable<void> supervise() {
    // Each failed round (every server tried) waits longer, with jitter so that a fleet spreads out.
    Backoff reconnect(BackoffPolicy{settings_.reconnect_min, settings_.reconnect_max, BackoffPolicy::Jitter::half});
    while (!stopping_) {
      std::string errors;
      for (std::size_t i = 0; i < addresses_.size() && !stopping_; ++i) {
        std::string error;
        bool was_up = false;
        bool dropped_by_broker = false;  // the broker closed or ended the session
        try {
          if (addresses_[i].tls) {
            co_await connect_and_run<ssl::stream<tcp::socket>>(i, was_up);
          } else {
            co_await connect_and_run<tcp::socket>(i, was_up);
          }
        } catch (const SessionError& e) {
          error = e.what();
          receiver_.failure(e.reason);
          dropped_by_broker = e.reason == "disconnected_by_broker";
        } catch (const boost::system::system_error& e) {
          dropped_by_broker = e.code() == asio::error::eof || e.code() == asio::error::connection_reset;
          error = e.code() == asio::error::eof ? "the broker closed the connection" : e.code().message();
          if (!was_up) receiver_.failure("connect_failed");
        } catch (const std::exception& e) {
          error = e.what();
          if (!was_up) receiver_.failure("connect_failed");
        }
        if (stopping_) co_return;
        if (was_up) {
          receiver_.session_down();
          receiver_.failure("connection_lost");
          const auto lasted = Clock::now() - up_since_;
          if (lasted >= kStableSession) {
            log::warn(component_, "lost the connection to {}: {}; reconnecting", settings_.servers[i], error);
            reconnect.reset();
            i = static_cast<std::size_t>(-1);  // start again with the first server, at once
            continue;
          }
          // A session that ends soon after it began (another client took it over, a broker that
          // drops tank right after accepting it) counts as a failed attempt: reconnecting at once
          // would take the session back from that other client, which would do the same, in a
          // tight loop.
          const auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(reconnect.next());
          log::warn(component_, "lost the connection to {}: {}; the session lasted only {}: reconnecting in {}{}",
                    settings_.servers[i], error,
                    units::format_duration(std::chrono::duration_cast<std::chrono::milliseconds>(lasted)),
                    units::format_duration(delay),
                    dropped_by_broker ? fmt::format(" (is another client using client_id \"{}\"?)", settings_.client_id)
                                      : std::string());
          boost::system::error_code ec;
          backoff_.expires_after(delay);
          co_await backoff_.async_wait(asio::redirect_error(use_awaitable, ec));
          if (stopping_) co_return;
          i = static_cast<std::size_t>(-1);
          continue;
        }
        errors += fmt::format("{}{}: {}", errors.empty() ? "" : "; ", settings_.servers[i], error);
      }
      if (stopping_) co_return;
      const auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(reconnect.next());
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

    // Connect, TLS handshake, CONNECT and CONNACK within connect_timeout. The deadline's handler
    // may already be queued when CONNACK arrives (cancel() is then too late): it acts only while
    // `armed`, which every way out of this phase clears, so it never closes an established session
    // nor touches a socket that is gone.
    struct Deadline {
      bool armed = true;
      bool expired = false;
    };
    auto state = std::make_shared<Deadline>();
    asio::steady_timer deadline(io_);
    deadline.expires_after(settings_.connect_timeout);
    deadline.async_wait([state, &socket](boost::system::error_code ec) {
      if (!ec && state->armed) {
        state->expired = true;
        boost::system::error_code ignored;
        socket.close(ignored);
      }
    });
    const auto disarm = [&] {
      state->armed = false;
      deadline.cancel();
      close_ = nullptr;
    };
    close_ = [&](bool) {
      boost::system::error_code ignored;
      socket.close(ignored);
    };
    std::string buffer;
    mqtt::Connack connack;
    // Where the connection attempt is, for the error message.
    enum class Phase { resolving, connecting, tls_handshake, mqtt_connect } phase = Phase::resolving;
    try {
      tcp::resolver resolver(io_);
      auto endpoints = co_await resolver.async_resolve(address.host, address.port, use_awaitable);
      phase = Phase::connecting;
      co_await asio::async_connect(socket, endpoints, use_awaitable);
      boost::system::error_code nodelay_ignored;  // an optimisation only
      socket.set_option(tcp::no_delay(true), nodelay_ignored);
      if constexpr (!std::is_same_v<Stream, tcp::socket>) {
        phase = Phase::tls_handshake;
        co_await tls_handshake(stream, address);
      }
      phase = Phase::mqtt_connect;
      mqtt::ConnectOptions o;
      o.version = version;
      o.client_id = settings_.client_id;
      o.clean_start = settings_.clean_session;
      o.keep_alive_seconds = static_cast<std::uint16_t>(std::min<std::int64_t>(settings_.keep_alive.count(), 65535));
      if (!settings_.username.empty()) o.username = settings_.username;
      if (!settings_.password.empty()) o.password = settings_.password;
      o.will = receiver_.will();
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
      disarm();
      if (state->expired) {
        throw SessionError(fmt::format("no CONNACK within connect_timeout = {} (is {} an MQTT broker, and does it "
                                       "answer? raise connect_timeout for a slow link)",
                                       units::format_duration(settings_.connect_timeout), uri),
                           "connect_timeout");
      }
      if constexpr (!std::is_same_v<Stream, tcp::socket>) {
        // TLS 1.3: the client's handshake is over before the broker has checked the client's
        // certificate, so its refusal comes while tank waits for CONNACK: an alert, or (when the
        // broker closes with tank's CONNECT unread, and the reset overtakes the alert) a reset.
        if (phase >= Phase::tls_handshake &&
            (e.code().category() == asio::error::get_ssl_category() || e.code() == asio::error::eof ||
             e.code() == asio::error::connection_reset || e.code() == asio::error::broken_pipe)) {
          throw SessionError(
              fmt::format("the broker ended the TLS session before CONNACK: {}{}", e.code().message(),
                          settings_.tls.cert_file.empty()
                              ? " (does the broker require a client certificate? set tls_cert_file and tls_key_file)"
                              : " (does the broker trust the CA that signed tls_cert_file?)"),
              "tls_error");
        }
      }
      const char* where = phase == Phase::resolving    ? "resolving the host name"
                          : phase == Phase::connecting ? "connecting"
                          : phase == Phase::tls_handshake
                              ? "in the TLS handshake"
                              : "waiting for CONNACK";
      throw SessionError(fmt::format("{} ({})", e.code() == asio::error::eof ? "the broker closed the connection"
                                                                             : e.code().message(),
                                     where),
                         "connect_failed");
    } catch (...) {
      disarm();
      throw;
    }
    disarm();
    if (stopping_) co_return;
    if (connack.code != 0) {
      const bool credentials =
          connack.code == 4 || connack.code == 5 || connack.code == 0x86 || connack.code == 0x87;
      throw SessionError(
          fmt::format("the broker refused the connection: {} ({}){}", connack.reason,
                      version >= mqtt::kVersion5 ? fmt::format("reason code 0x{:02x}", connack.code)
                                                 : fmt::format("return code {}", connack.code),
                      !credentials                  ? ""
                      : settings_.username.empty() ? "; it wants a user name and password: set username and password "
                                                     "(or password_file)"
                                                   : fmt::format("; check username = \"{}\" and the password, and "
                                                                 "that the broker allows this user to connect",
                                                                 settings_.username)),
          "connect_refused");
    }
    was_up = true;
    up_since_ = Clock::now();
    receiver_.session_up();
    connect_failures_.end(fmt::format("connected to {}", uri));
    log::info(component_, "connected to {} as \"{}\" ({}), subscribing to {} filter(s)", uri, settings_.client_id,
              connack.session_present ? "the broker kept the session" : "a new session",
              settings_.subscriptions.size());
    keep_alive_ = std::chrono::seconds(settings_.keep_alive);
    if (connack.server_keep_alive) keep_alive_ = std::chrono::seconds(std::max<int>(1, *connack.server_keep_alive));

    // Subscribe, then serve: reader, writer and keep-alive until one of them ends.
    const std::vector<Subscription>& subscriptions = settings_.subscriptions;
    subscribe_id_ = next_packet_id();
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
      SessionImpl* self;
      ~Reset() {
        self->close_ = nullptr;
        self->stream_open_ = nullptr;
        self->holding_ = false;
      }
    } reset{this};
    session_over_ = false;
    session_failure_ = nullptr;
    silent_since_ = Clock::now();
    // `||` ends when the first loop returns and cancels the others; none of them throws: the one
    // that sees the session fail first records why (end_session), and that is what is reported.
    co_await (reader(stream, std::move(buffer), subscriptions) || write_loop(stream) || keep_alive_loop());
    if (session_failure_) std::rethrow_exception(std::exchange(session_failure_, nullptr));
  }

  // Ends the session: the first failure recorded is its cause; every loop sees session_over_.
  void end_session(std::exception_ptr failure) {
    if (failure && !session_failure_) session_failure_ = std::move(failure);
    session_over_ = true;
    outbox_signal_.cancel();
    keep_alive_timer_.cancel();
  }

  // Sends the server name and verifies the broker's certificate chain (against tls_ca_file or
  // the system's store) and that it names address.host: a DNS name, or an IP address in its
  // subjectAltName. A failure says which check failed and what to change.
  awaitable<void> tls_handshake(ssl::stream<tcp::socket>& stream, const BrokerAddress& address) {
    SSL* ssl = stream.native_handle();
    if (auto error = tls::prepare_client(ssl, address.host, settings_.tls.verify); !error.empty()) {
      throw SessionError(error, "tls_error");
    }
    try {
      co_await stream.async_handshake(ssl::stream_base::client, use_awaitable);
    } catch (const boost::system::system_error& e) {
      throw SessionError(
          tls::explain_handshake_failure(ssl, e.code(), settings_.tls, address.host, address.port, "broker"),
          "tls_error");
    }
  }

  // Packet ids of SUBSCRIBE and QoS 1 PUBLISH: 1 to 65535, in turn.
  std::uint16_t next_packet_id() {
    packet_id_ = static_cast<std::uint16_t>(packet_id_ % 65535 + 1);
    return packet_id_;
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
    try {
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
        co_await asio::async_write(stream, asio::buffer(bytes), use_awaitable);
        last_sent_ = Clock::now();
        if (closing_ && outbox_.empty()) {
          boost::system::error_code ignored;
          stream_socket(stream).shutdown(tcp::socket::shutdown_send, ignored);
          stream_socket(stream).close(ignored);
          co_return;
        }
      }
    } catch (...) {
      end_session(std::current_exception());
    }
    boost::system::error_code ignored;
    stream_socket(stream).close(ignored);  // the reader ends too
  }

  // Pings the broker when tank has sent nothing for 3/4 of keep_alive (the broker drops a client
  // silent for 1.5 x keep_alive) or has heard nothing for as long, and declares the connection
  // dead when a ping is outstanding and nothing has arrived for 1.5 x keep_alive: a broker that
  // stopped answering (hung, or a link that drops packets without a reset) is found within
  // 1.5 x keep_alive plus one tick, and its messages are then taken from another connection.
  awaitable<void> keep_alive_loop() {
    const auto tick = std::max<Clock::duration>(std::chrono::milliseconds(100), keep_alive_ / 10);
    try {
      for (;;) {
        keep_alive_timer_.expires_after(tick);
        boost::system::error_code ec;
        co_await keep_alive_timer_.async_wait(asio::redirect_error(use_awaitable, ec));
        if (session_over_) co_return;
        const auto now = Clock::now();
        if (holding_) {
          // Not reading while the queue refuses records: a PINGRESP waits unread, so silence
          // proves nothing; but the broker still needs to hear from tank.
          if (now - last_sent_ >= keep_alive_ * 3 / 4) {
            send(mqtt::encode_pingreq());
            ping_outstanding_ = true;
          }
          continue;
        }
        if (ping_outstanding_ && now - silent_since_ > keep_alive_ * 3 / 2) {
          end_session(std::make_exception_ptr(SessionError(
              fmt::format("nothing from the broker for {} (1.5 x keep_alive), not even an answer to a ping: the "
                          "connection is dead",
                          units::format_duration(keep_alive_ * 3 / 2)),
              "keep_alive_timeout")));
          if (close_) close_(true);
          co_return;
        }
        if (!ping_outstanding_ &&
            (now - last_sent_ >= keep_alive_ * 3 / 4 || now - silent_since_ >= keep_alive_ * 3 / 4)) {
          send(mqtt::encode_pingreq());
          ping_outstanding_ = true;
        }
      }
    } catch (...) {
      end_session(std::current_exception());
    }
  }

  // Runs the read loop; when it ends (for whatever reason) the writer and keep-alive loops end too.
  template <class Stream>
  awaitable<void> reader(Stream& stream, std::string buffer, const std::vector<mqtt::Subscription>& subscriptions) {
    try {
      co_await read_loop(stream, std::move(buffer), subscriptions);
      end_session(nullptr);
    } catch (...) {
      end_session(std::current_exception());
    }
  }

  // One message that arrived larger than max_packet_: skipped while read, its first bytes kept.
  struct Oversize {
    std::uint8_t first = 0;
    std::uint64_t left = 0;  // bytes of the packet still to come
    std::uint64_t body_size = 0;
    std::size_t header_size = 0;  // of the fixed header
    std::string head;             // the packet's first bytes (fixed header included)
  };

  template <class Stream>
  awaitable<void> read_loop(Stream& stream, std::string buffer, const std::vector<mqtt::Subscription>& subscriptions) {
    const int version = settings_.protocol_version;
    std::vector<char> chunk(64 * 1024);
    std::optional<Oversize> oversize;
    for (;;) {
      receiver_.begin_read();
      PendingAcks acks;
      std::size_t offset = 0;
      // Frame every complete packet in the buffer.
      for (;;) {
        std::string_view rest = std::string_view(buffer).substr(offset);
        if (oversize) {
          const auto take = static_cast<std::size_t>(std::min<std::uint64_t>(oversize->left, rest.size()));
          if (oversize->head.size() < oversize_head_) {
            oversize->head.append(rest.substr(0, std::min(take, oversize_head_ - oversize->head.size())));
          }
          oversize->left -= take;
          offset += take;
          if (oversize->left > 0) break;
          co_await dead_letter_oversize(*oversize, acks);
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
            co_await receiver_.message(*m, m->payload.size(), acks);
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
      co_await receiver_.end_of_read(acks);
      if (stopping_) co_return;
      // The broker's silence counts from here: while tank commits (or holds messages while the
      // queue is full) it does not read, which proves nothing about the broker.
      silent_since_ = Clock::now();
      std::size_t n = co_await stream.async_read_some(asio::buffer(chunk), use_awaitable);
      buffer.append(chunk.data(), n);
    }
  }

  // Says which subscriptions the broker granted and, as errors, which it refused (an ACL, a
  // filter it does not support): a refused filter delivers nothing, so it is never reported as
  // subscribed. tank subscribes to every filter again at the next connect.
  void report_suback(const mqtt::Suback& s, const std::vector<mqtt::Subscription>& subscriptions) {
    const int version = settings_.protocol_version;
    if (s.codes.size() != subscriptions.size()) {
      log::warn(component_, "the broker answered {} subscription(s) with {} code(s) (a broker bug?)",
                subscriptions.size(), s.codes.size());
    }
    std::vector<std::string> granted;
    std::size_t refused = 0;
    for (std::size_t i = 0; i < s.codes.size() && i < subscriptions.size(); ++i) {
      const int code = s.codes[i];
      const auto& sub = subscriptions[i];
      if (code >= 0x80) {
        ++refused;
        log::error(component_,
                   "the broker refused the subscription to \"{}\" (code 0x{:02x}: {}): no message on it will "
                   "arrive. Allow client \"{}\"{} to subscribe to it in the broker's ACL; tank subscribes again "
                   "at every connect",
                   sub.filter, code, mqtt::suback_meaning(code, version), settings_.client_id,
                   settings_.username.empty() ? std::string() : fmt::format(" (user \"{}\")", settings_.username));
        receiver_.failure("subscription_refused");
        continue;
      }
      granted.push_back(fmt::format("\"{}\" (QoS {})", sub.filter, code));
      if (code < sub.qos) {
        log::warn(component_,
                  "the broker granted QoS {} for \"{}\" instead of {}: its messages are not kept for tank while "
                  "it is away",
                  code, sub.filter, sub.qos);
      }
    }
    if (!granted.empty()) log::info(component_, "subscribed to {}", fmt::join(granted, ", "));
    if (refused > 0 && granted.empty()) {
      log::error(component_, "connected, but the broker refused every subscription: nothing will arrive");
    }
    receiver_.subscribed(refused == 0 && s.codes.size() >= subscriptions.size());
  }

  awaitable<void> dead_letter_oversize(const Oversize& o, PendingAcks& acks) {
    // The head holds the fixed header, topic and packet id, then the payload's first bytes.
    mqtt::RawPacket partial{mqtt::PacketType::publish, static_cast<std::uint8_t>(o.first & 0x0f),
                            std::string_view(o.head).substr(o.header_size), o.head.size()};
    std::string error;
    auto m = mqtt::parse_publish(partial, settings_.protocol_version, error);
    if (!m) throw SessionError("a malformed PUBLISH: " + error, "protocol_error");
    const std::uint64_t payload_size = o.body_size - (partial.body.size() - m->payload.size());
    co_await receiver_.message(*m, payload_size, acks);
  }

  SessionSettings settings_;
  std::vector<BrokerAddress> addresses_;
  asio::io_context& io_;
  std::string component_;
  Receiver& receiver_;
  log::Episode connect_failures_;
  std::size_t max_packet_ = 0;
  // Enough of an oversize packet for its topic, packet id and a dead letter's worth of payload.
  std::size_t oversize_head_;

  std::optional<ssl::context> tls_;
  asio::steady_timer wake_;     // ends the wait of hold()
  asio::steady_timer backoff_;  // between reconnect rounds
  asio::steady_timer keep_alive_timer_;
  asio::steady_timer outbox_signal_;
  std::function<bool()> stream_open_;  // whether the session's connection is still open
  std::deque<std::string> outbox_;
  std::function<void(bool)> close_;
  bool stopping_ = false;  // io thread only
  bool holding_ = false;   // read but not committed: nothing may be acknowledged
  bool closing_ = false;
  bool session_over_ = false;
  bool ping_outstanding_ = false;
  std::exception_ptr session_failure_;  // why the session ended: the first failure seen
  std::uint16_t subscribe_id_ = 0;
  std::uint16_t packet_id_ = 0;
  Clock::duration keep_alive_{};
  Clock::time_point up_since_;  // when the current session's CONNACK arrived
  Clock::time_point last_sent_;
  Clock::time_point silent_since_;  // when the reader began to wait for bytes that have not come
};

}  // namespace

std::unique_ptr<Session> make_session(const SessionSettings& settings, boost::asio::io_context& io,
                                      std::string component, Session::Receiver& receiver,
                                      std::size_t oversize_payload_bytes) {
  return std::make_unique<SessionImpl>(settings, io, std::move(component), receiver, oversize_payload_bytes);
}

}  // namespace tank::mqtt
