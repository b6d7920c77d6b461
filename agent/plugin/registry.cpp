#include "plugin/registry.hpp"

#include <stdexcept>

#include <fmt/format.h>

namespace tank::plugin {

std::string_view kind_name(Kind kind) {
  switch (kind) {
    case Kind::input: return "input";
    case Kind::processor: return "processor";
    case Kind::output: return "output";
  }
  return "?";
}

std::string_view kind_section(Kind kind) {
  switch (kind) {
    case Kind::input: return "inputs";
    case Kind::processor: return "processors";
    case Kind::output: return "outputs";
  }
  return "?";
}

void Registry::add(const Descriptor& d) {
  if (find(d.kind, d.name) != nullptr) {
    throw std::logic_error(fmt::format("{} plugin \"{}\" registered twice", kind_name(d.kind), d.name));
  }
  std::string expected = fmt::format("{}.{}", kind_section(d.kind), d.name);
  if (d.section == nullptr || d.section->path != expected || !d.section->repeated) {
    throw std::logic_error(fmt::format("plugin \"{}\" must declare a repeated section \"{}\"", d.name, expected));
  }
  plugins_.push_back(d);
}

const Descriptor* Registry::find(Kind kind, std::string_view name) const {
  for (const auto& d : plugins_) {
    if (d.kind == kind && d.name == name) return &d;
  }
  return nullptr;
}

}  // namespace tank::plugin

namespace tank::plugin {
namespace {

const config::Option kInputCommon[] = {
    {.name = "name",
     .type = config::Type::string,
     .default_value = "",
     .description = "Names this input in records (their `input`), metrics, logs and routing; unique among inputs: "
                    "letters, digits, '.', '_' and '-', at most 64.",
     .default_note = "the plugin's name, e.g. `tcp`"},
};

const config::Option kProcessorCommon[] = {
    {.name = "name",
     .type = config::Type::string,
     .default_value = "",
     .description = "Names this processor in metrics, logs, dead letters and `tank check --explain`; unique among "
                    "processors: letters, digits, '.', '_' and '-', at most 64.",
     .default_note = "the plugin's name (`validate`, `aggregate`): set one when there are two of a kind"},
    {.name = "inputs",
     .type = config::Type::string_list,
     .default_value = "",
     .description = "The inputs whose records this processor takes, by name.",
     .default_note = "all inputs"},
};

}  // namespace

std::span<const config::Option> input_common_options() { return kInputCommon; }
std::span<const config::Option> processor_common_options() { return kProcessorCommon; }

std::string processor_name(const config::SectionValues& values, std::string_view plugin_name) {
  return values.has("name") ? values.string("name") : std::string(plugin_name);
}

std::string stage_consumer_name(std::string_view processor_name) {
  return fmt::format("processor/{}", processor_name);
}

std::string input_name(const config::SectionValues& values, std::string_view plugin_name) {
  return values.has("name") ? values.string("name") : std::string(plugin_name);
}

}  // namespace tank::plugin
