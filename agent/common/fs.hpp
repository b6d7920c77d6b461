#pragma once

// File-system helpers with errors that name the path and the reason.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace tank::fs {

// Creates `dir` (and its parents) if needed and checks that tank can create, write, fsync and
// remove a file in it. Returns an empty string on success, otherwise one sentence naming the
// directory and the reason, e.g. "cannot create data_dir /var/lib/tank: Permission denied".
std::string prepare_writable_directory(const std::filesystem::path& dir, std::string_view what);

// Writes `content` to `path` atomically: a temporary file in the same directory, fsync, rename,
// fsync of the directory. Returns an empty string or the reason it failed.
std::string write_file_atomic(const std::filesystem::path& path, std::string_view content);

// fsyncs the directory `dir`, so that the names created, renamed or removed in it so far survive a
// power cut (POSIX promises a new name only once its directory is synced). Returns "" or why not.
std::string sync_directory(const std::filesystem::path& dir);

// Reads a whole file. Returns nullopt and sets `error` (naming the path) when it cannot, or when
// it holds more than `max_bytes` (which also stops a read of /dev/zero or a growing file).
std::optional<std::string> read_file(const std::filesystem::path& path, std::string* error,
                                     std::size_t max_bytes = static_cast<std::size_t>(-1));

// The kernel's boot id (/proc/sys/kernel/random/boot_id), or "" when unknown. Two runs with
// different boot ids were separated by a reboot. The environment variable TANK_BOOT_ID, when set
// and not empty, is returned instead: the power-cut tests start tank on a recorded disk state "as
// after a reboot" (tests/powerloss).
std::string boot_id();

// An exclusive, non-blocking lock on a file (flock), held until destruction. Used so that only
// one tank process uses a data directory.
class ExclusiveLock {
 public:
  // Tries to take the lock. On failure `error` says why (held by another process: names it).
  static std::optional<ExclusiveLock> acquire(const std::filesystem::path& path, std::string* error);
  ExclusiveLock(ExclusiveLock&& other) noexcept;
  ExclusiveLock& operator=(ExclusiveLock&& other) noexcept;
  ExclusiveLock(const ExclusiveLock&) = delete;
  ExclusiveLock& operator=(const ExclusiveLock&) = delete;
  ~ExclusiveLock();

 private:
  explicit ExclusiveLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// UTC time as "20261121T231900Z" (for names of moved-aside directories).
std::string compact_utc_timestamp(std::int64_t wall_ns);

// UTC time as RFC 3339 with milliseconds, "2026-11-21T23:19:00.123Z".
std::string rfc3339_utc(std::int64_t wall_ns);

}  // namespace tank::fs
