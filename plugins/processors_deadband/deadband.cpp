// processors.deadband: the options and the stage (the decisions are deadband_handler.cpp's).

#include <algorithm>

#include <fmt/format.h>

#include "config/bind.hpp"
#include "deadband.hpp"
#include "plugin/registry.hpp"

namespace tank::plugins {
namespace {

using S = deadband::Settings;

const config::Options<S> kOptions{
    config::string_list("fields", &S::fields)
        .describe("The fields watched (`temp`, `a.b`, or a JSON pointer `/a/b`), or [\"*\"]: every top-level field "
                  "but those of group_by and time_field. A record passes when one of them moved out of the deadband "
                  "(numbers), changed (any other value), appeared or went away.")
        .required(),
    config::string_list("group_by", &S::group_by)
        .default_value("[]")
        .describe("Fields whose values form the group (a missing field groups as missing); each group, per input, "
                  "has its own reference values. Empty: one group per input."),
    config::number("absolute", [](S& s, double v) { s.absolute = v; })
        .min("0")
        .default_note("unset")
        .describe("A number passes the record when it differs from the reference (the value last passed on) by more "
                  "than this."),
    config::number("percent", [](S& s, double v) { s.percent = v; })
        .min("0")
        .default_note("unset")
        .describe("A number passes the record when it differs from the reference by more than this percentage of "
                  "the reference's magnitude (a reference of 0: any change). With both absolute and percent, either "
                  "passes it; with neither, any change does (report by exception)."),
    config::duration("max_interval", [](S& s, std::chrono::nanoseconds d) { s.max_interval_ns = d.count(); })
        .default_value("0s")
        .describe("A heartbeat: a group's record passes, whatever its values, when its time is this far from the "
                  "last one passed on (either way: a clock set back counts too). 0: none. Decided as records arrive: "
                  "a group that sends nothing gets nothing."),
    config::string("time_field", &S::time_field)
        .default_note("the record's ingest time")
        .describe("The field holding the record's time for max_interval (a record without it, or with a time that "
                  "cannot be read, goes to the dead-letter store: time_invalid)."),
    config::choice("time_format", process::kTimeFormatNames,
                   [](S& s, const std::string& f) {
                     s.time_format = process::parse_time_format(f).value_or(process::TimeFormat::automatic);
                   })
        .default_value("auto")
        .describe("How time_field is written, as in processors.aggregate."),
    config::integer("max_groups", [](S& s, std::int64_t n) { s.max_groups = static_cast<std::size_t>(n); })
        .default_value(100000)
        .min("1")
        .max("100000000")
        .describe("The most groups held; one more forgets the group passed on longest ago (counted in "
                  "tank_processor_evicted_keys_total): its next record passes as a first one."),
};

void check(const config::SectionValues& v, config::Diagnostics& diagnostics) {
  if (v.has("fields")) {
    const auto& fields = v.strings("fields");
    if (fields.empty()) diagnostics.error(v.location_of("fields"), v.path() + ".fields", "name at least one field, or [\"*\"]");
    if (std::find(fields.begin(), fields.end(), "*") != fields.end() && fields.size() > 1) {
      diagnostics.error(v.location_of("fields"), v.path() + ".fields",
                        "\"*\" watches every field: it cannot be listed with others");
    }
  }
  plugin::check_field_paths(v, "fields", diagnostics, /*star=*/true);
  plugin::check_field_paths(v, "group_by", diagnostics);
  plugin::check_field_paths(v, "time_field", diagnostics);
}

bool needs_json(const config::SectionValues&) { return true; }

const config::Section kSection{
    .path = "processors.deadband",
    .summary = "Report by exception: per group, a record passes when a watched number moved out of the deadband "
               "(`absolute`, `percent`) around the value last passed on, when another watched value changed, for a "
               "group's first record, and as a heartbeat after `max_interval`; the others are dropped, counted in "
               "tank_processor_dropped_records_total{reason=\"deadband\"}. Runs after the queue: the reference values "
               "are committed with the records they decided, so a kill -9 neither repeats nor skips a record.",
    .options = kOptions.all(),
    .common = plugin::processor_common_options(),
    .repeated = true,
    .check = check,
};

std::unique_ptr<plugin::Stage> create(const config::SectionValues& v, const plugin::ProcessorContext& context) {
  return process::make_record_stage({"deadband", std::make_unique<deadband::Handler>(kOptions.read(v))}, context);
}

}  // namespace

void register_processors_deadband(plugin::Registry& registry) {
  registry.add({.kind = plugin::Kind::processor,
                .name = "deadband",
                .section = &kSection,
                .summary = "report by exception: pass a record when a value moved out of its deadband",
                .create_stage = create,
                .needs_json = needs_json});
}

}  // namespace tank::plugins
