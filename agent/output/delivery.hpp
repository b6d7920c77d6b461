#pragma once

// The delivery engine: one thread per output, between the queue and the output plugin.
//
//   queue --read (its cursor, its route filter)--> cut a batch --> encode, compress, key
//     --commit its boundaries--> Output::send --> delivered: commit ack + forget boundaries
//                                          \--> rejected:  commit dead letters + ack + forget
//                                          \--> retry:     backoff (full jitter, Retry-After),
//                                                          circuit breaker, send the same batch
//
// Pipelining: while max_in_flight batches are in flight, the delivery thread cuts, encodes,
// compresses and keys the next one. Its boundaries are not committed then and nothing of it is
// sent: they are committed in the transaction that acknowledges the batch whose outcome makes room
// for it (one commit per batch under load, not two), and only then does a sender take it. A stop
// or a crash before that commit loses nothing: the batch was never sent, and is cut again.
//
//   delivery thread:  cut+encode N+1 ..... wait | commit(ack N, boundaries N+1) | cut+encode N+2 ...
//   sender:           send N ......................... (waits) ........... | send N+1 ..........
//
// Guarantees (invariants 2 and 3, docs/architecture.md)
//   - A record leaves the queue for this output only in the transaction that follows the
//     upstream's acknowledgement (or its permanent refusal, which dead-letters the batch).
//   - A batch's boundaries are committed before its first send; every attempt, also after a
//     kill -9 and a restart, sends the records of those boundaries in the same order with the
//     same idempotency key (output/batch.hpp). Only when records inside them were evicted by
//     overflow = "drop_oldest" (or the configuration now routes other records here) does the
//     content change, and then the key changes with it.
//   - With max_in_flight = 1 (the default) batches are sent one at a time, in queue order. With
//     N > 1, up to N batches are open at once, each sent by its own sender: they may reach the
//     upstream out of order, and a batch retried after a failure is overtaken by later ones.
//     The queue is still acknowledged in order: a batch finished before an earlier one is marked
//     done in the state (not sent again after a restart) and acknowledged with it.
//     An output that hands batches off in order (DeliverySettings::hands_off_in_order, e.g.
//     outputs.kafka through one producer) keeps queue order with N > 1 too: the first attempt
//     of a batch begins only once the batch before it was handed off; a retried batch is
//     overtaken.
//
// Thread safety: start() and stop() from one thread.

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
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
  // Batches sent at once, each by its own sender with its own plugin instance. Above 1 they may
  // reach the upstream out of queue order (a retried batch is overtaken); acknowledgements in
  // the queue stay in order.
  unsigned max_in_flight = 1;
  // The first attempts of batches begin in queue order, each once the batch before it was handed
  // off (plugin::Descriptor::hands_off_in_order): with max_in_flight > 1, batches reach an
  // order-keeping shared client in queue order.
  bool hands_off_in_order = false;
  // The output sends each record on its own (plugin::Descriptor::sends_records): no body is
  // encoded, the batch's key hashes the records (output/batch.hpp).
  bool sends_records = false;
};

// The common options of an output section (plugin::output_common_options()).
DeliverySettings delivery_settings(const config::SectionValues& values, std::string output, std::string type,
                                   std::string agent_id);

// The state key holding an output's batch in flight.
std::string open_batch_key(std::string_view output);

class Delivery {
 public:
  // batch_max_bytes is clamped to half of queue.max_commit_bytes() (a rejected batch is
  // dead-lettered in one commit). `outputs` holds settings.max_in_flight plugin instances (one
  // per sender: each has its own connection); a single one for max_in_flight = 1.
  Delivery(DeliverySettings settings, queue::Queue& queue, std::vector<std::unique_ptr<plugin::Output>> outputs,
           metrics::Registry& metrics, const Clock& clock);
  Delivery(DeliverySettings settings, queue::Queue& queue, std::unique_ptr<plugin::Output> output,
           metrics::Registry& metrics, const Clock& clock);
  ~Delivery();
  Delivery(const Delivery&) = delete;
  Delivery& operator=(const Delivery&) = delete;

  // Starts the plugins (throws plugin::StartError) and the threads.
  void start();
  // Interrupts the sends in progress, stops the threads and the plugins. The batches in flight
  // stay in the queue with their boundaries; the next start sends them again. Idempotent.
  void stop();

 private:
  struct Metrics;
  struct Prepared;
  struct InFlight;
  struct Cut;
  // Acknowledged batches whose memory is kept for the next ones (Prepared::clear): with
  // max_in_flight = 1 one batch is in flight and one cut at a time, and the one acknowledged
  // becomes the next one cut.
  static constexpr std::size_t kSpareBatches = 1;
  // Read batches whose memory is kept for the next reads (a cut reads into them): the records of
  // a batch are megabytes, and reading each batch into fresh buffers left as much again freed but
  // resident in the allocator's arenas (docs/BENCHMARKS.md, issue 23). A cut usually reads its
  // batch in one or two chunks; the one with the most memory is read into first, so that no more
  // than two grow to a batch's size.
  static constexpr std::size_t kSpareChunks = 2;

