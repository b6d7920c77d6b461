// Group commit: commit() and its kin queue a batch; the first waiter leads and writes the group in one
// LMDB transaction (queue_apply.cpp applies each batch), then updates the committed state.

#include "queue/queue_impl.hpp"

#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include <fmt/format.h>

#include "common/liveness.hpp"
#include "common/units.hpp"
#include "queue/lmdb.hpp"
#include "queue/queue_metrics.hpp"

namespace tank::queue {

// ---------------------------------------------------------------------------------------------
// Commit

CommitResult Queue::Impl::append(const EncodedRecords& records) {
  require_writable();
  Pending p;
  p.records = &records;
  submit(p);
  return std::move(p.result);
}

CommitResult Queue::Impl::ack(const std::string& consumer, std::uint64_t seq) {
  WriteBatch batch;
  batch.acks.emplace_back(consumer, seq);
  return commit(batch);
}

void Queue::Impl::add_consumer(const std::string& name) {
  require_writable();
  {
    std::lock_guard lock(mutex_);
    if (consumers_.contains(name)) return;
  }
  Pending p;
  p.new_consumers.push_back(name);
  submit(p);
}

bool Queue::Impl::remove_consumer(const std::string& name, std::vector<std::string> state_deletes) {
  require_writable();
  {
    std::lock_guard lock(mutex_);
    if (!consumers_.contains(name)) return true;
  }
  WriteBatch batch;
  batch.state_deletes = std::move(state_deletes);
  Pending p;
  p.batch = &batch;
  p.removed_consumers.push_back(name);
  submit(p);
  return p.result.ok();
}

std::vector<std::string> Queue::Impl::consumer_names() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [name, pos] : consumers_) out.push_back(name);
  return out;
}

CommitResult Queue::Impl::commit(const WriteBatch& batch) {
  require_writable();
  Pending p;
  p.records = &batch.records;
  p.batch = &batch;
  submit(p);
  return std::move(p.result);
}

void Queue::Impl::submit(Pending& p) {
  std::unique_lock lock(mutex_);
  if (closed_) throw std::logic_error("the queue is closed");
  pending_.push_back(&p);
  while (!p.done) {
    if (leader_active_ || flushes_waiting_ > 0) {
      // Another thread writes this batch with its group: this one waits (only the writer is
      // judged by the watchdog: a slow disk shows there once).
      liveness::Waiting waiting;
      cv_.wait(lock);
      continue;
    }
    if (closed_) {
      // close() ran while this batch waited: it was not written.
      pending_.erase(std::remove(pending_.begin(), pending_.end(), &p), pending_.end());
      p.result = CommitResult{CommitStatus::failed, 0, 0, "the queue is closed (tank is stopping)"};
      return;
    }
    // Become the leader: take the oldest waiting batches, up to max_commit_bytes of records
    // (at least one), and write them in one transaction.
    leader_active_ = true;
    std::vector<Pending*> group;
    std::uint64_t bytes = 0;
    std::size_t taken = 0;
    while (taken < pending_.size()) {
      std::uint64_t b = pending_[taken]->recs().bytes();
      if (taken > 0 && bytes + b > max_commit_bytes_) break;
      bytes += b;
      group.push_back(pending_[taken]);
      ++taken;
    }
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(taken));
    lock.unlock();
    run_group(group);
    lock.lock();
  }
}

