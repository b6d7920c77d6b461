#include "output/delivery.hpp"

#include <algorithm>
#include <deque>
#include <random>

#include <fmt/format.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "common/backoff.hpp"
#include "common/failpoint.hpp"
#include "common/liveness.hpp"
#include "common/log.hpp"
#include "common/units.hpp"
#include "metrics/registry.hpp"
#include "queue/settlement.hpp"

namespace tank::output {

namespace {

constexpr auto kIdlePoll = std::chrono::milliseconds(20);
constexpr auto kLingerPoll = std::chrono::milliseconds(5);
// Between attempts to commit an output's own bookkeeping (acknowledgements, dead letters).
constexpr BackoffPolicy kCommitRetry{std::chrono::milliseconds(100), std::chrono::seconds(2),
                                     BackoffPolicy::Jitter::none};

std::string_view reason_of(queue::CommitStatus status) { return queue::to_string(status); }

}  // namespace

struct Delivery::Metrics {
  Metrics(metrics::Registry& registry, const std::string& output, const std::string& type) {
    const prometheus::Labels base{{"output", output}, {"type", type}};
    auto& batches = prometheus::BuildCounter()
                        .Name("tank_output_batches_total")
                        .Help("Batch attempts by result: delivered, retried (the attempt failed and the batch is "
                              "sent again), rejected (refused for good; dead-lettered).")
                        .Register(registry.core());
    auto& records = prometheus::BuildCounter()
                        .Name("tank_output_records_total")
                        .Help("Records in batch attempts, by result (as tank_output_batches_total).")
                        .Register(registry.core());
    auto& bytes = prometheus::BuildCounter()
                      .Name("tank_output_bytes_total")
                      .Help("Bytes of batch attempts before (stage=\"encoded\") and after (stage=\"sent\") "
                            "compression.")
                      .Register(registry.core());
    auto with = [&](const char* key, const char* value) {
      prometheus::Labels l = base;
      l[key] = value;
      return l;
    };
    batches_delivered = &batches.Add(with("result", "delivered"));
    batches_retried = &batches.Add(with("result", "retried"));
    batches_rejected = &batches.Add(with("result", "rejected"));
    records_delivered = &records.Add(with("result", "delivered"));
    records_retried = &records.Add(with("result", "retried"));
    records_rejected = &records.Add(with("result", "rejected"));
    bytes_encoded = &bytes.Add(with("stage", "encoded"));
    bytes_sent = &bytes.Add(with("stage", "sent"));
    latency = &prometheus::BuildHistogram()
                   .Name("tank_output_delivery_latency_seconds")
                   .Help("From a record's append to the queue to the upstream's acknowledgement of its batch.")
                   .Register(registry.core())
                   .Add(base, latency_bounds);
    in_flight = &prometheus::BuildGauge()
                     .Name("tank_output_in_flight_batches")
                     .Help("Batches being sent and not yet acknowledged.")
                     .Register(registry.core())
                     .Add(base);
    prepared = &prometheus::BuildGauge()
                    .Name("tank_output_prepared_batches")
                    .Help("Batches read and encoded ahead, waiting for a batch in flight to be acknowledged before "
                          "they are sent (0 or 1); 1 most of the time: the upstream bounds the output, 0: reading "
                          "and encoding do.")
                    .Register(registry.core())
                    .Add(base);
    circuit = &prometheus::BuildGauge()
                   .Name("tank_output_circuit_state")
                   .Help("The output's circuit breaker: 0 closed, 1 open (not sending), 2 half-open (one probe).")
                   .Register(registry.core())
                   .Add(base);
    last_success = &prometheus::BuildGauge()
                        .Name("tank_output_last_success_timestamp_seconds")
                        .Help("When the upstream last acknowledged a batch (Unix time; 0: not yet).")
                        .Register(registry.core())
                        .Add(base);
  }
  prometheus::Counter *batches_delivered, *batches_retried, *batches_rejected;
  prometheus::Counter *records_delivered, *records_retried, *records_rejected;
  prometheus::Counter *bytes_encoded, *bytes_sent;
  const prometheus::Histogram::BucketBoundaries latency_bounds{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                               2.5,   5,     10,   30,    60,   300, 900, 3600};
  prometheus::Histogram* latency;
  prometheus::Gauge *in_flight, *prepared, *circuit, *last_success;

  // The latencies of a batch's records, counted into the histogram's buckets here and added at
  // once: one Observe (a lock and two atomic adds) per record was about 1 % of tank's time.
  void observe_latencies(std::span<const std::int64_t> ingest_ns, std::int64_t now_ns) {
    std::vector<double> counts(latency_bounds.size() + 1, 0.0);
    double sum = 0;
    for (const std::int64_t ingest : ingest_ns) {
      const double seconds = static_cast<double>(now_ns - ingest) / 1e9;
      // The first bucket whose upper bound is >= the value (Prometheus' buckets are "le").
      const auto bucket = std::lower_bound(latency_bounds.begin(), latency_bounds.end(), seconds);
      counts[static_cast<std::size_t>(bucket - latency_bounds.begin())] += 1;
      sum += seconds;
    }
    latency->ObserveMultiple(counts, sum);
  }
};

struct Delivery::Prepared {
  std::vector<queue::ReadBatch> chunks;           // the records, copied out of the queue
  std::vector<const queue::RecordView*> records;  // those in the batch, in order
  // For an output that gets a body the two above are dropped once the body is made (a batch is
  // megabytes, and two are open while one is prepared ahead); the records are read again only to
  // dead-letter them if the upstream refuses the batch.
  std::size_t count = 0;                // records in the batch; 0: none (evicted meanwhile)
  std::vector<std::int64_t> ingest_ns;  // each one's append time, for the latency metric
  ScratchBuffer sent;     // holds the body as it is sent: compressed, or a copy of the encoded one
  std::string_view body;  // in `sent`
  std::string key;
  std::string input;  // the input of every record, "" when mixed
  std::size_t payload_bytes = 0;  // of the body before compression, or of the records (sends_records)
  std::uint64_t first = 0;
  std::uint64_t last = 0;

