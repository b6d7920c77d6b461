#pragma once

// The write-ahead queue: every record tank accepts lives here until every consumer (output or
// processor) that should receive it has acknowledged it.
//
// An LMDB environment (one directory: data.mdb, lock.mdb) holds three databases:
//   records  sequence number (big-endian u64) -> encoded record (record.hpp)
//   meta     format version, next sequence number, stored bytes, one position per consumer
//   state    key -> value for components that must commit their own state together with
//            records: file offsets, batch boundaries, aggregation windows
//
//   producers (inputs)                               consumers (outputs, processors)
//   ---------------------                            --------------------------------
//   commit(WriteBatch) ---+                          read(after, limits) -> ReadBatch (copies;
//   commit(WriteBatch) ---+--> one LMDB write txn      no read transaction is held once it
//   commit(WriteBatch) ---+    (group commit), then    returns)
//                              every caller returns  ack(name, seq) -> position moves; records
//                                                      every consumer has passed are deleted
//
// Group commit: callers of commit() that arrive while a transaction is being written wait and
// are written together in the next one; the first waiter writes it (leader/follower), so one
// commit -- and with fsync = "always" one fsync -- is shared by every batch in the group.
//
// Guarantees
//   - commit() returns `committed` only after its records, state changes and acknowledgements
//     are in one LMDB transaction that has been committed: with fsync = "always" on stable
//     storage, otherwise in the OS page cache (safe from a process crash; fsync = "interval"
//     flushes every fsync_interval). In mode = "memory", records are held in RAM instead (see
//     Mode) and only state and positions are committed to LMDB.
//   - Sequence numbers increase by one per stored record and never repeat, across restarts.
//   - A record is returned by read() in sequence order; it is deleted only when every
//     registered consumer has acknowledged it, or evicted by overflow = "drop_oldest".
//   - Disk use is bounded: the pages LMDB uses for records, meta and state stay within
//     max_disk_bytes, and the dead-letter store's within dead_letter_max_bytes; the file
//     data.mdb stays within file_limit_bytes() = both bounds + disk_margin_bytes() (copy-on-write
//     pages of the last two transactions and freed pages not yet reusable) + 1/128 of the
//     dead-letter bound.
//     The LMDB map is that size. LMDB reuses a freed page only once no reader holds a snapshot
//     older than the free, so a reader that stays open (a paused `tank queue peek`, or a thread
//     the scheduler stalls) lets the file grow; the margin absorbs short stalls, and when the
//     map is full anyway (MDB_MAP_FULL) the group waits up to 255 ms for readers to move on and
//     then counts its records as a full queue -- never a crash, never a corrupt file.
//   - Bad bytes in the file never crash tank: open() verifies the environment in a child
//     process and moves a damaged one aside (see OpenReport).
//
// Thread safety: every public member may be called from any thread.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/clock.hpp"
#include "queue/dead_letter.hpp"
#include "queue/record.hpp"

namespace tank::metrics {
class Registry;
}

