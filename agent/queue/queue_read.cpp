// Reading: records, positions, state, statistics and dead letters; none holds a read transaction
// once it returns.

#include "queue/queue_impl.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <sys/stat.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <fstream>

#include <fmt/format.h>

#include "queue/lmdb.hpp"

namespace tank::queue {

// ---------------------------------------------------------------------------------------------
// Reading

void Queue::Impl::read(std::uint64_t after, const ReadLimits& limits, const RouteFilter* filter, ReadBatch& out) const {
  out.clear();
  std::shared_lock env_lock(env_mutex_);
  if (env_ == nullptr) throw std::logic_error("the queue is closed");
  try {
    read_records(after, limits, filter, out);
  } catch (const lmdb::Error& e) {
    out.clear();
    if (lmdb::is_damage(e.code())) note_damage(e.what());
    throw std::runtime_error(fmt::format("reading the queue failed: {}", e.what()));
  } catch (...) {
    out.clear();
    throw;
  }
}

void Queue::Impl::read_records(std::uint64_t after, const ReadLimits& limits, const RouteFilter* filter,
                               ReadBatch& out) const {
  if (after == UINT64_MAX || limits.max_records == 0) return;
  std::size_t count = 0;
  std::size_t bytes = 0;
  std::uint64_t scanned = 0;
  ReadSpan span;  // disk mode: every record examined (taken or filtered out)
  bool stop = false;
  auto examined = [&](std::uint64_t seq, std::string_view encoded) {
    scanned = seq;
    ++span.records;
    span.bytes += encoded.size();
  };
  auto take = [&](std::uint64_t seq, std::string_view encoded) {
    if (filter != nullptr && !filter->accepts(encoded)) {
      examined(seq, encoded);
      return;
    }
    if (count > 0 && bytes + encoded.size() > limits.max_bytes) {
      stop = true;  // not taken: the next read starts here
      return;
    }
    examined(seq, encoded);
    out.append(seq, encoded);
    ++count;
    bytes += encoded.size();
    if (count >= limits.max_records || bytes >= limits.max_bytes) stop = true;
  };

  // In memory mode the disk snapshot and the copy of the RAM tier are taken under mutex_, which
  // write_group() holds while it commits and updates the RAM tier.
  std::unique_lock lock(mutex_, std::defer_lock);
  if (options_.mode == Mode::memory) lock.lock();
  span.evictions = evictions_.load();  // before the snapshot (ReadSpan)
  lmdb::Txn txn(env_, MDB_RDONLY);
  // A copy of the RAM tier's records after `after`, as many as the limits could take. When it
  // stops short of the tier's end, nothing after the last record it examined may be returned
  // (the records in between were not copied).
  std::string memory_copy;
  std::vector<std::pair<std::uint64_t, std::pair<std::size_t, std::size_t>>> memory_index;
  bool memory_cut = false;
  std::uint64_t memory_cut_seq = 0;
  if (options_.mode == Mode::memory) {
    std::size_t accepted = 0;
    for (const MemoryChunk& c : memory_) {
      if (c.last_seq() <= after) continue;
      for (std::size_t i = c.head; i < c.records.size(); ++i) {
        if (c.seq(i) <= after) continue;
        if (accepted >= limits.max_records || memory_copy.size() >= limits.max_bytes) {
          memory_cut = true;
          break;
        }
        std::string_view enc = c.records.encoded(i);
        memory_index.emplace_back(c.seq(i), std::pair{memory_copy.size(), enc.size()});
        memory_copy.append(enc);
        memory_cut_seq = c.seq(i);
        if (filter == nullptr || filter->accepts(enc)) ++accepted;
      }
      if (memory_cut) break;
    }
    lock.unlock();
  }

  // The segments and the front as committed now, which is at or after the snapshot just taken
  // (RecordCursor says why that is sound); acknowledged records the oldest segment still holds are
  // not the queue's any more. A read-only queue (another process writes) asks its snapshot.
  std::vector<Segment> segments;
  std::uint64_t front = 0;
  if (read_only_) {
    segments = segments_of(txn.get());
    front = front_of(txn.get());
  } else {
    if (!lock.owns_lock()) lock.lock();
    segments = segments_;
    front = front_;
    lock.unlock();
  }
  RecordCursor cursor(txn.get(), std::move(segments));
  MDB_val k;
  MDB_val v;
  span.after = std::max(after, front);
  bool more = cursor.seek(span.after + 1, k, v);
  std::size_t mi = 0;
  std::size_t map_read = 0;  // bytes read from the map since the last release_mapped_pages
  while (!stop) {
    bool have_mem = mi < memory_index.size();
    if (!more && !have_mem) break;
    std::uint64_t disk_seq = more ? lmdb::seq_of(k) : 0;
    if (more && (!have_mem || disk_seq <= memory_index[mi].first)) {
      if (memory_cut && disk_seq > memory_cut_seq) break;
      if (have_mem && disk_seq == memory_index[mi].first) ++mi;  // in both tiers: once
      take(disk_seq, lmdb::view_of(v));
      // A batch of megabytes maps that much of the file (and up to kFaultAroundPages times as
      // much around it): check the map's resident size within the read too, not only after it.
      map_read += v.mv_size;
      if (map_read * kFaultAroundPages >= kMappedCheckEvery) {
        release_mapped_pages(map_read * kFaultAroundPages);
        map_read = 0;
      }
      if (!stop) more = cursor.next(k, v);
    } else {
      auto [seq, at] = memory_index[mi++];
      take(seq, std::string_view(memory_copy).substr(at.first, at.second));
    }
  }
  txn.abort();
  // Kept for the acknowledgement (a few per consumer: those the front has passed go then).
  if (options_.mode == Mode::disk && !read_only_ && scanned > span.after) {
    constexpr std::size_t kMaxSpans = 256;
    span.through = scanned;
    std::lock_guard spans_lock(spans_mutex_);
    if (read_spans_.size() >= kMaxSpans) read_spans_.erase(read_spans_.begin(), read_spans_.begin() + kMaxSpans / 2);
    read_spans_.push_back(span);
  }
  release_mapped_pages(map_read * kFaultAroundPages);
  out.set_scanned_to(scanned);
  std::vector<std::pair<std::uint64_t, std::string>> bad;
  out.finish(&bad);
  for (const auto& [seq, error] : bad) log::error(kComponent, "skipping an unreadable record: {}", error);
}

// Records are read through LMDB's read-only shared map of data.mdb. The pages touched stay in
// this process's resident set (as file pages) until the kernel needs the memory, so draining a
// backlog once would leave its whole size resident: a 5M-record burst showed 400+ MiB RSS of
// which 6 MiB were tank's own (docs/BENCHMARKS.md); appending alone (each commit copies the
// last leaf page from the map) left 150 MiB resident after 3M records. So the map's pages are
// dropped from this process with MADV_DONTNEED when they grow past kMappedBudget. On a shared,
// read-only file mapping that loses nothing: the data stays in the page cache and on disk, and the
// next access faults it in again (LMDB never writes through this map: MDB_WRITEMAP is not used).
// Callers holding pointers into the map (a cursor inside a transaction elsewhere) still read the
// same bytes after the fault. RSS then stays within the budget, whatever the backlog.
//
// When: only when the process's file-backed resident pages (/proc/self/statm's third field,
// read with one pread of a descriptor kept open) are more than kMappedBudget above what they were
// right after the last release (the binary's and libraries' own pages). An earlier version
// released whenever an estimate of the pages touched reached 4 MiB; every release makes every page
// still in use (branch pages, the leaf appends copy, the pages the reader is about to read, which
// fault-around had mapped for free) fault again, and a page fault costs 30-50 us in this virtual
// machine: tcp-http spent half its CPU in faults and madvise (docs/BENCHMARKS.md, issue 23). A
// queue that keeps up reuses the same few pages and never reaches the budget; a backlog drained
// costs one fault per page read at most once plus one release per kMappedBudget read. The budget
// was 16 MiB while that virtual machine paid 3-4.5 us per page mapped; on the next one (0.1 us,
// as native hardware) 2 MiB cost no measurable CPU against 16 and took tank's peak RSS under
// tcp-http from 48 to 28 MiB. Reads check within a read too (read_records), so a batch of
// megabytes does not map its whole size (and what fault-around maps beside it) before a check.
//
// The check itself comes every kMappedCheckEvery of the callers' estimate of the pages they touched:
// the bytes read or deleted count kFaultAroundPages times (a fault maps up to 16 pages around
// the one touched that are in the page cache), the bytes appended once plus the pages each commit
// copies.
//
// LMDB does not tell where its map is (mdb_env_info's me_mapaddr is only set with MDB_FIXEDMAP),
// so the mapping of data.mdb is looked up in /proc/self/maps once (LMDB maps the file once, at
// open, for the whole map size) and then only one madvise call is made. Measured cost and effect:
// docs/BENCHMARKS.md.
void Queue::Impl::release_mapped_pages(std::size_t bytes) const {
  if (touched_since_release_.fetch_add(bytes) + bytes < kMappedCheckEvery) return;
  touched_since_release_ = 0;
  std::lock_guard lock(release_mutex_);
  const std::uint64_t resident = file_resident_bytes();
  if (resident != 0 && resident < file_resident_after_release_ + kMappedBudget) return;
  std::uintptr_t start = map_start_;
  std::uintptr_t end = map_end_;
  if (start == 0) {
    std::error_code ec;
    const std::string data_file = std::filesystem::weakly_canonical(options_.dir / "data.mdb", ec).string();
    std::ifstream maps("/proc/self/maps");
    for (std::string line; std::getline(maps, line);) {
      if (!line.ends_with(data_file)) continue;
      if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR, &start, &end) != 2 || end <= start) continue;
      break;
    }
    if (start == 0 || end <= start) return;
    map_end_ = end;
    map_start_ = start;
  }
  ::madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED);
  file_resident_after_release_ = file_resident_bytes();
}