  // Empties it for another batch, keeping the memory of what is sent and of its lists: a batch is
  // megabytes, and allocating them anew (and faulting the pages in) for every batch cost more
  // CPU than encoding it (docs/BENCHMARKS.md, issue 23).
  void clear() {
    chunks.clear();
    records.clear();
    count = 0;
    ingest_ns.clear();
    body = {};
    key.clear();
    input.clear();
    payload_bytes = 0;
    first = last = 0;
  }
};

DeliverySettings delivery_settings(const config::SectionValues& v, std::string output, std::string type,
                                   std::string agent_id) {
  DeliverySettings s;
  s.output = std::move(output);
  s.type = std::move(type);
  s.agent_id = std::move(agent_id);
  s.max_records = static_cast<std::size_t>(v.integer("batch_max_records"));
  s.max_bytes = static_cast<std::size_t>(v.size("batch_max_bytes"));
  s.linger = v.duration("linger");
  s.encoding = parse_encoding(v.choice("encoding")).value_or(Encoding::ndjson);
  s.compression = parse_compression(v.choice("compression")).value_or(Compression::zstd);
  s.retry_initial = v.duration("retry_initial");
  s.retry_max = std::max(v.duration("retry_max"), s.retry_initial);
  s.breaker_failures = static_cast<unsigned>(v.integer("breaker_failures"));
  s.breaker_cooldown = v.duration("breaker_cooldown");
  s.max_in_flight = static_cast<unsigned>(v.integer("max_in_flight"));
  return s;
}

std::string open_batch_key(std::string_view output) { return fmt::format("output/{}/batch", output); }

struct Delivery::InFlight {
  enum class Stage { waiting, sending, finished, committed };
  InFlightBatch open;
  Prepared batch;
  Stage stage = Stage::waiting;
  // The first attempt was handed off (or returned): the next batch may begin (hands_off_in_order).
  bool handed_off = false;
  plugin::SendResult result;  // when finished

  // For another batch, keeping the memory of what it sent (Prepared::clear).
  void reset() {
    open = {};
    batch.clear();
    stage = Stage::waiting;
    handed_off = false;
    result = {};
  }
};

// The batch being cut: read (and then encoded) while the batches before it are in flight, so that
// the sender finds the next batch ready when the upstream acknowledges one. Its boundaries are
// committed only once there is room for it, with the outcome of the batch that made the room:
// nothing of it is sent before then.
struct Delivery::Cut {
  std::unique_ptr<InFlight> f;  // f->batch.chunks: the records read so far
  std::size_t records = 0;
  std::size_t bytes = 0;
  std::uint64_t scanned = 0;  // read up to here
  // linger runs from the first record's append (a backlog goes at once), and at the latest from
  // when this cut first saw it: a wall clock stepped back does not stretch it.
  std::int64_t deadline_ns = 0;
  std::int64_t steady_deadline_ns = 0;
  bool prepared = false;  // complete, encoded and keyed; f->open holds its boundaries (not committed)
};

Delivery::Delivery(DeliverySettings settings, queue::Queue& queue, std::vector<std::unique_ptr<plugin::Output>> outputs,
                   metrics::Registry& metrics, const Clock& clock)
    : settings_(std::move(settings)),
      queue_(queue),
      outputs_(std::move(outputs)),
      clock_(clock),
      metrics_(std::make_unique<Metrics>(metrics, settings_.output, settings_.type)),
      compressor_(settings_.compression),
      encoder_(settings_.encoding),
      consumer_(plugin::output_consumer_name(settings_.output)),
      state_key_(open_batch_key(settings_.output)),
      rng_state_((static_cast<std::uint64_t>(std::random_device{}()) << 32) | 1) {
  settings_.max_bytes = std::clamp<std::size_t>(settings_.max_bytes, 1, queue_.max_commit_bytes() / 2);
  if (outputs_.empty()) throw std::logic_error("a delivery needs at least one output instance");
  settings_.max_in_flight = static_cast<unsigned>(outputs_.size());
}

namespace {
std::vector<std::unique_ptr<plugin::Output>> one(std::unique_ptr<plugin::Output> output) {
  std::vector<std::unique_ptr<plugin::Output>> v;
  v.push_back(std::move(output));
  return v;
}
}  // namespace

Delivery::Delivery(DeliverySettings settings, queue::Queue& queue, std::unique_ptr<plugin::Output> output,
                   metrics::Registry& metrics, const Clock& clock)
    : Delivery(std::move(settings), queue, one(std::move(output)), metrics, clock) {}

Delivery::~Delivery() { stop(); }

void Delivery::start() {
  for (auto& o : outputs_) o->start();
  if (!queue_.position(consumer_)) queue_.add_consumer(consumer_);
  {
    std::lock_guard lock(mutex_);
    stopping_ = false;
  }
  thread_ = std::thread([this] { run(); });
  for (std::size_t i = 0; i < outputs_.size(); ++i) {
    senders_.emplace_back([this, i] { sender(*outputs_[i], i); });
  }
}

void Delivery::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& o : outputs_) o->interrupt();
  for (auto& t : senders_) {
    if (t.joinable()) t.join();
  }
  senders_.clear();
  if (thread_.joinable()) {
    thread_.join();
    // What the senders finished is committed if it can be at once; the rest stays open. A batch
    // prepared ahead is dropped: its boundaries were not committed, it is cut again at the start.
    cut_.reset();
    metrics_->prepared->Set(0);
    commit_finished(nullptr);
    for (auto& o : outputs_) o->stop();
  }
}