namespace tank::queue {

enum class Mode {
  disk,    // every record is committed to LMDB before commit() returns
  memory,  // records are held in RAM up to max_memory_bytes and spilled to LMDB beyond that
           // and at close(); a crash loses the records in RAM (not those spilled)
};
enum class Fsync { always, interval, never };
enum class Overflow {
  block,        // refuse the batch (status `full`): inputs pause until the queue drains below
                // low_watermark
  drop_oldest,  // evict the oldest records to make room, counted
  drop_newest,  // drop the incoming records, counted
};
enum class Verification {
  none,   // open without checking (tests of the checks themselves)
  quick,  // open, structure of every database, first and last records (after a clean stop or
          // a process crash)
  full,   // read every page and record (after an unclean reboot or a detected corruption)
};

struct Options {
  std::filesystem::path dir;  // the LMDB environment's directory; created if missing
  Mode mode = Mode::disk;
  std::uint64_t max_disk_bytes = 1ULL << 30;
  std::uint64_t max_memory_bytes = 64ULL << 20;
  // Bound on the dead-letter store (its own, apart from max_disk_bytes); the oldest entries are
  // evicted, counted, when it is reached.
  std::uint64_t dead_letter_max_bytes = 64ULL << 20;
  Fsync fsync = Fsync::interval;
  std::chrono::nanoseconds fsync_interval = std::chrono::milliseconds(200);
  Overflow overflow = Overflow::block;
  // With overflow = "block": after the queue reported full, it reports not full again once disk
  // use falls to this fraction of max_disk_bytes (hysteresis, so inputs do not flap).
  double low_watermark = 0.9;
  // The consumers (outputs, processors) that read the queue. Their positions are kept across
  // restarts; a consumer seen for the first time starts after the newest record; a stored
  // consumer no longer listed is removed (it would otherwise hold records forever). With no
  // consumers nothing is ever acknowledged, and the queue fills up to its bound.
  std::vector<std::string> consumers;
  Verification verification = Verification::quick;
  // Called about once a second while the verification at open() runs (the agent extends
  // systemd's start timeout with it).
  std::function<void()> on_verification_wait;
  // How many moved-aside damaged queues (queue.damaged-*) to keep; older ones are deleted.
  std::size_t keep_damaged = 3;
};

// Raised by open() when the queue cannot be used at all (permissions, I/O errors, a queue
// written by a newer tank). A damaged queue is not an OpenError: it is moved aside.
class OpenError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct OpenReport {
  // A start after a power cut (another boot id) found commits newer than the last flush: the queue
  // was rolled back to its recovery point (recovery_point.hpp); `rollback` says what was undone.
  bool rolled_back = false;
  std::string rollback;
  bool recovered = false;                 // a damaged queue was moved aside
  std::filesystem::path moved_to;         // where it went
  std::string problem;                    // what was wrong with it
  std::vector<std::filesystem::path> pruned;  // older damaged copies deleted to keep the bound
  std::uint64_t records = 0;              // records found at open
};

enum class CommitStatus {
  committed,  // everything in the batch was applied
  full,       // overflow = "block" and the records do not fit: nothing was applied
  dropped,    // overflow = "drop_newest": the records were dropped (counted); state and
              // acknowledgements in the batch were applied
  too_large,  // the records alone exceed max_commit_bytes() or the whole bound: nothing applied
  failed,     // an error (I/O, disk full, damaged file): nothing applied; `error` says why
};

struct CommitResult {
  CommitStatus status = CommitStatus::committed;
  std::uint64_t first_seq = 0;  // sequence numbers given to the records (0 when none stored)
  std::uint64_t last_seq = 0;
  std::string error;            // for too_large and failed

  bool ok() const { return status == CommitStatus::committed; }
};

// Everything one commit applies atomically.
struct WriteBatch {
  EncodedRecords records;
  // Component state, e.g. {"input/logs/offset/...", "..."}; committed with the records.
  std::vector<std::pair<std::string, std::string>> state_puts;
  std::vector<std::string> state_deletes;
  // Consumer positions: every record up to and including the sequence number is done.
  std::vector<std::pair<std::string, std::uint64_t>> acks;
  // Input that could not become a record, kept with its reason (dead_letter.hpp). Committed with
  // the rest; records, state and dead letters together are at most max_commit_bytes().
  std::vector<DeadLetter> dead_letters;
  // Dead letters to remove (by id; unknown ids are ignored): a purge, or a replay that turns
  // entries back into records. Applied before `dead_letters` are added, and only with the
  // batch's records: when they are dropped (status `dropped`), neither these deletes nor the
  // batch's `dead_letters` are applied (the store stays as it was).
  std::vector<std::uint64_t> dead_letter_deletes;
};

struct DeadLetterQuery {
  std::uint64_t after_id = 0;   // entries with a larger id
  std::size_t limit = 100;
  std::string input;            // only this input ("" = all)
  std::string reason;           // only this reason ("" = all)
  std::int64_t since_ns = 0;    // only entries at or after this time
};

struct DeadLetterStats {
  std::uint64_t entries = 0;
  std::uint64_t disk_bytes = 0;   // LMDB pages the store uses
  std::uint64_t limit_bytes = 0;  // dead_letter_max_bytes (0 when opened read-only)
  std::uint64_t first_id = 0;
  std::uint64_t last_id = 0;
};

struct ReadLimits {
  std::size_t max_records = 1000;
  std::size_t max_bytes = 4 << 20;  // at least one record is returned even if larger
};

// Which records a consumer wants.
struct RouteFilter {
  enum class Origin {
    any,
    raw,      // only records as inputs committed them (what an aggregate processor reads)
    derived,  // only records processors made (kRecordDerived)
  };
  std::vector<std::string> inputs = {};  // records of these inputs; empty = all
  Origin origin = Origin::any;
  // Inputs whose raw records are not wanted, only what processors derived from them (an output
  // behind an aggregate gets the aggregates, not the records they were made from).
  std::vector<std::string> derived_only = {};
  // When not empty (one per entry of `inputs`, which must then be set): a record of inputs[k]
  // passes only at chain level levels[k] (record.hpp chain_level: 0 = as the input committed
  // it). What a stage reads, and what outputs behind a chain of stages read.
  std::vector<unsigned> levels = {};

