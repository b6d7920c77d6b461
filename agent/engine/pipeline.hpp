#pragma once

// The running plugins: builds each configured input from its factory, starts them in file
// order, relays the queue's pressure to them, and stops them in reverse order.

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config/document.hpp"
#include "plugin/input.hpp"
#include "plugin/registry.hpp"

namespace tank::engine {

struct PipelineContext {
  queue::Queue& queue;
  metrics::Registry& metrics;
  const Clock& clock;
  std::string agent_id;
  std::filesystem::path data_dir;
};

class Pipeline {
 public:
  // Creates (but does not start) every input of `document`. Throws plugin::StartError when a
  // plugin refuses its options.
  Pipeline(const config::Document& document, const plugin::Registry& plugins, const PipelineContext& context);
  ~Pipeline();

  // Starts every input; when one fails, stops those already started and throws its StartError.
  void start();
  // Stops every input, the last started first. Idempotent.
  void stop();
  // Relays the queue's pressure (Queue::set_pressure_listener) to every input.
  void set_paused(bool paused);
  // input name -> where it listens, for the inputs that listen.
  std::vector<std::pair<std::string, std::string>> listening() const;

  // The names of the configured consumers (outputs, processors), for the queue.
  static std::vector<std::string> consumers(const config::Document& document);

 private:
  struct Entry {
    std::string name;
    std::string type;
    std::unique_ptr<plugin::Input> input;
  };
  mutable std::mutex mutex_;
  std::vector<Entry> inputs_;
  std::size_t started_ = 0;
};

}  // namespace tank::engine
