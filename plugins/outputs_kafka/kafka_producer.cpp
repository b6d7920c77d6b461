#include "kafka_producer.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <condition_variable>
#include <mutex>
#include <shared_mutex>
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

struct BrokerStat {
  std::string name;  // "host:port/<node id>", as librdkafka names it
  bool up = false;
  double rtt_seconds = 0;
};

struct BrokerStats {
  mutable std::mutex mutex;
  std::vector<BrokerStat> brokers;
};

// The messages of one send and their delivery reports. A report finds its slot through the
// message's opaque pointer; the client keeps the Pending until no report of it can come any more,
// so that a late report of a send that gave up never touches freed memory.
struct Pending;
struct Slot {
  Pending* owner = nullptr;
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
};
struct Pending {
  explicit Pending(std::size_t n) : slots(n) {
    for (Slot& slot : slots) slot.owner = this;
  }
  std::vector<Slot> slots;  // one per record of the batch, by index; never resized
  std::atomic<std::size_t> produced{0};
  std::atomic<std::size_t> reported{0};
  // SIZE_MAX while the batch is being produced; then the number of messages produced.
  std::atomic<std::size_t> expected{std::numeric_limits<std::size_t>::max()};
  std::mutex mutex;
  std::condition_variable done;
  std::string abandoned;  // under mutex: the producer went away (why); no report comes any more

  bool complete() const { return reported.load() >= expected.load(); }
};

// The producer the max_in_flight instances of one output share (one idempotence session): batches
// handed to it in queue order (Descriptor::hands_off_in_order) reach each partition in that
// order, while the reports of several batches are awaited at once. Its own thread polls
// librdkafka: delivery reports, errors and statistics.
class Client {
 public:
  Client(const KafkaSettings& settings, std::string client_id, std::string component)
      : settings_(settings), client_id_(std::move(client_id)), component_(std::move(component)) {}

  ~Client() {
    {
      std::lock_guard lock(poll_mutex_);
      stopping_ = true;
    }
    poll_wake_.notify_all();
    if (poller_.joinable()) poller_.join();
    std::unique_lock produce(produce_mutex_);
    destroy("the output stopped");
  }

  const std::shared_ptr<BrokerStats>& stats() const { return stats_; }
  // The per-broker metrics (the registry keeps only a weak reference).
  std::shared_ptr<metrics::FunctionCollectable> metrics;

  // Creates the producer (and starts the poller) when there is none; false with `error` when
  // librdkafka refuses.
  bool start(std::string& error) {
    std::unique_lock produce(produce_mutex_);
    if (producer_ == nullptr && !create(error)) return false;
    std::lock_guard lock(poll_mutex_);
    if (!poller_.joinable()) poller_ = std::thread([this] { poll(); });
    return true;
  }

  // Held while one batch is produced: the producer exists (made again after a fatal error, which
  // `fatal` then names) and no other batch's messages come in between.
  struct Producing {
    std::unique_lock<std::mutex> lock;
    rd_kafka_t* producer = nullptr;  // null: `error` says why there is none
    std::string error;
    std::string fatal;
  };
  Producing begin() {
    Producing p;
    p.lock = std::unique_lock(produce_mutex_);
    if (fatal_.load()) {
      char reason[512];
      const rd_kafka_resp_err_t err = rd_kafka_fatal_error(producer_, reason, sizeof reason);
      p.fatal = fmt::format("{}: {}", rd_kafka_err2name(err), reason);
      log::warn(component_, "the Kafka producer failed for good ({}); starting a new one and sending again", p.fatal);
      destroy("the producer failed (" + p.fatal + ")");
    }
    if (producer_ == nullptr && !create(p.error)) return p;
    p.producer = producer_;
    return p;
  }

  // The client keeps `pending` until every message produced for it was reported, or the producer
  // is gone.
  void track(const std::shared_ptr<Pending>& pending) {
    std::lock_guard lock(pending_mutex_);
    pending_.push_back(pending);
  }

