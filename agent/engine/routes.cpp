#include "engine/routes.hpp"

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "common/strings.hpp"
#include "queue/record.hpp"
#include "engine/agent_config.hpp"
#include "process/processor_metrics.hpp"

namespace tank::engine {
namespace {

struct Found {
  const plugin::Descriptor* descriptor;
  const config::SectionValues* values;
};

// Instances of one kind, in file order (the document keeps them per plugin type).
std::vector<Found> instances_of(const config::Document& document, const plugin::Registry& plugins, plugin::Kind kind,
                                bool file_order) {
  std::vector<Found> out;
  for (const auto& d : plugins.all()) {
    if (d.kind != kind) continue;
    for (const auto& values : document.instances(d.section->path)) out.push_back({&d, &values});
  }
  if (file_order) {
    std::stable_sort(out.begin(), out.end(), [](const Found& a, const Found& b) {
      const auto& la = a.values->where();
      const auto& lb = b.values->where();
      return la.line != lb.line ? la.line < lb.line : la.column < lb.column;
    });
  }
  return out;
}

process::Format input_format(const config::SectionValues& values) {
  if (!values.has("format")) return process::Format::json;  // inputs.http: JSON only
  return process::parse_format(values.choice("format")).value_or(process::Format::json);
}

}  // namespace

const InputPlan* RoutePlan::input(std::string_view name) const {
  for (const InputPlan& i : inputs) {
    if (i.name == name) return &i;
  }
  return nullptr;
}

std::vector<std::string> RoutePlan::derived_only() const {
  std::vector<std::string> out;
  for (const InputPlan& i : inputs) {
    if (!i.stages.empty()) out.push_back(i.name);
  }
  return out;
}

std::vector<std::string> RoutePlan::consumers() const {
  std::vector<std::string> out;
  // Only those that run: one with no input is not started, and its cursor would hold every
  // record for ever.
  for (const ProcessorPlan& p : processors) {
    if (p.stage && !p.inputs.empty()) out.push_back(plugin::stage_consumer_name(p.name));
  }
  for (const OutputPlan& o : outputs) {
    if (!o.inputs.empty()) out.push_back(plugin::output_consumer_name(o.name));
  }
  // With no outputs, a stand-in holds every record, so that what a stage derives (and the
  // records it read) stays in the queue for `tank queue peek` up to the bound, as it does with
  // no stage at all -- instead of being deleted once the stage passed it.
  if (!out.empty() && outputs.empty()) out.push_back(std::string(kNoOutputsConsumer));
  return out;
}

std::vector<unsigned> RoutePlan::positions(const ProcessorPlan& p) const {
  std::vector<unsigned> out;
  for (const std::string& name : p.inputs) {
    const InputPlan* i = input(name);
    unsigned k = 0;
    if (i != nullptr) {
      while (k < i->stages.size() && processors[i->stages[k]].name != p.name) ++k;
    }
    out.push_back(k);
  }
  return out;
}

std::string RoutePlan::explain() const {
  std::string out;
  if (inputs.empty()) return "no inputs: nothing flows\n";
  for (const InputPlan& i : inputs) {
    out += fmt::format("input \"{}\" ({}, format {})\n", i.name, i.type, process::to_string(i.format));
    if (i.format == process::Format::json) {
      out += "  -> decode as JSON              --not JSON--> dead letter (decode_error)\n";
    } else if (i.format == process::Format::text) {
      out += "  -> check UTF-8                 --not UTF-8--> dead letter (decode_error)\n";
    }
    for (std::size_t c : i.checks) {
      const ProcessorPlan& p = processors[c];
      out += fmt::format("  -> {:<28} --refused--> dead letter (the check's reason)\n",
                         fmt::format("{} \"{}\"", p.type, p.name));
    }
    out += "  -> queue (committed; the source is acknowledged)\n";
    std::string previous;
    for (std::size_t s : i.stages) {
      const ProcessorPlan& p = processors[s];
      out += fmt::format("  -> {:<28} (after the queue, as consumer \"{}\"; reads {})\n",
                         fmt::format("{} \"{}\"", p.type, p.name), plugin::stage_consumer_name(p.name),
                         previous.empty() ? "the records committed" : "what \"" + previous + "\" passes on");
      previous = p.name;
    }
    if (i.outputs.empty() && outputs.empty()) {
      out += i.stages.empty() ? "  -> outputs: none (records stay in the queue up to its bound)\n"
                              : "  -> outputs: none (derived records stay in the queue up to its bound)\n";
    } else if (i.outputs.empty()) {
      out += "  -> no output takes this input: its records are discarded once the outputs passed them\n";
    }
    for (std::size_t o : i.outputs) {
      const OutputPlan& p = outputs[o];
      out += fmt::format("  -> {:<28} ({}; acknowledged when the upstream confirms)\n",
                         fmt::format("output {} \"{}\"", p.type, p.name),
                         previous.empty() ? "its records" : "what \"" + previous + "\" passes on, not the records");
    }
  }
  for (const OutputPlan& o : outputs) {
    if (o.inputs.empty()) out += fmt::format("output \"{}\" ({}) takes no configured input: it sends nothing\n", o.name, o.type);
  }
  for (const ProcessorPlan& p : processors) {
    if (p.inputs.empty()) {
      out += fmt::format("processor \"{}\" ({}) takes no configured input: it does nothing\n", p.name, p.type);
    }
  }
  return out;
}

RoutePlan plan_routes(const config::Document& document, const plugin::Registry& plugins) {
  RoutePlan plan;
  for (const Found& f : instances_of(document, plugins, plugin::Kind::input, false)) {
    InputPlan i;
    i.name = plugin::input_name(*f.values, f.descriptor->name);
    i.type = std::string(f.descriptor->name);
    i.format = input_format(*f.values);
    plan.inputs.push_back(std::move(i));
  }
  for (const Found& f : instances_of(document, plugins, plugin::Kind::processor, true)) {
    ProcessorPlan p;
    p.name = plugin::processor_name(*f.values, f.descriptor->name);
    p.type = std::string(f.descriptor->name);
    p.descriptor = f.descriptor;
    p.values = f.values;
    p.stage = static_cast<bool>(f.descriptor->create_stage);
    const std::vector<std::string>* wanted = f.values->has("inputs") ? &f.values->strings("inputs") : nullptr;
    for (InputPlan& i : plan.inputs) {
      if (wanted == nullptr || std::find(wanted->begin(), wanted->end(), i.name) != wanted->end()) {
        p.inputs.push_back(i.name);
        (p.stage ? i.stages : i.checks).push_back(plan.processors.size());
      }
    }
    plan.processors.push_back(std::move(p));
  }
  for (const Found& f : instances_of(document, plugins, plugin::Kind::output, true)) {
    OutputPlan o;
    o.name = plugin::output_name(*f.values, f.descriptor->name);
    o.type = std::string(f.descriptor->name);
    o.descriptor = f.descriptor;
    o.values = f.values;
    const std::vector<std::string>* wanted = f.values->has("inputs") ? &f.values->strings("inputs") : nullptr;
    for (InputPlan& i : plan.inputs) {
      if (wanted == nullptr || std::find(wanted->begin(), wanted->end(), i.name) != wanted->end()) {
        o.inputs.push_back(i.name);
        i.outputs.push_back(plan.outputs.size());
      }
    }
    plan.outputs.push_back(std::move(o));
  }
  return plan;
}

namespace {

// A processor's or output's `name` (well formed, unique among its kind) and `inputs` (each one
// configured, the list not empty).
void check_name_and_inputs(const RoutePlan& plan, std::string_view kind, const std::string& name,
                           const config::SectionValues& v, std::map<std::string, const config::SectionValues*>& seen,
                           config::Diagnostics& diagnostics) {
  if (!valid_id(name)) {
    diagnostics.error(v.location_of("name"), v.path() + ".name",
                      fmt::format("\"{}\" is not a valid {} name: use 1 to 64 letters, digits, '.', '_' or '-'", name,
                                  kind));
  } else if (auto [it, fresh] = seen.emplace(name, &v); !fresh) {
    diagnostics.error(v.location_of("name"), v.path() + ".name",
                      fmt::format("another {} is named \"{}\" ({} at {}); give each {} its own `name`", kind, name,
                                  it->second->path(), it->second->where().to_string(), kind));
  }
  if (!v.has("inputs")) return;
  const auto& wanted = v.strings("inputs");
  if (wanted.empty()) {
    diagnostics.error(v.location_of("inputs"), v.path() + ".inputs",
                      "an empty list takes no input; name at least one input, or remove `inputs` to take all");
  }
  std::vector<std::string> names;
  for (const InputPlan& i : plan.inputs) names.push_back(i.name);
  for (std::size_t k = 0; k < wanted.size(); ++k) {
    if (plan.input(wanted[k]) != nullptr) continue;
    std::string message = fmt::format("no input is named \"{}\"", wanted[k]);
    if (names.empty()) {
      message += " (no inputs are configured)";
    } else {
      message += "; the inputs are " + strings::join_alternatives(names);
    }
    diagnostics.error(v.location_of("inputs"), fmt::format("{}.inputs[{}]", v.path(), k), message);
  }
}

}  // namespace

void check_routes(const config::Document& document, const plugin::Registry& plugins,
                  config::Diagnostics& diagnostics) {
  const RoutePlan plan = plan_routes(document, plugins);
  std::map<std::string, const config::SectionValues*> seen;
  for (const ProcessorPlan& p : plan.processors) {
    const config::SectionValues& v = *p.values;
    check_name_and_inputs(plan, "processor", p.name, v, seen, diagnostics);
    if (p.descriptor->needs_json != nullptr && p.descriptor->needs_json(v)) {
      for (const std::string& name : p.inputs) {
        const InputPlan* i = plan.input(name);
        if (i == nullptr || i->format == process::Format::json) continue;
        diagnostics.error(v.location_of("inputs"), v.path() + ".inputs",
                          fmt::format("{} \"{}\" reads fields of JSON records, but input \"{}\" has format = \"{}\"; set "
                                      "format = \"json\" on that input or leave it out of `inputs`",
                                      p.type, p.name, name, process::to_string(i->format)));
      }
    }
  }
  for (const InputPlan& i : plan.inputs) {
    if (i.stages.size() <= queue::kMaxChainStages) continue;
    const ProcessorPlan& p = plan.processors[i.stages[queue::kMaxChainStages]];
    diagnostics.error(p.values->where(), p.values->path(),
                      fmt::format("input \"{}\" would go through {} processors after the queue; at most {} are allowed",
                                  i.name, i.stages.size(), queue::kMaxChainStages));
  }
  std::map<std::string, const config::SectionValues*> outputs_seen;
  for (const OutputPlan& o : plan.outputs) check_name_and_inputs(plan, "output", o.name, *o.values, outputs_seen, diagnostics);
  // With outputs, records of an input no output takes are passed by every output and deleted:
  // say so (with no outputs at all, records stay in the queue up to its bound).
  if (plan.outputs.empty()) return;
  for (const auto& d : plugins.all()) {
    if (d.kind != plugin::Kind::input) continue;
    for (const auto& values : document.instances(d.section->path)) {
      const InputPlan* i = plan.input(plugin::input_name(values, d.name));
      if (i == nullptr || !i->outputs.empty()) continue;
      diagnostics.warning(values.where(), values.path(),
                          fmt::format("input \"{}\" goes to no output: its records are discarded once the outputs "
                                      "have passed them; add it to an output's `inputs`, or remove the input",
                                      i->name));
    }
  }
}

std::map<std::string, std::shared_ptr<const process::Route>, std::less<>> build_routes(const RoutePlan& plan,
                                                                                      const RouteServices& services) {
  // One check and one set of metrics per processor, shared by the routes of all its inputs.
  std::vector<process::Route::Check> checks(plan.processors.size());
  for (std::size_t k = 0; k < plan.processors.size(); ++k) {
    const ProcessorPlan& p = plan.processors[k];
    if (p.stage || p.inputs.empty()) continue;
    plugin::ProcessorContext context{p.name,           p.inputs,         nullptr,
                                     services.metrics, services.clock,   services.agent_id,
                                     services.data_dir};
    if (!p.descriptor->create_check) {
      throw plugin::StartError(fmt::format("processor plugin \"{}\" cannot be created", p.type));
    }
    checks[k].processor = p.name;
    checks[k].check = p.descriptor->create_check(*p.values, context);
    checks[k].metrics = std::make_shared<process::ProcessorMetrics>(services.metrics, p.name, p.type);
  }
  std::map<std::string, std::shared_ptr<const process::Route>, std::less<>> routes;
  for (const InputPlan& i : plan.inputs) {
    std::vector<process::Route::Check> mine;
    for (std::size_t k : i.checks) mine.push_back(checks[k]);
    routes.emplace(i.name, std::make_shared<process::Route>(i.name, i.format, std::move(mine)));
  }
  return routes;
}

}  // namespace tank::engine
