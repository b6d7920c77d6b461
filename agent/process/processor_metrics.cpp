#include "process/processor_metrics.hpp"

#include <prometheus/registry.h>

namespace tank::process {
namespace {

prometheus::Family<prometheus::Counter>& counters(metrics::Registry& r, const char* name, const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r.core());
}

}  // namespace

ProcessorMetrics::ProcessorMetrics(metrics::Registry& registry, std::string processor, std::string_view type)
    : processor_(std::move(processor)),
      type_(type),
      in_(counters(registry, "tank_processor_records_in_total", "Records a processor took.")
              .Add({{"processor", processor_}, {"type", type_}})),
      out_(counters(registry, "tank_processor_records_out_total",
                    "Records a processor passed on (a check, a deadband, dedup or throttle stage) or emitted (an "
                    "aggregate).")
               .Add({{"processor", processor_}, {"type", type_}})),
      dead_letters_(counters(registry, "tank_processor_dead_letters_total",
                             "Records a processor sent to the dead-letter store, by reason.")),
      late_(counters(registry, "tank_processor_late_records_total",
                     "Records that arrived after the watermark had closed all their windows.")
                .Add({{"processor", processor_}, {"type", type_}})),
      ignored_(counters(registry, "tank_processor_ignored_values_total",
                        "Values numeric aggregate functions skipped because they were not numbers.")
                   .Add({{"processor", processor_}, {"type", type_}})),
      windows_(prometheus::BuildGauge()
                   .Name("tank_processor_windows_open")
                   .Help("(window, group) cells an aggregate processor holds open.")
                   .Register(registry.core())
                   .Add({{"processor", processor_}, {"type", type_}})),
      dropped_(counters(registry, "tank_processor_dropped_records_total",
                        "Records a processor dropped on purpose, by reason (a repeat, a value within the deadband, "
                        "over the rate, a script that returned nil).")),
      holding_family_(prometheus::BuildGauge()
                          .Name("tank_processor_holding")
                          .Help("1 while a processor holds records back in the queue (throttle's mode \"hold\", a "
                                "record time not to be trusted yet), else 0.")
                          .Register(registry.core())),
      evicted_(counters(registry, "tank_processor_evicted_keys_total",
                        "State entries a processor forgot to stay within its bound (deadband's max_groups, dedup's "
                        "max_keys); a forgotten group's next record passes as a first one.")
                   .Add({{"processor", processor_}, {"type", type_}})) {}

void ProcessorMetrics::dropped(std::string_view reason, std::uint64_t n) {
  dropped_.Add({{"processor", processor_}, {"type", type_}, {"reason", std::string(reason)}})
      .Increment(static_cast<double>(n));
}

void ProcessorMetrics::set_holding(bool holding) {
  if (holding_ == nullptr) holding_ = &holding_family_.Add({{"processor", processor_}, {"type", type_}});
  holding_->Set(holding ? 1 : 0);
}

void ProcessorMetrics::dead_lettered(std::string_view reason, std::uint64_t n) {
  dead_letters_.Add({{"processor", processor_}, {"type", type_}, {"reason", std::string(reason)}})
      .Increment(static_cast<double>(n));
}

}  // namespace tank::process
