#include "mqtt_source.hpp"

#include <stdexcept>
#include <string_view>
#include <thread>

#include <boost/asio.hpp>
#include <fmt/format.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>

#include "common/io_beat.hpp"
#include "common/log.hpp"
#include "common/units.hpp"
#include "input/queue_side.hpp"
#include "mqtt/packets.hpp"
#include "mqtt/session.hpp"
#include "queue/queue.hpp"
#include "sparkplug/host.hpp"

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
        session_(make_session()) {
    if (settings_.sparkplug) {
      auto& events = prometheus::BuildCounter()
                         .Name("tank_input_sparkplug_events_total")
                         .Help("What a Sparkplug B input met, by event: births, deaths, seq gaps, unknown aliases, "
                               "messages from nodes not born, rebirth requests sent, STATE and command messages "
                               "passed over.")
                         .Register(context.metrics.core());
      host_ = std::make_unique<sparkplug::Host>(
          sparkplug::HostSettings{context.name, settings_.rebirth, settings_.rebirth_interval},
          [&events, name = context.name](std::string_view event) {
            events.Add({{"input", name}, {"event", std::string(event)}}).Increment();
          });
    }
  }

  ~MqttSource() override { stop(); }

  void start() override {
    if (host_) host_->load(side_.queue);
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
      // A host application says it goes offline before it disconnects (a DISCONNECT suppresses
      // the will): the message leaves before the DISCONNECT.
      if (!settings_.host_id.empty()) session_->publish(state_topic(), state_payload(false), 1, true);
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

  std::string state_topic() const { return "spBv1.0/STATE/" + settings_.host_id; }
  std::string state_payload(bool online) const {
    return fmt::format("{{\"online\":{},\"timestamp\":{}}}", online ? "true" : "false", state_timestamp_ms_);
  }

  // Sparkplug 3.0 host application: the will is the offline STATE with the timestamp the online
  // one of this session will carry.
  std::optional<mqtt::Will> will() override {
    if (settings_.host_id.empty()) return std::nullopt;
    state_timestamp_ms_ = side_.clock.wall_ns() / 1000000;
    return mqtt::Will{state_topic(), state_payload(false), 1, true};
  }

  // Online only once the queue is open (the input starts after it) and every subscription is in
  // place: edge nodes send their births when they see it.
  void subscribed(bool all_granted) override {
    if (settings_.host_id.empty()) return;
    if (!all_granted) {
      log::error(side_.component,
                 "not publishing the Sparkplug STATE online message: a subscription was refused, so edge nodes "
                 "would send data tank does not receive");
      return;
    }
    if (session_->publish(state_topic(), state_payload(true), 1, true)) {
      log::info(side_.component, "Sparkplug host \"{}\" is online ({})", settings_.host_id, state_topic());
    }
  }

  void session_up() override { side_.metrics.connection_opened(); }
  void session_down() override { side_.metrics.connection_closed(); }
  void failure(std::string_view reason) override { side_.metrics.error(reason); }

  void begin_read() override {
    batch_ = side_.batch();
    // Conversions of a read that was never committed (its session ended while the queue refused
    // it): the broker sends those messages again, so their changes to the tables are undone.
    if (host_) host_->rollback();
  }

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
    } else if (host_) {
      co_await sparkplug_message(m, acks);
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

  // A Sparkplug message: its records, then its dead letter, then the state that built or used
  // them (so the state is in the commit of the message's last record); rebirth requests at once.
  awaitable<void> sparkplug_message(const mqtt::Publish& m, PendingAcks& acks) {
    const std::int64_t now = side_.clock.wall_ns();
    sparkplug::Conversion c = host_->convert(m.topic, m.payload, now);
    for (const auto& p : c.publishes) session_->publish(p.topic, p.payload, 0, false);
    const std::size_t attribute_bytes = m.topic.size() + 48;
    if (!batch_.fits(c.bytes() + c.records.size() * attribute_bytes)) co_await commit(acks);
    for (const auto& r : c.records) {
      if (!batch_.fits(r.json.size(), attribute_bytes)) co_await commit(acks);
      if (r.historical) {
        queue::Attribute attrs[] = {{"topic", m.topic}, {"historical", "true"}};
        batch_.add(r.json, now, attrs, true);
      } else {
        queue::Attribute attrs[] = {{"topic", m.topic}};
        batch_.add(r.json, now, attrs, true);
      }
    }
    if (c.dead_letter) {
      if (!batch_.fits_dead_letter(m.payload.size())) co_await commit(acks);
      side_.metrics.error(c.dead_letter->reason);
      queue::Attribute attrs[] = {{"topic", m.topic}};
      batch_.dead_letter(c.dead_letter->reason, std::move(c.dead_letter->detail), m.payload, m.payload.size(), now,
                         attrs);
    }
    auto& puts = batch_.write_batch().state_puts;
    for (auto& p : c.state_puts) puts.push_back(std::move(p));
    batch_mark_ = host_->mark();
  }

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
        if (host_) host_->committed(batch_mark_);
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
  std::unique_ptr<sparkplug::Host> host_;   // format = "sparkplug_b"
  std::size_t batch_mark_ = 0;              // host_->mark() once the batch holds a whole message
  std::int64_t state_timestamp_ms_ = 0;     // of this session's STATE messages
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
