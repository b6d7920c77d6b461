#pragma once

// The queue's machinery behind Queue (queue.hpp): the LMDB environment, group commit, the memory
// tier, flushing and the recovery point. Private to agent/queue: only the queue's own .cpp files
// include it (it brings <lmdb.h>). queue.hpp says what each member promises; the files are
//   queue.cpp         Queue's members, which hand each call to Impl; sizing
//   queue_open.cpp    open, open_read_only: the environment, consumers, checks before opening
//   queue_flush.cpp   flushing, the recovery point, close
//   queue_commit.cpp  group commit: leader and followers, the group transaction
//   queue_apply.cpp   applying one batch: records, state, dead letters, overflow
//   queue_read.cpp    reading: records, positions, state, stats, dead letters
//
// Thread safety: as Queue's (every public member may be called from any thread).

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <lmdb.h>

#include <fmt/format.h>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "queue/lmdb.hpp"
#include "queue/queue.hpp"
#include "queue/verify.hpp"

namespace tank::queue {

class QueueMetrics;
struct RecoveryPoint;
class RecoveryPointFile;
namespace lmdb_file {
class File;
struct Meta;
struct Metas;
}  // namespace lmdb_file

// Shared by the queue's .cpp files.

inline constexpr const char* kComponent = "queue";
inline constexpr std::uint64_t kPageHeader = 16;  // LMDB's PAGEHDRSZ
inline constexpr std::uint64_t kNodeHeader = 8;   // LMDB's NODESIZE
inline constexpr std::uint64_t kKeyBytes = 8;
// In memory mode, sequence numbers are reserved in LMDB this many at a time, so numbers given
// to records that a crash loses are never given again.
inline constexpr std::uint64_t kSeqReservation = 1 << 20;
// Per-record bookkeeping of the memory tier (its end offset), counted against max_memory_bytes.
inline constexpr std::uint64_t kMemoryRecordOverhead = sizeof(std::size_t);
// A page fault maps up to this many pages around the one touched (release_mapped_pages).
inline constexpr std::uint64_t kFaultAroundPages = 16;
// The pages of the map that may stay resident beyond the process's other file pages before they
// are released (release_mapped_pages, which says why 2 MiB).
inline constexpr std::uint64_t kMappedBudget = 2 << 20;
// How often the map's resident size is checked: every this many bytes of the callers' estimate of
// the pages they touched (release_mapped_pages).
inline constexpr std::uint64_t kMappedCheckEvery = kMappedBudget / 4;

inline std::string consumer_key(std::string_view name) { return "consumer:" + std::string(name); }

// What a read saw of the disk tier: every record after `after` up to `through` (sequence
// numbers), how many and their stored bytes. An acknowledgement that moves the front across
// spans read since counts what it passes from them instead of walking those records again
// (delete_through). Only records at or before the front are ever deleted and only records after
// every sequence number read are ever added (disk mode), so a span starting at the front still
// describes the records there.
//
// drop_oldest deletes records after the front: a span is only used while no eviction was
// committed since its read began (`evictions`, counted after each commit that evicted, and taken
// before the read's snapshot), and not in a group that evicted itself.
struct ReadSpan {
  std::uint64_t after = 0;
  std::uint64_t through = 0;
  std::uint64_t records = 0;
  std::uint64_t bytes = 0;
  std::uint64_t evictions = 0;
};
// Records counted by walking them at an acknowledgement (no span covered them); for tests.
inline std::atomic<std::uint64_t> ack_walked_records{0};

// Records live in segments: up to kSegmentSlots LMDB databases, "records" (slot 0, the only one
// before segments: an older queue's records are its first segment as they are) and "records.1" to
// "records.63". Each segment holds a contiguous run of sequence numbers; the runs do not overlap,
// and the segments ordered by their first record are the queue in order. Appends go to the newest
// segment until it holds segment_pages_ pages, then to a free slot. Acknowledged records are not
// deleted one by one: the queue's front (meta "front") moves past them, readers never see them,
// and a segment is emptied whole (mdb_drop, which frees its pages without reading its leaves)
// once the front has passed its last record. Only under pressure (pages in use above the low
// watermark) are acknowledged records still in the oldest segment deleted record by record, so
// that they never keep records out. docs/queue.md, "Segments".
inline constexpr unsigned kSegmentSlots = kRecordSegments;
inline std::string segment_name(unsigned slot) { return slot == 0 ? "records" : fmt::format("records.{}", slot); }
// The slot a database name is, or -1.
int segment_slot(std::string_view name);

struct Segment {
  unsigned slot = 0;
  MDB_dbi dbi = 0;
  std::uint64_t first = 0;  // its first and last record (physically: acknowledged ones too)
  std::uint64_t last = 0;
};

// Walks the records of several segments (oldest first, none empty) as one key space: the
// operations are lmdb::Cursor's, over the union. Valid within one transaction. Forward (seek,
// next) it also works with a segment list newer than the transaction's snapshot, as long as it
// starts after that list's front: a segment the snapshot lacks is empty in it, one the list lacks
// holds only records at or before the front, and a slot emptied and used again since holds, in
// the snapshot, only such records too (next() enters a segment after the last key returned).
class RecordCursor {
 public:
  RecordCursor(MDB_txn* txn, std::vector<Segment> segments) : txn_(txn), segments_(std::move(segments)) {}
  bool first(MDB_val& k, MDB_val& v);
  bool last(MDB_val& k, MDB_val& v);
  // The first record at or after `seq`.
  bool seek(std::uint64_t seq, MDB_val& k, MDB_val& v);
  bool next(MDB_val& k, MDB_val& v);
  bool prev(MDB_val& k, MDB_val& v);

