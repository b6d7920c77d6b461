#pragma once

// The running plugins: plans the routes (engine/routes.hpp), builds each input with its route
// (decoding and record checks), each stage (processors that read the queue) and each output
// (a delivery engine around the output plugin: output/delivery.hpp), starts the outputs, then
// the stages, then the inputs in file order, relays the queue's pressure to the inputs, and
// stops in the reverse order: inputs first (the last started first), then stages, then outputs.

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/clock_sync.hpp"
#include "config/document.hpp"
#include "plugin/input.hpp"
#include "engine/routes.hpp"
#include "plugin/registry.hpp"

namespace tank::output {
class Delivery;
}

namespace tank::engine {

struct PipelineContext {
  queue::Queue& queue;
  metrics::Registry& metrics;
  const Clock& clock;
  std::string agent_id;
  std::filesystem::path data_dir;
  const ClockSync* clock_sync = nullptr;  // null: the clock is always trusted
};

class Pipeline {
 public:
  // Creates (but does not start) every input of `document`. Throws plugin::StartError when a
  // plugin refuses its options.
  Pipeline(const config::Document& document, const plugin::Registry& plugins, const PipelineContext& context);
  ~Pipeline();

  // Starts every output, stage and input; when one fails, stops those already started and throws
  // its StartError.
  void start();
  // Stops every input (the last started first), then the stages, then the outputs. Idempotent.
  void stop();
  // Relays the queue's pressure (Queue::set_pressure_listener) to every input.
  void set_paused(bool paused);
  // input name -> where it listens, for the inputs that listen.
  std::vector<std::pair<std::string, std::string>> listening() const;

  // The names of the configured consumers (outputs, processors), for the queue.
  static std::vector<std::string> consumers(const config::Document& document, const plugin::Registry& plugins);

  const RoutePlan& plan() const { return plan_; }
  // The pre-queue route of an input (null for an unknown name), e.g. for a dead-letter replay.
  std::shared_ptr<const process::Route> route(std::string_view input) const;
  // Every input's pre-queue route (a copy: it outlives the pipeline).
  std::map<std::string, std::shared_ptr<const process::Route>, std::less<>> routes() const { return routes_; }

 private:
  struct Entry {
    std::string name;
    std::string type;
    std::unique_ptr<plugin::Input> input;
  };
  struct OutputEntry {
    std::string name;
    std::string type;
    std::unique_ptr<output::Delivery> delivery;
  };
  struct StageEntry {
    std::string name;
    std::string type;
    std::unique_ptr<plugin::Stage> stage;
  };
  RoutePlan plan_;
  std::map<std::string, std::shared_ptr<const process::Route>, std::less<>> routes_;
  mutable std::mutex mutex_;
  std::vector<Entry> inputs_;
  std::vector<StageEntry> stages_;
  std::vector<OutputEntry> outputs_;
  std::size_t started_ = 0;
  std::size_t stages_started_ = 0;
  std::size_t outputs_started_ = 0;

  void stop_outputs();
};

}  // namespace tank::engine
