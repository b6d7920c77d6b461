#include "kafka_producer.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include <boost/json.hpp>
#include <fmt/format.h>
#include <librdkafka/rdkafka.h>

#include "common/log.hpp"
#include "common/strings.hpp"
#include "metrics/registry.hpp"
#include "plugin/input.hpp"

namespace tank::plugins::kafka {
namespace {

using SteadyClock = std::chrono::steady_clock;

// Errors Kafka will give again for the same message however often it is sent: its records are
// dead-lettered. Everything else is retried.
bool permanent(rd_kafka_resp_err_t err) {
  switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
      return true;
    default:
      return false;
  }
}

std::string describe(rd_kafka_resp_err_t err) { return fmt::format("Kafka: {}", rd_kafka_err2str(err)); }

// Finds the message key of records: their key_field when they are JSON objects that have it.
// One per producer, reused: a record is parsed into a stack buffer with the parser's own storage
// kept from record to record, so a key costs no allocation but the key's own.
class KeyReader {
 public:
  explicit KeyReader(std::string field) : field_(std::move(field)) {}
  bool wanted() const { return !field_.empty(); }
  // Sets `key` and returns true when the record has one.
  bool read(std::string_view payload, std::string& key) {
    unsigned char buffer[4096];
    boost::json::monotonic_resource arena(buffer, sizeof buffer);
    parser_.reset(&arena);
    boost::system::error_code ec;
    parser_.write(payload.data(), payload.size(), ec);
    if (!ec) parser_.finish(ec);
    if (ec) return false;
    const boost::json::value v = parser_.release();
    if (!v.is_object()) return false;
    const boost::json::value* found = v.as_object().if_contains(field_);
    if (found == nullptr || found->is_null()) return false;
    if (found->is_string()) {
      key.assign(found->as_string().data(), found->as_string().size());
    } else {
      key = boost::json::serialize(*found);
    }
    return true;
  }

 private:
  std::string field_;
  boost::json::stream_parser parser_;
};

// What a message's delivery report said. One per message of a send; the report finds it through
// the message's opaque pointer. Kept until librdkafka has no message left, so that a late report
// of a purged message (after a timeout) never touches freed memory.
struct Slot {
  std::uint64_t generation = 0;  // the send it belongs to
  std::size_t index = 0;         // into the batch
  bool reported = false;
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
};

struct BrokerStat {
  std::string name;  // "host:port/<node id>", as librdkafka names it
  bool up = false;
  double rtt_seconds = 0;
};

struct BrokerStats {
  mutable std::mutex mutex;
  std::vector<BrokerStat> brokers;
};

class KafkaOutput final : public plugin::Output {
 public:
  KafkaOutput(const KafkaSettings& settings, const plugin::OutputContext& context)
      : settings_(settings), component_("output " + context.name), output_(context.name) {
    // Per-broker state and round-trip time from librdkafka's statistics, for the first instance
    // (the others talk to the same brokers).
    if (context.instance == 0) {
      // The collectable holds the statistics it reads (not this output), so that a scrape in
      // progress while the output goes away reads nothing freed.
      collectable_ = std::make_shared<metrics::FunctionCollectable>(
          [stats = stats_, output = output_] { return broker_families(*stats, output); });
      context.metrics.add_collectable(collectable_);
    }
    client_id_ = fmt::format("tank-{}-{}", context.agent_id, context.name);
    if (context.instance > 0) client_id_ += fmt::format("-{}", context.instance);
    topic_ = strings::replace_all(strings::replace_all(settings_.topic, "{agent_id}", context.agent_id), "{output}",
                                  context.name);
  }

  ~KafkaOutput() override { stop(); }

  void start() override {
    std::string error;
    if (!create(error)) throw plugin::StartError(error);
    idle_poller_ = std::thread([this] { poll_while_idle(); });
  }

