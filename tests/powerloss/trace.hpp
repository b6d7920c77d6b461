#pragma once

// A recording of file operations (tests/powerloss/README.md): the log the recorder wrote
// (recorder/record_format.h), read back as a list of operations in the order they completed.
//
// Promises: ops() are sorted by the CLOCK_MONOTONIC instant each call returned (ties: log
// order); paths are relative to the recorded directory ("" is the directory itself); an entry a
// kill -9 cut short at the end of the log is dropped (torn_tail() says so); anything else that is
// not a well-formed entry throws std::runtime_error naming the byte offset.

#include <cstdint>
#include <deque>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace tank::powerloss {

struct Op {
  enum class Kind : std::uint8_t {
    create,      // an open that created the file (path, dev/ino)
    write,       // data at offset
    truncate,    // size set to offset (ftruncate, or O_TRUNC of an existing file)
    fallocate,   // offset, length; mode
    sync,        // fsync / fdatasync of a file or (dir) a directory
    sync_range,  // sync_file_range: promises nothing (no disk cache flush, no metadata)
    sync_all,    // sync(), syncfs()
    mkdir,
    rename,      // path -> path2
    unlink,
    rmdir,
  };
  Kind kind = Kind::write;
  std::int64_t start_ns = 0;
  std::int64_t end_ns = 0;
  std::uint32_t pid = 0;
  std::uint32_t tid = 0;
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  bool dir = false;       // sync: of a directory
  bool dsync = false;     // write: through an O_DSYNC descriptor (durable once it returned)
  bool datasync = false;  // sync: fdatasync
  std::int64_t offset = 0;
  std::uint64_t length = 0;
  std::int64_t mode = 0;  // fallocate's mode
  std::string path;       // relative to the recorded directory
  std::string path2;      // rename's target
  std::string_view data;  // write: the bytes (owned by the Trace)

  std::string describe() const;  // "pwrite queue/data.mdb @12288 +4096 [dsync]"
};

std::string_view to_string(Op::Kind kind);

class Trace {
 public:
  // Reads a recorder log. Throws std::runtime_error when it cannot be read or is malformed.
  static Trace load(const std::filesystem::path& log);
  // A trace made by hand (unit tests): `ops` in any order; each write's data is copied.
  static Trace from_ops(std::vector<Op> ops, std::string root = "/recorded");

  const std::vector<Op>& ops() const { return ops_; }
  const std::string& root() const { return root_; }
  bool torn_tail() const { return torn_tail_; }
  // Processes that recorded (one BEGIN entry each: tank and its forked children).
  std::size_t processes() const { return processes_; }

 private:
  void sort();

  std::string root_;
  std::vector<Op> ops_;
  std::deque<std::string> storage_;  // the log's bytes, or the hand-made data
  bool torn_tail_ = false;
  std::size_t processes_ = 0;
};

}  // namespace tank::powerloss
