#pragma once

// Keys made from record fields, for stages that keep state per group or per value
// (processors.deadband, dedup, throttle): the values' bytes in a canonical form, and a 128-bit
// hash of them (XXH3, from Debian's libxxhash-dev, header only) to key the state by.
//
// Canonical form: the group key bytes of processors.aggregate (equal JSON values give equal
// bytes: 1, 1.0 and 1e0 are one number; object members in their order), with a missing field
// told apart from null.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <boost/json/fwd.hpp>

#include "process/event_time.hpp"

namespace tank::process {

// Appends the canonical bytes of `v` (nullptr: the field is missing) to `out`.
void append_value_key(std::string& out, const boost::json::value* v);

// A 128-bit hash. Collisions between different keys have a probability of about n^2 / 2^129 for
// n keys: none in practice.
struct Key128 {
  std::uint64_t high = 0;
  std::uint64_t low = 0;
  friend bool operator==(const Key128&, const Key128&) = default;
};
Key128 hash_key(std::string_view bytes);
// 32 lower-case hex digits, and back (nullopt-like: false for anything else).
std::string to_hex(const Key128& key);
bool from_hex(std::string_view text, Key128& key);

// The key of a record's group: its input and the values at `paths` in `doc` (missing ones as
// missing), hashed. `scratch` is the caller's buffer (kept to spare an allocation per record).
// `doc` may be null only when `paths` is empty.
Key128 fields_key(std::string& scratch, std::string_view input, std::span<const FieldPath> paths,
                  const boost::json::value* doc);

struct Key128Hash {
  std::size_t operator()(const Key128& k) const noexcept { return static_cast<std::size_t>(k.low ^ (k.high * 0x9E3779B97F4A7C15ULL)); }
};

}  // namespace tank::process