  log::Episode& errors() { return errors_; }
  // A fatal error: the producer sends nothing more; the next begin() makes a new one.
  bool failed() const { return fatal_.load(); }

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
    rd_kafka_conf_set_dr_msg_cb(conf, [](rd_kafka_t*, const rd_kafka_message_t* m, void*) {
      auto* slot = static_cast<Slot*>(m->_private);
      if (slot == nullptr) return;
      slot->err = m->err;
      Pending& pending = *slot->owner;
      if (pending.reported.fetch_add(1) + 1 >= pending.expected.load()) {
        std::lock_guard lock(pending.mutex);
        pending.done.notify_all();
      }
    });
    rd_kafka_conf_set_error_cb(conf, [](rd_kafka_t*, int err, const char* reason, void* opaque) {
      auto* self = static_cast<Client*>(opaque);
      if (err == RD_KAFKA_RESP_ERR__FATAL) self->fatal_ = true;
      // Transient errors (all brokers down, a connection refused) librdkafka recovers from; they
      // show in the deliveries that fail. Logged once per kind of error.
      self->errors_.occur(fmt::format("{}: {}", rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(err)), reason));
    });
    rd_kafka_conf_set_stats_cb(conf, [](rd_kafka_t*, char* json, size_t size, void* opaque) {
      static_cast<Client*>(opaque)->read_statistics(std::string_view(json, size));
      return 0;  // librdkafka frees json
    });
    rd_kafka_conf_set_log_cb(conf, [](const rd_kafka_t*, int level, const char* fac, const char* buf) {
      if (level <= 3) log::warn("kafka", "librdkafka {}: {}", fac, buf);
    });
    rd_kafka_t* producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, message, sizeof message);
    if (producer == nullptr) {
      error = fmt::format("cannot create the Kafka producer: {}", message);
      rd_kafka_conf_destroy(conf);  // rd_kafka_new owns conf only on success
      return false;
    }
    std::lock_guard handle(handle_mutex_);
    producer_ = producer;
    fatal_ = false;
    return true;
  }

  // Under produce_mutex_: purges and destroys the producer; every send still waiting is told
  // `why` (its messages get no report any more) and sends again.
  void destroy(const std::string& why) {
    {
      std::lock_guard handle(handle_mutex_);
      if (producer_ != nullptr) {
        rd_kafka_purge(producer_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT | RD_KAFKA_PURGE_F_NON_BLOCKING);
        rd_kafka_poll(producer_, 0);
        rd_kafka_destroy_flags(producer_, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        producer_ = nullptr;
      }
      fatal_ = false;
    }
    std::lock_guard lock(pending_mutex_);
    for (const auto& pending : pending_) {
      std::lock_guard p(pending->mutex);
      pending->abandoned = why;
      pending->done.notify_all();
    }
    pending_.clear();
  }

  // The poller: delivery reports, errors and statistics, also between batches; forgets the sends
  // whose every report came.
  void poll() {
    for (;;) {
      {
        std::shared_lock handle(handle_mutex_);
        if (producer_ != nullptr) rd_kafka_poll(producer_, 100);
      }
      {
        std::lock_guard lock(pending_mutex_);
        std::erase_if(pending_, [](const auto& p) { return p->expected.load() != std::numeric_limits<std::size_t>::max() && p->complete(); });
      }
      std::unique_lock lock(poll_mutex_);
      if (stopping_) return;
      if (producer_ == nullptr) poll_wake_.wait_for(lock, std::chrono::milliseconds(100));
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

  const KafkaSettings settings_;
  const std::string client_id_;
  const std::string component_;
  std::mutex produce_mutex_;        // one batch is produced at a time; producer_ changes under it
  std::shared_mutex handle_mutex_;  // producer_ is destroyed only while the poller does not use it
  rd_kafka_t* producer_ = nullptr;
  std::atomic<bool> fatal_{false};  // a fatal error: the next batch makes a new producer
  std::mutex pending_mutex_;
  std::vector<std::shared_ptr<Pending>> pending_;  // sends with reports still to come
  std::mutex poll_mutex_;
  std::condition_variable poll_wake_;
  bool stopping_ = false;  // under poll_mutex_
  std::thread poller_;
  std::shared_ptr<BrokerStats> stats_ = std::make_shared<BrokerStats>();  // from the last statistics
  log::Episode errors_{component_, log::Level::warn};
};

class KafkaOutput final : public plugin::Output {
 public:
  KafkaOutput(const KafkaSettings& settings, const plugin::OutputContext& context)
      : settings_(settings), component_("output " + context.name), output_(context.name) {
    std::string client_id = fmt::format("tank-{}-{}", context.agent_id, context.name);
    // One producer for every instance; its per-broker state and round-trip time from librdkafka's
    // statistics become metrics once.
    client_ = context.share->get<Client>([&] {
      auto client = std::make_shared<Client>(settings_, client_id, component_);
      // The collectable holds the statistics it reads (not the client), so that a scrape in
      // progress while the output goes away reads nothing freed.
      client->metrics = std::make_shared<metrics::FunctionCollectable>(
          [stats = client->stats(), output = output_] { return broker_families(*stats, output); });
      context.metrics.add_collectable(client->metrics);  // for as long as the client lives
      return client;
    });
    topic_ = strings::replace_all(strings::replace_all(settings_.topic, "{agent_id}", context.agent_id), "{output}",
                                  context.name);
  }

  void start() override {
    std::string error;
    if (!client_->start(error)) throw plugin::StartError(error);
  }

  plugin::SendResult send(const plugin::OutgoingBatch& batch) override {
    auto pending = std::make_shared<Pending>(batch.each.size());
    std::vector<plugin::RecordRejection> rejected;
    std::string retry_cause;
    {
      Client::Producing producing = client_->begin();
      if (producing.producer == nullptr) return {plugin::SendStatus::retry, producing.error};
      if (!producing.fatal.empty()) {
        retry_cause = "the producer failed (" + producing.fatal + "); a new one sends the batch again";
      }
      client_->track(pending);
      for (std::size_t i = 0; i < batch.each.size() && retry_cause.empty(); ++i) {
        const queue::RecordView& r = *batch.each[i];
        const rd_kafka_resp_err_t err = produce(producing.producer, batch, r, i, &pending->slots[i]);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
          ++pending->produced;
        } else if (err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED && !refused_for_long(r.input)) {
          // librdkafka answers this itself for a while after a broker said it once: retried until
          // the refusal has lasted delivery_timeout (a lasting ACL, not a blip), then dead-lettered.
          retry_cause = fmt::format("record {}: {} (retried until it lasts {} ms)", i, describe(err),
                                    settings_.delivery_timeout.count());
        } else if (permanent(err)) {
          rejected.push_back({i, describe(err)});  // not produced: its slot stays without error
        } else {
          retry_cause = err == RD_KAFKA_RESP_ERR__FATAL ? "the producer failed"
                                                        : fmt::format("producing record {} failed: {}", i, describe(err));
        }
      }
      pending->expected = pending->produced.load();
    }
    // In librdkafka's queue in order: the next batch may be produced while this one's reports come.
    if (batch.handed_off) batch.handed_off();
    // Every message produced gets its report: wait for them all (the last one may wait for a
    // leader to come back for up to message.timeout.ms, reported later by one reconnect backoff).
    const auto deadline = SteadyClock::now() + settings_.delivery_timeout + std::chrono::seconds(12);
    std::string abandoned;
    {
      std::unique_lock lock(pending->mutex);
      while (!pending->complete() && pending->abandoned.empty()) {
        const auto now = SteadyClock::now();
        if (now >= deadline) break;
        if (interrupted_ && now >= stop_deadline_.load()) break;
        if (client_->failed()) {
          pending->abandoned = "the producer failed";
          break;
        }
        pending->done.wait_for(lock, std::chrono::milliseconds(50));
      }
      abandoned = pending->abandoned;
    }
    const std::size_t produced = pending->expected.load();
    const std::size_t reported = std::min(pending->reported.load(), produced);
    if (!abandoned.empty() && reported < produced) {
      return {plugin::SendStatus::retry, abandoned + "; the batch goes again"};
    }
    if (reported < produced) {
      // Not all reports came: the batch goes again (librdkafka may still deliver the rest: each
      // copy carries the same tank-record).
      if (interrupted_) return {plugin::SendStatus::retry, "stopping"};
      return {plugin::SendStatus::retry,
              fmt::format("{} of {} messages were not acknowledged within delivery_timeout ({} ms)",
                          produced - reported, produced, settings_.delivery_timeout.count())};
    }
    if (!retry_cause.empty()) return {plugin::SendStatus::retry, retry_cause};
    for (std::size_t i = 0; i < pending->slots.size(); ++i) {
      const rd_kafka_resp_err_t err = pending->slots[i].err;
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) continue;
      if (permanent(err)) {
        rejected.push_back({i, describe(err)});
      } else if (retry_cause.empty()) {
        retry_cause = fmt::format("record {}: {}", i, describe(err));
      }
    }
    if (!retry_cause.empty()) return {plugin::SendStatus::retry, retry_cause};
    client_->errors().end("the brokers answer again");
    if (rejected.empty()) unauthorized_since_.clear();
    std::sort(rejected.begin(), rejected.end(), [](const auto& a, const auto& b) { return a.index < b.index; });
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

  // The producer goes with the last instance (~Client).
  void stop() override {}

 private:
  // Produces one record; its report goes to `slot`.
  rd_kafka_resp_err_t produce(rd_kafka_t* producer, const plugin::OutgoingBatch& batch, const queue::RecordView& r,
                              std::size_t index, Slot* slot) {
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
      rd_kafka_error_t* error = rd_kafka_produceva(producer, vus, 6);
      const rd_kafka_resp_err_t err = error == nullptr ? RD_KAFKA_RESP_ERR_NO_ERROR : rd_kafka_error_code(error);
      if (error != nullptr) rd_kafka_error_destroy(error);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return err;  // librdkafka owns the headers now
      rd_kafka_headers_destroy(headers);
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) return err;
      // librdkafka holds the batches in flight: wait for reports to make room (bounded by the
      // deadline of the reports themselves, message.timeout.ms).
      if (interrupted_ && SteadyClock::now() >= stop_deadline_.load()) return RD_KAFKA_RESP_ERR__TIMED_OUT;
      rd_kafka_poll(producer, 10);
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

  KafkaSettings settings_;
  std::string component_;
  std::string output_;
  std::shared_ptr<Client> client_;
  std::string topic_;  // {agent_id} and {output} replaced
  std::map<std::string, std::string, std::less<>> topics_;  // input -> topic
  KeyReader keys_{settings_.key_field};
  std::string key_;        // the key of the record being produced
  std::string record_id_;  // its tank-record header
  std::map<std::string, SteadyClock::time_point> unauthorized_since_;  // topic -> first local refusal
  std::atomic<bool> interrupted_{false};
  std::atomic<SteadyClock::time_point> stop_deadline_{SteadyClock::time_point::max()};
};

}  // namespace

std::unique_ptr<plugin::Output> make_kafka_output(const KafkaSettings& settings, const plugin::OutputContext& context) {
  return std::make_unique<KafkaOutput>(settings, context);
}

}  // namespace tank::plugins::kafka
