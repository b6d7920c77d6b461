// processors.dedup: the options and the stage (the decisions are dedup_handler.cpp's).

#include <fmt/format.h>

#include "config/bind.hpp"
#include "dedup.hpp"
#include "plugin/registry.hpp"

namespace tank::plugins {
namespace {

using S = dedup::Settings;

const config::Options<S> kOptions{
    config::string_list("fields", &S::fields)
        .default_note("the whole record, byte for byte")
        .describe("The fields that make two records equal (`temp`, `a.b`, or a JSON pointer `/a/b`; a missing field "
                  "is a value of its own). JSON values are compared as values: 1 and 1.0 are equal."),
    config::duration("window", [](S& s, std::chrono::nanoseconds d) { s.window_ns = d.count(); })
        .default_value("10m")
        .min("1ms")
        .describe("A record equal to one passed on less than this before it (by record time) is dropped, counted "
                  "in tank_processor_dropped_records_total{reason=\"duplicate\"}; the first after it passes."),
    config::integer("max_keys", [](S& s, std::int64_t n) { s.max_keys = static_cast<std::size_t>(n); })
        .default_value(100000)
        .min("1")
        .max("100000000")
        .describe("The most distinct records remembered (as 128-bit hashes, about 100 B each with the queue's "
                  "copy); one more forgets the oldest, counted in tank_processor_evicted_keys_total."),
    config::string("time_field", &S::time_field)
        .default_note("the record's ingest time")
        .describe("The field holding the record's time for `window` (a record without it, or with a time that "
                  "cannot be read, goes to the dead-letter store: time_invalid)."),
    config::choice("time_format", process::kTimeFormatNames,
                   [](S& s, const std::string& f) {
                     s.time_format = process::parse_time_format(f).value_or(process::TimeFormat::automatic);
                   })
        .default_value("auto")
        .describe("How time_field is written, as in processors.aggregate."),
};

void check(const config::SectionValues& v, config::Diagnostics& diagnostics) {
  if (v.has("fields") && v.strings("fields").empty()) {
    diagnostics.error(v.location_of("fields"), v.path() + ".fields",
                      "name at least one field, or leave `fields` out to compare whole records");
  }
  plugin::check_field_paths(v, "fields", diagnostics);
  plugin::check_field_paths(v, "time_field", diagnostics);
}

bool needs_json(const config::SectionValues& v) { return v.has("fields") || v.has("time_field"); }

const config::Section kSection{
    .path = "processors.dedup",
    .summary = "Drops a record equal to one passed on within `window` (equal `fields`, or the same bytes), counted "
               "in tank_processor_dropped_records_total{reason=\"duplicate\"}. Runs after the queue: what it "
               "remembers is committed with the records it decided, so a kill -9 neither repeats nor skips a record.",
    .options = kOptions.all(),
    .common = plugin::processor_common_options(),
    .repeated = true,
    .check = check,
};

std::unique_ptr<plugin::Stage> create(const config::SectionValues& v, const plugin::ProcessorContext& context) {
  return process::make_record_stage({"dedup", std::make_unique<dedup::Handler>(kOptions.read(v))}, context);
}

}  // namespace

void register_processors_dedup(plugin::Registry& registry) {
  registry.add({.kind = plugin::Kind::processor,
                .name = "dedup",
                .section = &kSection,
                .summary = "drop a record equal to one passed on within a window",
                .create_stage = create,
                .needs_json = needs_json});
}

}  // namespace tank::plugins
