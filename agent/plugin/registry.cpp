#include "plugin/registry.hpp"

#include <stdexcept>

#include <fmt/format.h>

#include "process/event_time.hpp"

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

const std::string_view kEncodings[] = {"ndjson", "json_array"};
const std::string_view kCompressions[] = {"zstd", "gzip", "none"};

const config::Option kOutputCommon[] = {
    {.name = "name",
     .type = config::Type::string,
     .default_value = "",
     .description = "Names this output in metrics, logs, dead letters, idempotency keys and its queue cursor; unique "
                    "among outputs: letters, digits, '.', '_' and '-', at most 64. Renaming an output gives it a new "
                    "cursor that starts after the newest record.",
     .default_note = "the plugin's name (`http`, `file`): set one when there are two of a kind"},
    {.name = "inputs",
     .type = config::Type::string_list,
     .default_value = "",
     .description = "The inputs whose records this output sends, by name (for an input behind an aggregate "
                    "processor: its aggregates).",
     .default_note = "all inputs"},
    {.name = "batch_max_records",
     .type = config::Type::integer,
     .default_value = "5000",
     .description = "The most records in one batch.",
     .min = "1",
     .max = "1000000"},
    {.name = "batch_max_bytes",
     .type = config::Type::size,
     .default_value = "\"1MiB\"",
     .description = "The most record bytes in one batch, before encoding and compression (at most half of what one "
                    "queue commit may hold: max_disk_bytes / 128, at most 2 MiB, whichever is less; a single larger "
                    "record is sent alone).",
     .min = "1KiB",
     .max = "64MiB"},
    {.name = "linger",
     .type = config::Type::duration,
     .default_value = "\"200ms\"",
     .description = "How long a batch that is not full waits for more records after its first one arrived.",
     .min = "0s",
     .max = "1h"},
    {.name = "encoding",
     .type = config::Type::choice,
     .default_value = "\"ndjson\"",
     .description = "\"ndjson\": one JSON value per line; \"json_array\": one JSON array. A record of a JSON input "
                    "(and an aggregate) is sent as it is; a text record as {\"message\": \"...\"}; a raw record as "
                    "{\"message_base64\": \"...\"}.",
     .choices = kEncodings},
    {.name = "compression",
     .type = config::Type::choice,
     .default_value = "\"zstd\"",
     .description = "How the encoded batch is compressed (Content-Encoding for HTTP).",
     .choices = kCompressions},
    {.name = "retry_initial",
     .type = config::Type::duration,
     .default_value = "\"500ms\"",
     .description = "The first wait before a failed batch is sent again; each further failure doubles it up to "
                    "retry_max, and the wait is drawn at random between 0 and that (full jitter). A Retry-After from "
                    "the upstream is honoured when longer.",
     .min = "1ms"},
    {.name = "retry_max",
     .type = config::Type::duration,
     .default_value = "\"1m\"",
     .description = "The longest wait between two attempts.",
     .min = "1ms"},
    {.name = "max_in_flight",
     .type = config::Type::integer,
     .default_value = "1",
     .description = "Batches sent at once, each on its own connection. 1 keeps the upstream's order: batches arrive "
                    "in queue order. Above 1 they may arrive out of order (a batch that is retried is overtaken by "
                    "later ones); records still leave the queue in order, and after a crash every batch that was not "
                    "finished is sent again with its key. outputs.kafka sends them through one producer in queue "
                    "order at any value (only a retried batch is overtaken) and has its own default, 4.",
     .min = "1",
     .max = "64"},
    {.name = "breaker_failures",
     .type = config::Type::integer,
     .default_value = "5",
     .description = "After this many failed attempts in a row the circuit opens: nothing is sent for "
                    "breaker_cooldown, then one batch probes (half-open) and closes it again when delivered.",
     .min = "1",
     .max = "1000000"},
    {.name = "breaker_cooldown",
     .type = config::Type::duration,
     .default_value = "\"30s\"",
     .description = "How long an open circuit waits before it lets one probe through.",
     .min = "1ms"},
};

}  // namespace

std::span<const config::Option> output_common_options() { return kOutputCommon; }

void check_topic_template(const config::SectionValues& v, config::Diagnostics& diagnostics, std::string_view option) {
  const std::string& topic = v.string(option);
  const std::string path = fmt::format("{}.{}", v.path(), option);
  for (std::size_t open = topic.find('{'); open != std::string::npos; open = topic.find('{', open + 1)) {
    const auto close = topic.find('}', open);
    const std::string_view name =
        close == std::string::npos ? std::string_view{} : std::string_view(topic).substr(open + 1, close - open - 1);
    if (name != "agent_id" && name != "output" && name != "input") {
      diagnostics.error(v.location_of(option), path,
                        fmt::format("\"{}\": only {{agent_id}}, {{output}} and {{input}} may appear in braces", topic));
      break;
    }
  }
}

std::string output_name(const config::SectionValues& values, std::string_view plugin_name) {
  return values.has("name") ? values.string("name") : std::string(plugin_name);
}

std::string output_consumer_name(std::string_view output_name) { return fmt::format("output/{}", output_name); }

std::span<const config::Option> input_common_options() { return kInputCommon; }
std::span<const config::Option> processor_common_options() { return kProcessorCommon; }

std::string processor_name(const config::SectionValues& values, std::string_view plugin_name) {
  return values.has("name") ? values.string("name") : std::string(plugin_name);
}

void check_field_paths(const config::SectionValues& v, std::string_view option, config::Diagnostics& diagnostics,
                       bool star) {
  const config::Value* value = v.find(option);
  if (value == nullptr) return;
  const bool list = value->type == config::Type::string_list;
  const std::vector<std::string> paths = list ? v.strings(option) : std::vector<std::string>{v.string(option)};
  for (std::size_t k = 0; k < paths.size(); ++k) {
    std::string error;
    if ((star && paths[k] == "*") || process::FieldPath::parse(paths[k], &error)) continue;
    diagnostics.error(v.location_of(option),
                      list ? fmt::format("{}.{}[{}]", v.path(), option, k) : fmt::format("{}.{}", v.path(), option),
                      fmt::format("\"{}\" is not a field path: {}", paths[k], error));
  }
}

std::string stage_consumer_name(std::string_view processor_name) {
  return fmt::format("processor/{}", processor_name);
}

std::string input_name(const config::SectionValues& values, std::string_view plugin_name) {
  return values.has("name") ? values.string("name") : std::string(plugin_name);
}

}  // namespace tank::plugin
