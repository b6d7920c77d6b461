#include "queue/queue_metrics.hpp"

#include <prometheus/collectable.h>

#include "queue/queue.hpp"

namespace tank::queue {
namespace {


prometheus::Family<prometheus::Counter>& counter(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}

}  // namespace

struct QueueMetrics::Gauges final : prometheus::Collectable {
  mutable std::mutex mutex;
  const Queue* queue = nullptr;

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::lock_guard lock(mutex);
    std::vector<prometheus::MetricFamily> out;
    if (queue == nullptr) return out;
    Stats s;
    try {
      s = queue->stats();
    } catch (...) {
      return out;
    }
    double age = 0;
    if (s.oldest_ingest_ns > 0) {
      age = static_cast<double>(system_clock().wall_ns() - s.oldest_ingest_ns) / 1e9;
      if (age < 0) age = 0;
    }
    using metrics::gauge_family;
    out.push_back(gauge_family("tank_queue_records", "Records in the queue (all tiers).", static_cast<double>(s.records)));
    out.push_back(gauge_family("tank_queue_bytes", "Encoded bytes of the records in the queue (all tiers).",
                               static_cast<double>(s.bytes)));
    out.push_back(gauge_family("tank_queue_disk_records", "Records in the LMDB tier.", static_cast<double>(s.disk_records)));
    out.push_back(gauge_family("tank_queue_disk_bytes",
                               "LMDB pages in use for records, positions and state, in bytes (bounded by "
                               "queue.max_disk_bytes).",
                               static_cast<double>(s.disk_used_bytes)));
    out.push_back(gauge_family("tank_queue_disk_limit_bytes", "queue.max_disk_bytes.",
                               static_cast<double>(s.disk_limit_bytes)));
    out.push_back(gauge_family("tank_queue_file_bytes", "Size of the LMDB data file.", static_cast<double>(s.file_bytes)));
    out.push_back(gauge_family("tank_queue_memory_records", "Records held in RAM (mode = \"memory\").",
                               static_cast<double>(s.memory_records)));
    out.push_back(gauge_family("tank_queue_memory_bytes", "Bytes of records held in RAM (mode = \"memory\").",
                               static_cast<double>(s.memory_bytes)));
    out.push_back(gauge_family("tank_queue_memory_limit_bytes", "queue.max_memory_bytes.",
                               static_cast<double>(s.memory_limit_bytes)));
    out.push_back(gauge_family("tank_queue_oldest_record_age_seconds",
                               "Age of the oldest record in the queue (0 when empty).", age));
    try {
      DeadLetterStats d = queue->dead_letter_stats();
      out.push_back(gauge_family("tank_dead_letter_entries", "Entries in the dead-letter store.",
                                 static_cast<double>(d.entries)));
      out.push_back(gauge_family("tank_dead_letter_bytes", "LMDB pages the dead-letter store uses, in bytes.",
                                 static_cast<double>(d.disk_bytes)));
      out.push_back(gauge_family("tank_dead_letter_limit_bytes", "dead_letter.max_bytes.",
                                 static_cast<double>(d.limit_bytes)));
    } catch (...) {
    }
    out.push_back(gauge_family("tank_queue_blocked",
                               "1 while overflow = \"block\" refuses records (inputs paused), else 0.",
                               s.blocked ? 1.0 : 0.0));
    std::vector<metrics::GaugeSample> lag;
    std::vector<metrics::GaugeSample> lag_age;
    for (const auto& c : s.consumers) {
      lag.push_back({{{"consumer", c.name}}, static_cast<double>(c.lag_records)});
      double a = 0;
      if (c.oldest_unacked_ns > 0) {
        a = static_cast<double>(system_clock().wall_ns() - c.oldest_unacked_ns) / 1e9;
        if (a < 0) a = 0;
      }
      lag_age.push_back({{{"consumer", c.name}}, a});
    }
    out.push_back(metrics::gauge_family("tank_queue_consumer_lag_records",
                                        "Records stored after the consumer's acknowledged position.", std::move(lag)));
    out.push_back(metrics::gauge_family("tank_queue_consumer_lag_seconds",
                                        "Age of the oldest record the consumer has not acknowledged (0 when none).",
                                        std::move(lag_age)));
    return out;
  }
};