bool Delivery::stopping() const {
  std::lock_guard lock(mutex_);
  return stopping_;
}

bool Delivery::wait_for(std::chrono::nanoseconds d) {
  liveness::Waiting waiting;
  std::unique_lock lock(mutex_);
  wake_.wait_for(lock, d, [this] { return stopping_; });
  return !stopping_;
}

bool Delivery::outcome_waiting_locked() const {
  return std::any_of(open_.begin(), open_.end(), [](const auto& f) { return f->stage == InFlight::Stage::finished; }) ||
         (!open_.empty() && open_.front()->stage == InFlight::Stage::committed);
}

bool Delivery::wait_for_outcome(std::chrono::nanoseconds d) {
  liveness::Waiting waiting;
  std::unique_lock lock(mutex_);
  wake_.wait_for(lock, d, [this] { return stopping_ || outcome_waiting_locked(); });
  return !stopping_;
}

std::string Delivery::encoded_open_locked() const {
  std::vector<InFlightBatch> list;
  for (const auto& f : open_) list.push_back(f->open);
  return encode_open_state(list);
}

void Delivery::restore() {
  const std::string component = fmt::format("output {}", settings_.output);
  acked_ = queue_.position(consumer_).value_or(0);
  position_ = acked_;
  auto stored = queue_.state(state_key_);
  if (!stored) return;
  std::string error;
  auto restored = decode_in_flight_batches(*stored, &error);
  if (!restored) {
    log::error(component, "the saved batches in flight cannot be read ({}); sending from the acknowledged position "
                          "instead", error);
    return;
  }
  std::deque<std::unique_ptr<InFlight>> open;
  for (const InFlightBatch& b : *restored) {
    if (b.ack_seq <= acked_) continue;  // acknowledged already
    auto f = std::make_unique<InFlight>();
    f->open = b;
    if (b.done) {
      f->stage = InFlight::Stage::committed;  // delivered or dead-lettered; waits for the ones before it
    } else if (!reread(b, f->batch)) {
      // Every record of the batch was evicted (drop_oldest) meanwhile: nothing to send.
      f->open.done = true;
      f->stage = InFlight::Stage::finished;
      f->result = {plugin::SendStatus::delivered, "evicted", std::nullopt};
      f->batch.clear();
    } else {
      log::info(component, "resending the batch in flight: records {} to {} ({} records)", b.first_seq, b.last_seq,
                b.records);
    }
    position_ = std::max(position_, b.ack_seq);
    open.push_back(std::move(f));
  }
  std::lock_guard lock(mutex_);
  open_ = std::move(open);
}

void Delivery::run() {
  const std::string component = fmt::format("output {}", settings_.output);
  liveness::Beat beat(component);
  liveness::ThreadBeat this_thread(beat);
  log::Episode failing(component, log::Level::error);
  cut_.reset();
  // Reading the queue can fail (LMDB reports damage): said once per episode, tried again.
  for (bool restored = false; !restored && !stopping();) {
    try {
      restore();
      restored = true;
    } catch (const std::exception& e) {
      failing.occur(fmt::format("reading the batches in flight failed: {}; trying again", e.what()));
      wait_for(std::chrono::seconds(1));
    }
  }
  wake_.notify_all();
  while (!stopping()) {
    try {
      if (!run_once()) break;
      failing.end("reading the queue works again");
    } catch (const std::exception& e) {
      failing.occur(fmt::format("delivering failed: {}; trying again", e.what()));
      wait_for(std::chrono::seconds(1));
    }
  }
}

bool Delivery::run_once() {
  liveness::alive();
  // The outcomes of finished batches, with the boundaries of the batch prepared ahead when they
  // make room for it: one commit.
  if (!commit_finished(cut_ && cut_->prepared ? cut_.get() : nullptr)) return false;
  if (!cut_) cut_ = new_cut();
  if (cut_->prepared) {
    // Prepared while max_in_flight batches are open: it waits for one of them to finish.
    liveness::Waiting waiting;
    std::unique_lock lock(mutex_);
    wake_.wait_for(lock, kIdlePoll, [this] { return stopping_ || outcome_waiting_locked(); });
    return true;
  }
  if (!cut_more(*cut_)) return true;
  InFlight& f = *cut_->f;
  f.open = boundaries_of(*cut_);
  if (!prepare(f.open, f.batch)) {  // cannot happen (the cut found records); keeps the state true
    f.stage = InFlight::Stage::finished;
    f.result = {plugin::SendStatus::delivered, "empty", std::nullopt};
    f.batch.clear();
  }
  cut_->prepared = true;
  bool ahead = false;
  {
    std::lock_guard lock(mutex_);
    ahead = open_.size() >= settings_.max_in_flight;
  }
  if (ahead) {
    metrics_->prepared->Set(1);
    failpoint::hit("output.prepared");  // read and encoded while another batch is in flight
  }
  return true;
}

