#pragma once

// Metrics every processor exports, labelled {processor, type}:
//   tank_processor_records_in_total         records the processor took
//   tank_processor_records_out_total        records it passed on (a check) or emitted (an aggregate)
//   tank_processor_dead_letters_total{reason}  records it sent to the dead-letter store
//   tank_processor_late_records_total       records later than the watermark (aggregate)
//   tank_processor_ignored_values_total     non-numeric values numeric functions skipped (aggregate)
//   tank_processor_windows_open             (window, group) cells held (aggregate)
//   tank_processor_dropped_records_total{reason}  records it dropped on purpose (a repeat, a value
//                                           within the deadband, over the rate, a script's nil)
//   tank_processor_evicted_keys_total       state entries forgotten to stay within a bound
//                                           (deadband's max_groups, dedup's max_keys)
//   tank_processor_holding                  1 while the stage holds a record back (throttle's
//                                           hold, a time not to be trusted yet), else 0
// Thread safety: every member may be called from any thread.

#include <cstdint>
#include <string>
#include <string_view>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>

#include "metrics/registry.hpp"

namespace tank::process {

class ProcessorMetrics {
 public:
  ProcessorMetrics(metrics::Registry& registry, std::string processor, std::string_view type);

  void in(std::uint64_t n = 1) { in_.Increment(static_cast<double>(n)); }
  void out(std::uint64_t n = 1) { out_.Increment(static_cast<double>(n)); }
  void dead_lettered(std::string_view reason, std::uint64_t n = 1);
  void late(std::uint64_t n = 1) { late_.Increment(static_cast<double>(n)); }
  void ignored_values(std::uint64_t n) { ignored_.Increment(static_cast<double>(n)); }
  void set_windows_open(std::uint64_t n) { windows_.Set(static_cast<double>(n)); }
  void dropped(std::string_view reason, std::uint64_t n = 1);
  void set_holding(bool holding);
  void evicted(std::uint64_t n) { evicted_.Increment(static_cast<double>(n)); }

 private:
  std::string processor_;
  std::string type_;
  prometheus::Counter& in_;
  prometheus::Counter& out_;
  prometheus::Family<prometheus::Counter>& dead_letters_;
  prometheus::Counter& late_;
  prometheus::Counter& ignored_;
  prometheus::Gauge& windows_;
  prometheus::Family<prometheus::Counter>& dropped_;
  prometheus::Family<prometheus::Gauge>& holding_family_;
  prometheus::Counter& evicted_;
  prometheus::Gauge* holding_ = nullptr;  // made at the first hold
};

}  // namespace tank::process
