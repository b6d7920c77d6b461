#pragma once

// The queue's metrics (internal to agent/queue). Event counters live in the shared registry;
// depth gauges are computed from Queue::stats() at scrape time.

#include <memory>
#include <mutex>

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "metrics/registry.hpp"

namespace tank::queue {

class Queue;

class QueueMetrics {
 private:
  // Declared first: the counters below are registered on `core_` as they are constructed.
  std::shared_ptr<prometheus::Registry> own_;
  metrics::Registry* registry_;
  prometheus::Registry& core_;

 public:
  // `registry` may be null: the counters then live in a private registry nobody scrapes.
  explicit QueueMetrics(metrics::Registry* registry);
  ~QueueMetrics();

  // Starts serving the scrape-time gauges of `queue`; detach() stops before the queue goes.
  void attach(const Queue* queue);
  void detach();

  prometheus::Counter& appended_records;
  prometheus::Counter& appended_bytes;
  prometheus::Counter& acknowledged_records;
  prometheus::Counter& dropped_oldest_records;
  prometheus::Counter& dropped_oldest_bytes;
  prometheus::Counter& dropped_newest_records;
  prometheus::Counter& dropped_newest_bytes;
  prometheus::Counter& refused_full;
  prometheus::Counter& refused_too_large;
  prometheus::Counter& commit_failures;
  prometheus::Counter& commits;
  prometheus::Counter& fsyncs;
  prometheus::Counter& damaged_recoveries;
  prometheus::Counter& power_loss_rollbacks;
  prometheus::Counter& power_loss_lost_records;
  prometheus::Counter& written_bytes;
  prometheus::Family<prometheus::Counter>& dead_letters;  // {input, reason}
  prometheus::Counter& dead_letters_evicted;
  prometheus::Histogram& commit_seconds;

 private:
  struct Gauges;
  std::shared_ptr<Gauges> gauges_;
};

}  // namespace tank::queue