std::unique_ptr<Delivery::Cut> Delivery::new_cut() {
  auto c = std::make_unique<Cut>();
  {
    std::lock_guard lock(mutex_);
    if (!spare_.empty()) {
      c->f = std::move(spare_.back());
      spare_.pop_back();
    }
  }
  if (c->f) {
    c->f->reset();
  } else {
    c->f = std::make_unique<InFlight>();
  }
  c->scanned = position_;
  return c;
}

void Delivery::sender(plugin::Output& output, std::size_t instance) {
  liveness::Beat beat(fmt::format("output {} sender {}", settings_.output, instance));
  liveness::ThreadBeat this_thread(beat);
  for (;;) {
    liveness::alive();
    InFlight* f = nullptr;
    {
      liveness::Waiting waiting;
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] {
        if (stopping_) return true;
        for (auto& x : open_) {
          if (x->stage == InFlight::Stage::waiting) {
            f = x.get();
            return true;
          }
        }
        return false;
      });
      if (stopping_) return;
      f->stage = InFlight::Stage::sending;
      metrics_->in_flight->Set(++sending_);
      // In order: the batches before this one were handed off first (or are done).
      if (settings_.hands_off_in_order && !f->handed_off) {
        wake_.wait(lock, [&] {
          if (stopping_) return true;
          for (const auto& x : open_) {
            if (x.get() == f) return true;
            if (!x->handed_off && x->stage != InFlight::Stage::finished && x->stage != InFlight::Stage::committed) {
              return false;
            }
          }
          return true;
        });
        if (stopping_) {
          f->stage = InFlight::Stage::waiting;
          metrics_->in_flight->Set(--sending_);
          return;
        }
      }
    }
    std::optional<plugin::SendResult> result = send_batch(output, *f);
    {
      std::lock_guard lock(mutex_);
      metrics_->in_flight->Set(--sending_);
      if (!result) {
        f->stage = InFlight::Stage::waiting;  // stopping: it stays open
        return;
      }
      f->result = std::move(*result);
      f->stage = InFlight::Stage::finished;
    }
    wake_.notify_all();
  }
}

// send_until_done, and when overflow = "drop_oldest" evicted records of the batch while it was
// retried (the upstream away, the queue full): those are counted as dropped, so they must not
// arrive as well. What is left of the batch goes instead, with its own key, as after a restart;
// nothing left: finished, its records cleared (not counted as delivered).
std::optional<plugin::SendResult> Delivery::send_batch(plugin::Output& output, InFlight& f) {
  const std::string component = fmt::format("output {}", settings_.output);
  std::function<void()> handed_off;
  if (settings_.hands_off_in_order) {
    handed_off = [this, &f] {
      {
        std::lock_guard lock(mutex_);
        if (f.handed_off) return;
        f.handed_off = true;
      }
      wake_.notify_all();
    };
  }
  for (;;) {
    bool evicted = false;
    std::optional<plugin::SendResult> result = send_until_done(output, f.batch, evicted, handed_off);
    if (!evicted) return result;
    log::warn(component, "records of the batch {} to {} were evicted by overflow = \"drop_oldest\" while it was retried; "
                         "sending the rest", f.batch.first, f.batch.last);
    std::optional<bool> left;
    while (!left) {
      f.batch.clear();
      try {
        left = reread(f.open, f.batch);
      } catch (const std::exception& e) {
        log::error(component, "reading the batch {} to {} again failed: {}; trying again", f.open.first_seq,
                   f.open.last_seq, e.what());
        if (!wait_for(std::chrono::seconds(1))) return std::nullopt;  // stopping: a restart reads it again
      }
    }
    if (!*left) {
      f.batch.clear();
      return plugin::SendResult{plugin::SendStatus::delivered, "evicted", std::nullopt};
    }
  }
}

namespace {

// Whether a finished send left records to dead-letter: a refused batch, or records refused of a
// delivered one.
bool refuses_records(const plugin::SendResult& result) {
  return result.status == plugin::SendStatus::rejected ||
         (result.status == plugin::SendStatus::delivered && !result.rejected_records.empty());
}

}  // namespace

