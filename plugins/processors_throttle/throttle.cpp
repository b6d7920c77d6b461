// processors.throttle: the options and the stage (the decisions are throttle_handler.cpp's).

#include <fmt/format.h>

#include "config/bind.hpp"
#include "plugin/registry.hpp"
#include "throttle.hpp"

namespace tank::plugins {
namespace {

using S = throttle::Settings;

const std::string_view kModes[] = {"hold", "drop"};

const config::Options<S> kOptions{
    config::integer("rate", &S::rate)
        .min("1")
        .max("1000000000")
        .required()
        .describe("The most records per `per` per group; also the burst a group that was quiet may send at once."),
    config::duration("per", [](S& s, std::chrono::nanoseconds d) { s.per_ns = d.count(); })
        .default_value("1s")
        .min("1ms")
        .describe("The period `rate` is counted over (processing time)."),
    config::string_list("group_by", &S::group_by)
        .default_value("[]")
        .describe("Fields whose values form the group, each with its own rate (the input is part of the group). "
                  "Empty: one rate per input."),
    config::choice("mode", kModes, &S::hold, {true, false})
        .default_value("hold")
        .describe("What happens to a record over the rate: \"hold\" (it waits in the queue until the rate allows "
                  "it, and the records behind it wait too: nothing is lost, the queue's bounds and overflow policy "
                  "apply to what piles up) or \"drop\" (dropped, counted in "
                  "tank_processor_dropped_records_total{reason=\"rate_limit\"})."),
    config::integer("max_groups", [](S& s, std::int64_t n) { s.max_groups = static_cast<std::size_t>(n); })
        .default_value(100000)
        .min("1")
        .max("100000000")
        .describe("The most groups with a rate in use; beyond, an idle group's bucket is forgotten first, else any "
                  "(counted in tank_processor_evicted_keys_total)."),
};

void check(const config::SectionValues& v, config::Diagnostics& diagnostics) {
  plugin::check_field_paths(v, "group_by", diagnostics);
}

bool needs_json(const config::SectionValues& v) { return v.has("group_by") && !v.strings("group_by").empty(); }

const config::Section kSection{
    .path = "processors.throttle",
    .summary = "At most `rate` records per `per` per group (a token bucket, processing time): over the rate, a "
               "record waits in the queue (mode \"hold\") or is dropped, counted (mode \"drop\"). Runs after the "
               "queue. Its buckets are not saved: after a restart they start full.",
    .options = kOptions.all(),
    .common = plugin::processor_common_options(),
    .repeated = true,
    .check = check,
};

std::unique_ptr<plugin::Stage> create(const config::SectionValues& v, const plugin::ProcessorContext& context) {
  return process::make_record_stage(
      {"throttle", std::make_unique<throttle::Handler>(kOptions.read(v), context.clock)}, context);
}

}  // namespace

void register_processors_throttle(plugin::Registry& registry) {
  registry.add({.kind = plugin::Kind::processor,
                .name = "throttle",
                .section = &kSection,
                .summary = "at most `rate` records per `per` per group; hold them in the queue or drop them",
                .create_stage = create,
                .needs_json = needs_json});
}

}  // namespace tank::plugins