  // Whether the encoded record (record.hpp) passes.
  bool accepts(std::string_view encoded) const;
};

struct ConsumerStats {
  std::string name;
  std::uint64_t acked = 0;          // every record up to here is done for this consumer
  std::uint64_t lag_records = 0;    // records stored after `acked`
  std::int64_t oldest_unacked_ns = 0;  // ingest time of the first record after `acked`, 0 if none
};

struct Stats {
  Mode mode = Mode::disk;
  std::uint64_t records = 0;  // in all tiers
  std::uint64_t bytes = 0;    // encoded record bytes in all tiers
  std::uint64_t disk_records = 0;
  std::uint64_t disk_bytes = 0;       // encoded record bytes in LMDB
  std::uint64_t disk_used_bytes = 0;  // LMDB pages used by records, meta and state
  std::uint64_t disk_limit_bytes = 0; // max_disk_bytes
  std::uint64_t file_bytes = 0;       // size of data.mdb
  std::uint64_t file_limit_bytes = 0; // max_disk_bytes + disk margin (the LMDB map size)
  std::uint64_t memory_records = 0;
  std::uint64_t memory_bytes = 0;
  std::uint64_t memory_limit_bytes = 0;
  std::uint64_t first_seq = 0;  // 0 when empty
  std::uint64_t last_seq = 0;   // 0 when empty
  std::uint64_t next_seq = 0;
  std::int64_t oldest_ingest_ns = 0;  // 0 when empty
  bool blocked = false;
  std::vector<ConsumerStats> consumers;
};

class Queue {
 public:
  // Opens (creating if needed) the queue in options.dir. Verifies an existing environment in
  // a child process first (options.verification); a damaged one is moved to
  // "<dir>.damaged-<UTC time>" and an empty queue is created, as `report` says. `metrics` may
  // be null. Throws OpenError when the queue cannot be opened or created.
  static std::unique_ptr<Queue> open(const Options& options, const Clock& clock, metrics::Registry* metrics,
                                     OpenReport* report = nullptr);

  // Opens an existing queue for reading only, e.g. from `tank queue peek` while the agent runs.
  // Never writes, never moves anything. Throws OpenError (also for a damaged queue).
  static std::unique_ptr<Queue> open_read_only(const std::filesystem::path& dir, const Clock& clock);

  // Closes: in memory mode spills the records in RAM to LMDB (as far as the bound allows;
  // the rest are counted as dropped), then flushes to disk and closes the environment.
  ~Queue();
  void close();

  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  // Applies `batch` atomically (see CommitStatus). Blocks until the group transaction holding
  // it is committed. The batch stays the caller's: after `full` or `failed` it can be offered
  // again as it is. Never throws for data errors; throws std::logic_error when called on a
  // read-only or closed queue.
  CommitResult commit(const WriteBatch& batch);
  CommitResult append(const EncodedRecords& records);
  // Moves `consumer`'s position to `seq` (never backwards). Returns `failed` for a consumer
  // that is not registered or a position after the newest record.
  CommitResult ack(const std::string& consumer, std::uint64_t seq);

  // Copies the records after `after` (in sequence order) that pass `filter`, up to `limits`.
  // No LMDB transaction is held once it returns. Records evicted by drop_oldest are skipped.
  // Throws std::runtime_error when LMDB fails (a damaged file: see damaged()), and
  // std::logic_error on a closed queue.
  ReadBatch read(std::uint64_t after, const ReadLimits& limits, const RouteFilter* filter = nullptr) const;
  // The same into `into`, which is cleared first and keeps its memory (ReadBatch::clear): for a
  // consumer that reads batch after batch. On an exception `into` is left empty.
  void read(std::uint64_t after, const ReadLimits& limits, const RouteFilter* filter, ReadBatch& into) const;

  // The position of a registered consumer; nullopt for an unknown one.
  std::optional<std::uint64_t> position(const std::string& consumer) const;