// Runs with leader_active_ set and mutex_ released; returns with leader_active_ cleared and
// every batch of the group done.
void Queue::Impl::run_group(std::vector<Pending*>& group) {
  auto started = std::chrono::steady_clock::now();
  Group g;
  try {
    bool written = write_group(group, g, true);
    if (!written) {
      // A reader whose process died without ending its transaction pins pages until its slot
      // is cleared: always clear dead readers first.
      int dead = 0;
      mdb_reader_check(env_, &dead);
      if (dead > 0) written = write_group(group, g, true);
    }
    if (!written && options_.fsync != Fsync::always && !test_no_pin_) {
      // The snapshot kept for a power cut (the last flush) holds every page freed since: flush now
      // to move it on. Commits wait meanwhile (this thread leads the group), once.
      std::lock_guard flush_lock(flush_mutex_);
      if (pinned_ != nullptr) {
        if (std::string error = flush_locked(0, true); error.empty()) {
          written = write_group(group, g, true);
        } else {
          log::warn(kComponent, "flushing the queue to make room failed: {}", error);
        }
      }
    }
    // MDB_MAP_FULL: the file reached the map size because freed pages could not be reused while
    // a reader held an older snapshot. A reader of this process (an output copying a batch) is
    // done within milliseconds even when the scheduler pauses it, so wait a little for it to
    // move on, clearing the slots of readers whose process died. While an episode is known to
    // be going on (a reader that stays), do not wait again for every group.
    for (int attempt = 0; !written && !map_full_episode_.active() && attempt < 8; ++attempt) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1 << attempt));
      int dead = 0;
      mdb_reader_check(env_, &dead);
      written = write_group(group, g, true);
    }
    if (!written) {
      // A reader in another process holds an old snapshot. Write the group without its
      // records, which count as a full queue.
      map_full_episode_.occur(fmt::format(
          "the queue file reached its size limit ({}) because another process holds an old read transaction (see "
          "`mdb_stat -r {}`); refusing records until it ends",
          units::human_size(map_bytes_), options_.dir.string()));
      write_group(group, g, false);
    } else if (g.appended_records > 0) {
      map_full_episode_.end("the queue file has room again");
    }
  } catch (const std::exception& e) {
    // write_group handles LMDB errors; anything else is a bug, but must not leave waiters hanging.
    log::error(kComponent, "internal error while writing to the queue: {}", e.what());
    for (Pending* p : group) p->result = CommitResult{CommitStatus::failed, 0, 0, e.what()};
  }
  metrics_->commit_seconds.Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  {
    std::lock_guard lock(mutex_);
    for (Pending* p : group) p->done = true;
    update_pressure_locked();
    leader_active_ = false;
  }
  cv_.notify_all();
  notify_pressure();
}

void Queue::Impl::reset_group(Group& g) const {
  g = Group{};
  g.next_seq = next_seq_;
  g.disk_bytes = disk_bytes_;
  g.disk_records = disk_records_;
  g.segments = segments_;
  g.front = front_;
  g.acknowledged_kept = acknowledged_kept_;
  g.consumers = consumers_;
  g.memory_bytes = memory_bytes_;
}

