// Applying one batch inside a group transaction: checks, acknowledgements, records (disk or memory
// tier), state and dead letters, and the overflow policies when the queue is full.

#include "queue/queue_impl.hpp"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "common/build_info.hpp"
#include "common/units.hpp"
#include "queue/lmdb.hpp"

namespace tank::queue {

// ---------------------------------------------------------------------------------------------
// Applying a batch

void Queue::Impl::apply_batch(Group& g, Pending& p, bool allow_records, bool careful) {
  static const WriteBatch kNothing;
  const WriteBatch& b = p.batch != nullptr ? *p.batch : kNothing;
  const EncodedRecords& records = p.recs();

  // Checks first: a batch that fails one has nothing applied.
  for (const auto& [name, seq] : b.acks) {
    if (!g.consumers.contains(name)) {
      p.result = {CommitStatus::failed, 0, 0, fmt::format("unknown consumer \"{}\"", name)};
      return;
    }
    if (seq >= g.next_seq) {
      p.result = {CommitStatus::failed, 0, 0,
                  fmt::format("consumer \"{}\" acknowledged record {} but the newest record is {}", name, seq,
                              g.next_seq - 1)};
      return;
    }
  }
  std::uint64_t state_bytes = 0;
  for (const auto& [key, value] : b.state_puts) {
    if (key.empty() || key.size() > 511) {
      p.result = {CommitStatus::failed, 0, 0, "state keys must be 1 to 511 bytes"};
      return;
    }
    state_bytes += key.size() + value.size();
  }
  for (const DeadLetter& d : b.dead_letters) state_bytes += commit_bytes(d);
  if (records.bytes() + state_bytes > max_commit_bytes_) {
    ++g.refused_too_large;
    p.result = {CommitStatus::too_large, 0, 0,
                fmt::format("a batch of {} exceeds the largest commit, {} (max_disk_bytes / 64, at most 4 MiB); "
                            "split it",
                            units::human_size(records.bytes() + state_bytes), units::human_size(max_commit_bytes_))};
    return;
  }
  const std::uint64_t record_pages = records.empty() ? 0 : estimate_pages(records);
  const bool fits_in_memory =
      options_.mode == Mode::memory && memory_cost(records) <= options_.max_memory_bytes;
  if (record_pages > bound_pages_ && !fits_in_memory) {
    ++g.refused_too_large;
    p.result = {CommitStatus::too_large, 0, 0,
                fmt::format("a batch of {} does not fit in a queue of {}", units::human_size(records.bytes()),
                            units::human_size(options_.max_disk_bytes))};
    return;
  }

  if (!p.removed_consumers.empty() && records.empty() && b.state_puts.empty() && b.dead_letters.empty()) {
    // Forgetting a consumer only frees: never refused for room (the queue may be over a lowered
    // bound, and this is what brings it down).
    apply_parts(g, p, true);
    return;
  }
  const std::uint64_t estimate = record_pages + estimate_state_pages(b);
  const bool mixed = !b.acks.empty() && !records.empty();
  const bool tight = used_pages(g) + estimate > bound_pages_;
  const bool refuse_records = !allow_records && !records.empty();
  if (!careful && !mixed && !tight && !refuse_records) {
    apply_parts(g, p, true);
    if (used_pages(g) > bound_pages_) throw RetryCarefully{};
    return;
  }

  // All or nothing, in a nested transaction: the batch's acknowledgements and (drop_oldest)
  // evictions free room for its records; if it still does not fit, none of it happened.
  if (!refuse_records && try_nested(g, p, true)) return;
  std::string why = refuse_records ? std::string("the queue file is at its size limit")
                                   : fmt::format("the queue is full ({} of {})",
                                                 units::human_size(used_pages(g) * page_size_),
                                                 units::human_size(options_.max_disk_bytes));
  if (records.empty()) {
    // State and acknowledgements alone do not fit.
    g.saw_full = true;
    ++g.refused_full;
    p.result = {CommitStatus::full, 0, 0, why + ": no room for the component state"};
    return;
  }
  if (options_.overflow == Overflow::drop_newest && try_nested(g, p, false)) {
    // The records are dropped; the source's state and the acknowledgements still apply.
    refuse_by_policy(g, p, why);
    return;
  }
  g.saw_full = true;
  ++g.refused_full;
  p.result = {CommitStatus::full, 0, 0, why};
}

bool Queue::Impl::try_nested(Group& g, Pending& p, bool with_records) {
  Group saved = g;
  MDB_txn* child = nullptr;
  lmdb::check(mdb_txn_begin(env_, g.root, 0, &child), "beginning a nested transaction");
  g.txn = child;
  bool fits = false;
  try {
    apply_parts(g, p, with_records);
    fits = used_pages(g) <= bound_pages_;
  } catch (...) {
    mdb_txn_abort(child);
    g = std::move(saved);
    throw;
  }
  if (!fits) {
    mdb_txn_abort(child);
    g = std::move(saved);
    p.result = CommitResult{};
    return false;
  }
  int rc = mdb_txn_commit(child);
  g.txn = g.root;
  lmdb::check(rc, "committing a nested transaction");
  return true;
}

// Applies a batch in g.txn: acknowledgements first (the records they free make room), then the
// records (unless `with_records` is false), then the component state.
void Queue::Impl::apply_parts(Group& g, Pending& p, bool with_records) {
  static const WriteBatch kNothing;
  const WriteBatch& b = p.batch != nullptr ? *p.batch : kNothing;
  bool moved = false;
  for (const auto& [name, seq] : b.acks) {
    auto& pos = g.consumers[name];
    if (seq > pos) {
      pos = seq;
      g.consumers_changed = true;
      moved = true;
    }
  }
  if (moved) {
    std::uint64_t min_pos = UINT64_MAX;
    for (const auto& [name, pos] : g.consumers) min_pos = std::min(min_pos, pos);
    delete_through(g, min_pos);  // the RAM tier is trimmed in finish_group_locked()
  }
  for (const auto& name : p.new_consumers) {
    if (g.consumers.emplace(name, g.next_seq - 1).second) {
      g.consumers_changed = true;
      g.consumer_news.emplace_back(log::Level::info,
                                   fmt::format("new consumer \"{}\" starts after record {}", name, g.next_seq - 1));
    }
  }
  bool removed = false;
  for (const auto& name : p.removed_consumers) {
    auto it = g.consumers.find(name);
    if (it == g.consumers.end()) continue;
    g.consumer_news.emplace_back(
        log::Level::warn,
        fmt::format("consumer \"{}\" is no longer configured; forgot its position (record {})", name, it->second));
    g.consumers.erase(it);
    const std::string key = consumer_key(name);
    MDB_val k = lmdb::value_of(key);
    const int rc = mdb_del(g.txn, meta_dbi_, &k, nullptr);
    if (rc != MDB_NOTFOUND) lmdb::check(rc, "removing a consumer");
    g.consumers_changed = true;
    g.wrote = true;
    removed = true;
  }
  if (removed && !g.consumers.empty()) {
    std::uint64_t min_pos = UINT64_MAX;
    for (const auto& [name, pos] : g.consumers) min_pos = std::min(min_pos, pos);
    delete_through(g, min_pos);
  }
  if (with_records && !p.recs().empty()) {
    const std::uint64_t reserve = estimate_state_pages(b);
    // Near the bound, acknowledged records still stored must not keep new ones out.
    if (g.acknowledged_kept > 0 && used_pages(g) + estimate_pages(p.recs()) + reserve > pressure_pages()) {
      reclaim_acknowledged(g);
    }
    if (options_.mode == Mode::disk) {
      apply_records_disk(g, p, reserve);
    } else {
      apply_records_memory(g, p, reserve);
    }
  }
  for (const auto& [key, value] : b.state_puts) {
    MDB_val k = lmdb::value_of(key);
    MDB_val v = lmdb::value_of(value);
    lmdb::check(mdb_put(g.txn, state_dbi_, &k, &v, 0), "writing component state");
    g.wrote = true;
  }
  for (const auto& key : b.state_deletes) {
    MDB_val k = lmdb::value_of(key);
    int rc = mdb_del(g.txn, state_dbi_, &k, nullptr);
    if (rc != MDB_NOTFOUND) lmdb::check(rc, "deleting component state");
    g.wrote = true;
  }
  // Dead letters a replay turns back into records leave the store only with those records: when
  // the records are dropped (drop_newest) the entries stay, and so does the rest of the replay's
  // change to the store (the entries that failed again are still the old ones).
  const bool replay_dropped = !with_records && !p.recs().empty() && !b.dead_letter_deletes.empty();
  if (replay_dropped) return;
  for (std::uint64_t id : b.dead_letter_deletes) {
    if (dead_letters_dbi_ == 0) break;
    lmdb::SeqKey key(id);
    MDB_val k = key.val();
    int rc = mdb_del(g.txn, dead_letters_dbi_, &k, nullptr);
    if (rc != MDB_NOTFOUND) lmdb::check(rc, "deleting a dead letter");
    g.wrote = true;
  }
  if (!b.dead_letters.empty()) put_dead_letters(g, b);
}

// Stores the batch's dead letters, then evicts the oldest entries while the store is over its
// bound (a dead letter is never refused: the newest evidence is kept).
void Queue::Impl::put_dead_letters(Group& g, const WriteBatch& batch) {
  if (g.next_dead_letter_id == 0) {
    g.next_dead_letter_id = get_meta(g.txn, meta_dbi_, "dlq_next_id").value_or(1);
  }
  {
    lmdb::Cursor cursor(g.txn, dead_letters_dbi_);
    for (const DeadLetter& d : batch.dead_letters) {
      std::string encoded = encode_dead_letter(d, build::version);
      lmdb::SeqKey key(g.next_dead_letter_id++);
      MDB_val k = key.val();
      MDB_val v = lmdb::value_of(encoded);
      lmdb::check(mdb_cursor_put(cursor.get(), &k, &v, MDB_APPEND), "storing a dead letter");
      ++g.dead_lettered[{d.input, d.reason}];
    }
  }
  put_meta(g.txn, meta_dbi_, "dlq_next_id", g.next_dead_letter_id);
  g.wrote = true;
  lmdb::Cursor cursor(g.txn, dead_letters_dbi_);
  MDB_val k, v;
  while (pages_of(stat_of(g.txn, dead_letters_dbi_)) > dead_letter_bound_pages_ && cursor.get(k, v, MDB_FIRST)) {
    lmdb::check(mdb_cursor_del(cursor.get(), 0), "evicting a dead letter");
    ++g.dead_letters_evicted;
  }
}

std::uint64_t Queue::Impl::used_pages_of(MDB_txn* txn, const std::vector<Segment>& segments) const {
  std::uint64_t pages = pages_of(stat_of(txn, meta_dbi_)) + pages_of(stat_of(txn, state_dbi_));
  for (const Segment& s : segments) pages += pages_of(stat_of(txn, s.dbi));
  return pages;
}

std::uint64_t Queue::Impl::estimate_pages(const EncodedRecords& records) const {
  // An upper bound of the pages `records` add when appended: leaf pages filled in order (an
  // append split leaves the previous page full), overflow pages for large records, and the
  // branch entries of the new leaves.
  const std::uint64_t usable = page_size_ - kPageHeader;
  std::uint64_t inline_bytes = 0;
  std::uint64_t overflow = 0;
  std::uint64_t largest = 0;
  for (std::size_t i = 0; i < records.size(); ++i) {
    std::uint64_t size = records.encoded(i).size();
    std::uint64_t node = kNodeHeader + kKeyBytes + size;
    if (node > node_max_) {
      inline_bytes += kNodeHeader + kKeyBytes + sizeof(std::uint64_t) + 2;
      overflow += (size + kPageHeader + page_size_ - 1) / page_size_;
    } else {
      std::uint64_t n = ((node + 1) & ~std::uint64_t{1}) + 2;
      inline_bytes += n;
      largest = std::max(largest, n);
    }
  }
  std::uint64_t leaves = inline_bytes == 0 ? 0 : (inline_bytes + usable - largest - 1) / (usable - largest) + 1;
  std::uint64_t branches = leaves / 100 + 2;
  return leaves + overflow + branches;
}

std::uint64_t Queue::Impl::estimate_state_pages(const WriteBatch& batch) const {
  // State keys are not appended in order: each put may split a page in two.
  if (batch.state_puts.empty()) return 0;
  const std::uint64_t half = (page_size_ - kPageHeader) / 2;
  std::uint64_t inline_bytes = 0;
  std::uint64_t pages = batch.state_puts.size();
  for (const auto& [key, value] : batch.state_puts) {
    std::uint64_t node = kNodeHeader + key.size() + value.size();
    if (node > node_max_) {
      pages += (value.size() + kPageHeader + page_size_ - 1) / page_size_;
      inline_bytes += kNodeHeader + key.size() + sizeof(std::uint64_t) + 2;
    } else {
      inline_bytes += ((node + 1) & ~std::uint64_t{1}) + 2;
    }
  }
  return pages + (inline_bytes + half - 1) / half;
}

void Queue::Impl::put_records(Group& g, const EncodedRecords& records, std::uint64_t first_seq) {
  // The newest segment, or a free slot once it holds segment_pages_ pages (or when there is none).
  const bool roll = g.segments.empty() || pages_of(stat_of(g.txn, g.segments.back().dbi)) >= segment_pages_;
  if (roll && g.segments.size() < kSegmentSlots) {
    std::array<bool, kSegmentSlots> used{};
    for (const Segment& s : g.segments) used[s.slot] = true;
    unsigned slot = 0;
    while (used[slot]) ++slot;
    Segment fresh;
    fresh.slot = slot;
    fresh.dbi = slot_dbis_[slot];
    fresh.first = first_seq;
    fresh.last = first_seq;
    g.segments.push_back(fresh);
  }
  Segment& tail = g.segments.back();
  lmdb::Cursor cursor(g.txn, tail.dbi);
  for (std::size_t i = 0; i < records.size(); ++i) {
    std::string_view rec = records.encoded(i);
    lmdb::SeqKey key(first_seq + i);
    MDB_val k = key.val();
    MDB_val v{rec.size(), nullptr};
    lmdb::check(mdb_cursor_put(cursor.get(), &k, &v, MDB_APPEND | MDB_RESERVE), "appending records");
    std::memcpy(v.mv_data, rec.data(), rec.size());
    seal_stored_record(first_seq + i, static_cast<char*>(v.mv_data), rec.size());
  }
  if (!records.empty()) tail.last = first_seq + records.size() - 1;
  g.disk_bytes += records.bytes();
  g.disk_records += records.size();
  g.wrote = true;
  // Appending reads pages through the map as well: each transaction copies the pages the one
  // before wrote (the last leaf, its branches, the main, state and free-page trees' pages: up to 8)
  // from the map before it adds to them -- fresh pages every time while a flushed snapshot is
  // pinned (nothing freed since is reused). They lie next to each other at the end of the used
  // pages, so fault-around maps little else: they count once.
  release_mapped_pages(records.bytes() + 8 * page_size_);
}

// Deletes the oldest records with sequence numbers below `below_seq` (drop_oldest) until the
// pages in use drop to `target_pages` or no such record is left.
void Queue::Impl::evict_oldest_disk(Group& g, std::uint64_t target_pages, std::uint64_t below_seq) {
  // Acknowledged records still stored go first: they cost no one anything.
  if (used_pages(g) > target_pages) reclaim_acknowledged(g);
  while (!g.segments.empty() && used_pages(g) > target_pages) {
    Segment& s = g.segments.front();
    lmdb::Cursor cursor(g.txn, s.dbi);
    MDB_val k, v;
    bool more = cursor.get(k, v, MDB_FIRST);
    while (more && lmdb::seq_of(k) < below_seq && used_pages(g) > target_pages) {
      std::uint64_t size = v.mv_size;
      lmdb::check(mdb_cursor_del(cursor.get(), 0), "evicting records");
      g.disk_bytes -= std::min(g.disk_bytes, size);
      g.disk_records -= std::min<std::uint64_t>(g.disk_records, 1);
      ++g.evicted_records;
      g.evicted_bytes += size;
      g.wrote = true;
      int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_GET_CURRENT);
      more = !(rc == MDB_NOTFOUND || rc == EINVAL);
      if (more) lmdb::check(rc, "reading records");
    }
    if (stat_of(g.txn, s.dbi).ms_entries == 0) {
      g.segments.erase(g.segments.begin());
      continue;
    }
    s.first = lmdb::seq_of(k);
    break;  // stopped inside this segment: below_seq or the target reached
  }
}

