#pragma once

// One file that inputs.file follows (file_tail.hpp): its identity, how far it was read and
// committed, the line being read, and reading its bytes.
//
// A file is known by its device and inode, confirmed by its fingerprint (file_tail.hpp,
// "Identity"); a copy is recognised by its fingerprint too ("Rotation").

#include <sys/types.h>

#include <chrono>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <string>

namespace tank::input::tail {

// The most bytes one read takes from a file.
inline constexpr std::size_t kChunk = 64 * 1024;
// Copies are recognised only by fingerprints this long: a short one says too little.
inline constexpr std::size_t kMinCopyFingerprint = 64;

struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  auto operator<=>(const FileId&) const = default;
};

// One file being read: where it was read and committed to, and the line being read.
struct TailedFile {
  FileId id;
  int fd = -1;
  std::string path;
  std::uint64_t committed = 0;  // offset after the last complete line stored
  std::uint64_t read_pos = 0;   // how far it was read (>= committed)
  std::string fingerprint;
  // The line being read: its start and what was read of it.
  std::string partial;
  bool discarding = false;
  std::string discard_head;
  std::uint64_t discard_length = 0;
  bool matched = true;  // a pattern still names this inode
  bool copy_incomplete = false;  // a copy, still shorter than where reading starts
  std::chrono::steady_clock::time_point last_growth;  // last time it grew or still matched
};

// Reads up to `n` bytes at `offset` (fewer at the end of the file).
std::string read_at(int fd, std::uint64_t offset, std::size_t n);

// Whether the file open as `fd` still starts with `fingerprint` (an empty one: yes).
bool same_file(const std::string& fingerprint, int fd);

// Same first bytes over the shorter of the two fingerprints (a copy may still be written),
// and at least kMinCopyFingerprint of them: a short fingerprint says too little.
bool same_start(const std::string& a, const std::string& b);

}  // namespace tank::input::tail