 private:
  bool enter(std::size_t i, MDB_cursor_op op, MDB_val& k, MDB_val& v);

  MDB_txn* txn_;
  std::vector<Segment> segments_;
  std::size_t at_ = 0;
  std::optional<lmdb::Cursor> cursor_;
};

inline MDB_stat stat_of(MDB_txn* txn, MDB_dbi dbi) {
  MDB_stat st{};
  lmdb::check(mdb_stat(txn, dbi, &st), "mdb_stat");
  return st;
}

inline std::uint64_t pages_of(const MDB_stat& st) { return st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages; }

inline void put_meta(MDB_txn* txn, MDB_dbi meta, std::string_view key, std::uint64_t value) {
  std::string encoded = lmdb::encode_u64(value);
  MDB_val k = lmdb::value_of(key);
  MDB_val v = lmdb::value_of(encoded);
  lmdb::check(mdb_put(txn, meta, &k, &v, 0), "writing queue meta");
}

inline std::optional<std::uint64_t> get_meta(MDB_txn* txn, MDB_dbi meta, std::string_view key) {
  MDB_val k = lmdb::value_of(key);
  MDB_val v;
  int rc = mdb_get(txn, meta, &k, &v);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  lmdb::check(rc, "reading queue meta");
  return lmdb::decode_u64(v);
}

// Thrown inside a group when a batch applied without a nested transaction turned out not to fit
// after all (the page estimates are upper bounds, so this is not expected): the group is then
// written again with every batch in a nested transaction of its own.
struct RetryCarefully {};

class Queue::Impl {
 public:
  Impl(const Options& options, const Clock& clock, bool read_only);
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // What Queue::open() and open_read_only() do once the Impl exists; `owner` is the Queue whose
  // stats() the metrics' gauges read.
  void open_environment(const Queue* owner, metrics::Registry* metrics, OpenReport* report);

  // Queue's members, each as queue.hpp describes it.
  void close();
  CommitResult commit(const WriteBatch& batch);
  CommitResult append(const EncodedRecords& records);
  CommitResult ack(const std::string& consumer, std::uint64_t seq);
  void read(std::uint64_t after, const ReadLimits& limits, const RouteFilter* filter, ReadBatch& out) const;
  std::optional<std::uint64_t> position(const std::string& consumer) const;
  void add_consumer(const std::string& name);
  bool remove_consumer(const std::string& name, std::vector<std::string> state_deletes);
  std::vector<std::string> consumer_names() const;
  std::optional<std::string> state(std::string_view key) const;
  std::vector<std::pair<std::string, std::string>> state_with_prefix(std::string_view prefix) const;
  std::vector<StoredDeadLetter> dead_letters(const DeadLetterQuery& query) const;
  std::optional<StoredDeadLetter> dead_letter(std::uint64_t id) const;
  DeadLetterStats dead_letter_stats() const;
  Stats stats() const;
  std::uint64_t oldest_seq() const;
  std::vector<std::uint64_t> disk_bytes_after(std::span<const std::uint64_t> positions) const;
  bool blocked() const;
  void set_pressure_listener(std::function<void(bool blocked)> listener);
  bool damaged() const { return damaged_.load(); }
  void sync();
  std::uint64_t max_commit_bytes() const { return max_commit_bytes_; }
  std::uint64_t disk_margin_bytes() const { return margin_bytes_; }
  std::uint64_t file_limit_bytes() const { return map_bytes_; }
  const Options& options() const { return options_; }
  std::uint64_t id() const { return queue_id_; }