void Queue::Impl::refuse_by_policy(Group& g, Pending& p, std::string why) const {
  g.saw_full = true;
  const EncodedRecords& records = p.recs();
  if (options_.overflow == Overflow::drop_newest) {
    g.dropped_newest_records += records.size();
    g.dropped_newest_bytes += records.bytes();
    p.result = {CommitStatus::dropped, 0, 0, std::move(why)};
  } else {
    ++g.refused_full;
    p.result = {CommitStatus::full, 0, 0, std::move(why)};
  }
}

// Appends the batch's records to LMDB. With drop_oldest, first evicts the oldest records so that
// they and `reserve_pages` more (the batch's state) fit under the bound. Whether the batch fits
// is judged by the caller.
void Queue::Impl::apply_records_disk(Group& g, Pending& p, std::uint64_t reserve_pages) {
  const EncodedRecords& records = p.recs();
  if (options_.overflow == Overflow::drop_oldest) {
    const std::uint64_t need = estimate_pages(records) + reserve_pages;
    const std::uint64_t target = need >= bound_pages_ ? 0 : bound_pages_ - need;
    if (used_pages(g) > target) evict_oldest_disk(g, target, g.next_seq);
  }
  const std::uint64_t first = g.next_seq;
  put_records(g, records, first);
  g.next_seq += records.size();
  g.appended_records += records.size();
  g.appended_bytes += records.bytes();
  p.result.first_seq = first;
  p.result.last_seq = g.next_seq - 1;
}

