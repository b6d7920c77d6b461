// Flushing (fsync = "interval" and "never"), the recovery point (recovery_point.hpp), and close().

#include "queue/queue_impl.hpp"

#include <unistd.h>

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/fs.hpp"
#include "common/units.hpp"
#include "queue/lmdb.hpp"
#include "queue/lmdb_file.hpp"
#include "queue/queue_metrics.hpp"
#include "queue/recovery_point.hpp"

namespace tank::queue {

// ---------------------------------------------------------------------------------------------
// Flushing and the recovery point (recovery_point.hpp)

namespace {

// How often the flushing thread looks whether the pinned snapshot holds too many pages.
constexpr std::chrono::milliseconds kPinCheckEvery{50};

}  // namespace

void Queue::Impl::start_sync_thread() {
  if (options_.fsync == Fsync::always) return;
  // fsync = "interval": a flush every fsync_interval (fixed rate: the loss window after a power cut
  // is at most one interval plus one flush). fsync = "never": no periodic flush. In both, the
  // pinned snapshot keeps every page freed since it from being reused (each small commit frees
  // some 6-8 pages: the last leaf, its branches, the meta and free-page trees), so once those pages
  // would take half of the disk margin the thread flushes early: the fallback never takes room from
  // the queue, and the file stays within its limit (a group that finds the map full anyway flushes
  // at once, see run_group).
  const bool interval = options_.fsync == Fsync::interval;
  const auto period = interval ? options_.fsync_interval : std::chrono::nanoseconds(std::chrono::hours(24 * 365));
  const auto look = std::min<std::chrono::nanoseconds>(period, kPinCheckEvery);
  sync_thread_ = std::thread([this, interval, period, look] {
    auto next_flush = std::chrono::steady_clock::now() + period;
    std::unique_lock lock(sync_mutex_);
    while (!stop_sync_) {
      sync_cv_.wait_for(lock, look, [this] { return stop_sync_; });
      if (stop_sync_) break;
      const auto now = std::chrono::steady_clock::now();
      const bool scheduled = interval && now >= next_flush;
      if (scheduled) next_flush = std::max(next_flush + period, now);  // fixed rate, never a burst
      lock.unlock();
      const bool due = (scheduled && unsynced_.exchange(false)) || pinned_free_pages() * page_size_ > margin_bytes_ / 2;
      if (due) {
        if (std::string error = flush(0); !error.empty()) {
          commit_failure_episode_.occur(fmt::format("flushing the queue to disk failed: {}; the previous flush stays "
                                                    "the point a power cut falls back to",
                                                    error));
          unsynced_ = true;
        }
      }
      lock.lock();
    }
  });
}

// Pages of the pinned snapshot freed since: LMDB keeps them until the pin moves. Those the patch
// already holds apart, plus the free-page entries since the pin not looked at yet.
std::uint64_t Queue::Impl::pinned_free_pages() const {
  std::uint64_t pinned = 0;
  {
    std::lock_guard flush_lock(flush_mutex_);
    if (pinned_ == nullptr) return 0;
    pinned = pinned_txnid_;
  }
  std::size_t held = 0;
  mdb_env_protected_pages(env_, static_cast<std::size_t>(pinned), nullptr, &held);
  try {
    lmdb::Txn txn(env_, MDB_RDONLY);
    lmdb::Cursor cursor(txn.get(), 0);
    std::size_t from = static_cast<std::size_t>(pinned);
    MDB_val k{sizeof from, &from};
    MDB_val v;
    std::uint64_t pages = 0;
    for (bool more = cursor.get(k, v, MDB_SET_RANGE); more; more = cursor.get(k, v, MDB_NEXT)) {
      std::size_t count = 0;
      if (v.mv_size >= sizeof count) std::memcpy(&count, v.mv_data, sizeof count);
      pages += count;
    }
    return pages + held;
  } catch (const lmdb::Error&) {
    return held;
  }
}

std::string Queue::Impl::flush(std::uint32_t flags) {
  // 1. Pin the newest snapshot while no group is being written, so that the meta page in the file
  //    is the snapshot's and no commit is half-way: every commit acknowledged before `pinned_mono`
  //    is in it.
  //    The flush goes before any batch that has not started: a producer that commits back to back
  //    would otherwise take the leadership again every time before this thread wakes, and keep
  //    the flush (and the loss window) waiting while every commit woke this thread in vain.
  {
    std::unique_lock lock(mutex_);
    ++flushes_waiting_;
    cv_.wait(lock, [this] { return !leader_active_; });
    --flushes_waiting_;
    leader_active_ = true;
  }
  std::lock_guard flush_lock(flush_mutex_);
  return flush_locked(flags, false);
}

std::string Queue::Impl::flush_locked(std::uint32_t flags, bool keep_leading) {
  bool leading = !keep_leading;
  auto step_down = [&] {
    if (!leading) return;
    leading = false;
    {
      std::lock_guard lock(mutex_);
      leader_active_ = false;
    }
    cv_.notify_all();
  };
  struct StepDown {
    decltype(step_down)& f;
    ~StepDown() { f(); }
  } step_down_at_exit{step_down};

  const std::filesystem::path data = options_.dir / "data.mdb";
  RecoveryPoint point;
  point.flags = flags | (options_.fsync == Fsync::always ? RecoveryPoint::kEveryCommitDurable : 0);
  point.pinned_mono_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::steady_clock::now().time_since_epoch())
                             .count();
  point.pinned_wall_ns = clock_.wall_ns();
  MDB_txn* pin = nullptr;
  bool pin_protected = false;
  if (int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &pin); rc != 0) {
    return fmt::format("cannot begin a read transaction: {}", mdb_strerror(rc));
  }
  struct PinGuard {
    MDB_env* env;
    MDB_txn*& txn;
    bool& is_protected;
    ~PinGuard() {
      if (txn == nullptr) return;
      const std::size_t txnid = mdb_txn_id(txn);
      mdb_txn_abort(txn);
      if (is_protected) mdb_env_unprotect(env, txnid);
    }
  } pin_guard{env_, pin, pin_protected};
  point.txnid = mdb_txn_id(pin);
  {
    std::lock_guard lock(mutex_);
    point.next_seq = std::max(next_seq_, seq_reserved_);
    point.records = disk_records_ + memory_records_;
  }
  try {
    const lmdb_file::Metas metas = lmdb_file::read_metas(data);
    const int newest = metas.newest();
    if (newest < 0 || metas.slots[newest].txnid != point.txnid) {
      return fmt::format("the meta page of transaction {} is not in {} (newest: {})", point.txnid, data.string(),
                         newest < 0 ? std::string("none valid") : std::to_string(metas.slots[newest].txnid));
    }
    point.meta_page = metas.slots[newest].raw;
    point.page_size = metas.slots[newest].page_size;
  } catch (const lmdb_file::IoError& e) {
    return e.what();
  }
  // What this flush writes: every page the commits since the previous flush wrote (counted by
  // third_party/lmdb's patch while the previous snapshot was protected), each once.
  std::optional<std::size_t> written_pages;
  if (pinned_ != nullptr) {
    std::size_t pages = 0;
    if (mdb_env_protected_pages(env_, pinned_txnid_, &pages, nullptr) == 0) written_pages = pages;
  }
  // Keep the snapshot's own pages from being overwritten until the next flush has replaced it;
  // pages written and freed again after it are reused (third_party/lmdb/README.md).
  if (options_.fsync != Fsync::always && !test_no_pin_) {
    if (int rc = mdb_env_protect(env_, pin); rc != 0) {
      return fmt::format("cannot keep the snapshot of transaction {}: {}", point.txnid, mdb_strerror(rc));
    }
    pin_protected = true;
  }
  step_down();  // commits go on while the file is flushed
  if (test_no_pin_) {
    mdb_txn_abort(pin);
    pin = nullptr;
  }

  // 2. The snapshot's pages on stable storage (and everything written before them).
  if (!test_skip_flush_) {
    if (int rc = mdb_env_sync(env_, 1); rc != 0) return fmt::format("fdatasync of {}: {}", data.string(), mdb_strerror(rc));
  }
  // 3. The recovery point naming it, on stable storage.
  struct stat st {};
  if (::stat(data.c_str(), &st) != 0) return fmt::format("cannot stat {}: {}", data.string(), std::strerror(errno));
  point.data_device = static_cast<std::uint64_t>(st.st_dev);
  point.data_inode = static_cast<std::uint64_t>(st.st_ino);
  point.boot_id = fs::boot_id();
  if (std::string error = recovery_file_->write(point); !error.empty()) return error;
  metrics_->fsyncs.Increment();

  // 4. What this flush wrote, then the new pin replaces the previous one.
  if (written_pages) {
    // Plus the meta pages: at most the two (the page cache keeps only their last content).
    const std::uint64_t commits = point.txnid > pinned_txnid_ ? point.txnid - pinned_txnid_ : 0;
    metrics_->written_bytes.Increment(
        static_cast<double>((*written_pages + std::min<std::uint64_t>(commits, 2)) * page_size_));
    accounted_txnid_ = 0;  // account_written() starts afresh if it is ever used again
  } else if (pin != nullptr) {
    try {
      account_written(pin);
    } catch (const lmdb::Error& e) {
      log::debug(kComponent, "counting the pages written failed: {}", e.what());
    }
  }
  release_pin_locked();
  pinned_txnid_ = point.txnid;
  // With fsync = "always" every commit is durable: nothing to fall back to, nothing to keep.
  if (options_.fsync != Fsync::always) {
    std::swap(pinned_, pin);
    pin_protected = false;  // pinned_ owns it now
  }
  return {};
}

