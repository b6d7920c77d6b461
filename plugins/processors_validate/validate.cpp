// processors.validate: a contract on each record of its inputs, checked before the commit.
//
// In order: max_record_bytes (reason record_too_large), the event time window (time_invalid,
// time_out_of_range), the JSON Schema (schema_violation, every violation as a JSON pointer and
// a message). A refused record is committed to the dead-letter store instead of the queue.

#include <fmt/format.h>

#include <chrono>
#include <limits>
#include <optional>

#include "common/units.hpp"
#include "config/bind.hpp"
#include "plugin/registry.hpp"
#include "process/event_time.hpp"
#include "process/json_schema.hpp"

namespace tank::plugins {
namespace {


// The options as read; create() turns them into the check's Settings.
struct ValidateOptions {
  std::optional<std::string> schema;  // the schema file, when given
  std::uint64_t max_record_bytes = 0;  // 0: no limit
  std::optional<std::string> time_field;  // the time options apply only with it
  process::TimeFormat time_format = process::TimeFormat::automatic;
  std::chrono::nanoseconds max_past{0};
  std::chrono::nanoseconds max_future{0};
};
using O = ValidateOptions;

const config::Options<O> kOptions{
    config::string("schema", [](O& o, const std::string& path) { o.schema = path; })
        .describe("A JSON Schema (draft 7) file every record must satisfy; a record that does not goes to the "
                  "dead-letter store with reason `schema_violation` and each violation as a JSON pointer and a "
                  "message. Loaded at start (and checked by `tank check`); a $ref to another file is read relative to the schema's "
                  "directory, a $ref to a URI (http://...) is refused (tank fetches nothing)."),
    config::size("max_record_bytes", &O::max_record_bytes)
        .describe("The largest record (payload) taken; a larger one goes to the dead-letter store with reason "
                  "`record_too_large`.")
        .min("1B"),
    config::string("time_field", [](O& o, const std::string& field) { o.time_field = field; })
        .describe("The field holding the record's event time (`ts`, `a.b` for a nested field, or a JSON pointer "
                  "`/a/b`). With it, a record without a readable time goes to the dead-letter store with reason "
                  "`time_invalid`, and one outside [now - max_past, now + max_future] with reason "
                  "`time_out_of_range`."),
    config::choice("time_format", process::kTimeFormatNames,
                   [](O& o, const std::string& format) {
                     o.time_format = process::parse_time_format(format).value_or(process::TimeFormat::automatic);
                   })
        .default_value("auto")
        .describe("How time_field is written: \"unix\" (seconds), \"unix_ms\", \"unix_us\", \"unix_ns\", \"rfc3339\", "
                  "or \"auto\" (strings as RFC 3339; numbers by magnitude: below 1e11 seconds, below 1e14 "
                  "milliseconds, below 1e17 microseconds, else nanoseconds)."),
    config::duration("max_past", &O::max_past)
        .default_value("7d")
        .describe("With time_field: how far in the past (by this host's clock) an event time may be.")
        .min("1s"),
    config::duration("max_future", &O::max_future)
        .default_value("1h")
        .describe("With time_field: how far in the future (by this host's clock) an event time may be; an event "
                  "from the year 2085 is refused.")
        .min("0s"),
};

bool needs_json(const config::SectionValues& v) { return v.has("schema") || v.has("time_field"); }

void check(const config::SectionValues& v, config::Diagnostics& diagnostics) {
  if (!v.has("schema") && !v.has("max_record_bytes") && !v.has("time_field")) {
    diagnostics.error(v.where(), v.path(),
                      "a validate processor needs something to check: set schema, max_record_bytes or time_field");
  }
  if (v.has("schema")) {
    try {
      (void)process::JsonSchema::load(v.string("schema"));
    } catch (const std::exception& e) {
      diagnostics.error(v.location_of("schema"), v.path() + ".schema", e.what());
    }
  }
  if (!v.has("time_field") && (v.is_set("max_past") || v.is_set("max_future") || v.is_set("time_format"))) {
    diagnostics.warning(v.where(), v.path(), "max_past, max_future and time_format apply only with time_field");
  }
}

const config::Section kSection{
    .path = "processors.validate",
    .summary = "Checks each record of its inputs before it is committed: size, event time window and a JSON Schema "
               "(draft 7) contract. A refused record goes to the dead-letter store with the reason "
               "(`record_too_large`, `time_invalid`, `time_out_of_range`, `schema_violation`) and the details; the "
               "source is acknowledged either way. Fix the cause, then `tank dlq replay --reason ...`.",
    .options = kOptions.all(),
    .common = plugin::processor_common_options(),
    .repeated = true,
    .check = check,
};

struct Settings {
  std::shared_ptr<const process::JsonSchema> schema;
  std::uint64_t max_record_bytes = 0;  // 0: no limit
  std::string time_field;
  process::TimeFormat time_format = process::TimeFormat::automatic;
  std::int64_t max_past_ns = 0;
  std::int64_t max_future_ns = 0;
};

class ValidateCheck final : public plugin::RecordCheck {
 public:
  ValidateCheck(Settings settings, const Clock& clock) : settings_(std::move(settings)), clock_(clock) {}

