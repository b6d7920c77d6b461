#pragma once

// Human sizes ("64MiB") and durations ("200ms"), parsed strictly: a value either means exactly
// one number or is refused with a message that says what was expected.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tank::units {

template <class T>
struct Parsed {
  std::optional<T> value;  // set on success
  std::string error;       // why it was refused, when `value` is empty
  explicit operator bool() const { return value.has_value(); }
};

// Parses a size: digits with an optional fraction and a unit, no spaces:
//   B, kB (or KB), MB, GB, TB  (powers of 1000)
//   KiB, MiB, GiB, TiB         (powers of 1024)
// "1.5GiB" is accepted because it is a whole number of bytes; "1.3B" is not. Overflow past
// 2^64-1 and negative values are refused.
Parsed<std::uint64_t> parse_size(std::string_view text);

// Parses a duration as a sequence of number+unit pairs, like Go: "200ms", "1h30m", "1.5s".
// Units: ns, us (or µs), ms, s, m, h, d. "0" alone means zero. Overflow and negative values are
// refused.
Parsed<std::chrono::nanoseconds> parse_duration(std::string_view text);

// The shortest exact spelling of a size: "64MiB", "1GiB", "1500B".
std::string format_size(std::uint64_t bytes);

// A rounded size for people: "1.5 GiB", "812 B".
std::string human_size(std::uint64_t bytes);

// The shortest exact spelling of a duration: "200ms", "1h30m", "0s".
std::string format_duration(std::chrono::nanoseconds duration);

}  // namespace tank::units