// Writes one group transaction. Returns false (nothing applied) on MDB_MAP_FULL when records
// were allowed, so the caller can retry; true otherwise, with each batch's result set and the
// committed state updated.
bool Queue::Impl::write_group(std::vector<Pending*>& group, Group& g, bool allow_records) {
  for (bool careful : {false, true}) {
    reset_group(g);
    for (Pending* p : group) p->result = CommitResult{};
    std::optional<lmdb::Txn> txn;
    try {
      txn.emplace(env_, 0);
      g.txn = g.root = txn->get();
      for (Pending* p : group) apply_batch(g, *p, allow_records, careful);
      if (g.consumers_changed) {
        for (const auto& [name, pos] : g.consumers) {
          auto it = consumers_.find(name);
          if (it == consumers_.end() || it->second != pos) put_meta(g.txn, meta_dbi_, consumer_key(name), pos);
        }
        g.wrote = true;
      }
      if (g.seq_reserved != 0) {
        put_meta(g.txn, meta_dbi_, "seq_reserved", g.seq_reserved);
        g.wrote = true;
      }
      if (g.wrote) {
        put_meta(g.txn, meta_dbi_, "next_seq", std::max(g.next_seq, g.seq_reserved));
        put_meta(g.txn, meta_dbi_, "bytes", g.disk_bytes);
        if (g.front != front_) put_meta(g.txn, meta_dbi_, "front", g.front);
        capture_disk_shape(g);
      }
      // In memory mode a reader takes its disk snapshot and its copy of the RAM tier under
      // mutex_; committing and updating the RAM tier under it too means a reader sees both
      // before or both after, never a disk batch without the RAM records older than it.
      std::unique_lock lock(mutex_, std::defer_lock);
      if (options_.mode == Mode::memory) lock.lock();
      if (g.wrote) {
        txn->commit();
        metrics_->commits.Increment();
        if (options_.fsync == Fsync::interval) unsynced_ = true;
        if (options_.fsync == Fsync::always) {
          try {
            lmdb::Txn snapshot(env_, MDB_RDONLY);
            account_written(snapshot.get());
          } catch (const lmdb::Error& e) {
            log::debug(kComponent, "counting the pages written failed: {}", e.what());
          }
        }
      } else {
        txn->abort();
      }
      if (!lock.owns_lock()) lock.lock();
      finish_group_locked(g, true);
      lock.unlock();
      if (g.wrote) commit_failure_episode_.end("writing to the queue works again");
      return true;
    } catch (const RetryCarefully&) {
      txn.reset();
      continue;
    } catch (const lmdb::Error& e) {
      txn.reset();  // aborts
      if (e.code() == MDB_MAP_FULL && allow_records) return false;
      metrics_->commit_failures.Increment();
      std::string reason = e.what();
      if (e.code() == ENOSPC || e.code() == EIO || e.code() == EFBIG || e.code() == EDQUOT) {
        // LMDB reports a short write on a full device as EIO: ask the device.
        struct statvfs fs {};
        if (e.code() == ENOSPC ||
            (::statvfs(options_.dir.c_str(), &fs) == 0 &&
             static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize < max_commit_bytes_ + 4 * page_size_)) {
          reason = "no space left on the device holding the queue";
        }
      }
      if (lmdb::is_damage(e.code())) note_damage(e.what());
      commit_failure_episode_.occur(fmt::format("writing to the queue failed: {}; the records were refused and stay "
                                                "with their sources",
                                                reason));
      for (Pending* p : group) {
        if (p->result.status == CommitStatus::committed || p->result.status == CommitStatus::dropped) {
          p->result = CommitResult{CommitStatus::failed, 0, 0, reason};
        }
      }
      std::lock_guard lock(mutex_);
      finish_group_locked(g, false);
      return true;
    }
  }
  return true;
}

