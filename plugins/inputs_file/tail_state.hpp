#pragma once

// What inputs.file (file_tail.hpp) stores in the queue's component state, and how.
//
// A followed file's entry is "file/<input>/<dev>:<inode>", committed in the transaction of the
// records read up to its offset (file_tail.hpp, "Offsets"); a truncated file's is
// "file/<input>/retired/<seq>", at most kMaxRetired of them ("Rotation").
//
// decode_checkpoint() refuses (nullopt) a value it does not recognise; such an entry is ignored.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tank::input::tail {

// Truncated files remembered for copies found later.
inline constexpr std::size_t kMaxRetired = 64;

// What is stored per file: offset, fingerprint, path.
struct Checkpoint {
  std::uint64_t offset = 0;
  std::string fingerprint;
  std::string path;
};

std::string encode_checkpoint(const Checkpoint& c);
std::optional<Checkpoint> decode_checkpoint(std::string_view v);

}  // namespace tank::input::tail
