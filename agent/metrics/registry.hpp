#pragma once

// The one metrics registry every component adds its metrics to.
//
// Counters, gauges and histograms that change as things happen are registered on core() with
// prometheus-cpp's builders. Values that are cheaper to read at scrape time than to keep
// up to date (queue depth, oldest record age, process memory) come from collectables added
// with add_collectable(), evaluated on each scrape. serialize() renders the Prometheus text
// exposition format (version 0.0.4) served at /metrics.

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

namespace tank::metrics {

class Registry {
 public:
  Registry();

  prometheus::Registry& core() { return *core_; }

  // Adds a collectable evaluated at every scrape, for as long as it lives: the registry keeps
  // only a weak reference, so the owner removes it by destroying it.
  void add_collectable(const std::shared_ptr<prometheus::Collectable>& collectable);

  std::vector<prometheus::MetricFamily> collect() const;
  std::string serialize() const;

 private:
  std::shared_ptr<prometheus::Registry> core_;
  mutable std::mutex mutex_;
  mutable std::vector<std::weak_ptr<prometheus::Collectable>> collectables_;
};

// A collectable that calls a function at each scrape.
class FunctionCollectable final : public prometheus::Collectable {
 public:
  explicit FunctionCollectable(std::function<std::vector<prometheus::MetricFamily>()> collect)
      : collect_(std::move(collect)) {}
  std::vector<prometheus::MetricFamily> Collect() const override { return collect_(); }

 private:
  std::function<std::vector<prometheus::MetricFamily>()> collect_;
};

// Builds a gauge family with one sample per label set, for collectables.
struct GaugeSample {
  std::vector<prometheus::ClientMetric::Label> labels;
  double value = 0;
};
prometheus::MetricFamily gauge_family(std::string name, std::string help, std::vector<GaugeSample> samples);
prometheus::MetricFamily gauge_family(std::string name, std::string help, double value);
prometheus::MetricFamily counter_family(std::string name, std::string help, double value);

// The standard process metrics (process_resident_memory_bytes, process_cpu_seconds_total,
// process_open_fds, process_start_time_seconds, ...) read from /proc/self at scrape time.
std::shared_ptr<prometheus::Collectable> make_process_collectable();

// tank_build_info{version, commit, build_type} 1.
std::shared_ptr<prometheus::Collectable> make_build_info_collectable();

}  // namespace tank::metrics