void Queue::Impl::release_pin_locked() {
  if (pinned_ == nullptr) return;
  mdb_txn_abort(pinned_);
  mdb_env_unprotect(env_, static_cast<std::size_t>(pinned_txnid_));
  pinned_ = nullptr;
}

// Pages written by the commits since the last accounting, up to `txn`'s snapshot: every page a
// commit wrote was allocated (from the free list or the end of the file) and is now in use or
// freed again, and no page freed after the last accounting has been reused (with fsync =
// "interval" or "never" the last flush's snapshot is pinned; with "always" every commit is
// accounted right after it), so each page was written once: allocated = (pages in use now - then)
// + pages freed in between (the free-page tree's entries, keyed by the freeing transaction). Plus
// the meta pages: one per commit with "always" (each is written with O_DSYNC), at most the two
// per flush otherwise (the page cache keeps only their last content).
void Queue::Impl::account_written(MDB_txn* txn) {
  if (records_dbi_ == 0) return;  // the flush at open, before the databases are opened
  std::uint64_t used = 0;
  for (MDB_dbi dbi : {MDB_dbi{0}, MDB_dbi{1}, meta_dbi_, state_dbi_, dead_letters_dbi_}) {
    used += pages_of(stat_of(txn, dbi));
  }
  for (const Segment& segment : segments_of(txn)) used += pages_of(stat_of(txn, segment.dbi));
  const std::uint64_t txnid = mdb_txn_id(txn);
  if (accounted_txnid_ == 0 || txnid <= accounted_txnid_) {
    accounted_pages_ = used;
    accounted_txnid_ = txnid;
    return;
  }
  std::uint64_t freed = 0;
  lmdb::Cursor cursor(txn, 0);
  std::size_t from = static_cast<std::size_t>(accounted_txnid_ + 1);
  MDB_val k{sizeof from, &from};
  MDB_val v;
  for (bool more = cursor.get(k, v, MDB_SET_RANGE); more; more = cursor.get(k, v, MDB_NEXT)) {
    std::size_t key = 0;
    if (k.mv_size == sizeof key) std::memcpy(&key, k.mv_data, sizeof key);
    if (key > txnid) break;
    std::size_t count = 0;
    if (v.mv_size >= sizeof count) std::memcpy(&count, v.mv_data, sizeof count);
    freed += count;
  }
  const std::uint64_t allocated = used + freed > accounted_pages_ ? used + freed - accounted_pages_ : 0;
  const std::uint64_t commits = txnid - accounted_txnid_;
  const std::uint64_t meta_pages = options_.fsync == Fsync::always ? commits : std::min<std::uint64_t>(commits, 2);
  metrics_->written_bytes.Increment(static_cast<double>((allocated + meta_pages) * page_size_));
  accounted_pages_ = used;
  accounted_txnid_ = txnid;
}