 private:
  struct Pending;
  struct Group;
  struct MemoryChunk;

  void register_consumers();
  void load_state();
  void start_sync_thread();
  // Before LMDB opens an existing file: rolls a file a power cut may have left half-written back
  // to its recovery point, checks it (verify.hpp), falls back to the recovery point when the newest
  // state is damaged, and moves it aside when that is damaged too. Throws OpenError.
  void check_before_open(OpenReport* report);
  void roll_back(const RecoveryPoint& point, const std::string& why, std::uint64_t lost, OpenReport* report);
  static bool never_committed(const lmdb_file::Metas& metas);
  static std::uint64_t appended_after(const lmdb_file::File& file, const lmdb_file::Meta& newest, std::uint64_t next_seq);
  // A flush: pins the newest snapshot (no group in progress), fdatasyncs data.mdb, writes the
  // recovery point naming that snapshot, then lets go of the previous pin. `flags` are the
  // recovery point's (RecoveryPoint::kClosedCleanly...). Returns "" or why it failed.
  std::string flush(std::uint32_t flags);
  // The flush, with leader_active_ set by this thread and flush_mutex_ held: steps down as the
  // leader once the snapshot is pinned, unless `keep_leading` (a group that found the map full
  // while a snapshot was pinned flushes in the middle of its own group).
  std::string flush_locked(std::uint32_t flags, bool keep_leading);
  // Rewrites the records of a queue of an older format (record.hpp) in the current one.
  void upgrade_records(std::uint64_t from_format);
  // Counts what the commits since the last call wrote, up to `txn`'s snapshot
  // (tank_queue_written_bytes_total; queue_flush.cpp says how).
  void account_written(MDB_txn* txn);
  // Ends the pin and its protection; flush_mutex_ held.
  void release_pin_locked();
  std::uint64_t pinned_free_pages() const;
  // Called after each read, delete or append of `bytes`: every kMappedBudget / 4 of them, drops
  // the pages of LMDB's map from this process's resident set when they exceed kMappedBudget (see
  // queue_read.cpp).
  void release_mapped_pages(std::size_t bytes) const;
  std::uint64_t file_resident_bytes() const;

  // Group commit: queues `p` and returns once a group transaction holding it has been written.
  void submit(Pending& p);
  void run_group(std::vector<Pending*>& group);
  void reset_group(Group& g) const;
  bool write_group(std::vector<Pending*>& group, Group& g, bool allow_records);
  // Applies one batch, all or nothing; near the bound (or when the batch both acknowledges and
  // appends) in a nested transaction, so that a batch that does not fit leaves no trace.
  void apply_batch(Group& g, Pending& p, bool allow_records, bool careful);
  bool try_nested(Group& g, Pending& p, bool with_records);
  void apply_parts(Group& g, Pending& p, bool with_records);
  void apply_records_disk(Group& g, Pending& p, std::uint64_t reserve_pages);
  void apply_records_memory(Group& g, Pending& p, std::uint64_t reserve_pages);
  void refuse_by_policy(Group& g, Pending& p, std::string why) const;
  // Pages in use by the records (of `segments`), meta and state databases.
  std::uint64_t used_pages_of(MDB_txn* txn, const std::vector<Segment>& segments) const;
  std::uint64_t used_pages(const Group& g) const;
  std::uint64_t estimate_pages(const EncodedRecords& records) const;
  std::uint64_t estimate_state_pages(const WriteBatch& batch) const;
  void evict_oldest_disk(Group& g, std::uint64_t target_pages, std::uint64_t below_seq);
  void put_records(Group& g, const EncodedRecords& records, std::uint64_t first_seq);
  // Acknowledges every record up to and including `seq`: moves the front (counting the records and
  // bytes it passes) and empties the segments it has passed.
  void delete_through(Group& g, std::uint64_t seq);
  // Deletes, record by record, the acknowledged records still in the oldest segment.
  void reclaim_acknowledged(Group& g);
  // The segments of a read transaction's snapshot that hold records, oldest first (one walk of
  // LMDB's main database), and its front.
  std::vector<Segment> segments_of(MDB_txn* txn) const;
  std::uint64_t front_of(MDB_txn* txn) const;
  // The same for a write transaction (each slot's statistics: they include its uncommitted changes).
  std::vector<Segment> segments_in_write(MDB_txn* txn) const;
  std::uint64_t pressure_pages() const;
  void capture_disk_shape(Group& g) const;
  void finish_group_locked(Group& g, bool committed);
  void update_pressure_locked();
  void notify_pressure();
  void note_damage(const std::string& what) const;
  void save_memory_tier();
  void put_dead_letters(Group& g, const WriteBatch& batch);
  void read_records(std::uint64_t after, const ReadLimits& limits, const RouteFilter* filter, ReadBatch& out) const;