  // Registers a consumer at runtime (it starts after the newest record); no-op if known.
  void add_consumer(const std::string& name);
  // Forgets a consumer at runtime (an output or processor removed by a reload), as open() does
  // with a stored consumer no longer listed, deletes the state keys `state_deletes` (its own) in
  // the same commit, and deletes what every remaining consumer has passed: a consumer that is no
  // longer read would hold records for ever. No-op (true) if unknown; false when the commit
  // failed (call again). Throws std::logic_error on a closed or read-only queue.
  bool remove_consumer(const std::string& name, std::vector<std::string> state_deletes = {});

  // The names of the registered consumers.
  std::vector<std::string> consumer_names() const;

  // A value committed with WriteBatch::state_puts, or nullopt.
  std::optional<std::string> state(std::string_view key) const;
  // Every state entry whose key starts with `prefix`, in key order.
  std::vector<std::pair<std::string, std::string>> state_with_prefix(std::string_view prefix) const;

  // Dead letters, oldest first, matching `query`. Entries that do not decode are skipped (and
  // logged). Throws std::runtime_error when LMDB fails.
  std::vector<StoredDeadLetter> dead_letters(const DeadLetterQuery& query) const;
  std::optional<StoredDeadLetter> dead_letter(std::uint64_t id) const;
  DeadLetterStats dead_letter_stats() const;

  Stats stats() const;
  // The sequence number of the oldest record still stored, in either tier (next_seq when the
  // queue is empty): every record before it is gone, acknowledged by every consumer or evicted
  // by overflow = "drop_oldest". Cheap (no LMDB transaction).
  std::uint64_t oldest_seq() const;

  // The encoded bytes of the records on disk after each position (a consumer's lag in bytes),
  // in one pass over the records after the smallest position: O(records), for `tank queue
  // stats`, not for every metrics scrape. Records in the memory tier are not counted (in memory
  // mode they are the running agent's own). Throws std::runtime_error when LMDB fails.
  std::vector<std::uint64_t> disk_bytes_after(std::span<const std::uint64_t> positions) const;

  // True while overflow = "block" refuses records (between `full` and the low watermark).
  bool blocked() const;

  // Called with true when the queue starts refusing records (block policy) and with false when
  // it accepts them again (below the low watermark): one call at a time, in order, each with
  // the state at that moment. Runs on a committing thread after its commit, outside the queue's
  // locks; must not call commit() itself. Only changes after registration are reported: check
  // blocked() once after registering.
  void set_pressure_listener(std::function<void(bool blocked)> listener);

  // True once LMDB reported damage while running (MDB_CORRUPTED and the like). The agent then
  // stops and records it, so the next start checks every page and moves a damaged queue aside.
  bool damaged() const;

  // Makes everything committed so far durable, whatever the fsync mode: a flush (fdatasync of
  // data.mdb, then a new recovery point; see "Durability" in docs/queue.md). Throws
  // std::runtime_error when the flush fails (the previous recovery point still holds).
  void sync();

  // The largest number of record bytes one commit may carry (and one record may have):
  // max_disk_bytes / 64, at least 64 KiB, at most 4 MiB.
  std::uint64_t max_commit_bytes() const;
  // How much larger than max_disk_bytes data.mdb may grow for the queue (see Guarantees).
  std::uint64_t disk_margin_bytes() const;
  // The most data.mdb can ever hold: the LMDB map, max_disk_bytes + the margin +
  // dead_letter_max_bytes (and 1/128 of it for the store's own copy-on-write pages).
  std::uint64_t file_limit_bytes() const;
  const Options& options() const;
  // A random number drawn when this queue was created and kept with it: a queue moved aside and
  // a fresh one start their sequence numbers again, but never share an id (outputs put it in
  // their idempotency keys). 0 only for a queue opened read-only that no tank has started.
  std::uint64_t id() const;

  // The margin for a given bound (what disk_margin_bytes() will be), for documentation and
  // `tank check`.
  static std::uint64_t margin_for(std::uint64_t max_disk_bytes);
  static std::uint64_t max_commit_for(std::uint64_t max_disk_bytes);

 private:
  // The LMDB environment, group commit, the memory tier and flushing live in Impl
  // (queue/queue_impl.hpp, private to agent/queue), so that <lmdb.h> stays inside agent/queue.
  class Impl;

  Queue(const Options& options, const Clock& clock, bool read_only);

  std::unique_ptr<Impl> impl_;
};

std::string_view to_string(Mode mode);
std::string_view to_string(Fsync fsync);
std::string_view to_string(Overflow overflow);
std::string_view to_string(CommitStatus status);

// The version of the LMDB library built into tank, e.g. "0.9.24" (for `tank version`).
std::string lmdb_version();

}  // namespace tank::queue
