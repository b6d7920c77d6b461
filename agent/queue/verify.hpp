#pragma once

// Checking an LMDB environment before tank trusts it, and moving a damaged one aside.
//
// LMDB does not checksum pages: a file damaged by a power loss on a file system that reorders
// writes, by a bad SD card, or by hand may crash the process that reads it (SIGSEGV, SIGBUS on
// a truncated file). So the check runs in a forked child process: whatever the file does to
// the child, the parent gets an answer, and tank never crash-loops on a damaged queue.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "queue/queue.hpp"

namespace tank::queue {

struct VerifyResult {
  enum class Outcome {
    ok,            // sound (or absent: a new queue will be created)
    damaged,       // not a sound tank queue; `problem` says what was found
    inaccessible,  // could not be read (permissions, I/O); `problem` says why. Not damage.
    newer_format,  // written by a newer tank; `problem` says which format
  };
  Outcome outcome = Outcome::ok;
  std::string problem;
};

// The queue format this tank writes and reads.
inline constexpr std::uint64_t kQueueFormat = 1;

// Runs the check in this process. May crash on a damaged file: use verify_in_child.
VerifyResult verify_here(const std::filesystem::path& dir, Verification depth);

// Runs verify_here in a forked child and waits at most `timeout`. A child killed by a signal,
// exiting without an answer, or timing out means `damaged`. Call it before starting threads
// that may hold locks the child would need (the child only uses LMDB and the allocator).
VerifyResult verify_in_child(const std::filesystem::path& dir, Verification depth, std::chrono::seconds timeout);

// How long to let a verification run: a minute plus a minute per GiB of data file.
std::chrono::seconds verification_timeout(const std::filesystem::path& dir);

// Renames `dir` to "<dir>.damaged-<UTC time>" (adding "-2", "-3"... if taken), then deletes the
// oldest damaged copies beyond `keep`. Returns the new path; fills `pruned` with what was
// deleted. Throws OpenError when the rename fails.
std::filesystem::path move_aside(const std::filesystem::path& dir, std::int64_t wall_ns, std::size_t keep,
                                 std::vector<std::filesystem::path>* pruned);

}  // namespace tank::queue
