#pragma once

// The recovery point: which LMDB snapshot of the queue is known to be on stable storage, kept in
// the file <queue dir>/recovery-point, so that a start after a power cut can fall back to it.
//
// Why: with fsync = "interval" or "never", LMDB commits without a sync (MDB_NOSYNC). After a
// power cut the kernel may have written back any subset of the pages dirtied since the last
// flush, meta pages included, in any order, so the newest state in data.mdb may point at pages
// that never reached the disk. LMDB 0.9 has no page checksums and no way to open an older
// snapshot. So the queue (queue_flush.cpp) does this at every flush:
//
//   1. pin: with no commit in progress, begin a read transaction. Its snapshot F is the newest
//      commit; while the transaction stays open LMDB reuses none of F's pages, so F's pages are
//      never overwritten (LMDB is copy-on-write; only the meta pages are written in place).
//   2. fdatasync data.mdb: F's pages are now on stable storage.
//   3. write F's meta page into the older of this file's two slots, with a new generation and a
//      CRC32C, and fdatasync this file: F is now the recovery point.
//   4. end the read transaction of the previous recovery point.
//
//   time ─────────────────────────────────────────────────────────────────────────────────▶
//   commits   ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮ ▮
//   pin F(k)  ├──────────── held ─────────────────────────┤
//   pin F(k+1)                        ├──────────── held ────────────────────────────┤
//   sync            [data][slot k]                  [data][slot k+1]
//
// A power cut at any moment leaves a valid slot naming a snapshot whose pages are all durable and
// intact: a torn slot fails its CRC and the other slot (the previous point, still pinned) holds.
// At the next start (Queue::open), when the machine restarted since the slot was written (another
// boot id) and data.mdb's newest meta page is newer than the recovery point, the meta pages are
// rewritten to name the recovery point (roll_back_to): the commits after the flush are undone --
// at most one fsync_interval of them plus the flush itself -- and never the backlog. A process
// crash (kill -9, same boot) keeps every write in the page cache: nothing is rolled back then.
//
// With fsync = "always" every commit is durable (LMDB syncs the data, then writes the meta page
// with O_DSYNC): the slot then says so (every_commit_durable), and nothing is ever rolled back.
//
// Slot layout (512 bytes, little-endian; slot n at offset 512 n):
//     0 char[8]  magic "tankRP01"          64 u64 next sequence number at F
//     8 u32      layout version (1)        72 u64 records on disk at F
//    12 u32      flags (1 = every commit    80 u32 LMDB page size
//                durable, 2 = closed        84 u32 bytes of the meta page copy
//                cleanly)                   88 char[40] boot id (NUL-padded)
//    16 u64      generation               128 u8[256] F's meta page (lmdb_layout::kMetaPageBytes)
//    24 u64      F's transaction id       384 zeros
//    32 u64      data.mdb's device        508 u32 CRC32C of bytes 0..507
//    40 u64      data.mdb's inode
//    48 i64      CLOCK_MONOTONIC ns when F was pinned (every commit acknowledged before it is in F)
//    56 i64      wall-clock ns when F was pinned

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace tank::queue {

inline constexpr const char* kRecoveryPointFile = "recovery-point";
inline constexpr std::size_t kRecoveryPointSlotBytes = 512;

struct RecoveryPoint {
  static constexpr std::uint32_t kEveryCommitDurable = 1;
  static constexpr std::uint32_t kClosedCleanly = 2;

  std::uint64_t generation = 0;
  std::uint32_t flags = 0;
  std::uint64_t txnid = 0;
  std::uint64_t data_device = 0;
  std::uint64_t data_inode = 0;
  std::int64_t pinned_mono_ns = 0;
  std::int64_t pinned_wall_ns = 0;
  std::uint64_t next_seq = 0;
  std::uint64_t records = 0;
  std::uint32_t page_size = 0;
  std::string boot_id;
  std::string meta_page;  // the first lmdb_layout::kMetaPageBytes bytes of F's meta page

  bool every_commit_durable() const { return (flags & kEveryCommitDurable) != 0; }
  bool closed_cleanly() const { return (flags & kClosedCleanly) != 0; }
};

// The 512 bytes of a slot holding `point`.
std::string encode_recovery_slot(const RecoveryPoint& point);
// Decodes one slot; nullopt (and `why`) when it is empty, torn or not a slot.
std::optional<RecoveryPoint> decode_recovery_slot(std::string_view slot, std::string* why = nullptr);

// The newest valid slot of the file in `queue_dir`, or nullopt when there is none (no file, or
// both slots torn: `why` says which). Throws lmdb_file::IoError when the file exists but cannot be
// read.
std::optional<RecoveryPoint> read_recovery_point(const std::filesystem::path& queue_dir, std::string* why = nullptr);

// The writer of the file, kept open by the queue.
class RecoveryPointFile {
 public:
  // Opens or creates <queue_dir>/recovery-point; a new file is synced with its directory before
  // this returns. Throws lmdb_file::IoError.
  explicit RecoveryPointFile(const std::filesystem::path& queue_dir);
  ~RecoveryPointFile();
  RecoveryPointFile(const RecoveryPointFile&) = delete;
  RecoveryPointFile& operator=(const RecoveryPointFile&) = delete;

  // Writes `point` with the next generation into the older slot and fdatasyncs the file; only
  // then is it the recovery point. Returns "" or why it failed (the previous point still holds).
  std::string write(RecoveryPoint point);
  std::uint64_t generation() const { return generation_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  std::uint64_t generation_ = 0;
};

// Rewrites both meta pages of `data_file` to name the snapshot of `point` (its meta page in its
// own slot, a copy with the transaction id one lower in the other), then fdatasyncs the file.
// LMDB then opens that snapshot; its pages must be intact (what the recovery point promises).
// Throws lmdb_file::IoError.
void roll_back_to(const std::filesystem::path& data_file, const RecoveryPoint& point);

}  // namespace tank::queue
