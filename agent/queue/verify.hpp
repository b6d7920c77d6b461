#pragma once

// Checking an LMDB environment before tank trusts it, and moving a damaged one aside.
//
// LMDB does not checksum pages: a file damaged by a power loss on a file system that reorders
// writes, by a bad SD card, or by hand may crash the process that reads it through LMDB's map
// (SIGSEGV, SIGBUS on a truncated file). So the structure is proven first without LMDB
// (lmdb_file.hpp: pread only, every offset checked), and only a proof -- a sentence naming the
// page or the record that is wrong -- condemns a queue. A fault of the moment (ENOMEM, EIO, a
// full table of descriptors, a check killed by the OOM killer, a device that stops answering)
// is never taken for damage: the queue is left where it is and tank refuses to start, saying why.
// The check runs in a forked child process, so that even a fault in the check itself cannot take
// tank down with it.

#include <chrono>
#include <functional>
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
    inaccessible,  // could not be read or judged (permissions, I/O, memory, a check that died); `problem`
                   // says why. Not damage.
    newer_format,  // written by a newer tank; `problem` says which format
  };
  Outcome outcome = Outcome::ok;
  std::string problem;
};

// The queue format this tank writes (and the newest it reads): 2 = records carry a CRC32C
// (record.hpp); 3 = records live in segments (the databases "records", "records.1" ...
// "records.<kRecordSegments - 1>") and the meta entry "front" says up to which record every
// consumer has passed (docs/queue.md, "Segments"). Formats 1 and 2 are read and upgraded at open
// (a format-2 queue's records are its first segment as they are); a tank of format 2 refuses a
// format-3 queue, which it would misread.
inline constexpr std::uint64_t kQueueFormat = 3;
inline constexpr unsigned kRecordSegments = 64;

struct VerifyOptions {
  Verification depth = Verification::quick;
  // Use LMDB's lock file, as a reader beside a running writer must (`tank queue ...`). Without
  // it (the agent's own start-up, which holds the data directory's lock so no writer runs) the
  // lock file is not touched, so a damaged lock file cannot disturb the check.
  bool use_lock_file = false;
  // The child reports progress as it walks; when it reports nothing for this long it is taken to
  // be stuck in a loop of damaged pages. (There is no limit on the total time: a large queue on
  // slow storage takes as long as it takes.)
  std::chrono::seconds stall_timeout{120};
  // Called about once a second while waiting (the agent extends systemd's start timeout).
  std::function<void()> on_wait;
};

// Runs the check in this process, calling `progress` now and then. May crash on a damaged file:
// use verify_in_child.
VerifyResult verify_here(const std::filesystem::path& dir, const VerifyOptions& options,
                         const std::function<void()>& progress = {});

// Runs verify_here in a forked child. Only the child's answer judges the queue: the child dying of
// a signal (the OOM killer's SIGKILL, SIGBUS from a failing device), exiting without an answer,
// or making no progress for stall_timeout means `inaccessible` (not judged). The child dies with
// its parent. Call it before starting threads that may hold locks the child would need (it only
// uses LMDB, the reader of lmdb_file.hpp and the allocator).
VerifyResult verify_in_child(const std::filesystem::path& dir, const VerifyOptions& options);

// Renames `dir` to "<dir>.damaged-<UTC time>" (adding "-2", "-3"... if taken), then deletes the
// oldest damaged copies beyond `keep` -- but only those that hold no record to salvage (see
// holds_records): a moved-aside queue with records is never deleted, however many there are.
// Returns the new path; fills `pruned` with what was deleted. Throws OpenError when the rename
// fails.
// Whether a moved-aside queue may still hold records: false only when `tank queue salvage` took
// them (it leaves kSalvagedMarker) or there is no data file with pages beyond LMDB's two meta pages.
inline constexpr const char* kSalvagedMarker = "SALVAGED";
bool holds_records(const std::filesystem::path& moved_aside_dir);

std::filesystem::path move_aside(const std::filesystem::path& dir, std::int64_t wall_ns, std::size_t keep,
                                 std::vector<std::filesystem::path>* pruned);

}  // namespace tank::queue