// The records of refused batches go to the dead-letter store in commits that fit the queue's
// largest commit (a dead letter also holds the upstream's detail, often larger than the record),
// each recording how far it got (InFlightBatch::rejected_through) with the batch's boundaries; the
// last one marks the batch done. A crash in between sends the batch again, and a second refusal
// dead-letters only the records after that point.
bool Delivery::dead_letter_rejected() {
  const std::uint64_t budget = std::max<std::uint64_t>(queue_.max_commit_bytes() / 2, 1);
  for (;;) {
    queue::WriteBatch w;
    InFlight* chunk_of = nullptr;
    std::uint64_t chunk_through = 0;
    bool chunk_done = false;
    {
      std::unique_lock lock(mutex_);
      InFlight* f = nullptr;
      for (auto& x : open_) {
        if (x->stage == InFlight::Stage::finished && refuses_records(x->result) && !x->open.done) {
          f = x.get();
          break;
        }
      }
      if (f == nullptr) return true;
      if (f->batch.records.empty() && f->batch.count > 0) {
        // Dropped once the body was made: read them again (unacknowledged, they are still in the
        // queue, but for those overflow = "drop_oldest" evicted meanwhile). Only this thread
        // removes batches from open_, and a finished one is no sender's.
        lock.unlock();
        try {
          read_back(f->open, f->batch);
        } catch (const std::exception& e) {
          log::error(fmt::format("output {}", settings_.output), "reading the refused records {} to {} failed: {}",
                     f->open.first_seq, f->open.last_seq, e.what());
          if (!wait_for(std::chrono::seconds(1))) return false;
          continue;
        }
        f->batch.count = f->batch.records.size();
        lock.lock();
      }
      const std::int64_t now = clock_.wall_ns();
      // The records to dead-letter, in queue order, each with its detail: all of a refused batch,
      // or the ones refused of a delivered batch.
      std::vector<std::pair<const queue::RecordView*, std::string>> refused;
      if (f->result.status == plugin::SendStatus::rejected) {
        const std::string detail = fmt::format("output \"{}\": {}", settings_.output, f->result.detail);
        for (const queue::RecordView* r : f->batch.records) refused.emplace_back(r, detail);
      } else {
        for (const plugin::RecordRejection& x : f->result.rejected_records) {
          if (x.index >= f->batch.records.size()) continue;  // not a record of the batch: the plugin's error
          refused.emplace_back(f->batch.records[x.index], fmt::format("output \"{}\": {}", settings_.output, x.detail));
        }
        std::sort(refused.begin(), refused.end(), [](const auto& a, const auto& b) { return a.first->seq < b.first->seq; });
      }
      std::uint64_t bytes = 0;
      std::uint64_t through = f->open.rejected_through;
      for (const auto& [r, detail] : refused) {
        if (r->seq <= f->open.rejected_through) continue;  // dead-lettered before a restart
        const std::uint64_t cost = 64 + r->input.size() + 32 + detail.size() + r->payload.size() + r->attributes.size();
        if (!w.dead_letters.empty() && bytes + cost > budget) break;
        queue::DeadLetter d = queue::DeadLetter::make(r->input, "upstream_rejected", detail, r->payload, now);
        d.attributes = std::string(r->attributes);
        // A record of (nearly) one commit with the upstream's detail: kept as far as it fits.
        queue::shrink_to_fit(d, static_cast<std::size_t>(budget));
        w.dead_letters.push_back(std::move(d));
        bytes += cost;
        through = r->seq;
      }
      // The stored list as it is after this commit (the batch itself changes only once it is in).
      chunk_of = f;
      chunk_through = through;
      chunk_done = refused.empty() || through >= refused.back().first->seq;
      std::vector<InFlightBatch> list;
      for (const auto& x : open_) {
        list.push_back(x->open);
        if (x.get() == f) {
          list.back().rejected_through = chunk_through;
          list.back().done = chunk_done;
        }
      }
      w.state_puts.emplace_back(state_key_, encode_open_state(list));
    }
    if (!commit_retrying(w, "dead-lettering a refused batch")) return false;
    std::lock_guard lock(mutex_);
    chunk_of->open.rejected_through = chunk_through;
    chunk_of->open.done = chunk_done;
  }
}

bool Delivery::commit_finished(Cut* next) {
  const std::string component = fmt::format("output {}", settings_.output);
  if (!dead_letter_rejected()) return false;
  queue::WriteBatch w;
  std::vector<InFlight*> finished;
  std::uint64_t ack = 0;
  std::size_t pop = 0;
  bool take_next = false;  // `next` goes into the state (and then to the senders) with this commit
  const std::uint64_t open_ack_seq = next != nullptr ? next->f->open.ack_seq : 0;
  {
    std::lock_guard lock(mutex_);
    for (auto& f : open_) {
      if (f->stage == InFlight::Stage::finished) finished.push_back(f.get());
    }
    // The finished front is acknowledged; finished batches behind an open one are marked done.
    for (auto& f : open_) {
      if (f->stage != InFlight::Stage::finished && f->stage != InFlight::Stage::committed) break;
      ack = f->open.ack_seq;
      ++pop;
    }
    take_next = next != nullptr && open_.size() - pop < settings_.max_in_flight;
    if (finished.empty() && pop == 0 && !take_next) return true;
    for (InFlight* f : finished) f->open.done = true;
    if (pop > 0) w.acks.emplace_back(consumer_, ack);
    std::vector<InFlightBatch> rest;
    for (std::size_t i = pop; i < open_.size(); ++i) rest.push_back(open_[i]->open);
    // The boundaries go to the queue before the first send: every later attempt sends these.
    if (take_next) rest.push_back(next->f->open);
    if (rest.empty()) {
      w.state_deletes.push_back(state_key_);
    } else {
      w.state_puts.emplace_back(state_key_, encode_open_state(rest));
    }
  }
  if (!commit_retrying(w, finished.empty() && pop == 0 ? "recording the boundaries of a batch"
                                                        : "acknowledging delivered batches")) {
    return false;
  }
  if (take_next) failpoint::hit("output.boundaries");  // cut, not sent yet
  const std::int64_t now = clock_.wall_ns();
  for (InFlight* f : finished) {
    const double n = static_cast<double>(f->batch.count);
    if (f->batch.count == 0) continue;  // evicted before it was sent again
    if (f->result.status == plugin::SendStatus::rejected) {
      metrics_->batches_rejected->Increment();
      metrics_->records_rejected->Increment(n);
      log::error(component, "the upstream refused records {} to {} for good ({}); {} record(s) are in the dead-letter "
                            "store (tank dlq list --reason upstream_rejected)",
                 f->batch.first, f->batch.last, f->result.detail, f->batch.count);
    } else {
      const auto refused = static_cast<double>(f->result.rejected_records.size());
      if (refused > 0) {
        metrics_->records_rejected->Increment(refused);
        log::error(component, "the upstream refused {} of records {} to {} for good (the first: {}); they are in "
                              "the dead-letter store (tank dlq list --reason upstream_rejected)",
                   f->result.rejected_records.size(), f->batch.first, f->batch.last,
                   f->result.rejected_records.front().detail);
      }
      metrics_->batches_delivered->Increment();
      metrics_->records_delivered->Increment(n - refused);
      metrics_->last_success->Set(static_cast<double>(now) / 1e9);
      metrics_->observe_latencies(f->batch.ingest_ns, now);
    }
  }
  {
    std::lock_guard lock(mutex_);
    for (InFlight* f : finished) f->stage = InFlight::Stage::committed;
    if (pop > 0) acked_ = ack;
    // Their memory serves the next batches (Prepared::clear).
    for (std::size_t i = 0; i < pop && spare_.size() < kSpareBatches; ++i) spare_.push_back(std::move(open_[i]));
    open_.erase(open_.begin(), open_.begin() + static_cast<std::ptrdiff_t>(pop));
    if (take_next) open_.push_back(std::move(next->f));
  }
  if (take_next) {
    position_ = open_ack_seq;
    cut_.reset();
    metrics_->prepared->Set(0);
    wake_.notify_all();
  }
  return true;
}

