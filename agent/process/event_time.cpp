#include "process/event_time.hpp"

#include <cmath>
#include <limits>

#include <boost/json.hpp>
#include <stdexcept>

#include <fmt/format.h>

namespace tank::process {
namespace {

constexpr std::int64_t kNsPerSecond = 1'000'000'000;
constexpr const char* kRangeText = "outside the representable time range (1677-09-21 to 2262-04-11)";

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm, exact for any int).
constexpr std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

struct Civil {
  std::int64_t year;
  unsigned month;
  unsigned day;
};

constexpr Civil civil_from_days(std::int64_t z) {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const std::int64_t y = static_cast<std::int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {y + (m <= 2 ? 1 : 0), m, d};
}

constexpr bool is_leap(std::int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

constexpr unsigned days_in_month(std::int64_t y, unsigned m) {
  constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : kDays[m - 1];
}

constexpr const char* kMonthNames[] = {"January", "February", "March",     "April",   "May",      "June",
                                       "July",    "August",   "September", "October", "November", "December"};

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// The two-digit number at s[at], or -1.
int two_digits(std::string_view s, std::size_t at) {
  if (!is_digit(s[at]) || !is_digit(s[at + 1])) return -1;
  return (s[at] - '0') * 10 + (s[at + 1] - '0');
}

void set_error(std::string* error, std::string text) {
  if (error != nullptr) *error = std::move(text);
}

// A short, JSON-quoted excerpt of a string for an error message (at most about 60 bytes of it,
// not cut inside a UTF-8 sequence).
std::string excerpt(std::string_view s) {
  constexpr std::size_t kMax = 60;
  if (s.size() <= kMax) return boost::json::serialize(boost::json::string_view(s.data(), s.size()));
  std::size_t cut = kMax;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  std::string quoted = boost::json::serialize(boost::json::string_view(s.data(), cut));
  quoted.insert(quoted.size() - 1, "...");
  return quoted;
}

std::string describe_value(const boost::json::value& v) {
  switch (v.kind()) {
    case boost::json::kind::null: return "null";
    case boost::json::kind::bool_: return v.get_bool() ? "true" : "false";
    case boost::json::kind::int64: return fmt::format("{}", v.get_int64());
    case boost::json::kind::uint64: return fmt::format("{}", v.get_uint64());
    case boost::json::kind::double_: return fmt::format("{}", v.get_double());
    case boost::json::kind::string: return excerpt(v.get_string());
    case boost::json::kind::array: return "an array";
    case boost::json::kind::object: return "an object";
  }
  return "?";
}

const char* expectation(TimeFormat format) {
  switch (format) {
    case TimeFormat::automatic: return "an RFC 3339 time or a Unix time number";
    case TimeFormat::unix_s: return "a number of seconds since the Unix epoch";
    case TimeFormat::unix_ms: return "a number of milliseconds since the Unix epoch";
    case TimeFormat::unix_us: return "a number of microseconds since the Unix epoch";
    case TimeFormat::unix_ns: return "a number of nanoseconds since the Unix epoch";
    case TimeFormat::rfc3339: return "an RFC 3339 time";
  }
  return "a time";
}

std::int64_t unit_ns(TimeFormat format) {
  switch (format) {
    case TimeFormat::unix_s: return kNsPerSecond;
    case TimeFormat::unix_ms: return 1'000'000;
    case TimeFormat::unix_us: return 1'000;
    case TimeFormat::unix_ns: return 1;
    case TimeFormat::automatic:
    case TimeFormat::rfc3339: break;
  }
  return 1;
}

// The unit `automatic` reads a number of magnitude |x| in (see the header). Integers are compared
// as integers: 99999999999999999 is not rounded up to 1e17.
std::int64_t automatic_unit(std::uint64_t magnitude) {
  if (magnitude < 100'000'000'000ULL) return kNsPerSecond;
  if (magnitude < 100'000'000'000'000ULL) return 1'000'000;
  if (magnitude < 100'000'000'000'000'000ULL) return 1'000;
  return 1;
}

std::int64_t automatic_unit(double magnitude) {
  if (magnitude < 1e11) return kNsPerSecond;
  if (magnitude < 1e14) return 1'000'000;
  if (magnitude < 1e17) return 1'000;
  return 1;
}

std::optional<std::int64_t> scale(std::int64_t x, std::int64_t unit) {
  std::int64_t out;
  if (__builtin_mul_overflow(x, unit, &out)) return std::nullopt;
  return out;
}

std::optional<std::int64_t> scale(double x, std::int64_t unit) {
  if (!std::isfinite(x)) return std::nullopt;
  double whole;
  const double fraction = std::modf(x, &whole);  // both exact
  // Doubles in [-2^63, 2^63) convert to int64 exactly.
  if (!(whole >= -9223372036854775808.0 && whole < 9223372036854775808.0)) return std::nullopt;
  auto out = scale(static_cast<std::int64_t>(whole), unit);
  if (!out) return std::nullopt;
  const auto part = static_cast<std::int64_t>(std::llround(fraction * static_cast<double>(unit)));
  std::int64_t sum;
  if (__builtin_add_overflow(*out, part, &sum)) return std::nullopt;
  return sum;
}

std::optional<std::int64_t> number_ns(const boost::json::value& v, TimeFormat format) {
  switch (v.kind()) {
    case boost::json::kind::int64: {
      const std::int64_t x = v.get_int64();
      const std::int64_t unit =
          format == TimeFormat::automatic
              ? automatic_unit(x < 0 ? 0 - static_cast<std::uint64_t>(x) : static_cast<std::uint64_t>(x))
              : unit_ns(format);
      return scale(x, unit);
    }
    case boost::json::kind::uint64: {
      const std::uint64_t x = v.get_uint64();
      if (x > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
      const std::int64_t unit =
          format == TimeFormat::automatic ? automatic_unit(x) : unit_ns(format);
      return scale(static_cast<std::int64_t>(x), unit);
    }
    case boost::json::kind::double_: {
      const double x = v.get_double();
      const std::int64_t unit = format == TimeFormat::automatic ? automatic_unit(std::fabs(x)) : unit_ns(format);
      return scale(x, unit);
    }
    default: break;
  }
  return std::nullopt;
}

}  // namespace

std::optional<TimeFormat> parse_time_format(std::string_view text) {
  if (text == "auto") return TimeFormat::automatic;
  if (text == "unix") return TimeFormat::unix_s;
  if (text == "unix_ms") return TimeFormat::unix_ms;
  if (text == "unix_us") return TimeFormat::unix_us;
  if (text == "unix_ns") return TimeFormat::unix_ns;
  if (text == "rfc3339") return TimeFormat::rfc3339;
  return std::nullopt;
}

std::string_view to_string(TimeFormat format) {
  switch (format) {
    case TimeFormat::automatic: return "auto";
    case TimeFormat::unix_s: return "unix";
    case TimeFormat::unix_ms: return "unix_ms";
    case TimeFormat::unix_us: return "unix_us";
    case TimeFormat::unix_ns: return "unix_ns";
    case TimeFormat::rfc3339: return "rfc3339";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// Field paths

namespace {

// Unescapes one JSON pointer segment; false for '~' not followed by '0' or '1'.
bool unescape_pointer_segment(std::string_view raw, std::string& out) {
  out.clear();
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '~') {
      out.push_back(raw[i]);
      continue;
    }
    if (i + 1 >= raw.size() || (raw[i + 1] != '0' && raw[i + 1] != '1')) return false;
    out.push_back(raw[i + 1] == '0' ? '~' : '/');
    ++i;
  }
  return true;
}

// A JSON pointer array index: "0" or [1-9][0-9]* that fits.
std::optional<std::size_t> pointer_index(std::string_view s) {
  if (s.empty() || s.size() > 18 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  std::size_t n = 0;
  for (char c : s) {
    if (!is_digit(c)) return std::nullopt;
    n = n * 10 + static_cast<std::size_t>(c - '0');
  }
  return n;
}

const boost::json::value* step(const boost::json::value* cur, std::string_view key, bool pointer) {
  if (const auto* obj = cur->if_object()) return obj->if_contains(boost::json::string_view(key.data(), key.size()));
  if (pointer) {
    if (const auto* arr = cur->if_array()) {
      if (auto index = pointer_index(key)) return arr->if_contains(*index);
    }
  }
  return nullptr;
}

}  // namespace

std::optional<FieldPath> FieldPath::parse(std::string_view text, std::string* error) {
  FieldPath path;
  path.text_ = std::string(text);
  if (!text.empty() && text[0] == '/') {
    path.pointer_ = true;
    std::size_t start = 1;
    while (true) {
      const std::size_t end = std::min(text.find('/', start), text.size());
      Segment seg;
      if (!unescape_pointer_segment(text.substr(start, end - start), seg.key)) {
        set_error(error, fmt::format("field path {} is not a JSON pointer: '~' must be followed by 0 or 1",
                                     excerpt(text)));
        return std::nullopt;
      }
      if (auto index = pointer_index(seg.key)) {
        seg.is_index = true;
        seg.index = *index;
      }
      path.segments_.push_back(std::move(seg));
      if (end == text.size()) break;
      start = end + 1;
    }
    return path;
  }
  std::size_t start = 0;
  while (true) {
    const std::size_t end = std::min(text.find('.', start), text.size());
    if (end == start) {
      set_error(error, fmt::format("field path {} has an empty part (write \"a.b\" for nested keys, or a JSON "
                                   "pointer \"/a.b\" for a key with a dot)",
                                   excerpt(text)));
      return std::nullopt;
    }
    Segment seg;
    seg.key = std::string(text.substr(start, end - start));
    path.segments_.push_back(std::move(seg));
    if (end == text.size()) break;
    start = end + 1;
  }
  return path;
}

const boost::json::value* FieldPath::find(const boost::json::value& doc) const noexcept {
  const boost::json::value* cur = &doc;
  for (const Segment& seg : segments_) {
    if (const auto* obj = cur->if_object()) {
      cur = obj->if_contains(seg.key);
    } else if (const auto* arr = cur->if_array(); arr != nullptr && seg.is_index) {
      cur = arr->if_contains(seg.index);
    } else {
      return nullptr;
    }
    if (cur == nullptr) return nullptr;
  }
  return cur;
}

const boost::json::value* find_field(const boost::json::value& doc, std::string_view path) {
  if (path.empty()) return nullptr;
  const boost::json::value* cur = &doc;
  if (path[0] == '/') {
    std::string unescaped;
    std::size_t start = 1;
    while (true) {
      const std::size_t end = std::min(path.find('/', start), path.size());
      std::string_view seg = path.substr(start, end - start);
      if (seg.find('~') != std::string_view::npos) {
        if (!unescape_pointer_segment(seg, unescaped)) return nullptr;
        seg = unescaped;
      }
      cur = step(cur, seg, true);
      if (cur == nullptr || end == path.size()) return cur;
      start = end + 1;
    }
  }
  std::size_t start = 0;
  while (true) {
    const std::size_t end = std::min(path.find('.', start), path.size());
    if (end == start) return nullptr;
    cur = step(cur, path.substr(start, end - start), false);
    if (cur == nullptr || end == path.size()) return cur;
    start = end + 1;
  }
}

// ---------------------------------------------------------------------------------------------
// Parsing and formatting times

std::optional<std::int64_t> parse_rfc3339_ns(std::string_view s, std::string* error) {
  constexpr const char* kShape = "expected YYYY-MM-DDTHH:MM:SS[.fraction] and Z or an offset +HH:MM";
  if (s.size() < 19) {
    set_error(error, kShape);
    return std::nullopt;
  }
  for (std::size_t i = 0; i < 4; ++i) {
    if (!is_digit(s[i])) {
      set_error(error, kShape);
      return std::nullopt;
    }
  }
  const int year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
  const int month = two_digits(s, 5);
  const int day = two_digits(s, 8);
  const int hour = two_digits(s, 11);
  const int minute = two_digits(s, 14);
  const int second = two_digits(s, 17);
  const char t = s[10];
  if (s[4] != '-' || s[7] != '-' || (t != 'T' && t != 't' && t != ' ') || s[13] != ':' || s[16] != ':' ||
      month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0) {
    set_error(error, kShape);
    return std::nullopt;
  }
  if (month < 1 || month > 12) {
    set_error(error, fmt::format("month {:02} does not exist", month));
    return std::nullopt;
  }
  if (day < 1 || static_cast<unsigned>(day) > days_in_month(year, static_cast<unsigned>(month))) {
    set_error(error, fmt::format("day {:02} does not exist in {} {:04}", day, kMonthNames[month - 1], year));
    return std::nullopt;
  }
  if (hour > 23 || minute > 59 || second > 60) {
    set_error(error, fmt::format("time of day {:02}:{:02}:{:02} does not exist", hour, minute, second));
    return std::nullopt;
  }
  std::size_t at = 19;
  std::int64_t fraction_ns = 0;
  if (at < s.size() && s[at] == '.') {
    ++at;
    const std::size_t digits_start = at;
    std::int64_t scale_left = 100'000'000;
    while (at < s.size() && is_digit(s[at])) {
      fraction_ns += (s[at] - '0') * scale_left;
      scale_left /= 10;
      ++at;
    }
    if (at == digits_start) {
      set_error(error, "a '.' after the seconds must be followed by digits");
      return std::nullopt;
    }
  }
  if (at >= s.size()) {
    set_error(error, "missing the offset: Z or +HH:MM");
    return std::nullopt;
  }
  std::int64_t offset_s = 0;
  const char z = s[at];
  if (z == 'Z' || z == 'z') {
    ++at;
  } else if (z == '+' || z == '-') {
    if (s.size() - at < 6 || s[at + 3] != ':') {
      set_error(error, "the offset must be Z or +HH:MM / -HH:MM");
      return std::nullopt;
    }
    const int oh = two_digits(s, at + 1);
    const int om = two_digits(s, at + 4);
    if (oh < 0 || om < 0) {
      set_error(error, "the offset must be Z or +HH:MM / -HH:MM");
      return std::nullopt;
    }
    if (oh > 23 || om > 59) {
      set_error(error, fmt::format("offset {}{:02}:{:02} does not exist", z, oh, om));
      return std::nullopt;
    }
    offset_s = (oh * 3600 + om * 60) * (z == '-' ? -1 : 1);
    at += 6;
  } else {
    set_error(error, "the offset must be Z or +HH:MM / -HH:MM");
    return std::nullopt;
  }
  if (at != s.size()) {
    set_error(error, "unexpected characters after the offset");
    return std::nullopt;
  }
  // Years 0000-9999 keep every intermediate far inside int64; only the final scaling can overflow.
  const std::int64_t seconds = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) * 86400 +
                               hour * 3600 + minute * 60 + second - offset_s;
  // Before 1970 the fraction is taken from the next second up, so that the earliest
  // representable time does not overflow on its way.
  std::int64_t whole_seconds = seconds;
  if (whole_seconds < 0 && fraction_ns > 0) {
    whole_seconds += 1;
    fraction_ns -= kNsPerSecond;
  }
  std::int64_t ns;
  if (__builtin_mul_overflow(whole_seconds, kNsPerSecond, &ns) || __builtin_add_overflow(ns, fraction_ns, &ns)) {
    set_error(error, kRangeText);
    return std::nullopt;
  }
  return ns;
}

FieldPath FieldPath::parse_checked(std::string_view text) {
  std::string error;
  std::optional<FieldPath> p = parse(text, &error);
  if (!p) throw std::invalid_argument(fmt::format("\"{}\" is not a field path: {}", text, error));
  return std::move(*p);
}

std::optional<std::int64_t> field_time_ns(const boost::json::value& doc, const FieldPath& path, TimeFormat format,
                                          std::string* error) {
  const boost::json::value* v = doc.is_object() ? path.find(doc) : nullptr;
  if (v == nullptr) {
    if (error != nullptr) *error = fmt::format("the record has no \"{}\" (time_field)", path.text());
    return std::nullopt;
  }
  return event_time_ns(*v, format, error, path.text());
}

std::optional<std::int64_t> event_time_ns(const boost::json::value& v, TimeFormat format, std::string* error,
                                          std::string_view field) {
  const bool is_number = v.is_number();
  if (v.is_string() && (format == TimeFormat::automatic || format == TimeFormat::rfc3339)) {
    const boost::json::string& text = v.get_string();
    std::string why;
    auto ns = parse_rfc3339_ns(std::string_view(text.data(), text.size()), error != nullptr ? &why : nullptr);
    if (!ns && error != nullptr) {
      *error = fmt::format("\"{}\" is {}, not an RFC 3339 time: {}", field, excerpt(text), why);
    }
    return ns;
  }
  if (is_number && format != TimeFormat::rfc3339) {
    auto ns = number_ns(v, format);
    if (!ns && error != nullptr) {
      *error = fmt::format("\"{}\" is {}, {}", field, describe_value(v), kRangeText);
    }
    return ns;
  }
  if (error != nullptr) {
    *error = fmt::format("\"{}\" is {}, not {}", field, describe_value(v), expectation(format));
  }
  return std::nullopt;
}

void append_rfc3339_ns(std::string& out, std::int64_t ns) {
  // Floor division, so times before 1970 get a positive fraction.
  std::int64_t seconds = ns / kNsPerSecond;
  std::int64_t fraction = ns % kNsPerSecond;
  if (fraction < 0) {
    fraction += kNsPerSecond;
    seconds -= 1;
  }
  std::int64_t days = seconds / 86400;
  std::int64_t rest = seconds % 86400;
  if (rest < 0) {
    rest += 86400;
    days -= 1;
  }
  const Civil date = civil_from_days(days);
  char buf[40];
  char* p = buf;
  auto put2 = [&p](unsigned v) {
    *p++ = static_cast<char>('0' + v / 10);
    *p++ = static_cast<char>('0' + v % 10);
  };
  const auto year = static_cast<unsigned>(date.year);  // 1677..2262 for any int64
  put2(year / 100);
  put2(year % 100);
  *p++ = '-';
  put2(date.month);
  *p++ = '-';
  put2(date.day);
  *p++ = 'T';
  put2(static_cast<unsigned>(rest / 3600));
  *p++ = ':';
  put2(static_cast<unsigned>(rest / 60 % 60));
  *p++ = ':';
  put2(static_cast<unsigned>(rest % 60));
  if (fraction != 0) {
    int digits = 9;
    if (fraction % 1'000'000 == 0) {
      digits = 3;
      fraction /= 1'000'000;
    } else if (fraction % 1'000 == 0) {
      digits = 6;
      fraction /= 1'000;
    }
    *p++ = '.';
    for (int i = digits - 1; i >= 0; --i) {
      p[i] = static_cast<char>('0' + fraction % 10);
      fraction /= 10;
    }
    p += digits;
  }
  *p++ = 'Z';
  out.append(buf, static_cast<std::size_t>(p - buf));
}

std::string format_rfc3339_ns(std::int64_t ns) {
  std::string out;
  append_rfc3339_ns(out, ns);
  return out;
}

std::int64_t TimeRebase::apply(std::int64_t t) const {
  // No __int128 here: 32-bit targets (armhf) have none. Distances and the move are unsigned
  // 64-bit magnitudes, which cannot overflow, and the sum saturates at the int64 range.
  if (time_distance(t, stamped_ns) >= time_distance(t, real_ns)) return t;
  const std::uint64_t shift = time_distance(real_ns, stamped_ns);
  const auto ut = static_cast<std::uint64_t>(t);
  constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (real_ns >= stamped_ns) {
    // t + shift: the room above t is kMax - t (as an unsigned magnitude).
    const std::uint64_t room = kMax - ut;  // wraps correctly for negative t
    if (shift > room) return std::numeric_limits<std::int64_t>::max();
    return static_cast<std::int64_t>(ut + shift);
  }
  // t - shift: the room below t is t - min.
  const std::uint64_t room = ut - static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::min());
  if (shift > room) return std::numeric_limits<std::int64_t>::min();
  return static_cast<std::int64_t>(ut - shift);
}

}  // namespace tank::process