  static std::uint64_t memory_cost(const EncodedRecords& records);
  std::uint64_t file_size() const;
  void require_writable() const;

  Options options_;
  const Clock& clock_;
  bool read_only_;
  std::unique_ptr<QueueMetrics> metrics_;

  MDB_env* env_ = nullptr;
  MDB_dbi records_dbi_ = 0;  // slot 0's ("records"); 0 until the databases are open
  std::array<MDB_dbi, kSegmentSlots> slot_dbis_{};  // 0: the slot's database does not exist (read-only)
  std::uint64_t segment_pages_ = 0;  // a segment takes appends until it holds this many pages
  MDB_dbi meta_dbi_ = 0;
  MDB_dbi state_dbi_ = 0;
  MDB_dbi dead_letters_dbi_ = 0;
  std::uint64_t dead_letter_bound_pages_ = 0;
  std::uint64_t page_size_ = 4096;
  std::uint64_t bound_pages_ = 0;
  std::uint64_t max_commit_bytes_ = 0;
  std::uint64_t queue_id_ = 0;
  std::uint64_t margin_bytes_ = 0;
  std::uint64_t map_bytes_ = 0;
  std::uint64_t node_max_ = 0;

  // Committed state. Written by the leader after a commit, under mutex_.
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Pending*> pending_;
  bool leader_active_ = false;
  int flushes_waiting_ = 0;  // flush() calls waiting for the leadership: they go before new groups
  bool closed_ = false;
  std::uint64_t next_seq_ = 1;
  std::uint64_t disk_records_ = 0;
  std::uint64_t disk_bytes_ = 0;
  std::uint64_t disk_pages_ = 0;
  std::uint64_t first_disk_seq_ = 0;  // 0 when the disk tier is empty
  std::uint64_t last_disk_seq_ = 0;
  std::vector<Segment> segments_;     // committed; the leader's (groups start from a copy)
  std::uint64_t front_ = 0;           // every record up to here is acknowledged (meta "front")
  std::uint64_t acknowledged_kept_ = 0;  // of them, records still stored (in the oldest segment)
  std::uint64_t seq_reserved_ = 0;    // memory mode: numbers up to here are reserved in LMDB
  std::map<std::string, std::uint64_t, std::less<>> consumers_;
  std::deque<MemoryChunk> memory_;
  std::uint64_t memory_records_ = 0;
  std::uint64_t memory_bytes_ = 0;          // counted against max_memory_bytes
  std::uint64_t memory_encoded_bytes_ = 0;  // the records' own bytes
  bool blocked_ = false;
  bool blocked_pending_ = false;
  std::function<void(bool)> pressure_listener_;
  std::mutex notify_mutex_;           // serialises pressure notifications
  bool notified_blocked_ = false;     // what the listener was last told (under notify_mutex_)
  mutable std::atomic<bool> damaged_{false};  // LMDB reported damage while running
  mutable std::mutex spans_mutex_;
  mutable std::vector<ReadSpan> read_spans_;  // disk mode: what reads saw after the front
  std::atomic<std::uint64_t> evictions_{0};     // commits that evicted records (drop_oldest)
  mutable std::atomic<std::uint64_t> touched_since_release_{0};  // bytes read/written since the last release
  mutable std::mutex release_mutex_;  // guards the four members below
  mutable std::uintptr_t map_start_ = 0;  // LMDB's map of data.mdb, found at the first release
  mutable std::uintptr_t map_end_ = 0;
  mutable int statm_fd_ = -1;  // /proc/self/statm, open from the first check to close()
  mutable std::uint64_t file_resident_after_release_ = 0;
  // Readers (read, state, stats, sync) hold it shared; close() holds it exclusively while it
  // tears the environment down.
  mutable std::shared_mutex env_mutex_;

  log::Episode full_episode_;
  log::Episode map_full_episode_;
  log::Episode commit_failure_episode_;
  log::Episode dead_letter_episode_;