bool Delivery::cut_more(Cut& c) {
  Prepared& out = c.f->batch;
  for (;;) {
    liveness::alive();
    if (stopping()) return false;
    queue::ReadBatch b = take_chunk();
    try {
      queue_.read(c.scanned,
                  queue::ReadLimits{settings_.max_records - c.records,
                                    std::max<std::size_t>(settings_.max_bytes - c.bytes, 1)},
                  &settings_.filter, b);
    } catch (const std::exception& e) {
      log::error(fmt::format("output {}", settings_.output), "reading the queue failed: {}", e.what());
      wait_for(std::chrono::seconds(1));
      return false;
    }
    c.scanned = std::max(c.scanned, b.scanned_to());
    const bool got = !b.empty();
    bool other_input = false;
    if (got) {
      if (c.records == 0) {
        c.deadline_ns = b.records().front().ingest_ns + settings_.linger.count();
        c.steady_deadline_ns = clock_.steady_ns() + settings_.linger.count();
      }
      c.records += b.size();
      c.bytes += b.bytes();
      out.chunks.push_back(std::move(b));
      if (settings_.split_by_input) {
        const std::string_view first = out.chunks.front().records().front().input;
        for (const queue::RecordView& r : out.chunks.back().records()) other_input = other_input || r.input != first;
      }
    } else {
      keep_chunk(std::move(b));
    }
    if (c.records >= settings_.max_records || c.bytes >= settings_.max_bytes || other_input) return true;
    const std::int64_t now = clock_.wall_ns();
    const std::int64_t steady_now = clock_.steady_ns();
    if (c.records > 0 && (now >= c.deadline_ns || steady_now >= c.steady_deadline_ns)) return true;
    if (got) continue;  // read on at once: more may be there
    bool nothing_open = false;
    bool outcome_waiting = false;
    {
      std::lock_guard lock(mutex_);
      nothing_open = open_.empty();
      outcome_waiting = outcome_waiting_locked();
    }
    if (outcome_waiting) return false;  // commit that first; the cut goes on after
    if (c.records == 0 && c.scanned > position_) position_ = c.scanned;
    if (c.records == 0 && nothing_open && position_ > acked_) {
      // Records this output does not take: pass them, so the queue can free them (those behind
      // open batches are passed once the batches are acknowledged).
      queue::WriteBatch w;
      w.acks.emplace_back(consumer_, position_);
      if (!commit_retrying(w, "acknowledging records of other routes")) return false;
      std::lock_guard lock(mutex_);
      acked_ = position_;
    }
    const auto wait = c.records == 0 ? std::chrono::nanoseconds(kIdlePoll)
                                     : std::min<std::chrono::nanoseconds>(
                                           kLingerPoll, std::chrono::nanoseconds(std::min(
                                                            c.deadline_ns - now, c.steady_deadline_ns - steady_now)));
    if (!wait_for_outcome(wait)) return false;
  }
}

InFlightBatch Delivery::boundaries_of(const Cut& c) const {
  const std::vector<queue::ReadBatch>& chunks = c.f->batch.chunks;
  InFlightBatch open;
  open.first_seq = chunks.front().records().front().seq;
  open.last_seq = chunks.back().records().back().seq;
  open.ack_seq = std::max(c.scanned, open.last_seq);
  open.records = static_cast<std::uint32_t>(c.records);
  if (settings_.split_by_input) {
    // The batch ends before the first record of another input; the rest is read again later.
    const std::string_view first = chunks.front().records().front().input;
    std::uint32_t same = 0;
    bool cut_short = false;
    for (const queue::ReadBatch& chunk : chunks) {
      for (const queue::RecordView& r : chunk.records()) {
        if (r.input != first) {
          cut_short = true;
          break;
        }
        open.last_seq = r.seq;
        ++same;
      }
      if (cut_short) break;
    }
    if (cut_short) {
      open.ack_seq = open.last_seq;
      open.records = same;
    }
  }
  return open;
}

void Delivery::collect(const InFlightBatch& open, Prepared& out) const {
  out.records.clear();
  for (const queue::ReadBatch& chunk : out.chunks) {
    for (const queue::RecordView& r : chunk.records()) {
      if (r.seq >= open.first_seq && r.seq <= open.last_seq) out.records.push_back(&r);
    }
  }
}