void Queue::Impl::finish_group_locked(Group& g, bool committed) {
  if (committed) {
    for (const auto& [level, line] : g.consumer_news) log::emit(level, kComponent, line);
    next_seq_ = g.next_seq;
    if (g.seq_reserved != 0) seq_reserved_ = g.seq_reserved;
    consumers_ = g.consumers;
    if (g.wrote) {
      disk_bytes_ = g.disk_bytes;
      disk_records_ = g.disk_records;
      disk_pages_ = g.disk_pages;
      segments_ = std::move(g.segments);
      front_ = g.front;
      acknowledged_kept_ = g.acknowledged_kept;
      first_disk_seq_ = g.first_disk_seq;
      last_disk_seq_ = g.last_disk_seq;
    }
    if (g.evicted_records > 0) ++evictions_;  // the read spans taken before are void (ReadSpan)
    // RAM tier: evictions from the front, then what every consumer has passed, then additions.
    std::uint64_t evict = g.memory_evicted;
    std::uint64_t min_pos = 0;
    if (!consumers_.empty()) {
      min_pos = UINT64_MAX;
      for (const auto& [n, pos] : consumers_) min_pos = std::min(min_pos, pos);
    }
    while (!memory_.empty()) {
      MemoryChunk& c = memory_.front();
      while (c.head < c.records.size() && (evict > 0 || c.front_seq() <= min_pos)) {
        std::uint64_t b = c.records.encoded(c.head).size();
        memory_bytes_ -= std::min(memory_bytes_, b + kMemoryRecordOverhead);
        memory_encoded_bytes_ -= std::min(memory_encoded_bytes_, b);
        memory_records_ -= 1;
        if (evict > 0) {
          --evict;
        } else {
          ++g.acknowledged_records;
        }
        ++c.head;
      }
      if (c.head < c.records.size()) break;
      memory_.pop_front();
    }
    for (MemoryChunk& c : g.memory_added) {
      memory_records_ += c.records.size();
      memory_bytes_ += memory_cost(c.records);
      memory_encoded_bytes_ += c.records.bytes();
      memory_.push_back(std::move(c));
    }

    metrics_->appended_records.Increment(static_cast<double>(g.appended_records));
    metrics_->appended_bytes.Increment(static_cast<double>(g.appended_bytes));
    metrics_->acknowledged_records.Increment(static_cast<double>(g.acknowledged_records));
    metrics_->dropped_oldest_records.Increment(static_cast<double>(g.evicted_records));
    metrics_->dropped_oldest_bytes.Increment(static_cast<double>(g.evicted_bytes));
    metrics_->dropped_newest_records.Increment(static_cast<double>(g.dropped_newest_records));
    metrics_->dropped_newest_bytes.Increment(static_cast<double>(g.dropped_newest_bytes));
    for (const auto& [key, n] : g.dead_lettered) {
      metrics_->dead_letters.Add({{"input", key.first}, {"reason", key.second}}).Increment(static_cast<double>(n));
    }
    if (g.dead_letters_evicted > 0) {
      metrics_->dead_letters_evicted.Increment(static_cast<double>(g.dead_letters_evicted));
      dead_letter_episode_.occur(fmt::format("the dead-letter store is full (dead_letter.max_bytes = {}): evicting the "
                                             "oldest entries (counted in tank_dead_letter_evicted_total)",
                                             units::format_size(options_.dead_letter_max_bytes)));
    }
    if (g.evicted_records > 0) g.saw_full = true;
  }
  metrics_->refused_full.Increment(static_cast<double>(g.refused_full));
  metrics_->refused_too_large.Increment(static_cast<double>(g.refused_too_large));
  if (g.saw_full) {
    std::string_view what = options_.overflow == Overflow::block
                                ? "refuses records; inputs pause until it drains below the low watermark"
                            : options_.overflow == Overflow::drop_newest
                                ? "drops incoming records (counted in tank_queue_dropped_records_total)"
                                : "evicts the oldest records (counted in tank_queue_dropped_records_total)";
    full_episode_.occur(fmt::format("queue full ({} of {}): overflow = \"{}\" {}",
                                    units::human_size(disk_pages_ * page_size_),
                                    units::human_size(options_.max_disk_bytes), to_string(options_.overflow), what));
    if (options_.overflow == Overflow::block) blocked_pending_ = true;
  }
}

void Queue::Impl::update_pressure_locked() {
  const bool below_low =
      static_cast<double>(disk_pages_) <= options_.low_watermark * static_cast<double>(bound_pages_);
  if (blocked_pending_) {
    blocked_ = true;
    blocked_pending_ = false;
  } else if (blocked_ && below_low) {
    blocked_ = false;
  }
  if (full_episode_.active() && below_low && !blocked_) {
    full_episode_.end(fmt::format("queue below its low watermark ({} of {}): {}",
                                  units::human_size(disk_pages_ * page_size_),
                                  units::human_size(options_.max_disk_bytes),
                                  options_.overflow == Overflow::block ? "accepting records again"
                                                                       : "no longer dropping records"));
  }
}

void Queue::Impl::notify_pressure() {
  // One notification at a time, each telling the state as it is now: a leader delayed between
  // its commit and this call cannot deliver a stale "blocked" after a newer "accepting".
  std::lock_guard notify_lock(notify_mutex_);
  bool now = false;
  std::function<void(bool)> listener;
  {
    std::lock_guard lock(mutex_);
    now = blocked_;
    listener = pressure_listener_;
  }
  if (now == notified_blocked_) return;
  notified_blocked_ = now;
  if (listener) listener(now);
}

void Queue::Impl::note_damage(const std::string& what) const {
  if (!damaged_.exchange(true)) {
    log::error(kComponent, "the queue in {} is damaged ({}); it will be checked in full at the next start",
               options_.dir.string(), what);
  }
}

}  // namespace tank::queue