  // The cutting thread: cuts batches (one ahead of the max_in_flight open ones), and commits the
  // outcomes of finished ones (acknowledging in queue order).
  void run();
  // Reads the open batches back from the queue's state (after a restart). Throws what the queue
  // throws.
  void restore();
  // One round of run(): commit what finished (with the boundaries of the batch prepared ahead when
  // there is room for it), then cut on or wait; false when stopping.
  bool run_once();
  // A batch to cut after position_, in the memory of a finished one when there is one.
  std::unique_ptr<Cut> new_cut();
  // A sender thread: sends the oldest waiting batch with `output` until it is done.
  void sender(plugin::Output& output, std::size_t instance);
  // Reads on into the batch `c` cuts until it is complete (true): max_records, max_bytes, another
  // input (split_by_input), or linger since its first record. False when stopping, when there is
  // nothing to send yet, or when a finished batch waits to be committed (the cut goes on after).
  bool cut_more(Cut& c);
  // The boundaries of the complete batch `c` (what its state will store).
  InFlightBatch boundaries_of(const Cut& c) const;
  // Encodes, compresses and keys the records of `out.chunks` within `open`; false when none is.
  // For an output that gets a body, the records are dropped then (out.count and out.ingest_ns stay).
  bool prepare(const InFlightBatch& open, Prepared& out);
  // An empty ReadBatch for a read, with the memory of an earlier one when there is one (the
  // largest).
  queue::ReadBatch take_chunk();
  // Keeps the memory of `chunk` for later reads: up to kSpareChunks, the largest (the others are
  // freed).
  void keep_chunk(queue::ReadBatch&& chunk);
  // keep_chunk for each of `chunks`, which is left empty.
  void keep_chunks(std::vector<queue::ReadBatch>& chunks);
  // out.records: the records of out.chunks within `open`.
  void collect(const InFlightBatch& open, Prepared& out) const;
  // Reads the records of `open` again into `out` (chunks, records); false when none is left.
  // Throws what Queue::read throws.
  bool read_back(const InFlightBatch& open, Prepared& out);
  // Reads the records of `open` again (after a restart) and prepares them.
  bool reread(const InFlightBatch& open, Prepared& out);
  // Sends until delivered or rejected (retries, backoff, the circuit breaker); nullopt when
  // stopping first, or (with `evicted` set) when overflow = "drop_oldest" evicted records of the
  // batch before a retry: they are counted as dropped, so they are not sent (the caller reads
  // what is left of the batch, as a restart would).
  // `handed_off` (may be empty) is called once the first attempt was handed off.
  std::optional<plugin::SendResult> send_until_done(plugin::Output& output, Prepared& batch, bool& evicted,
                                                    const std::function<void()>& handed_off);
  // send_until_done, then, after an eviction, the rest of the batch (or nothing): nullopt when
  // stopping first.
  std::optional<plugin::SendResult> send_batch(plugin::Output& output, InFlight& f);
  // Commits what finished batches need (dead letters, done flags, the acknowledgement of the
  // finished front), and with it the boundaries of `next` (prepared, may be null) when fewer than
  // max_in_flight batches stay open; `next` then goes to the senders. False when stopping first.
  bool commit_finished(Cut* next);
  // Dead-letters the records of refused batches in commits of at most half the queue's largest
  // commit; false when stopping first.
  bool dead_letter_rejected();
  // The open batches as the state stores them (format 1 for a single one not done).
  std::string encoded_open_locked() const;
  bool commit_retrying(const queue::WriteBatch& batch, std::string_view what);
  bool wait_for(std::chrono::nanoseconds d);
  // Waits up to `d` for a finished batch (outcome_waiting_locked); false when stopping.
  bool wait_for_outcome(std::chrono::nanoseconds d);
  // A finished batch waits for its commit (or a done one at the front for its acknowledgement).
  bool outcome_waiting_locked() const;
  bool stopping() const;

  DeliverySettings settings_;
  queue::Queue& queue_;
  std::vector<std::unique_ptr<plugin::Output>> outputs_;
  const Clock& clock_;
  std::unique_ptr<Metrics> metrics_;
  // Every batch's body is made with these (guarded by body_mutex_: the delivery thread prepares,
  // and a sender after an eviction).
  Compressor compressor_;
  BodyEncoder encoder_;
  std::mutex body_mutex_;
  // In ascending order of memory held (the largest at the back); guarded by chunks_mutex_ (the
  // delivery thread, a sender).
  std::vector<queue::ReadBatch> spare_chunks_;
  std::mutex chunks_mutex_;
  std::string consumer_;
  std::string state_key_;
  std::uint64_t position_ = 0;  // cut up to here: the last open batch's ack_seq, or acked_
  std::uint64_t acked_ = 0;     // the acknowledged position in the queue
  std::unique_ptr<Cut> cut_;    // the batch being cut (the delivery thread's; stop() after it ended)

  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable wake_;
  bool stopping_ = false;
  std::deque<std::unique_ptr<InFlight>> open_;  // in queue order
  std::vector<std::unique_ptr<InFlight>> spare_;  // acknowledged ones, for their memory
  unsigned sending_ = 0;
  // The circuit breaker, shared by the senders.
  unsigned failures_in_a_row_ = 0;
  std::chrono::steady_clock::time_point open_until_{};
  bool probing_ = false;
  std::uint64_t rng_state_;

  std::thread thread_;
  std::vector<std::thread> senders_;
};

}  // namespace tank::output
