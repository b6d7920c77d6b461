#pragma once

// Event time: where a record says when it happened, and how that becomes nanoseconds since the
// Unix epoch (UTC). Used by the aggregate processor on every record, so the common paths (a
// number, an RFC 3339 string, a top-level or dotted field) do not allocate; only an error
// message does.
//
// The representable range is that of a signed 64-bit count of nanoseconds:
// 1677-09-21T00:12:43.145224192Z to 2262-04-11T23:47:16.854775807Z. A time outside it is an
// error, never a wrapped-around value.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/value.hpp>

namespace tank::process {

// How a time field is written (the processor option `time_format`).
enum class TimeFormat {
  automatic,  // "auto": a string is RFC 3339; a number is a Unix time whose unit is guessed from
              // its magnitude (see event_time_ns)
  unix_s,     // "unix": seconds since the epoch (a fractional part is kept down to the ns)
  unix_ms,    // "unix_ms"
  unix_us,    // "unix_us"
  unix_ns,    // "unix_ns"
  rfc3339,    // "rfc3339": "2026-11-21T10:00:00.5+01:00"
};

// The format named by a configuration string: "auto", "unix", "unix_ms", "unix_us", "unix_ns",
// "rfc3339" (exactly, case-sensitive). nullopt for anything else.
// The configuration strings of the formats, for option declarations (`choices`).
inline constexpr std::string_view kTimeFormatNames[] = {"auto", "unix", "unix_ms", "unix_us", "unix_ns", "rfc3339"};
std::optional<TimeFormat> parse_time_format(std::string_view text);
// The configuration string of a format (the inverse of parse_time_format).
std::string_view to_string(TimeFormat format);

// A field path, parsed once (configuration time) and looked up per record without allocating.
//
// Syntax:
//   "a"       the top-level key "a"
//   "a.b.c"   nested object keys: doc["a"]["b"]["c"]; every dot separates, so a key that itself
//             contains a dot needs the pointer form
//   "/a/b/0"  a JSON pointer (RFC 6901): "~0" is '~', "~1" is '/'; a segment that is a
//             non-negative decimal number without leading zeros also indexes an array ("-" never
//             exists); "/" is the top-level key ""
// A path that does not start with '/' is dotted; it must not be empty or have an empty segment
// ("", ".a", "a..b", "a.").
class FieldPath {
 public:
  // nullopt and `error` (when not null) for a malformed path, e.g. "a..b" or "/a~2".
  static std::optional<FieldPath> parse(std::string_view text, std::string* error = nullptr);
  // The same, for paths the configuration check has accepted: throws std::invalid_argument
  // ("\"a..b\" is not a field path: ...") for a malformed one.
  static FieldPath parse_checked(std::string_view text);

  // The value at the path, or nullptr when some step does not exist (a missing key, an index
  // past the end, a step into a number or a string). The pointer is into `doc`.
  const boost::json::value* find(const boost::json::value& doc) const noexcept;

  // The path as written in the configuration.
  const std::string& text() const { return text_; }

