#pragma once

// What an output plugin is to the agent.
//
// The delivery engine (output/delivery.hpp) does everything outputs share: it reads the output's
// records from the queue through the output's own cursor, cuts batches (batch_max_records,
// batch_max_bytes, linger) whose boundaries it commits before the first send, encodes and
// compresses them, derives the idempotency key, retries with capped exponential backoff and full
// jitter, keeps the circuit breaker, dead-letters batches the upstream refuses for good, and
// acknowledges delivered batches. A plugin only sends one prepared batch and says what happened.
//
// Life cycle, from the output's own thread: create, start(), send() any number of times,
// stop(). interrupt() may be called from another thread at any time.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.hpp"
#include "config/document.hpp"
#include "config/schema.hpp"
#include "queue/record.hpp"

namespace tank::metrics {
class Registry;
}

namespace tank::plugin {

struct OutgoingBatch {
  std::uint64_t first_seq = 0;        // the queue sequence numbers the batch spans
  std::uint64_t last_seq = 0;
  std::size_t records = 0;
  std::string_view body;              // encoded, then compressed
  std::size_t uncompressed_bytes = 0;
  std::string_view content_type;      // "application/x-ndjson", "application/json"
  std::string_view content_encoding;  // "zstd", "gzip", or "" (none)
  std::string_view idempotency_key;   // the same for every attempt of this batch (output/batch.hpp)
  std::string_view input;             // the input of every record, or "" when they are mixed
  // The records themselves, in queue order (payload, input, attributes, seq), for an output that
  // sends each record on its own (Descriptor::sends_records): each.size() == records. Empty for
  // the others (the body holds the records; they are not kept while the batch is in flight).
  std::span<const queue::RecordView* const> each;
  // Set for an output whose batches are handed off in queue order (Descriptor::hands_off_in_order)
  // on their first attempt: the output calls it once every record of the batch is with its client
  // in order (e.g. queued in librdkafka), and only then does the send of the next batch begin.
  // Optional (the send's return counts as the hand-off too); calling it twice does nothing more.
  std::function<void()> handed_off;
};

// One record of a batch the upstream refused for good while it took the others.
struct RecordRejection {
  std::size_t index = 0;  // into OutgoingBatch::each
  std::string detail;     // for people and the dead letter: "Kafka: Broker: Message size too large"
};

enum class SendStatus {
  delivered,  // the upstream acknowledged the batch
  retry,      // not delivered, may be sent again (timeouts, 5xx, 429, connection errors)
  rejected,   // refused for good (a 4xx other than 408/429): it goes to the dead-letter store
};

struct SendResult {
  SendResult() = default;
  SendResult(SendStatus s, std::string d = {}, std::optional<std::chrono::milliseconds> wait = std::nullopt)
      : status(s), detail(std::move(d)), retry_after(wait) {}

  SendStatus status = SendStatus::retry;
  // For people: "HTTP 503 Service Unavailable: <body excerpt>", "connect to 10.0.0.1:443: timed
  // out". For rejected batches it is the dead letters' detail.
  std::string detail;
  // The upstream asked to wait this long before the next attempt (HTTP Retry-After).
  std::optional<std::chrono::milliseconds> retry_after;
  // With delivered: the records of the batch the upstream refused for good while it took the
  // rest (an output that sends each record on its own). They go to the dead-letter store with
  // reason upstream_rejected and their own detail; the batch is acknowledged once they are in.
  std::vector<RecordRejection> rejected_records;
};

class Output {
 public:
  virtual ~Output() = default;
  // Prepares what does not depend on the upstream being reachable (files, TLS contexts);
  // throws StartError (plugin/input.hpp) when the configuration cannot work.
  virtual void start() {}
  // Sends one batch and returns what happened. Blocks for at most the plugin's own timeouts.
  // Called from the output's thread only. Never throws for upstream or network problems.
  virtual SendResult send(const OutgoingBatch& batch) = 0;
  // Makes a send() in progress return (as retry) soon; from any thread (shutdown).
  virtual void interrupt() {}
  // The longest one send() may block by the plugin's own timeouts (connecting, TLS, waiting for
  // the answer). The watchdog (common/liveness.hpp) allows a sending thread this much beyond the
  // stall timeout before it calls the thread stuck.
  virtual std::chrono::nanoseconds longest_send() const { return std::chrono::nanoseconds(0); }
  // Releases connections and files; no send() follows.
  virtual void stop() {}
};

// What the max_in_flight instances of one output share: the same object is in each instance's
// context. An output that sends through one client for all its instances (one Kafka producer,
// one idempotence session) keeps the client here; the first instance to ask makes it.
class InstanceShare {
 public:
  // The shared T, made by `make()` (a std::shared_ptr<T>) on the first call. Thread-safe.
  template <class T, class Make>
  std::shared_ptr<T> get(Make make) {
    std::lock_guard lock(mutex_);
    if (!value_) value_ = make();
    return std::static_pointer_cast<T>(value_);
  }

 private:
  std::mutex mutex_;
  std::shared_ptr<void> value_;
};

struct OutputContext {
  std::string name;  // the instance's unique name
  metrics::Registry& metrics;
  const Clock& clock;
  std::string agent_id;
  std::filesystem::path data_dir;
  // Which of the output's max_in_flight instances this is (0, 1, ...): each sends on its own;
  // e.g. an MQTT client makes its client identifier unique with it.
  unsigned instance = 0;
  unsigned instances = 1;  // how many there are (the output's max_in_flight)
  // Shared by the output's instances (never null when made by the engine).
  std::shared_ptr<InstanceShare> share = std::make_shared<InstanceShare>();
};

using OutputFactory =
    std::function<std::unique_ptr<Output>(const config::SectionValues& options, const OutputContext& context)>;

// Options every output has, declared once: name, inputs, the batching, encoding, compression,
// retry and circuit breaker settings (output/delivery.hpp reads them).
std::span<const config::Option> output_common_options();

// The name an output instance gets: its `name` option, or the plugin's name when unset.
std::string output_name(const config::SectionValues& values, std::string_view plugin_name);

// Adds an error when the string option `option` (a topic template) has braces around anything but
// {agent_id}, {output} and {input}.
void check_topic_template(const config::SectionValues& values, config::Diagnostics& diagnostics,
                          std::string_view option);

// The queue consumer name of an output.
std::string output_consumer_name(std::string_view output_name);

}  // namespace tank::plugin
