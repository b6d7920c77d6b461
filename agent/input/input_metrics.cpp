#include "input/input_metrics.hpp"

#include <prometheus/registry.h>

namespace tank::input {
namespace {

prometheus::Family<prometheus::Counter>& counters(metrics::Registry& r, const char* name, const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r.core());
}
prometheus::Family<prometheus::Gauge>& gauges(metrics::Registry& r, const char* name, const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r.core());
}

}  // namespace

InputMetrics::InputMetrics(metrics::Registry& registry, const std::string& input, std::string_view type)
    : input_(input),
      type_(type),
      records_(counters(registry, "tank_input_records_total", "Records an input committed to the queue.")
                   .Add({{"input", input_}, {"type", type_}})),
      bytes_(counters(registry, "tank_input_bytes_total", "Payload bytes of the records an input committed.")
                 .Add({{"input", input_}, {"type", type_}})),
      errors_(counters(registry, "tank_input_errors_total",
                       "Problems an input met (bad requests, refused connections, read errors), by reason.")),
      dropped_(counters(registry, "tank_input_dropped_records_total",
                        "Records an input had to drop, by reason (e.g. UDP datagrams while the queue refuses "
                        "records).")),
      paused_(gauges(registry, "tank_input_paused", "1 while the input is paused by the queue's backpressure.")
                  .Add({{"input", input_}, {"type", type_}})),
      connections_(gauges(registry, "tank_input_connections", "Open connections of a socket input.")
                       .Add({{"input", input_}, {"type", type_}})) {}

void InputMetrics::committed(std::uint64_t records, std::uint64_t bytes) {
  records_.Increment(static_cast<double>(records));
  bytes_.Increment(static_cast<double>(bytes));
}

void InputMetrics::error(std::string_view reason, std::uint64_t n) {
  errors_.Add({{"input", input_}, {"type", type_}, {"reason", std::string(reason)}}).Increment(static_cast<double>(n));
}

void InputMetrics::dropped(std::string_view reason, std::uint64_t records) {
  dropped_.Add({{"input", input_}, {"type", type_}, {"reason", std::string(reason)}})
      .Increment(static_cast<double>(records));
}

void InputMetrics::set_paused(bool paused) { paused_.Set(paused ? 1 : 0); }
void InputMetrics::connection_opened() { connections_.Increment(); }
void InputMetrics::connection_closed() { connections_.Decrement(); }

}  // namespace tank::input