 private:
  struct Segment {
    std::string key;
    std::size_t index = 0;
    bool is_index = false;  // `key` is also an array index (pointer paths only)
  };
  FieldPath() = default;
  std::string text_;
  std::vector<Segment> segments_;
  bool pointer_ = false;  // segments may index arrays
};

// find_field(doc, path) is FieldPath::parse(path)->find(doc) without keeping the parsed path;
// nullptr also for a malformed path. Allocates only for pointer segments with '~' escapes.
const boost::json::value* find_field(const boost::json::value& doc, std::string_view path);

// The event time in `v`, in nanoseconds since the Unix epoch.
//
//   unix_s/ms/us/ns  `v` must be a JSON number (int64, uint64 or double) in that unit. A double's
//                    fractional part is kept down to the nanosecond (rounded to the nearest).
//   rfc3339          `v` must be a string "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)";
//                    'T' may be 't' or a space, 'Z' may be 'z'; a fraction of any length (digits
//                    after the 9th are truncated); second 60 (a leap second) is taken as the
//                    first second of the next minute; the year is 4 digits (no sign).
//   automatic        a string is rfc3339; a number x is read by its magnitude:
//                      |x| < 1e11  seconds
//                      |x| < 1e14  milliseconds
//                      |x| < 1e17  microseconds
//                      otherwise   nanoseconds
//                    Each bound is 1e8 s in the smaller unit (1973-03-03T09:46:40Z), so every
//                    time from 1973-03-03 to 2262 (the end of the range) is read right in any
//                    unit; seconds before 1973 are read right too, smaller units are not.
//
// Returns nullopt and writes one sentence into `error` (when not null) for: a value of the wrong
// type (bool, null, object, array, a string for a unix_* format, a number for rfc3339), a string
// that is not an RFC 3339 time (bad syntax, month 13, February 30 outside leap years, hour 24,
// offset +24:00), a non-finite double, or a time outside the int64 nanosecond range. The sentence
// names the field, shows (an excerpt of) the value and says what was expected, e.g.
//   "ts" is "abc", not an RFC 3339 time
//   "ts" is true, not a number of seconds since the Unix epoch
//   "ts" is 1e+300, outside the representable time range (1677-09-21 to 2262-04-11)
// `field` is the name used in that sentence. Only the error path allocates.
std::optional<std::int64_t> event_time_ns(const boost::json::value& v, TimeFormat format, std::string* error,
                                          std::string_view field = "time");

// The time in the field at `path` of `doc` (an object), read as event_time_ns does; nullopt and
// `error` (not null) also when the field is missing: the record has no "ts" (time_field).
std::optional<std::int64_t> field_time_ns(const boost::json::value& doc, const FieldPath& path, TimeFormat format,
                                          std::string* error);

// Parses an RFC 3339 time as described above; nullopt (and `error`: what is wrong, without the
// field name) when it is not one or is out of range.
std::optional<std::int64_t> parse_rfc3339_ns(std::string_view text, std::string* error = nullptr);

// |a - b| without overflow (two times at the ends of the int64 range are 2^64 - 1 apart).
constexpr std::uint64_t time_distance(std::int64_t a, std::int64_t b) {
  return a >= b ? static_cast<std::uint64_t>(a) - static_cast<std::uint64_t>(b)
                : static_cast<std::uint64_t>(b) - static_cast<std::uint64_t>(a);
}

// Corrects event times stamped by a clock that was not synchronised (common/clock_sync.hpp). A
// record that clock stamped `stamped_ns` was really taken at `real_ns` (ClockSync::real_time_of).
// An event time nearer stamped_ns than real_ns was evidently written by the same clock (the
// gateway's, or a device that took its time from it) and is moved by real_ns - stamped_ns; one
// nearer real_ns came from a clock of its own (a device with a good clock) and is kept as it is.
// A tie keeps it. The result saturates at the int64 range.
struct TimeRebase {
  std::int64_t stamped_ns = 0;
  std::int64_t real_ns = 0;
  std::int64_t apply(std::int64_t t) const;
};

// UTC RFC 3339 text for nanoseconds since the epoch: "2026-11-21T10:00:00Z", with a fraction only
// when it is not zero, of 3, 6 or 9 digits (the fewest that are exact): "...T10:00:00.5" is
// written "...T10:00:00.500Z", 1 us past the second "...T10:00:00.000001Z". Any int64 works
// (years 1677 to 2262). parse_rfc3339_ns(format_rfc3339_ns(x)) == x for every x.
std::string format_rfc3339_ns(std::int64_t ns);
// The same, appended to `out` (no allocation once `out` has room for 30 more bytes).
void append_rfc3339_ns(std::string& out, std::int64_t ns);

}  // namespace tank::process