QueueMetrics::QueueMetrics(metrics::Registry* registry)
    : own_(registry == nullptr ? std::make_shared<prometheus::Registry>() : nullptr),
      registry_(registry),
      core_(registry != nullptr ? registry->core() : *own_),
      appended_records(counter(core_, "tank_queue_appended_records_total",
                               "Records stored in the queue.").Add({})),
      appended_bytes(counter(core_, "tank_queue_appended_bytes_total",
                             "Encoded bytes of the records stored in the queue.").Add({})),
      acknowledged_records(counter(core_, "tank_queue_acknowledged_records_total",
                                   "Records deleted from the queue because every consumer acknowledged them.").Add({})),
      dropped_oldest_records(counter(core_, "tank_queue_dropped_records_total",
                                     "Records dropped by the overflow policy.").Add({{"policy", "drop_oldest"}})),
      dropped_oldest_bytes(counter(core_, "tank_queue_dropped_bytes_total",
                                   "Encoded bytes of records dropped by the overflow policy.")
                               .Add({{"policy", "drop_oldest"}})),
      dropped_newest_records(counter(core_, "tank_queue_dropped_records_total",
                                     "Records dropped by the overflow policy.").Add({{"policy", "drop_newest"}})),
      dropped_newest_bytes(counter(core_, "tank_queue_dropped_bytes_total",
                                   "Encoded bytes of records dropped by the overflow policy.")
                               .Add({{"policy", "drop_newest"}})),
      refused_full(counter(core_, "tank_queue_refused_batches_total",
                           "Batches refused (nothing stored) by overflow = \"block\" or for their size.")
                       .Add({{"reason", "full"}})),
      refused_too_large(counter(core_, "tank_queue_refused_batches_total",
                                "Batches refused (nothing stored) by overflow = \"block\" or for their size.")
                            .Add({{"reason", "too_large"}})),
      commit_failures(counter(core_, "tank_queue_commit_failures_total",
                              "LMDB transactions that failed (I/O error, disk full); their batches were refused.")
                          .Add({})),
      commits(counter(core_, "tank_queue_commits_total",
                      "LMDB write transactions committed (each carries a group of batches).").Add({})),
      fsyncs(counter(core_, "tank_queue_fsyncs_total",
                     "Flushes of the queue file to disk (data.mdb, then its recovery point): fsync = \"interval\" "
                     "and \"never\" (see docs/queue.md), sync, open and close.").Add({})),
      damaged_recoveries(counter(core_, "tank_queue_damaged_recoveries_total",
                                 "Damaged queues moved aside at start-up (tank started with an empty queue).")
                             .Add({})),
      power_loss_rollbacks(counter(core_, "tank_queue_power_loss_rollbacks_total",
                                   "Starts after a power cut (or a crash of the system) that rolled the queue back to "
                                   "its last flush: the commits after it were undone.")
                               .Add({})),
      power_loss_lost_records(counter(core_, "tank_queue_power_loss_lost_records_total",
                                      "Records appended after the last flush and undone by a power-loss rollback, as "
                                      "far as the damaged file still tells (0 when it does not).")
                                  .Add({})),
      written_bytes(counter(core_, "tank_queue_written_bytes_total",
                            "Bytes of data.mdb the queue wrote: the pages its commits wrote (each page once per flush "
                            "interval: a page is never rewritten while its snapshot is kept) and the meta pages. What "
                            "the storage receives, before the file system's own journal.")
                        .Add({})),
      dead_letters(counter(core_, "tank_dead_letters_total",
                           "Input kept in the dead-letter store instead of becoming a record, by input and reason.")),
      dead_letters_evicted(counter(core_, "tank_dead_letter_evicted_total",
                                   "Dead letters evicted, oldest first, because dead_letter.max_bytes was reached.")
                               .Add({})),
      commit_seconds(prometheus::BuildHistogram()
                         .Name("tank_queue_commit_duration_seconds")
                         .Help("Time to write and commit one group transaction (including fsync when it syncs).")
                         .Register(core_)
                         .Add({}, prometheus::Histogram::BucketBoundaries{0.00001, 0.00005, 0.0001, 0.0005, 0.001,
                                                                          0.005, 0.01, 0.05, 0.1, 0.5, 1})),
      gauges_(std::make_shared<Gauges>()) {}

QueueMetrics::~QueueMetrics() { detach(); }

void QueueMetrics::attach(const Queue* queue) {
  {
    std::lock_guard lock(gauges_->mutex);
    gauges_->queue = queue;
  }
  if (registry_ != nullptr) registry_->add_collectable(gauges_);
}

void QueueMetrics::detach() {
  std::lock_guard lock(gauges_->mutex);
  gauges_->queue = nullptr;
}

}  // namespace tank::queue
