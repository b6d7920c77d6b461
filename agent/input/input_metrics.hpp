#pragma once

// Metrics every input exports, labelled {input, type}:
//   tank_input_records_total, tank_input_bytes_total   records (and payload bytes) committed
//   tank_input_errors_total{reason}                    problems: bad requests, refused
//                                                      connections, read errors...
//   tank_input_dropped_records_total{reason}           records the input had to drop (UDP
//                                                      while the queue refuses, drop_newest)
//   tank_input_paused                                  1 while paused by the queue's backpressure
//   tank_input_connections                             open connections (socket inputs)
// Dead letters are counted by the queue in tank_dead_letters_total{input, reason}.

#include <cstdint>
#include <string>
#include <string_view>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>

#include "metrics/registry.hpp"

namespace tank::input {

class InputMetrics {
 public:
  InputMetrics(metrics::Registry& registry, const std::string& input, std::string_view type);

  void committed(std::uint64_t records, std::uint64_t bytes);
  void error(std::string_view reason, std::uint64_t n = 1);
  void dropped(std::string_view reason, std::uint64_t records);
  void set_paused(bool paused);
  void connection_opened();
  void connection_closed();

 private:
  std::string input_;
  std::string type_;
  prometheus::Counter& records_;
  prometheus::Counter& bytes_;
  prometheus::Family<prometheus::Counter>& errors_;
  prometheus::Family<prometheus::Counter>& dropped_;
  prometheus::Gauge& paused_;
  prometheus::Gauge& connections_;
};

}  // namespace tank::input