std::uint64_t Queue::Impl::memory_cost(const EncodedRecords& records) {
  return records.bytes() + kMemoryRecordOverhead * records.size();
}

void Queue::Impl::apply_records_memory(Group& g, Pending& p, std::uint64_t reserve_pages) {
  const EncodedRecords& records = p.recs();
  const std::uint64_t cost = memory_cost(records);
  bool fits = g.memory_bytes + cost <= options_.max_memory_bytes;
  if (!fits && options_.overflow == Overflow::drop_oldest && cost <= options_.max_memory_bytes &&
      used_pages(g) + estimate_pages(records) + reserve_pages > bound_pages_) {
    // Both tiers are full. Evict from RAM when RAM holds the oldest records.
    std::uint64_t skip = g.memory_evicted;
    std::uint64_t oldest_in_memory = 0;
    for (const MemoryChunk& c : memory_) {
      if (skip >= c.remaining()) {
        skip -= c.remaining();
        continue;
      }
      oldest_in_memory = c.front_seq() + skip;
      break;
    }
    std::uint64_t oldest_on_disk = 0;
    if (g.disk_records > 0) {
      RecordCursor cursor(g.txn, g.segments);
      MDB_val k, v;
      if (cursor.seek(g.front + 1, k, v)) oldest_on_disk = lmdb::seq_of(k);
    }
    if (oldest_in_memory != 0 && (oldest_on_disk == 0 || oldest_in_memory < oldest_on_disk)) {
      std::uint64_t to_skip = g.memory_evicted;
      for (const MemoryChunk& c : memory_) {
        for (std::size_t i = c.head; i < c.records.size() && g.memory_bytes + cost > options_.max_memory_bytes; ++i) {
          if (to_skip > 0) {
            --to_skip;
            continue;
          }
          std::uint64_t b = c.records.encoded(i).size();
          g.memory_bytes -= std::min(g.memory_bytes, b + kMemoryRecordOverhead);
          ++g.memory_evicted;
          ++g.evicted_records;
          g.evicted_bytes += b;
        }
      }
      fits = g.memory_bytes + cost <= options_.max_memory_bytes;
    }
  }
  if (!fits) {
    // RAM is full: the batch goes to the disk tier.
    apply_records_disk(g, p, reserve_pages);
    return;
  }
  if (g.next_seq + records.size() > std::max(g.seq_reserved, seq_reserved_)) {
    // Reserve sequence numbers in LMDB before handing them out from RAM, so a crash that loses
    // these records never lets their numbers be given to other records.
    g.seq_reserved = g.next_seq + records.size() + kSeqReservation;
  }
  MemoryChunk chunk;
  chunk.records = records;  // a copy: the batch stays the caller's
  chunk.first_seq = g.next_seq;
  p.result.first_seq = g.next_seq;
  p.result.last_seq = g.next_seq + chunk.records.size() - 1;
  g.next_seq += chunk.records.size();
  g.memory_bytes += cost;
  g.appended_records += chunk.records.size();
  g.appended_bytes += chunk.records.bytes();
  g.memory_added.push_back(std::move(chunk));
}

void Queue::Impl::capture_disk_shape(Group& g) const {
  g.disk_pages = used_pages(g);
  g.first_disk_seq = 0;
  g.last_disk_seq = 0;
  if (g.disk_records == 0) return;
  RecordCursor cursor(g.txn, g.segments);
  MDB_val k, v;
  g.first_disk_seq = cursor.seek(g.front + 1, k, v) ? lmdb::seq_of(k) : 0;
  g.last_disk_seq = g.segments.back().last;
}

}  // namespace tank::queue