bool Delivery::prepare(const InFlightBatch& open, Prepared& out) {
  collect(open, out);
  if (out.records.empty()) return false;
  out.count = out.records.size();
  out.ingest_ns.clear();
  for (const queue::RecordView* r : out.records) out.ingest_ns.push_back(r->ingest_ns);
  out.input = std::string(out.records.front()->input);
  out.first = out.records.front()->seq;
  out.last = out.records.back()->seq;
  if (settings_.sends_records) {
    // No body: the output sends the records themselves, and the key hashes them.
    out.payload_bytes = 0;
    for (const queue::RecordView* r : out.records) {
      out.payload_bytes += r->payload.size();
      if (r->input != out.input) out.input.clear();
    }
    out.body = {};
    out.key = idempotency_key(settings_.agent_id, settings_.output, queue_.id(), out.first, out.last, out.records);
    return true;
  }
  for (const queue::RecordView* r : out.records) {
    if (r->input != out.input) out.input.clear();
  }
  {
    // One encoder and compressor for every batch: their memory is kept, not faulted in anew.
    std::lock_guard lock(body_mutex_);
    encoder_.reset(settings_.encoding);
    std::size_t stored = 0;
    for (const queue::ReadBatch& chunk : out.chunks) stored += chunk.bytes();
    encoder_.reserve(stored + stored / 4);  // text records grow by {"message":...} and escapes
    for (const queue::RecordView* r : out.records) {
      PayloadKind kind = PayloadKind::json;
      // Derived records are JSON (aggregates, a script's records) unless passed on as they were.
      if (!r->derived() || (r->flags & queue::kRecordKeepsFormat) != 0) {
        auto it = settings_.kinds.find(r->input);
        kind = it == settings_.kinds.end() ? PayloadKind::raw : it->second;
      }
      encoder_.add(r->payload, kind);
    }
    const std::string& body = encoder_.finish();
    std::string_view sent = compressor_.compress(body, out.sent);
    if (sent.data() == body.data()) {  // not compressed: the batch keeps a copy, the encoder is shared
      char* copy = out.sent.reserve(body.size());
      std::copy(body.begin(), body.end(), copy);
      sent = std::string_view(copy, body.size());
    }
    out.body = sent;
    out.payload_bytes = body.size();
    out.key = idempotency_key(settings_.agent_id, settings_.output, queue_.id(), out.first, out.last, body);
  }
  // The body holds the records now: what they take is not kept while the batch is in flight (the
  // next reads reuse it).
  out.records.clear();
  keep_chunks(out.chunks);
  return true;
}

queue::ReadBatch Delivery::take_chunk() {
  std::lock_guard lock(chunks_mutex_);
  if (spare_chunks_.empty()) return {};
  queue::ReadBatch b = std::move(spare_chunks_.back());
  spare_chunks_.pop_back();
  return b;
}

void Delivery::keep_chunk(queue::ReadBatch&& chunk) {
  chunk.clear();
  std::lock_guard lock(chunks_mutex_);
  auto at = std::find_if(spare_chunks_.begin(), spare_chunks_.end(), [&](const queue::ReadBatch& s) {
    return s.capacity_bytes() > chunk.capacity_bytes();
  });
  spare_chunks_.insert(at, std::move(chunk));
  if (spare_chunks_.size() > kSpareChunks) spare_chunks_.erase(spare_chunks_.begin());  // the smallest goes
}

void Delivery::keep_chunks(std::vector<queue::ReadBatch>& chunks) {
  for (queue::ReadBatch& chunk : chunks) keep_chunk(std::move(chunk));
  chunks.clear();
}

bool Delivery::read_back(const InFlightBatch& open, Prepared& out) {
  out.chunks.clear();
  std::uint64_t scanned = open.first_seq - 1;
  std::size_t records = 0;
  while (scanned < open.last_seq && records < open.records) {
    queue::ReadBatch b = queue_.read(scanned, queue::ReadLimits{open.records - records, std::size_t{1} << 30},
                                     &settings_.filter);
    if (b.scanned_to() <= scanned) break;  // nothing more in the queue
    scanned = b.scanned_to();
    records += b.size();
    out.chunks.push_back(std::move(b));
  }
  collect(open, out);
  return !out.records.empty();
}

bool Delivery::reread(const InFlightBatch& open, Prepared& out) {
  read_back(open, out);
  return prepare(open, out);
}

