#pragma once

// The delivery engine: one thread per output, between the queue and the output plugin.
//
//   queue --read (its cursor, its route filter)--> cut a batch --commit its boundaries-->
//     encode, compress, key --> Output::send --> delivered: commit ack + forget boundaries
//                                          \--> rejected:  commit dead letters + ack + forget
//                                          \--> retry:     backoff (full jitter, Retry-After),
//                                                          circuit breaker, send the same batch
//
// Guarantees (DESIGN.md invariants 2 and 3)
//   - A record leaves the queue for this output only in the transaction that follows the
//     upstream's acknowledgement (or its permanent refusal, which dead-letters the batch).
//   - A batch's boundaries are committed before its first send; every attempt, also after a
//     kill -9 and a restart, sends the records of those boundaries in the same order with the
//     same idempotency key (output/batch.hpp). Only when records inside them were evicted by
//     overflow = "drop_oldest" (or the configuration now routes other records here) does the
//     content change, and then the key changes with it.
//   - Batches of one output are sent one at a time, in queue order.
//
// Thread safety: start() and stop() from one thread.

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.hpp"
#include "config/document.hpp"
#include "output/batch.hpp"
#include "plugin/output.hpp"
#include "queue/queue.hpp"

namespace tank::metrics {
class Registry;
}

namespace tank::output {

struct DeliverySettings {
  std::string output;    // the instance name
  std::string type;      // the plugin ("http"), for metrics
  std::string agent_id;
  queue::RouteFilter filter;
  // How the raw records of each input go into a body; derived records (aggregates) are JSON.
  // An input not listed is sent as raw.
  std::map<std::string, PayloadKind, std::less<>> kinds;
  std::size_t max_records = 5000;
  std::size_t max_bytes = 1 << 20;
  std::chrono::nanoseconds linger = std::chrono::milliseconds(200);
  // Every batch holds records of one input only: a batch ends before the first record of another.
  bool split_by_input = false;
  Encoding encoding = Encoding::ndjson;
  Compression compression = Compression::zstd;
  std::chrono::nanoseconds retry_initial = std::chrono::milliseconds(500);
  std::chrono::nanoseconds retry_max = std::chrono::minutes(1);
  unsigned breaker_failures = 5;
  std::chrono::nanoseconds breaker_cooldown = std::chrono::seconds(30);
};

// The common options of an output section (plugin::output_common_options()).
DeliverySettings delivery_settings(const config::SectionValues& values, std::string output, std::string type,
                                   std::string agent_id);

// The state key holding an output's batch in flight.
std::string open_batch_key(std::string_view output);

class Delivery {
 public:
  // batch_max_bytes is clamped to half of queue.max_commit_bytes() (a rejected batch is
  // dead-lettered in one commit).
  Delivery(DeliverySettings settings, queue::Queue& queue, std::unique_ptr<plugin::Output> output,
           metrics::Registry& metrics, const Clock& clock);
  ~Delivery();
  Delivery(const Delivery&) = delete;
  Delivery& operator=(const Delivery&) = delete;

  // Starts the plugin (throws plugin::StartError) and the thread.
  void start();
  // Interrupts a send in progress, stops the thread and the plugin. The batch in flight stays
  // in the queue with its boundaries; the next start sends it again. Idempotent.
  void stop();

 private:
  struct Metrics;
  struct Prepared;

  void run();
  // Reads the next batch into `out.chunks` and commits its boundaries; nullopt when stopping or
  // when there is nothing to send yet.
  std::optional<OpenBatch> cut(Prepared& out);
  // Encodes, compresses and keys the records of `out.chunks` within `open`; false when none is.
  bool prepare(const OpenBatch& open, Prepared& out);
  // Reads the records of `open` again (after a restart) and prepares them.
  bool reread(const OpenBatch& open, Prepared& out);
  // Sends until delivered or rejected; false when stopping first.
  bool deliver(const OpenBatch& open, Prepared& batch);
  bool commit_retrying(const queue::WriteBatch& batch, std::string_view what);
  bool wait_for(std::chrono::nanoseconds d);
  bool stopping() const;

  DeliverySettings settings_;
  queue::Queue& queue_;
  std::unique_ptr<plugin::Output> output_;
  const Clock& clock_;
  std::unique_ptr<Metrics> metrics_;
  std::string consumer_;
  std::string state_key_;
  std::uint64_t position_ = 0;  // acknowledged, or cut into the batch in flight
  unsigned failures_in_a_row_ = 0;
  std::uint64_t rng_state_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tank::output
