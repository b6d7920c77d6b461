#include "mqtt_source.hpp"

#include <atomic>
#include <thread>

#include <boost/asio.hpp>
#include <fmt/format.h>

#include "common/io_beat.hpp"
#include "common/log.hpp"
#include "common/units.hpp"
#include "input/batch.hpp"
#include "input/commit.hpp"
#include "input/input_metrics.hpp"
#include "mqtt/packets.hpp"
#include "mqtt_session.hpp"
#include "queue/queue.hpp"

namespace tank::input {

namespace asio = boost::asio;
using asio::awaitable;

namespace {

// The input: the session's messages go into batches; a batch's PUBACKs are released only once the
// batch is committed. While the queue refuses records the session holds (MqttSession::hold).
class MqttSource final : public plugin::Input, private MqttSession::Receiver {
 public:
  MqttSource(const MqttSourceSettings& settings, const plugin::InputContext& context)
      : settings_(settings),
        name_(context.name),
        queue_(context.queue),
        clock_(context.clock),
        metrics_(context.metrics, context.name, "mqtt"),
        batch_limit_(input::batch_limit(context.queue)),
        route_(context.route),
        component_("input " + context.name),
        committer_(queue_, metrics_, clock_, component_,
                   "the messages are not acknowledged to the broker and are retried"),
        refused_(component_, log::Level::warn),
        session_(make_mqtt_session(settings_, io_, metrics_, component_, *this, queue::kMaxDeadLetterBytes)) {}

  ~MqttSource() override { stop(); }

  void start() override {
    session_->start();
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
    metrics_.set_paused(paused);
    paused_ = paused;
    if (!paused) asio::post(io_, [this] { session_->wake(); });
  }

 private:
  void begin_read() override { batch_ = PendingBatch(name_, batch_limit_, route_.get()); }

  // Adds one message to the batch (committing first when it is full); its PUBACK waits in `acks`
  // for the commit.
  awaitable<void> message(const mqtt::Publish& m, std::uint64_t size, PendingAcks& acks) override {
    if (size > settings_.max_message_bytes) {
      if (!batch_.fits_dead_letter(m.payload.size())) co_await commit(acks);
      batch_.dead_letter("message_too_large",
                         fmt::format("a message of {} bytes on topic \"{}\" exceeds max_message_bytes = {}", size,
                                     m.topic, units::format_size(settings_.max_message_bytes)),
                         m.payload, size, clock_.wall_ns());
      metrics_.error("message_too_large");
    } else {
      const std::size_t attribute_bytes = m.topic.size() + 32;
      if (!batch_.fits(m.payload.size(), attribute_bytes)) co_await commit(acks);
      if (m.retain) {
        queue::Attribute attrs[] = {{"topic", m.topic}, {"retained", "true"}};
        batch_.add(m.payload, clock_.wall_ns(), attrs);
      } else {
        queue::Attribute attrs[] = {{"topic", m.topic}};
        batch_.add(m.payload, clock_.wall_ns(), attrs);
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
      const Outcome o = committer_.commit(batch_);
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
  std::string name_;
  queue::Queue& queue_;
  const tank::Clock& clock_;
  InputMetrics metrics_;
  std::size_t batch_limit_;
  std::shared_ptr<const process::Route> route_;
  std::string component_;
  Committer committer_;
  log::Episode refused_;

  asio::io_context io_;
  liveness::IoBeat io_beat_{io_, component_};
  std::unique_ptr<MqttSession> session_;  // uses io_: declared after it
  // What the current read brought (io thread only).
  PendingBatch batch_{name_, batch_limit_, route_.get()};
  std::thread thread_;
  std::atomic<bool> paused_{false};
};

}  // namespace

std::unique_ptr<plugin::Input> make_mqtt_source(const MqttSourceSettings& settings,
                                                const plugin::InputContext& context) {
  return std::make_unique<MqttSource>(settings, context);
}

}  // namespace tank::input