  plugin::SendResult send(const plugin::OutgoingBatch& batch) override {
    std::lock_guard lock(poll_mutex_);  // the idle poller keeps off while a batch is sent
    if (!producer_) {
      std::string error;
      if (!create(error)) return {plugin::SendStatus::retry, error};
    }
    if (auto fatal = fatal_error()) return recreate(*fatal);
    forget_reported_slots();
    const std::uint64_t generation = ++generation_;
    reported_ = 0;
    const std::size_t first_slot = slots_.size();
    std::vector<plugin::RecordRejection> rejected;
    std::string retry_cause;
    std::size_t produced = 0;
    for (std::size_t i = 0; i < batch.each.size() && retry_cause.empty(); ++i) {
      const queue::RecordView& r = *batch.each[i];
      slots_.push_back(Slot{generation, i});
      const rd_kafka_resp_err_t err = produce(batch, r, i, &slots_.back());
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        ++produced;
      } else if (err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED && !refused_for_long(r.input)) {
        // librdkafka answers this itself for a while after a broker said it once: retried until
        // the refusal has lasted delivery_timeout (a lasting ACL, not a blip), then dead-lettered.
        slots_.pop_back();
        retry_cause = fmt::format("record {}: {} (retried until it lasts {} ms)", i, describe(err),
                                  settings_.delivery_timeout.count());
      } else if (permanent(err)) {
        slots_.pop_back();
        rejected.push_back({i, describe(err)});
      } else {
        slots_.pop_back();
        retry_cause = err == RD_KAFKA_RESP_ERR__FATAL ? "" : fmt::format("producing record {} failed: {}", i, describe(err));
        if (err == RD_KAFKA_RESP_ERR__FATAL) {
          if (auto fatal = fatal_error()) return recreate(*fatal);
          retry_cause = "the producer failed";
        }
      }
    }
    // Every message produced gets its report: wait for them all (the last one may wait for a
    // leader to come back for up to message.timeout.ms, reported later by one reconnect backoff).
    const auto deadline = SteadyClock::now() + settings_.delivery_timeout + std::chrono::seconds(12);
    while (reported_ < produced) {
      if (interrupted_ && SteadyClock::now() >= stop_deadline_.load()) break;
      if (SteadyClock::now() >= deadline) break;
      rd_kafka_poll(producer_, 50);
      if (auto fatal = fatal_error()) return recreate(*fatal);
    }
    const std::size_t reported = reported_;
    if (reported < produced) {
      // Not all reports came: purge what librdkafka still holds (the purged messages' reports
      // come later, to slots kept until then) and send the batch again.
      rd_kafka_purge(producer_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT | RD_KAFKA_PURGE_F_NON_BLOCKING);
      rd_kafka_poll(producer_, 0);
      if (interrupted_) return {plugin::SendStatus::retry, "stopping"};
      return {plugin::SendStatus::retry,
              fmt::format("{} of {} messages were not acknowledged within delivery_timeout ({} ms)",
                          produced - reported, produced, settings_.delivery_timeout.count())};
    }
    for (std::size_t s = first_slot; s < slots_.size(); ++s) {
      const Slot& slot = slots_[s];
      if (slot.err == RD_KAFKA_RESP_ERR_NO_ERROR) continue;
      if (permanent(slot.err)) {
        rejected.push_back({slot.index, describe(slot.err)});
      } else if (retry_cause.empty()) {
        retry_cause = fmt::format("record {}: {}", slot.index, describe(slot.err));
      }
    }
    if (!retry_cause.empty()) return {plugin::SendStatus::retry, retry_cause};
    errors_.end("the brokers answer again");
    if (rejected.empty()) unauthorized_since_.clear();
    plugin::SendResult result{plugin::SendStatus::delivered,
                              fmt::format("{} message(s) acknowledged", batch.each.size() - rejected.size())};
    result.rejected_records = std::move(rejected);
    return result;
  }

  void interrupt() override {
    // A send in progress waits stop_timeout more for its reports, then gives up (the batch stays
    // in flight in the queue and is sent again after the restart).
    stop_deadline_ = SteadyClock::now() + settings_.stop_timeout;
    interrupted_ = true;
  }

  std::chrono::nanoseconds longest_send() const override {
    return settings_.delivery_timeout + std::chrono::seconds(12);
  }

