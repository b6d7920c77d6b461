#include "mqtt_source.hpp"

#include <stdexcept>
#include <string_view>
#include <thread>

#include <boost/asio.hpp>
#include <fmt/format.h>

#include "common/io_beat.hpp"
#include "common/log.hpp"
#include "common/units.hpp"
#include "input/queue_side.hpp"
#include "mqtt/packets.hpp"
#include "mqtt/session.hpp"
#include "queue/queue.hpp"

namespace tank::input {

namespace asio = boost::asio;
using asio::awaitable;

namespace {

using mqtt::PendingAcks;

// The session's settings: the input's, with its topics as subscriptions.
mqtt::SessionSettings session_settings(const MqttSourceSettings& s) {
  mqtt::SessionSettings out;
  out.servers = s.servers;
  out.client_id = s.client_id;
  out.protocol_version = s.protocol_version;
  for (const auto& t : s.topics_qos1) out.subscriptions.push_back({t, 1});
  for (const auto& t : s.topics_qos0) out.subscriptions.push_back({t, 0});
  out.clean_session = s.clean_session;
  out.session_expiry = s.session_expiry;
  out.keep_alive = s.keep_alive;
  out.connect_timeout = s.connect_timeout;
  out.username = s.username;
  out.password = s.password;
  out.tls = s.tls;
  out.reconnect_min = s.reconnect_min;
  out.reconnect_max = s.reconnect_max;
  out.max_message_bytes = s.max_message_bytes;
  return out;
}

// The input: the session's messages go into batches; a batch's PUBACKs are released only once the
// batch is committed. While the queue refuses records the session holds (mqtt::Session::hold).
class MqttSource final : public plugin::Input, private mqtt::Session::Receiver {
 public:
  MqttSource(const MqttSourceSettings& settings, const plugin::InputContext& context)
      : settings_(settings),
        side_(context, "mqtt", "the messages are not acknowledged to the broker and are retried"),
        refused_(side_.component, log::Level::warn),
        session_(make_session()) {}

  ~MqttSource() override { stop(); }

  void start() override {
    try {
      session_->start();
    } catch (const std::runtime_error& e) {
      throw plugin::StartError(e.what());  // the TLS context: a certificate or key that cannot be read
    }
    io_beat_.start();
    thread_ = std::thread([this] { io_.run(); });
  }

  void stop() override {
    if (!thread_.joinable()) return;
    asio::post(io_, [this] {
      session_->stop();
      io_beat_.stop();
    });
    thread_.join();
  }

  void set_paused(bool paused) override {
    side_.set_paused(paused);
    if (!paused) asio::post(io_, [this] { session_->wake(); });
  }

 private:
  std::unique_ptr<mqtt::Session> make_session() {
    try {
      return mqtt::make_session(session_settings(settings_), io_, side_.component, *this,
                                queue::kMaxDeadLetterBytes);
    } catch (const std::invalid_argument& e) {
      throw plugin::StartError(e.what());  // a server that is not a broker URI
    }
  }

  void session_up() override { side_.metrics.connection_opened(); }
  void session_down() override { side_.metrics.connection_closed(); }
  void failure(std::string_view reason) override { side_.metrics.error(reason); }

  void begin_read() override { batch_ = side_.batch(); }

  // Adds one message to the batch (committing first when it is full); its PUBACK waits in `acks`
  // for the commit.
  awaitable<void> message(const mqtt::Publish& m, std::uint64_t size, PendingAcks& acks) override {
    if (size > settings_.max_message_bytes) {
      if (!batch_.fits_dead_letter(m.payload.size())) co_await commit(acks);
      batch_.dead_letter("message_too_large",
                         fmt::format("a message of {} bytes on topic \"{}\" exceeds max_message_bytes = {}", size,
                                     m.topic, units::format_size(settings_.max_message_bytes)),
                         m.payload, size, side_.clock.wall_ns());
      side_.metrics.error("message_too_large");
    } else {
      const std::size_t attribute_bytes = m.topic.size() + 32;
      if (!batch_.fits(m.payload.size(), attribute_bytes)) co_await commit(acks);
      if (m.retain) {
        queue::Attribute attrs[] = {{"topic", m.topic}, {"retained", "true"}};
        batch_.add(m.payload, side_.clock.wall_ns(), attrs);
      } else {
        queue::Attribute attrs[] = {{"topic", m.topic}};
        batch_.add(m.payload, side_.clock.wall_ns(), attrs);
      }
    }
    acks.owe(m);
    if (batch_.full()) co_await commit(acks);
  }

  awaitable<void> end_of_read(PendingAcks& acks) override { co_await commit(acks); }

  // Commits the batch, then queues its PUBACKs. While the queue refuses records this waits (not
  // reading, not acknowledging); a stop or a lost connection then leaves the messages with the
  // broker.
  awaitable<void> commit(PendingAcks& acks) {
    if (batch_.empty()) {
      session_->release(acks);
      co_return;
    }
    for (;;) {
      const Outcome o = side_.committer.commit(batch_);
      if (o.acknowledge()) {
        refused_.end("the queue takes messages again");
        session_->release(acks);
        co_return;
      }
      if (o.settlement == Settlement::held) {
        refused_.occur("the queue is full: holding the broker's messages back until it takes records again");
      }
      co_await session_->hold();
    }
  }

  MqttSourceSettings settings_;
  QueueSide side_;
  log::Episode refused_;

  asio::io_context io_;
  liveness::IoBeat io_beat_{io_, side_.component};
  std::unique_ptr<mqtt::Session> session_;  // uses io_: declared after it
  // What the current read brought (io thread only).
  PendingBatch batch_ = side_.batch();
  std::thread thread_;
};

}  // namespace

std::unique_ptr<plugin::Input> make_mqtt_source(const MqttSourceSettings& settings,
                                                const plugin::InputContext& context) {
  return std::make_unique<MqttSource>(settings, context);
}

}  // namespace tank::input
