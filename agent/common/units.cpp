#include "common/units.hpp"

#include <array>
#include <cctype>
#include <cmath>

#include <fmt/format.h>
#if !defined(__SIZEOF_INT128__)
#include <boost/multiprecision/cpp_int.hpp>
#endif

namespace tank::units {
namespace {

#if defined(__SIZEOF_INT128__)
__extension__ typedef unsigned __int128 u128;
#else
// 32-bit targets (armhf) have no __int128: Boost's fixed-size 128-bit integer, unchecked (it
// wraps like the built-in one).
using u128 = boost::multiprecision::uint128_t;
#endif

struct Unit {
  std::string_view name;
  std::uint64_t factor;
};

constexpr std::array<Unit, 10> kSizeUnits{{
    {"B", 1},
    {"kB", 1000ULL},
    {"KB", 1000ULL},
    {"MB", 1000ULL * 1000},
    {"GB", 1000ULL * 1000 * 1000},
    {"TB", 1000ULL * 1000 * 1000 * 1000},
    {"KiB", 1ULL << 10},
    {"MiB", 1ULL << 20},
    {"GiB", 1ULL << 30},
    {"TiB", 1ULL << 40},
}};

constexpr std::array<Unit, 8> kDurationUnits{{
    {"ns", 1},
    {"us", 1000},
    {"\xC2\xB5s", 1000},  // µs
    {"ms", 1000 * 1000},
    {"s", 1000ULL * 1000 * 1000},
    {"m", 60ULL * 1000 * 1000 * 1000},
    {"h", 3600ULL * 1000 * 1000 * 1000},
    {"d", 86400ULL * 1000 * 1000 * 1000},
}};

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// A decimal number "123" or "1.25" at the start of `text`; advances `pos`.
struct Decimal {
  u128 integer = 0;
  u128 fraction = 0;
  u128 fraction_scale = 1;
  bool ok = false;
  bool overflow = false;
};

Decimal read_decimal(std::string_view text, std::size_t& pos) {
  Decimal d;
  std::size_t start = pos;
  while (pos < text.size() && is_digit(text[pos])) {
    d.integer = d.integer * 10 + static_cast<unsigned>(text[pos] - '0');
    if (d.integer > (u128{1} << 80)) d.overflow = true;
    ++pos;
  }
  bool had_integer = pos > start;
  bool had_fraction = false;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    std::size_t fstart = pos;
    while (pos < text.size() && is_digit(text[pos])) {
      if (d.fraction_scale < (u128{1} << 80)) {
        d.fraction = d.fraction * 10 + static_cast<unsigned>(text[pos] - '0');
        d.fraction_scale *= 10;
      }
      ++pos;
    }
    had_fraction = pos > fstart;
    if (!had_fraction) return d;  // "1." is not a number
  }
  d.ok = had_integer || had_fraction;
  return d;
}

std::string quoted(std::string_view text) { return fmt::format("\"{}\"", text); }

std::string size_hint(std::string_view text) {
  // Suggest the canonical spelling for the usual slips: lower case, a space, a bare letter.
  std::string compact;
  for (char c : text) {
    if (c != ' ') compact.push_back(c);
  }
  std::size_t pos = 0;
  while (pos < compact.size() && (is_digit(compact[pos]) || compact[pos] == '.')) ++pos;
  std::string number = compact.substr(0, pos);
  std::string unit = compact.substr(pos);
  std::string lower;
  for (char c : unit) lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  std::string_view suggestion;
  if (lower == "k" || lower == "kib" || lower == "ki") suggestion = "KiB";
  else if (lower == "m" || lower == "mib" || lower == "mi") suggestion = "MiB";
  else if (lower == "g" || lower == "gib" || lower == "gi") suggestion = "GiB";
  else if (lower == "t" || lower == "tib" || lower == "ti") suggestion = "TiB";
  else if (lower == "kb") suggestion = "kB";
  else if (lower == "mb") suggestion = "MB";
  else if (lower == "gb") suggestion = "GB";
  else if (lower == "tb") suggestion = "TB";
  else if (lower == "b" || lower == "bytes" || lower == "byte") suggestion = "B";
  if (!number.empty() && !suggestion.empty()) return fmt::format(" (did you mean \"{}{}\"?)", number, suggestion);
  return "";
}

}  // namespace