  // Flushing (fsync = "interval" and "never"; recovery_point.hpp).
  std::atomic<bool> unsynced_{false};
  std::mutex sync_mutex_;
  std::condition_variable sync_cv_;
  bool stop_sync_ = false;
  std::thread sync_thread_;
  mutable std::mutex flush_mutex_;  // one flush at a time; guards pinned_ and pinned_txnid_
  std::unique_ptr<RecoveryPointFile> recovery_file_;
  MDB_txn* pinned_ = nullptr;  // read transaction on the recovery point's snapshot, which
                               // mdb_env_protect() keeps (interval, never; set only then)
  std::uint64_t pinned_txnid_ = 0;
  std::uint64_t accounted_pages_ = 0;  // pages in use at the last accounting
  std::uint64_t accounted_txnid_ = 0;  // and its snapshot
  bool test_skip_flush_ = false;       // TANK_TEST_SKIP_FLUSH=1: never fsync (tests/powerloss)
  bool test_no_pin_ = false;           // TANK_TEST_NO_PIN=1: do not keep the flushed snapshot
  std::uint64_t rolled_back_next_seq_ = 0;  // after a power-loss rollback: the recovery point's next_seq
};

struct Queue::Impl::Pending {
  const EncodedRecords* records = nullptr;  // the caller's; never modified
  const WriteBatch* batch = nullptr;     // state and acknowledgements, or null
  std::vector<std::string> new_consumers;
  std::vector<std::string> removed_consumers;
  CommitResult result;
  bool done = false;

  const EncodedRecords& recs() const {
    static const EncodedRecords none;
    return records != nullptr ? *records : none;
  }
};

// Records held in RAM (mode = "memory"): one appended batch, consumed from the front.
struct Queue::Impl::MemoryChunk {
  EncodedRecords records;
  std::uint64_t first_seq = 0;
  std::size_t head = 0;  // records before `head` are gone (acknowledged or evicted)

  std::uint64_t seq(std::size_t i) const { return first_seq + i; }
  std::size_t remaining() const { return records.size() - head; }
  std::uint64_t front_seq() const { return first_seq + head; }
  std::uint64_t last_seq() const { return first_seq + records.size() - 1; }
};

// One group transaction: what it changes, applied to the committed state only once LMDB has
// committed it.
struct Queue::Impl::Group {
  MDB_txn* root = nullptr;  // the group's transaction
  MDB_txn* txn = nullptr;   // where batches are applied: `root`, or a nested transaction of it
  bool wrote = false;       // anything put or deleted (a group of RAM-only appends writes nothing)

  std::uint64_t next_seq = 0;
  std::uint64_t seq_reserved = 0;
  std::uint64_t disk_bytes = 0;
  std::map<std::string, std::uint64_t, std::less<>> consumers;
  bool consumers_changed = false;
  // Said in the log once the group is committed (an apply may run more than once).
  std::vector<std::pair<log::Level, std::string>> consumer_news;

  // The disk tier after the transaction: records after the front (kept up to date), the rest
  // captured before commit.
  std::uint64_t disk_records = 0;
  std::uint64_t disk_pages = 0;
  std::uint64_t first_disk_seq = 0;
  std::uint64_t last_disk_seq = 0;

  // Segments after the transaction (a copy of the committed ones at the start), the front, and
  // the acknowledged records still stored.
  std::vector<Segment> segments;
  std::uint64_t front = 0;
  std::uint64_t acknowledged_kept = 0;

  // Memory tier changes.
  std::vector<MemoryChunk> memory_added;
  std::uint64_t memory_bytes = 0;    // projected, after this group
  std::uint64_t memory_evicted = 0;  // oldest committed RAM records evicted by drop_oldest

  // Dead letters.
  std::uint64_t next_dead_letter_id = 0;  // 0: not loaded yet in this group
  std::map<std::pair<std::string, std::string>, std::uint64_t> dead_lettered;  // (input, reason) -> count
  std::uint64_t dead_letters_evicted = 0;

  // Counters for metrics.
  std::uint64_t appended_records = 0;
  std::uint64_t appended_bytes = 0;
  std::uint64_t acknowledged_records = 0;
  std::uint64_t evicted_records = 0;
  std::uint64_t evicted_bytes = 0;
  std::uint64_t dropped_newest_records = 0;
  std::uint64_t dropped_newest_bytes = 0;
  std::uint64_t refused_full = 0;
  std::uint64_t refused_too_large = 0;
  bool saw_full = false;
};

inline std::uint64_t Queue::Impl::used_pages(const Group& g) const { return used_pages_of(g.txn, g.segments); }

}  // namespace tank::queue