std::optional<plugin::SendResult> Delivery::send_until_done(plugin::Output& output, Prepared& batch, bool& evicted,
                                                           const std::function<void()>& handed_off) {
  const std::string component = fmt::format("output {}", settings_.output);
  log::Episode failing(component, log::Level::warn);
  std::string last_cause;
  plugin::OutgoingBatch outgoing;
  outgoing.first_seq = batch.first;
  outgoing.last_seq = batch.last;
  outgoing.records = batch.count;
  outgoing.body = batch.body;
  outgoing.uncompressed_bytes = batch.payload_bytes;
  outgoing.content_type = content_type(settings_.encoding);
  outgoing.content_encoding = content_encoding(settings_.compression);
  outgoing.idempotency_key = batch.key;
  outgoing.input = batch.input;
  outgoing.each = batch.records;
  outgoing.handed_off = handed_off;
  const double n = static_cast<double>(outgoing.records);
  // Capped exponential backoff with full jitter (many gateways, one upstream); its random source
  // is the delivery's generator, drawn from under mutex_.
  Backoff retry(BackoffPolicy{settings_.retry_initial, settings_.retry_max, BackoffPolicy::Jitter::full}, [this] {
    rng_state_ ^= rng_state_ << 13;
    rng_state_ ^= rng_state_ >> 7;
    rng_state_ ^= rng_state_ << 17;
    return rng_state_;
  });
  for (unsigned attempt = 0;; ++attempt) {
    // The circuit breaker: closed, open (nothing is sent for the cooldown), half-open (one
    // sender probes with its batch; the others wait for its outcome).
    bool probe = false;
    {
      std::unique_lock lock(mutex_);
      for (;;) {
        if (stopping_) return std::nullopt;
        if (failures_in_a_row_ < settings_.breaker_failures) break;
        const auto now = std::chrono::steady_clock::now();
        if (!probing_ && now >= open_until_) {
          probing_ = probe = true;
          metrics_->circuit->Set(2);
          break;
        }
        metrics_->circuit->Set(probing_ ? 2 : 1);
        liveness::Waiting waiting;
        wake_.wait_until(lock, probing_ ? now + kIdlePoll : open_until_);
      }
    }
    // Also before the first attempt: a batch read ahead, or waiting for a sender, may have lost
    // records to overflow = "drop_oldest" since it was read.
    if (queue_.oldest_seq() > batch.first) {
      std::lock_guard lock(mutex_);
      if (probe) probing_ = false;
      evicted = true;
      return std::nullopt;
    }
    liveness::blocking(output.longest_send());
    failpoint::hit("output.send");
    plugin::SendResult result = output.send(outgoing);
    liveness::blocking(std::chrono::nanoseconds(0));
    if (outgoing.handed_off) {
      outgoing.handed_off();  // the next batch need not wait for this one's retries
      outgoing.handed_off = nullptr;
    }
    metrics_->bytes_encoded->Increment(static_cast<double>(outgoing.uncompressed_bytes));
    // An output that sends the records (and compresses them itself) sent their payloads.
    metrics_->bytes_sent->Increment(
        static_cast<double>(settings_.sends_records ? outgoing.uncompressed_bytes : outgoing.body.size()));
    if (result.status == plugin::SendStatus::retry && stopping()) {
      // Interrupted by stop(): not a failure of the upstream (no breaker, no count).
      std::lock_guard lock(mutex_);
      if (probe) probing_ = false;
      return std::nullopt;
    }
    if (result.status == plugin::SendStatus::retry) {
      metrics_->batches_retried->Increment();
      metrics_->records_retried->Increment(n);
      bool opened = false;
      std::chrono::nanoseconds delay{};
      {
        std::lock_guard lock(mutex_);
        ++failures_in_a_row_;
        if (probe) probing_ = false;
        if (failures_in_a_row_ >= settings_.breaker_failures) {
          opened = failures_in_a_row_ == settings_.breaker_failures;
          // The cooldown, or the upstream's Retry-After when that is longer.
          const auto wait = std::max<std::chrono::nanoseconds>(
              settings_.breaker_cooldown, result.retry_after.value_or(std::chrono::milliseconds(0)));
          if (opened || probe) open_until_ = std::chrono::steady_clock::now() + wait;
        }
        delay = retry.next();  // a longer Retry-After wins (below)
      }
      wake_.notify_all();
      if (opened) {
        log::warn(component, "{} failed attempts in a row: the circuit opens for {}", settings_.breaker_failures,
                  units::format_duration(settings_.breaker_cooldown));
      }
      if (result.retry_after) delay = std::max<std::chrono::nanoseconds>(delay, *result.retry_after);
      const std::string message =
          fmt::format("sending records {} to {} failed: {}; retrying in {}", batch.first, batch.last, result.detail,
                      units::format_duration(std::chrono::duration_cast<std::chrono::milliseconds>(delay)));
      // Logged once per episode, and again when the cause changes (not a retry with the same one).
      if (!failing.occur(message) && result.detail != last_cause) log::warn(component, "{}", message);
      last_cause = result.detail;
      bool breaker_open = false;
      {
        std::lock_guard lock(mutex_);
        breaker_open = failures_in_a_row_ >= settings_.breaker_failures;
      }
      if (breaker_open) continue;  // the breaker's wait instead
      if (!wait_for(delay)) return std::nullopt;
      continue;
    }
    failpoint::hit("output.sent");  // the upstream has it, the queue does not know yet
    {
      std::lock_guard lock(mutex_);
      failures_in_a_row_ = 0;
      if (probe) probing_ = false;
      metrics_->circuit->Set(0);
    }
    wake_.notify_all();
    failing.end("delivering works again");
    return result;
  }
}

bool Delivery::commit_retrying(const queue::WriteBatch& batch, std::string_view what) {
  const std::string component = fmt::format("output {}", settings_.output);
  log::Episode failing(component, log::Level::error);
  Backoff retry(kCommitRetry);
  for (;;) {
    const queue::CommitResult r = queue_.commit(batch);
    // An output's commits carry acknowledgements, state and dead letters, no records: dropped
    // cannot happen, and if it did the acknowledgements were applied.
    if (queue::acknowledges(queue::settlement_of(r.status))) {
      failing.end("committing works again");
      return true;
    }
    failing.occur(fmt::format("{} failed ({}{}); retrying", what, reason_of(r.status), r.error.empty() ? "" : ": " + r.error));
    if (!wait_for(retry.next())) return false;
  }
}

}  // namespace tank::output
