#include "engine/pipeline.hpp"

#include <fmt/format.h>

#include "common/log.hpp"
#include "output/delivery.hpp"

namespace tank::engine {

Pipeline::Pipeline(const config::Document& document, const plugin::Registry& plugins, const PipelineContext& context)
    : plan_(plan_routes(document, plugins)),
      routes_(build_routes(plan_, RouteServices{context.metrics, context.clock, context.agent_id, context.data_dir})) {
  for (const OutputPlan& o : plan_.outputs) {
    if (o.inputs.empty()) continue;
    output::DeliverySettings settings = output::delivery_settings(*o.values, o.name, o.type, context.agent_id);
    settings.filter.inputs = o.inputs;
    settings.split_by_input = o.descriptor->split_by_input != nullptr && o.descriptor->split_by_input(*o.values);
    // An output that sends records one by one compresses them itself (or not): no body.
    settings.sends_records = o.descriptor->sends_records;
    if (o.descriptor->sends_records) settings.compression = output::Compression::none;
    for (const std::string& input : o.inputs) {
      const InputPlan* i = plan_.input(input);
      // What the last stage of the input's chain derived (level 0, as committed, with no stage).
      settings.filter.levels.push_back(static_cast<unsigned>(i->stages.size()));
      settings.kinds[input] = i->format == process::Format::json   ? output::PayloadKind::json
                              : i->format == process::Format::text ? output::PayloadKind::text
                                                                   : output::PayloadKind::raw;
    }
    settings.hands_off_in_order = o.descriptor->hands_off_in_order;
    if (o.descriptor->default_max_in_flight > 0 && !o.values->is_set("max_in_flight")) {
      settings.max_in_flight = o.descriptor->default_max_in_flight;
    }
    std::vector<std::unique_ptr<plugin::Output>> instances;
    const auto share = std::make_shared<plugin::InstanceShare>();
    for (unsigned i = 0; i < settings.max_in_flight; ++i) {
      plugin::OutputContext ctx{o.name,   context.metrics,        context.clock, context.agent_id,
                                context.data_dir, i, settings.max_in_flight, share};
      instances.push_back(o.descriptor->create_output(*o.values, ctx));
    }
    outputs_.push_back(OutputEntry{o.name, o.type,
                                   std::make_unique<output::Delivery>(std::move(settings), context.queue,
                                                                      std::move(instances), context.metrics,
                                                                      context.clock)});
  }
  for (const ProcessorPlan& p : plan_.processors) {
    if (!p.stage || p.inputs.empty()) continue;
    plugin::ProcessorContext ctx{p.name,          p.inputs,      &context.queue,  context.metrics,
                                 context.clock,   context.agent_id, context.data_dir};
    ctx.positions = plan_.positions(p);
    ctx.clock_sync = context.clock_sync;
    stages_.push_back(StageEntry{p.name, p.type, p.descriptor->create_stage(*p.values, ctx)});
  }
  for (const auto& d : plugins.all()) {
    if (d.kind != plugin::Kind::input) continue;
    for (const auto& values : document.instances(d.section->path)) {
      std::string name = plugin::input_name(values, d.name);
      plugin::InputContext ctx{name, context.queue, context.metrics, context.clock, context.agent_id,
                               context.data_dir, route(name), context.clock_sync};
      if (!d.create_input) {
        throw plugin::StartError(fmt::format("input plugin \"{}\" cannot be created", d.name));
      }
      inputs_.push_back(Entry{name, std::string(d.name), d.create_input(values, ctx)});
    }
  }
}

Pipeline::~Pipeline() { stop(); }

std::shared_ptr<const process::Route> Pipeline::route(std::string_view input) const {
  auto it = routes_.find(input);
  return it == routes_.end() ? nullptr : it->second;
}

void Pipeline::start() {
  std::lock_guard lock(mutex_);
  for (; outputs_started_ < outputs_.size(); ++outputs_started_) {
    OutputEntry& e = outputs_[outputs_started_];
    try {
      e.delivery->start();
      log::info("pipeline", "output \"{}\" ({}) started", e.name, e.type);
    } catch (const plugin::StartError& error) {
      std::string message = fmt::format("output \"{}\" ({}) cannot start: {}", e.name, e.type, error.what());
      stop_outputs();
      throw plugin::StartError(message);
    }
  }
  for (; stages_started_ < stages_.size(); ++stages_started_) {
    StageEntry& e = stages_[stages_started_];
    try {
      e.stage->start();
      log::info("pipeline", "processor \"{}\" ({}) started", e.name, e.type);
    } catch (const plugin::StartError& error) {
      std::string message = fmt::format("processor \"{}\" ({}) cannot start: {}", e.name, e.type, error.what());
      for (std::size_t i = stages_started_; i-- > 0;) stages_[i].stage->stop();
      stages_started_ = 0;
      stop_outputs();
      throw plugin::StartError(message);
    }
  }
  for (; started_ < inputs_.size(); ++started_) {
    Entry& e = inputs_[started_];
    try {
      e.input->start();
      log::info("pipeline", "input \"{}\" ({}) started", e.name, e.type);
    } catch (const plugin::StartError& error) {
      std::string message = fmt::format("input \"{}\" ({}) cannot start: {}", e.name, e.type, error.what());
      for (std::size_t i = started_; i-- > 0;) inputs_[i].input->stop();
      started_ = 0;
      for (std::size_t i = stages_started_; i-- > 0;) stages_[i].stage->stop();
      stages_started_ = 0;
      stop_outputs();
      throw plugin::StartError(message);
    }
  }
}

void Pipeline::stop_outputs() {
  for (std::size_t i = outputs_started_; i-- > 0;) {
    outputs_[i].delivery->stop();
    log::info("pipeline", "output \"{}\" stopped", outputs_[i].name);
  }
  outputs_started_ = 0;
}

void Pipeline::stop() {
  std::lock_guard lock(mutex_);
  for (std::size_t i = started_; i-- > 0;) {
    inputs_[i].input->stop();
    log::info("pipeline", "input \"{}\" stopped", inputs_[i].name);
  }
  started_ = 0;
  for (std::size_t i = stages_started_; i-- > 0;) {
    stages_[i].stage->stop();
    log::info("pipeline", "processor \"{}\" stopped", stages_[i].name);
  }
  stages_started_ = 0;
  stop_outputs();
}

void Pipeline::set_paused(bool paused) {
  // No lock: inputs are created before and destroyed after the listener is active, and
  // set_paused must not block (it runs on a committing thread).
  for (Entry& e : inputs_) e.input->set_paused(paused);
}

std::vector<std::pair<std::string, std::string>> Pipeline::listening() const {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<std::string, std::string>> out;
  for (const Entry& e : inputs_) {
    std::string where = e.input->listening_on();
    if (!where.empty()) out.emplace_back(e.name, std::move(where));
  }
  return out;
}

std::vector<std::string> Pipeline::consumers(const config::Document& document, const plugin::Registry& plugins) {
  return plan_routes(document, plugins).consumers();  // outputs arrive with their issue
}

}  // namespace tank::engine