  bool needs_document() const override { return settings_.schema != nullptr || !settings_.time_field.empty(); }

  class ValidateSession final : public Session {
   public:
    explicit ValidateSession(const ValidateCheck& owner) : owner_(owner) {
      if (owner.settings_.schema) validator_.emplace(owner.settings_.schema);
    }

    bool check(std::string_view payload, const boost::json::value* document, plugin::Rejection& rejection) override {
      const Settings& s = owner_.settings_;
      if (s.max_record_bytes > 0 && payload.size() > s.max_record_bytes) {
        rejection.reason = "record_too_large";
        rejection.detail = fmt::format("{} bytes, more than max_record_bytes = {}", payload.size(),
                                       units::format_size(s.max_record_bytes));
        return false;
      }
      if (!s.time_field.empty() && document != nullptr) {
        const boost::json::value* field = process::find_field(*document, s.time_field);
        if (field == nullptr) {
          rejection.reason = "time_invalid";
          rejection.detail = fmt::format("no time field \"{}\"", s.time_field);
          return false;
        }
        std::string error;
        auto t = process::event_time_ns(*field, s.time_format, &error);
        if (!t) {
          rejection.reason = "time_invalid";
          rejection.detail = error;
          return false;
        }
        const std::int64_t now = owner_.clock_.wall_ns();
        // Saturating: max_past/max_future may be as long as a duration goes (found by fuzzing).
        std::int64_t earliest = 0, latest = 0;
        if (__builtin_sub_overflow(now, s.max_past_ns, &earliest)) earliest = std::numeric_limits<std::int64_t>::min();
        if (__builtin_add_overflow(now, s.max_future_ns, &latest)) latest = std::numeric_limits<std::int64_t>::max();
        if (*t < earliest || *t > latest) {
          rejection.reason = "time_out_of_range";
          rejection.detail = fmt::format("event time {} is outside [now - {}, now + {}] (now {})",
                                         process::format_rfc3339_ns(*t),
                                         units::format_duration(std::chrono::nanoseconds(s.max_past_ns)),
                                         units::format_duration(std::chrono::nanoseconds(s.max_future_ns)),
                                         process::format_rfc3339_ns(now));
          return false;
        }
      }
      if (validator_ && document != nullptr) {
        violations_.clear();
        if (!validator_->validate(*document, &violations_)) {
          rejection.reason = "schema_violation";
          rejection.detail = process::describe(violations_);
          return false;
        }
      }
      return true;
    }

   private:
    const ValidateCheck& owner_;
    std::optional<process::SchemaValidator> validator_;
    std::vector<process::Violation> violations_;
  };

  std::unique_ptr<Session> session() const override { return std::make_unique<ValidateSession>(*this); }

 private:
  Settings settings_;
  const Clock& clock_;
};

std::shared_ptr<const plugin::RecordCheck> create(const config::SectionValues& v, const plugin::ProcessorContext& context) {
  const ValidateOptions o = kOptions.read(v);
  Settings s;
  if (o.schema) {
    try {
      s.schema = process::JsonSchema::load(*o.schema);
    } catch (const std::exception& e) {
      throw plugin::StartError(e.what());
    }
  }
  s.max_record_bytes = o.max_record_bytes;
  if (o.time_field) {
    s.time_field = *o.time_field;
    s.time_format = o.time_format;
    s.max_past_ns = o.max_past.count();
    s.max_future_ns = o.max_future.count();
  }
  return std::make_shared<ValidateCheck>(std::move(s), context.clock);
}

}  // namespace

void register_processors_validate(plugin::Registry& registry) {
  registry.add({.kind = plugin::Kind::processor,
                .name = "validate",
                .section = &kSection,
                .summary = "checks records against a JSON Schema, a size and an event time window",
                .create_check = create,
                .needs_json = needs_json});
}

}  // namespace tank::plugins