Queue::~Queue() {
  try {
    impl_->close();
  } catch (const std::exception& e) {
    log::error(kComponent, "closing the queue failed: {}", e.what());
  }
}

void Queue::Impl::close() {
  {
    std::unique_lock lock(mutex_);
    if (closed_) return;
    // Let a group being written finish; later commit() calls are refused.
    closed_ = true;
    cv_.wait(lock, [this] { return !leader_active_; });
  }
  if (metrics_) metrics_->detach();
  {
    std::lock_guard lock(sync_mutex_);
    stop_sync_ = true;
  }
  sync_cv_.notify_all();
  if (sync_thread_.joinable()) sync_thread_.join();
  std::unique_lock env_lock(env_mutex_);  // waits for readers in progress
  if (env_ == nullptr) return;
  if (!read_only_ && !memory_.empty()) save_memory_tier();
  if (!read_only_ && recovery_file_) {
    if (std::string error = flush(RecoveryPoint::kClosedCleanly); !error.empty()) {
      log::error(kComponent, "the last flush of the queue failed: {}; the previous flush stays the point a power cut "
                 "falls back to", error);
    }
  }
  {
    std::lock_guard flush_lock(flush_mutex_);
    release_pin_locked();
  }
  mdb_env_close(env_);
  env_ = nullptr;
  std::lock_guard release_lock(release_mutex_);
  if (statm_fd_ >= 0) ::close(statm_fd_);
  statm_fd_ = -1;
  map_start_ = map_end_ = 0;
}

