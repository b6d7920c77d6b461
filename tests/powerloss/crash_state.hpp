#pragma once

// The crash-state builder (tests/powerloss/README.md): from a recording of file operations, the
// disk states a power cut at a chosen instant could leave.
//
// The model. A cut is the instant an operation of the trace returned; operations that returned
// by then happened, those that had started are in flight (they may have reached the page cache,
// but are never durable). For each file (an inode: created by an open, written, renamed):
//
// - durable: what the last completed sync made durable. fsync / fdatasync of any descriptor of
//   the file (or sync/syncfs) covers every write that RETURNED BEFORE THE SYNC STARTED (a write
//   racing with the sync promises nothing); a write through an O_DSYNC descriptor is durable, with
//   its whole 4096-byte pages, once it returned. sync_file_range promises nothing (it flushes
//   neither the disk's cache nor metadata).
// - pending: writes after that. Each 4096-byte page is written back on its own, in any order: a
//   page holds its durable version or ANY ONE of its later versions (the page as the page cache
//   held it after that write). The file's size is the durable size, or larger when a chosen page
//   version lay beyond it (the size the file had after that write, up to the page's end).
//   A file with a pending truncate or fallocate is taken in order instead (a prefix of its
//   pending operations); tank and LMDB truncate only files they have just created.
//
// Directory entries (create, mkdir, rename, unlink, rmdir) are durable once an fsync of THEIR
// directory started after they returned (Names::posix, the default: POSIX does not make an
// fsync of a file persist its name, fsync(2) says so). Names::journaled models file systems with
// one metadata journal (ext4 data=ordered, XFS): any completed fsync or fdatasync makes every
// directory operation that returned before it started durable. Pending ones reach the disk as an
// in-order prefix per directory. An entry whose parent directory's entry did not survive is lost
// with everything under it.
//
// Two ways to draw a state:
// - pages (ALICE-style reordering): per page, per directory and per in-order file, a choice drawn
//   from a seed (how eager writeback was is drawn from the seed too);
// - prefix (an order-preserving file system): the first k pending operations of the whole
//   trace, in the order they returned, reached the disk.
//
// lock.mdb is absent from every state (the recorder does not record it): LMDB re-initialises it
// whenever it is the first process to open the environment, as after any reboot.

#include <compare>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "powerloss/trace.hpp"

namespace tank::powerloss {

inline constexpr std::uint64_t kPageBytes = 4096;

// The files and directories under the recorded directory after a power cut.
struct DiskState {
  std::set<std::string> dirs;                // relative paths (the root itself is implied)
  std::map<std::string, std::string> files;  // relative path -> content
  auto operator<=>(const DiskState&) const = default;

  // Creates the directories and files under `root` (which must exist).
  void materialise(const std::filesystem::path& root) const;
  // One line per entry: "queue/ ", "queue/data.mdb 12288 bytes" (for failure messages).
  std::string describe() const;
};

// How one state was drawn: enough to build it again from the same trace.
struct Recipe {
  enum class Model : std::uint8_t { prefix, pages };
  std::size_t cut = 0;  // the power goes off when ops()[cut] has returned
  Model model = Model::pages;
  std::size_t prefix = 0;  // prefix: how many pending operations reached the disk
  std::uint64_t seed = 0;  // pages: draws every choice
};

enum class Names : std::uint8_t { posix, journaled };

class CrashModel {
 public:
  // Throws std::runtime_error for a trace it cannot model (a file that existed before the
  // recording, a rename across directories, fallocate modes other than allocate/punch/zero).
  explicit CrashModel(const Trace& trace, Names names = Names::posix);

  const Trace& trace() const { return trace_; }
  std::int64_t instant(std::size_t cut) const { return trace_.ops().at(cut).end_ns; }
  // Operations that happened but are not durable at the cut: the prefix model's k is 0..pending.
  std::size_t pending(std::size_t cut) const;
  DiskState build(const Recipe& recipe) const;
  // Every distinct state the cut can leave under both models (exponential: for unit tests).
  std::vector<DiskState> enumerate(std::size_t cut) const;
  // What the file at `path` (the newest file created under that name by the cut) durably held at
  // the cut, whether or not its name was durable; nullopt when no such file was created.
  std::optional<std::string> durable_content(std::size_t cut, const std::string& path) const;
  // "cut at op 812 of 20311 (t=..., write queue/data.mdb @...), pages model seed 0x2a"
  std::string describe(const Recipe& recipe) const;

 private:
  struct File {
    std::vector<std::size_t> ops;         // its writes, truncates and fallocates (trace indices)
    std::vector<std::uint64_t> size_after;  // the size in the page cache after each of them
    std::map<std::uint64_t, std::vector<std::size_t>> pages;  // page -> positions in `ops` touching it
    std::vector<std::size_t> syncs;       // trace indices of its fsync/fdatasync
  };
  struct Dir {
    std::vector<std::size_t> entries;  // trace indices of operations on its entries
    std::vector<std::size_t> syncs;
  };
  struct Cut;
  struct Selection;

  Cut view(std::size_t cut) const;
  Selection prefix_selection(const Cut& cut, std::size_t k) const;
  Selection drawn_selection(const Cut& cut, std::uint64_t seed) const;
  DiskState assemble(const Cut& cut, const Selection& selection) const;
  std::string content(std::size_t fid, const Cut& cut, const Selection& selection) const;
  std::string page(const File& file, std::uint64_t page, std::size_t position) const;

  const Trace& trace_;
  Names names_;
  std::vector<File> files_;                    // by file id
  std::vector<std::ptrdiff_t> file_of_;        // trace index -> file id (-1: none)
  std::map<std::string, Dir> dirs_;            // by relative path ("" = the root)
  std::vector<std::size_t> sync_alls_;
  std::vector<std::size_t> syncs_;  // every fsync/fdatasync (Names::journaled)
  std::int64_t longest_op_ns_ = 0;
};

}  // namespace tank::powerloss
