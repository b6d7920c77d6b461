#pragma once

// Routing: which input's records go through which processors (and, later, to which outputs).
//
// Every input is a route. A processor names the inputs it takes (`inputs`, default all); a
// record check (processors.validate) runs on the input's thread before the commit, a stage
// (processors.aggregate) reads the queue after it. The plan is computed from the configuration
// alone, so `tank check --explain`, `tank run` and `tank dlq replay` agree on it.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.hpp"
#include "config/document.hpp"
#include "plugin/registry.hpp"
#include "process/route.hpp"

namespace tank::metrics {
class Registry;
}

namespace tank::engine {

// The queue consumer standing in for outputs while none are configured (see consumers()).
inline constexpr std::string_view kNoOutputsConsumer = "outputs/none";

struct ProcessorPlan {
  std::string name;                    // unique among processors
  std::string type;                    // "validate"
  const plugin::Descriptor* descriptor = nullptr;
  const config::SectionValues* values = nullptr;
  std::vector<std::string> inputs;     // resolved: the inputs it takes, in input order
  bool stage = false;                  // reads the queue (else: a record check)
};

struct OutputPlan {
  std::string name;                    // unique among outputs
  std::string type;                    // "http"
  const plugin::Descriptor* descriptor = nullptr;
  const config::SectionValues* values = nullptr;
  std::vector<std::string> inputs;     // resolved: the inputs it sends, in input order
};

struct InputPlan {
  std::string name;
  std::string type;                    // "mqtt"
  process::Format format = process::Format::json;
  std::vector<std::size_t> checks;     // indexes into RoutePlan::processors, in file order
  std::vector<std::size_t> stages;
  std::vector<std::size_t> outputs;    // indexes into RoutePlan::outputs
};

struct RoutePlan {
  std::vector<InputPlan> inputs;        // in the order the inputs are created
  std::vector<ProcessorPlan> processors;  // in file order
  std::vector<OutputPlan> outputs;        // in file order

  const InputPlan* input(std::string_view name) const;
  // Inputs whose raw records outputs do not get, because a stage derives records from them.
  std::vector<std::string> derived_only() const;
  // The queue consumers the plan needs: one per stage and one per output (and, with stages but
  // no outputs, a stand-in that keeps what they derive for `tank queue peek`).
  std::vector<std::string> consumers() const;
  // A stage's position in the chain of each of its inputs (same order as p.inputs).
  std::vector<unsigned> positions(const ProcessorPlan& p) const;
  // A human description, one block per input: format, checks, stages and where records go.
  std::string explain() const;
};

// Plans the routes of a configuration that loaded without errors.
RoutePlan plan_routes(const config::Document& document, const plugin::Registry& plugins);

// Cross-section checks of processors and outputs, run by `tank check` and at load
// (config::Schema::checks): names unique and well formed, `inputs` naming configured inputs,
// processors that read fields only on inputs with format = "json".
void check_routes(const config::Document& document, const plugin::Registry& plugins,
                  config::Diagnostics& diagnostics);

// The pre-queue route of every input (decoding and record checks), built from the plan. Throws
// plugin::StartError when a check cannot be built (a schema file that became unreadable).
struct RouteServices {
  metrics::Registry& metrics;
  const Clock& clock;
  std::string agent_id;
  std::filesystem::path data_dir;
};
std::map<std::string, std::shared_ptr<const process::Route>, std::less<>> build_routes(const RoutePlan& plan,
                                                                                      const RouteServices& services);

}  // namespace tank::engine