// Writes the RAM tier to LMDB at close, oldest first, in transactions of at most
// max_commit_bytes, as far as the disk bound allows; what does not fit is counted as dropped.
void Queue::Impl::save_memory_tier() {
  std::uint64_t saved = 0;
  std::uint64_t lost = 0;
  std::uint64_t lost_bytes = 0;
  std::vector<std::pair<std::uint64_t, std::string_view>> records;
  for (const MemoryChunk& chunk : memory_) {
    for (std::size_t i = chunk.head; i < chunk.records.size(); ++i) records.emplace_back(chunk.seq(i), chunk.records.encoded(i));
  }
  std::size_t next = 0;
  int attempts = 0;
  while (next < records.size()) {
    std::size_t end = next;
    std::uint64_t bytes = 0;
    while (end < records.size() && (end == next || bytes + records[end].second.size() <= max_commit_bytes_)) {
      bytes += records[end].second.size();
      ++end;
    }
    try {
      lmdb::Txn txn(env_, 0);
      std::uint64_t stored = 0;
      std::uint64_t stored_bytes = 0;
      bool full = false;
      {
        // Each record goes to the segment whose run it falls in (the RAM tier may hold records older
        // than the disk tier's: it overflowed to disk), or before the oldest; a free slot if none.
        std::vector<Segment> segments = segments_in_write(txn.get());
        if (segments.empty()) segments.push_back(Segment{0, slot_dbis_[0], records[next].first, records[next].first});
        for (std::size_t i = next; i < end; ++i) {
          std::string_view rec = records[i].second;
          const std::uint64_t need = (kNodeHeader + kKeyBytes + rec.size()) / page_size_ + 2;
          if (used_pages_of(txn.get(), segments) + need > bound_pages_) {
            full = true;
            break;
          }
          std::size_t at = 0;
          while (at + 1 < segments.size() && segments[at + 1].first <= records[i].first) ++at;
          segments[at].first = std::min(segments[at].first, records[i].first);
          segments[at].last = std::max(segments[at].last, records[i].first);
          lmdb::SeqKey key(records[i].first);
          MDB_val k = key.val();
          MDB_val v{rec.size(), nullptr};
          lmdb::check(mdb_put(txn.get(), segments[at].dbi, &k, &v, MDB_RESERVE), "saving the memory tier");
          std::memcpy(v.mv_data, rec.data(), rec.size());
          seal_stored_record(records[i].first, static_cast<char*>(v.mv_data), rec.size());
          ++stored;
          stored_bytes += rec.size();
        }
      }
      put_meta(txn.get(), meta_dbi_, "bytes", disk_bytes_ + stored_bytes);
      put_meta(txn.get(), meta_dbi_, "next_seq", next_seq_);
      txn.commit();
      disk_bytes_ += stored_bytes;
      saved += stored;
      next += stored;
      if (full) break;
    } catch (const lmdb::Error& e) {
      // MDB_MAP_FULL right after large deletions: pages freed by the last transactions become
      // reusable two transactions later. Commit empty transactions and try again, a few times.
      if (e.code() == MDB_MAP_FULL && ++attempts <= 3) {
        // The snapshot kept for a power cut holds the pages freed since the last flush: move it on.
        if (std::string error = flush(0); !error.empty()) log::warn(kComponent, "flushing the queue failed: {}", error);
        for (int i = 0; i < 2; ++i) {
          lmdb::Txn empty(env_, 0);
          put_meta(empty.get(), meta_dbi_, "next_seq", next_seq_);
          empty.commit();
        }
        continue;
      }
      log::error(kComponent, "saving the records held in memory failed: {}", e.what());
      break;
    }
  }
  for (std::size_t i = next; i < records.size(); ++i) {
    ++lost;
    lost_bytes += records[i].second.size();
  }
  if (lost > 0) {
    if (metrics_) metrics_->dropped_newest_records.Increment(static_cast<double>(lost));
    log::error(kComponent,
               "dropped {} records ({}) held in memory at shutdown: the disk tier (max_disk_bytes = {}) had no room "
               "for them",
               lost, units::human_size(lost_bytes), units::format_size(options_.max_disk_bytes));
  }
  if (saved > 0) log::info(kComponent, "saved the {} records held in memory to disk", saved);
  memory_.clear();
  memory_records_ = 0;
  memory_bytes_ = 0;
  memory_encoded_bytes_ = 0;
}

void Queue::Impl::require_writable() const {
  if (read_only_) throw std::logic_error("the queue was opened read-only");
}

}  // namespace tank::queue