// The process's file-backed (and shared memory) resident bytes: the third field of
// /proc/self/statm, in pages. 0 when it cannot be read (then every check releases, as a bound
// must hold even without /proc).
std::uint64_t Queue::Impl::file_resident_bytes() const {
  if (statm_fd_ < 0) statm_fd_ = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (statm_fd_ < 0) return 0;
  char buf[128];
  const ssize_t n = ::pread(statm_fd_, buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  buf[n] = '\0';
  unsigned long long size = 0, resident = 0, shared = 0;
  if (std::sscanf(buf, "%llu %llu %llu", &size, &resident, &shared) != 3) return 0;
  static const auto kSystemPage = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  return static_cast<std::uint64_t>(shared) * kSystemPage;
}

std::optional<std::uint64_t> Queue::Impl::position(const std::string& consumer) const {
  if (read_only_) {
    std::shared_lock env_lock(env_mutex_);
    if (env_ == nullptr) throw std::logic_error("the queue is closed");
    lmdb::Txn txn(env_, MDB_RDONLY);
    return get_meta(txn.get(), meta_dbi_, consumer_key(consumer));
  }
  std::lock_guard lock(mutex_);
  auto it = consumers_.find(consumer);
  if (it == consumers_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> Queue::Impl::state(std::string_view key) const {
  std::shared_lock env_lock(env_mutex_);
  if (env_ == nullptr) throw std::logic_error("the queue is closed");
  lmdb::Txn txn(env_, MDB_RDONLY);
  MDB_val k = lmdb::value_of(key);
  MDB_val v;
  int rc = mdb_get(txn.get(), state_dbi_, &k, &v);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  lmdb::check(rc, "reading component state");
  return std::string(lmdb::view_of(v));
}

std::vector<std::pair<std::string, std::string>> Queue::Impl::state_with_prefix(std::string_view prefix) const {
  std::shared_lock env_lock(env_mutex_);
  if (env_ == nullptr) throw std::logic_error("the queue is closed");
  std::vector<std::pair<std::string, std::string>> out;
  lmdb::Txn txn(env_, MDB_RDONLY);
  lmdb::Cursor cursor(txn.get(), state_dbi_);
  MDB_val k = lmdb::value_of(prefix);
  MDB_val v;
  bool more = prefix.empty() ? cursor.get(k, v, MDB_FIRST) : cursor.get(k, v, MDB_SET_RANGE);
  while (more) {
    std::string_view key = lmdb::view_of(k);
    if (!key.starts_with(prefix)) break;
    out.emplace_back(std::string(key), std::string(lmdb::view_of(v)));
    more = cursor.get(k, v, MDB_NEXT);
  }
  return out;
}

bool Queue::Impl::blocked() const {
  std::lock_guard lock(mutex_);
  return blocked_;
}

void Queue::Impl::set_pressure_listener(std::function<void(bool)> listener) {
  std::lock_guard notify_lock(notify_mutex_);
  std::lock_guard lock(mutex_);
  pressure_listener_ = std::move(listener);
  notified_blocked_ = blocked_;
}

void Queue::Impl::sync() {
  std::shared_lock env_lock(env_mutex_);
  if (read_only_ || env_ == nullptr || !recovery_file_) return;
  unsynced_ = false;
  if (std::string error = flush(0); !error.empty()) {
    unsynced_ = true;
    throw std::runtime_error("flushing the queue to disk failed: " + error);
  }
}

std::uint64_t Queue::Impl::file_size() const {
  struct stat st {};
  if (::stat((options_.dir / "data.mdb").c_str(), &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_size);
}

std::vector<std::uint64_t> Queue::Impl::disk_bytes_after(std::span<const std::uint64_t> positions) const {
  std::shared_lock env_lock(env_mutex_);
  if (env_ == nullptr) throw std::logic_error("the queue is closed");
  std::vector<std::uint64_t> out(positions.size(), 0);
  if (positions.empty()) return out;
  // Walk backwards from the last record: each record adds its size to every position before it.
  std::vector<std::size_t> order(positions.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return positions[a] > positions[b]; });
  lmdb::Txn txn(env_, MDB_RDONLY);
  RecordCursor cursor(txn.get(), segments_of(txn.get()));
  const std::uint64_t front = front_of(txn.get());
  MDB_val k;
  MDB_val v;
  std::uint64_t suffix = 0;
  std::size_t next = 0;  // positions (largest first) not yet passed
  for (bool more = cursor.last(k, v); more; more = cursor.prev(k, v)) {
    const std::uint64_t seq = lmdb::seq_of(k);
    if (seq <= front) break;  // acknowledged: not the queue's any more
    while (next < order.size() && positions[order[next]] >= seq) out[order[next++]] = suffix;
    if (next == order.size()) break;
    suffix += v.mv_size;
  }
  while (next < order.size()) out[order[next++]] = suffix;
  return out;
}

std::uint64_t Queue::Impl::oldest_seq() const {
  std::lock_guard lock(mutex_);
  std::uint64_t oldest = next_seq_;
  if (first_disk_seq_ != 0) oldest = std::min(oldest, first_disk_seq_);
  if (!memory_.empty()) oldest = std::min(oldest, memory_.front().front_seq());
  return oldest;
}

Stats Queue::Impl::stats() const {
  std::shared_lock env_lock(env_mutex_);
  Stats s;
  std::map<std::string, std::uint64_t, std::less<>> consumers;
  std::uint64_t mem_front_seq = 0;
  std::int64_t mem_front_ns = 0;
  {
    std::lock_guard lock(mutex_);
    if (env_ == nullptr) throw std::logic_error("the queue is closed");
    if (read_only_) const_cast<Impl*>(this)->load_state();  // another process writes it
    s.mode = options_.mode;
    s.disk_records = disk_records_;
    s.disk_bytes = disk_bytes_;
    s.disk_used_bytes = disk_pages_ * page_size_;
    s.disk_limit_bytes = read_only_ ? 0 : options_.max_disk_bytes;
    s.file_limit_bytes = read_only_ ? 0 : map_bytes_;
    s.memory_records = memory_records_;
    s.memory_bytes = memory_bytes_;
    s.memory_limit_bytes = options_.mode == Mode::memory ? options_.max_memory_bytes : 0;
    s.records = disk_records_ + memory_records_;
    s.bytes = disk_bytes_ + memory_encoded_bytes_;
    s.next_seq = next_seq_;
    s.blocked = blocked_;
    consumers = consumers_;
    s.first_seq = first_disk_seq_;
    s.last_seq = last_disk_seq_;
    if (!memory_.empty()) {
      const MemoryChunk& front = memory_.front();
      mem_front_seq = front.front_seq();
      auto view = decode_record(mem_front_seq, front.records.encoded(front.head));
      mem_front_ns = view ? view->ingest_ns : 0;
      if (s.first_seq == 0 || mem_front_seq < s.first_seq) s.first_seq = mem_front_seq;
      s.last_seq = std::max(s.last_seq, memory_.back().last_seq());
    }
  }
  s.file_bytes = file_size();
  lmdb::Txn txn(env_, MDB_RDONLY);
  RecordCursor cursor(txn.get(), segments_of(txn.get()));
  const std::uint64_t front = front_of(txn.get());
  // The ingest time of the first record after `pos`, in either tier (0 when none).
  auto oldest_after = [&](std::uint64_t pos) -> std::int64_t {
    MDB_val k;
    MDB_val v;
    std::uint64_t disk_seq = 0;
    std::int64_t disk_ns = 0;
    if (cursor.seek(std::max(pos, front) + 1, k, v)) {
      disk_seq = lmdb::seq_of(k);
      auto view = decode_record(disk_seq, lmdb::view_of(v));
      disk_ns = view ? view->ingest_ns : 0;
    }
    if (mem_front_seq != 0 && mem_front_seq > pos && (disk_seq == 0 || mem_front_seq < disk_seq)) return mem_front_ns;
    return disk_ns;
  };
  s.oldest_ingest_ns = s.records > 0 ? oldest_after(0) : 0;
  for (const auto& [name, pos] : consumers) {
    ConsumerStats c;
    c.name = name;
    c.acked = pos;
    if (s.records > 0 && s.last_seq > pos) {
      // Sequence numbers of stored records are contiguous (records leave only from the front).
      c.lag_records = std::min(s.records, s.last_seq - std::max(pos, s.first_seq - 1));
    }
    c.oldest_unacked_ns = c.lag_records > 0 ? oldest_after(pos) : 0;
    s.consumers.push_back(std::move(c));
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Dead letters

std::vector<StoredDeadLetter> Queue::Impl::dead_letters(const DeadLetterQuery& query) const {
  std::shared_lock env_lock(env_mutex_);
  if (env_ == nullptr) throw std::logic_error("the queue is closed");
  std::vector<StoredDeadLetter> out;
  if (dead_letters_dbi_ == 0 || query.limit == 0) return out;
  try {
    lmdb::Txn txn(env_, MDB_RDONLY);
    lmdb::Cursor cursor(txn.get(), dead_letters_dbi_);
    lmdb::SeqKey start(query.after_id + 1);
    MDB_val k = start.val();
    MDB_val v;
    bool more = cursor.get(k, v, MDB_SET_RANGE);
    while (more && out.size() < query.limit) {
      std::string error;
      std::uint64_t id = lmdb::seq_of(k);
      if (auto d = decode_dead_letter(id, lmdb::view_of(v), &error)) {
        bool match = (query.input.empty() || d->letter.input == query.input) &&
                     (query.reason.empty() || d->letter.reason == query.reason) &&
                     d->letter.time_ns >= query.since_ns;
        if (match) out.push_back(std::move(*d));
      } else {
        log::error(kComponent, "skipping an unreadable dead letter: {}", error);
      }
      more = cursor.get(k, v, MDB_NEXT);
    }
  } catch (const lmdb::Error& e) {
    if (lmdb::is_damage(e.code())) note_damage(e.what());
    throw std::runtime_error(fmt::format("reading the dead letters failed: {}", e.what()));
  }
  return out;
}

std::optional<StoredDeadLetter> Queue::Impl::dead_letter(std::uint64_t id) const {
  DeadLetterQuery q;
  q.after_id = id - 1;
  q.limit = 1;
  if (id == 0) return std::nullopt;
  auto found = dead_letters(q);
  if (found.empty() || found.front().id != id) return std::nullopt;
  return std::move(found.front());
}

DeadLetterStats Queue::Impl::dead_letter_stats() const {
  std::shared_lock env_lock(env_mutex_);
  if (env_ == nullptr) throw std::logic_error("the queue is closed");
  DeadLetterStats s;
  s.limit_bytes = read_only_ ? 0 : options_.dead_letter_max_bytes;
  if (dead_letters_dbi_ == 0) return s;
  lmdb::Txn txn(env_, MDB_RDONLY);
  MDB_stat st = stat_of(txn.get(), dead_letters_dbi_);
  s.entries = st.ms_entries;
  s.disk_bytes = pages_of(st) * page_size_;
  lmdb::Cursor cursor(txn.get(), dead_letters_dbi_);
  MDB_val k, v;
  if (cursor.get(k, v, MDB_FIRST)) s.first_id = lmdb::seq_of(k);
  if (cursor.get(k, v, MDB_LAST)) s.last_id = lmdb::seq_of(k);
  return s;
}

}  // namespace tank::queue