  void stop() override {
    {
      std::lock_guard lock(idle_mutex_);
      stopping_ = true;
    }
    idle_wake_.notify_all();
    if (idle_poller_.joinable()) idle_poller_.join();
    std::lock_guard lock(poll_mutex_);
    destroy();
  }

 private:
  bool create(std::string& error) {
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    char message[512];
    for (const auto& [name, value] : producer_properties(settings_, client_id_)) {
      if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), message, sizeof message) != RD_KAFKA_CONF_OK) {
        error = fmt::format("librdkafka refuses {} = \"{}\": {}", name, value, message);
        rd_kafka_conf_destroy(conf);
        return false;
      }
    }
    rd_kafka_conf_set_opaque(conf, this);
    rd_kafka_conf_set_dr_msg_cb(conf, [](rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
      auto* slot = static_cast<Slot*>(m->_private);
      if (slot == nullptr) return;
      slot->reported = true;
      slot->err = m->err;
      auto* self = static_cast<KafkaOutput*>(opaque);
      if (slot->generation == self->generation_) ++self->reported_;
    });
    rd_kafka_conf_set_error_cb(conf, [](rd_kafka_t*, int err, const char* reason, void* opaque) {
      auto* self = static_cast<KafkaOutput*>(opaque);
      // Transient errors (all brokers down, a connection refused) librdkafka recovers from; they
      // show in the deliveries that fail. Logged once per kind of error.
      self->errors_.occur(fmt::format("{}: {}", rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(err)), reason));
    });
    rd_kafka_conf_set_stats_cb(conf, [](rd_kafka_t*, char* json, size_t size, void* opaque) {
      static_cast<KafkaOutput*>(opaque)->read_statistics(std::string_view(json, size));
      return 0;  // librdkafka frees json
    });
    rd_kafka_conf_set_log_cb(conf, [](const rd_kafka_t*, int level, const char* fac, const char* buf) {
      if (level <= 3) log::warn("kafka", "librdkafka {}: {}", fac, buf);
    });
    producer_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, message, sizeof message);
    if (producer_ == nullptr) {
      error = fmt::format("cannot create the Kafka producer: {}", message);
      rd_kafka_conf_destroy(conf);  // rd_kafka_new owns conf only on success
      return false;
    }
    return true;
  }

  // Produces one record; its report goes to `slot`.
  rd_kafka_resp_err_t produce(const plugin::OutgoingBatch& batch, const queue::RecordView& r, std::size_t index,
                              Slot* slot) {
    const std::string& topic = topic_for(r.input);
    const bool keyed = keys_.wanted() && keys_.read(r.payload, key_);
    record_id_.assign(batch.idempotency_key);
    record_id_ += '#';
    record_id_ += std::to_string(index);
    const void* key_data = keyed ? key_.data() : nullptr;
    const std::size_t key_size = keyed ? key_.size() : 0;
    const std::string& record_id = record_id_;
    for (;;) {
      rd_kafka_headers_t* headers = rd_kafka_headers_new(3);
      rd_kafka_header_add(headers, "idempotency-key", -1, batch.idempotency_key.data(),
                          static_cast<ssize_t>(batch.idempotency_key.size()));
      rd_kafka_header_add(headers, "tank-record", -1, record_id.data(), static_cast<ssize_t>(record_id.size()));
      rd_kafka_header_add(headers, "tank-input", -1, r.input.data(), static_cast<ssize_t>(r.input.size()));
      // rd_kafka_produceva, not producev: producev's macros are GNU statement expressions.
      rd_kafka_vu_t vus[6];
      vus[0].vtype = RD_KAFKA_VTYPE_TOPIC;
      vus[0].u.cstr = topic.c_str();
      vus[1].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
      vus[1].u.i = RD_KAFKA_MSG_F_COPY;
      vus[2].vtype = RD_KAFKA_VTYPE_VALUE;
      vus[2].u.mem.ptr = const_cast<char*>(r.payload.data());
      vus[2].u.mem.size = r.payload.size();
      vus[3].vtype = RD_KAFKA_VTYPE_KEY;
      vus[3].u.mem.ptr = const_cast<void*>(key_data);
      vus[3].u.mem.size = key_size;
      vus[4].vtype = RD_KAFKA_VTYPE_HEADERS;
      vus[4].u.headers = headers;
      vus[5].vtype = RD_KAFKA_VTYPE_OPAQUE;
      vus[5].u.ptr = slot;
      rd_kafka_error_t* error = rd_kafka_produceva(producer_, vus, 6);
      const rd_kafka_resp_err_t err = error == nullptr ? RD_KAFKA_RESP_ERR_NO_ERROR : rd_kafka_error_code(error);
      if (error != nullptr) rd_kafka_error_destroy(error);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return err;  // librdkafka owns the headers now
      rd_kafka_headers_destroy(headers);
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) return err;
      // librdkafka holds a batch's worth: wait for reports to make room (bounded by the deadline
      // of the reports themselves, message.timeout.ms).
      if (interrupted_ && SteadyClock::now() >= stop_deadline_.load()) return RD_KAFKA_RESP_ERR__TIMED_OUT;
      rd_kafka_poll(producer_, 50);
    }
  }

  // The topic of a record of `input` (the template's {input} replaced; cached per input).
  const std::string& topic_for(std::string_view input) {
    if (topic_.find("{input}") == std::string::npos) return topic_;
    auto it = topics_.find(input);
    if (it == topics_.end()) it = topics_.emplace(std::string(input), strings::replace_all(topic_, "{input}", input)).first;
    return it->second;
  }

  // Whether produce() has refused the topic of records of `input` as unauthorized for at least
  // delivery_timeout (since the first such refusal after the last clean delivery).
  bool refused_for_long(std::string_view input) {
    const std::string topic = topic_for(input);
    const auto now = SteadyClock::now();
    auto [it, fresh] = unauthorized_since_.emplace(topic, now);
    return !fresh && now - it->second >= settings_.delivery_timeout;
  }

  // Drops the slots of earlier sends once librdkafka holds no message of theirs any more.
  void forget_reported_slots() {
    if (slots_.empty()) return;
    if (rd_kafka_outq_len(producer_) == 0) {
      rd_kafka_poll(producer_, 0);  // reports still queued for us
      slots_.clear();
    }
  }

  std::optional<std::string> fatal_error() {
    char reason[512];
    const rd_kafka_resp_err_t err = rd_kafka_fatal_error(producer_, reason, sizeof reason);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return std::nullopt;
    return fmt::format("{}: {}", rd_kafka_err2name(err), reason);
  }

  // After a fatal error the producer can send nothing more: a new one (a new idempotence
  // session) sends the batch again.
  plugin::SendResult recreate(const std::string& fatal) {
    log::warn(component_, "the Kafka producer failed for good ({}); starting a new one and sending the batch again",
              fatal);
    destroy();
    std::string error;
    if (!create(error)) return {plugin::SendStatus::retry, error};
    return {plugin::SendStatus::retry, "the producer failed (" + fatal + "); a new one sends the batch again"};
  }

  // librdkafka serves its statistics (and late reports) only from rd_kafka_poll, which send()
  // calls while it sends: between batches this thread polls once a second.
  void poll_while_idle() {
    std::unique_lock idle(idle_mutex_);
    while (!stopping_) {
      idle_wake_.wait_for(idle, std::chrono::seconds(1));
      if (stopping_) break;
      idle.unlock();
      {
        std::unique_lock lock(poll_mutex_, std::try_to_lock);
        if (lock.owns_lock() && producer_ != nullptr) rd_kafka_poll(producer_, 0);
      }
      idle.lock();
    }
  }

  // The brokers of a statistics document ("brokers": {"<host:port>/<id>": {"nodeid", "state",
  // "rtt": {"avg" (microseconds)}}}); the bootstrap entries (nodeid -1) are left out.
  void read_statistics(std::string_view json) {
    boost::system::error_code ec;
    const boost::json::value v = boost::json::parse(json, ec);
    if (ec || !v.is_object()) return;
    const boost::json::object* brokers = v.as_object().if_contains("brokers") != nullptr
                                             ? v.as_object().at("brokers").if_object()
                                             : nullptr;
    if (brokers == nullptr) return;
    std::vector<BrokerStat> stats;
    for (const auto& [name, b] : *brokers) {
      const boost::json::object* o = b.if_object();
      if (o == nullptr) continue;
      const boost::json::value* id = o->if_contains("nodeid");
      if (id == nullptr || !id->is_int64() || id->as_int64() < 0) continue;
      BrokerStat stat;
      stat.name = std::string(name);
      const boost::json::value* state = o->if_contains("state");
      stat.up = state != nullptr && state->is_string() && state->as_string() == "UP";
      if (const boost::json::value* rtt = o->if_contains("rtt"); rtt != nullptr && rtt->is_object()) {
        if (const boost::json::value* avg = rtt->as_object().if_contains("avg"); avg != nullptr && avg->is_number()) {
          stat.rtt_seconds = avg->to_number<double>() / 1e6;
        }
      }
      stats.push_back(std::move(stat));
    }
    std::lock_guard lock(stats_->mutex);
    stats_->brokers = std::move(stats);
  }

  static std::vector<prometheus::MetricFamily> broker_families(const BrokerStats& stats, const std::string& output) {
    std::vector<metrics::GaugeSample> up, rtt;
    {
      std::lock_guard lock(stats.mutex);
      for (const BrokerStat& b : stats.brokers) {
        up.push_back({{{"output", output}, {"broker", b.name}}, b.up ? 1.0 : 0.0});
        rtt.push_back({{{"output", output}, {"broker", b.name}}, b.rtt_seconds});
      }
    }
    return {metrics::gauge_family("tank_output_kafka_broker_up",
                                  "Whether outputs.kafka's producer has its connection to the broker up (librdkafka's "
                                  "statistics, every statistics.interval.ms)",
                                  std::move(up)),
            metrics::gauge_family("tank_output_kafka_broker_rtt_seconds",
                                  "The broker's average round-trip time in the last statistics interval",
                                  std::move(rtt))};
  }

  void destroy() {
    if (producer_ == nullptr) return;
    rd_kafka_purge(producer_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT | RD_KAFKA_PURGE_F_NON_BLOCKING);
    rd_kafka_poll(producer_, 0);
    rd_kafka_destroy_flags(producer_, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    producer_ = nullptr;
    slots_.clear();  // no report comes after the producer is gone
  }


  KafkaSettings settings_;
  std::string component_;
  std::string output_;
  std::mutex poll_mutex_;  // one thread polls librdkafka at a time: send(), or the idle poller
  std::mutex idle_mutex_;
  std::condition_variable idle_wake_;
  bool stopping_ = false;  // under idle_mutex_
  std::thread idle_poller_;
  std::shared_ptr<BrokerStats> stats_ = std::make_shared<BrokerStats>();  // from the last statistics
  std::shared_ptr<metrics::FunctionCollectable> collectable_;
  std::string client_id_;
  std::string topic_;  // {agent_id} and {output} replaced
  std::map<std::string, std::string, std::less<>> topics_;  // input -> topic
  KeyReader keys_{settings_.key_field};
  std::string key_;        // the key of the record being produced
  std::string record_id_;  // its tank-record header
  rd_kafka_t* producer_ = nullptr;
  std::deque<Slot> slots_;  // stable addresses: reports point into it
  std::uint64_t generation_ = 0;  // of the send in progress
  std::size_t reported_ = 0;      // its messages with a delivery report
  std::map<std::string, SteadyClock::time_point> unauthorized_since_;  // topic -> first local refusal
  std::atomic<bool> interrupted_{false};
  std::atomic<SteadyClock::time_point> stop_deadline_{SteadyClock::time_point::max()};
  log::Episode errors_{component_, log::Level::warn};
};

}  // namespace

std::unique_ptr<plugin::Output> make_kafka_output(const KafkaSettings& settings, const plugin::OutputContext& context) {
  return std::make_unique<KafkaOutput>(settings, context);
}

}  // namespace tank::plugins::kafka