Parsed<std::uint64_t> parse_size(std::string_view text) {
  Parsed<std::uint64_t> result;
  const std::string expected =
      "expected a size such as \"64MiB\" or \"1GiB\" (units: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)";
  if (text.empty()) {
    result.error = expected + ", got an empty string";
    return result;
  }
  if (text.front() == '-') {
    result.error = "a size cannot be negative, got " + quoted(text);
    return result;
  }
  std::size_t pos = 0;
  Decimal d = read_decimal(text, pos);
  if (!d.ok) {
    result.error = expected + ", got " + quoted(text);
    return result;
  }
  std::string_view unit_text = text.substr(pos);
  const Unit* unit = nullptr;
  for (const Unit& u : kSizeUnits) {
    if (u.name == unit_text) unit = &u;
  }
  if (unit == nullptr) {
    if (unit_text.empty()) {
      result.error = "a size needs a unit, such as \"" + std::string(text) + "B\" or \"" + std::string(text) +
                     "MiB\"; got " + quoted(text);
    } else {
      result.error = expected + ", got " + quoted(text) + size_hint(text);
    }
    return result;
  }
  if (d.overflow) {
    result.error = quoted(text) + " is too large (the largest size is 16EiB - 1)";
    return result;
  }
  u128 fraction_bytes = d.fraction * unit->factor;
  if (fraction_bytes % d.fraction_scale != 0) {
    result.error = quoted(text) + " is not a whole number of bytes";
    return result;
  }
  u128 whole = d.integer * unit->factor + fraction_bytes / d.fraction_scale;
  if (whole > u128{UINT64_MAX}) {
    result.error = quoted(text) + " is too large (the largest size is 16EiB - 1)";
    return result;
  }
  result.value = static_cast<std::uint64_t>(whole);
  return result;
}

Parsed<std::chrono::nanoseconds> parse_duration(std::string_view text) {
  Parsed<std::chrono::nanoseconds> result;
  const std::string expected =
      "expected a duration such as \"200ms\", \"10s\" or \"1h30m\" (units: ns, us, ms, s, m, h, d)";
  if (text.empty()) {
    result.error = expected + ", got an empty string";
    return result;
  }
  if (text.front() == '-') {
    result.error = "a duration cannot be negative, got " + quoted(text);
    return result;
  }
  if (text == "0") {
    result.value = std::chrono::nanoseconds{0};
    return result;
  }
  u128 total = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    Decimal d = read_decimal(text, pos);
    if (!d.ok) {
      result.error = expected + ", got " + quoted(text);
      return result;
    }
    std::size_t ustart = pos;
    while (pos < text.size() && !is_digit(text[pos]) && text[pos] != '.') ++pos;
    std::string_view unit_text = text.substr(ustart, pos - ustart);
    const Unit* unit = nullptr;
    for (const Unit& u : kDurationUnits) {
      if (u.name == unit_text) unit = &u;
    }
    if (unit == nullptr) {
      if (unit_text.empty()) {
        result.error = "a duration needs a unit, such as \"" + std::string(text) + "s\" or \"" +
                       std::string(text) + "ms\"; got " + quoted(text);
      } else {
        result.error = expected + ", got " + quoted(text) + " (unknown unit \"" + std::string(unit_text) + "\")";
      }
      return result;
    }
    if (d.overflow) {
      result.error = quoted(text) + " is too long";
      return result;
    }
    total += d.integer * unit->factor + (d.fraction * unit->factor) / d.fraction_scale;
    if (total > u128{INT64_MAX}) {
      result.error = quoted(text) + " is too long (the longest duration is about 292 years)";
      return result;
    }
  }
  result.value = std::chrono::nanoseconds{static_cast<std::int64_t>(total)};
  return result;
}

std::string format_size(std::uint64_t bytes) {
  static constexpr std::array<Unit, 4> binary{{{"TiB", 1ULL << 40}, {"GiB", 1ULL << 30}, {"MiB", 1ULL << 20},
                                               {"KiB", 1ULL << 10}}};
  if (bytes == 0) return "0B";
  for (const Unit& u : binary) {
    if (bytes % u.factor == 0) return fmt::format("{}{}", bytes / u.factor, u.name);
  }
  return fmt::format("{}B", bytes);
}

std::string human_size(std::uint64_t bytes) {
  static constexpr std::array<std::string_view, 5> names{"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  std::size_t i = 0;
  while (value >= 1024.0 && i + 1 < names.size()) {
    value /= 1024.0;
    ++i;
  }
  if (i == 0) return fmt::format("{} B", bytes);
  return fmt::format("{:.1f} {}", value, names[i]);
}

std::string format_duration(std::chrono::nanoseconds duration) {
  std::int64_t ns = duration.count();
  if (ns == 0) return "0s";
  std::string out;
  if (ns < 0) {
    out = "-";
    ns = -ns;
  }
  constexpr std::int64_t kSecond = 1'000'000'000;
  if (ns % kSecond != 0) {
    if (ns % 1'000'000 == 0 && ns < kSecond) return out + fmt::format("{}ms", ns / 1'000'000);
    if (ns % 1000 == 0 && ns < 1'000'000) return out + fmt::format("{}us", ns / 1000);
    if (ns < 1000) return out + fmt::format("{}ns", ns);
    // Mixed: seconds with a fraction.
    return out + fmt::format("{}s", static_cast<double>(ns) / kSecond);
  }
  std::int64_t s = ns / kSecond;
  if (s % 86400 == 0) return out + fmt::format("{}d", s / 86400);
  std::int64_t h = s / 3600;
  std::int64_t m = (s % 3600) / 60;
  std::int64_t sec = s % 60;
  if (h > 0) out += fmt::format("{}h", h);
  if (m > 0) out += fmt::format("{}m", m);
  if (sec > 0) out += fmt::format("{}s", sec);
  return out;
}

}  // namespace tank::units
