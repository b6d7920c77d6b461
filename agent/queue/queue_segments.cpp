// Segments: where records are stored, how the front passes acknowledged records and how a passed
// segment is emptied whole (queue_impl.hpp, "Records live in segments").

#include "queue/queue_impl.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>

#include "queue/lmdb.hpp"
#include "queue/lmdb_layout.hpp"

namespace tank::queue {

int segment_slot(std::string_view name) {
  if (name == "records") return 0;
  constexpr std::string_view kPrefix = "records.";
  if (!name.starts_with(kPrefix) || name.size() == kPrefix.size()) return -1;
  const std::string_view digits = name.substr(kPrefix.size());
  if (digits[0] == '0') return -1;
  unsigned slot = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), slot);
  if (ec != std::errc{} || end != digits.data() + digits.size() || slot == 0 || slot >= kSegmentSlots) return -1;
  return static_cast<int>(slot);
}

// ---------------------------------------------------------------------------------------------
// RecordCursor

bool RecordCursor::enter(std::size_t i, MDB_cursor_op op, MDB_val& k, MDB_val& v) {
  if (i >= segments_.size()) return false;
  at_ = i;
  cursor_.reset();
  cursor_.emplace(txn_, segments_[i].dbi);
  return cursor_->get(k, v, op);
}

bool RecordCursor::first(MDB_val& k, MDB_val& v) {
  for (std::size_t i = 0; i < segments_.size(); ++i) {
    if (enter(i, MDB_FIRST, k, v)) return true;
  }
  return false;
}

bool RecordCursor::last(MDB_val& k, MDB_val& v) {
  for (std::size_t i = segments_.size(); i-- > 0;) {
    if (enter(i, MDB_LAST, k, v)) return true;
  }
  return false;
}

bool RecordCursor::seek(std::uint64_t seq, MDB_val& k, MDB_val& v) {
  // The last segment that starts at or before `seq` (a segment's records are contiguous and its
  // successors start after them); the first when none does.
  std::size_t i = 0;
  while (i + 1 < segments_.size() && segments_[i + 1].first <= seq) ++i;
  for (; i < segments_.size(); ++i) {
    lmdb::SeqKey key(seq);
    k = key.val();
    if (enter(i, MDB_SET_RANGE, k, v)) return true;
  }
  return false;
}

bool RecordCursor::next(MDB_val& k, MDB_val& v) {
  if (!cursor_) return false;
  const std::uint64_t previous = lmdb::seq_of(k);
  if (cursor_->get(k, v, MDB_NEXT)) return true;
  // The next segment's records after the last one returned: a segment list newer than the
  // transaction's snapshot may name a slot that, in the snapshot, still holds older records.
  for (std::size_t i = at_ + 1; i < segments_.size(); ++i) {
    lmdb::SeqKey key(previous + 1);
    k = key.val();
    if (enter(i, MDB_SET_RANGE, k, v)) return true;
  }
  return false;
}

bool RecordCursor::prev(MDB_val& k, MDB_val& v) {
  if (!cursor_) return false;
  if (cursor_->get(k, v, MDB_PREV)) return true;
  for (std::size_t i = at_; i-- > 0;) {
    if (enter(i, MDB_LAST, k, v)) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Finding the segments

namespace {

// Slot `slot` as a segment: its first and last record; nullopt when it holds none.
std::optional<Segment> segment_in(MDB_txn* txn, unsigned slot, MDB_dbi dbi) {
  Segment s;
  s.slot = slot;
  s.dbi = dbi;
  lmdb::Cursor c(txn, dbi);
  MDB_val k, v;
  if (!c.get(k, v, MDB_FIRST)) return std::nullopt;
  s.first = lmdb::seq_of(k);
  if (!c.get(k, v, MDB_LAST)) return std::nullopt;
  s.last = lmdb::seq_of(k);
  return s;
}

}  // namespace

std::vector<Segment> Queue::Impl::segments_of(MDB_txn* txn) const {
  // The main database names every database with its record (lmdb_layout.hpp: MDB_db), as of the
  // transaction's snapshot: one walk finds the slots holding records.
  std::vector<Segment> out;
  lmdb::Cursor main(txn, static_cast<MDB_dbi>(lmdb_layout::kMainDbi));
  MDB_val k = lmdb::value_of("records");
  MDB_val v;
  for (bool more = main.get(k, v, MDB_SET_RANGE); more; more = main.get(k, v, MDB_NEXT)) {
    const std::string_view name = lmdb::view_of(k);
    if (!name.starts_with("records")) break;
    const int slot = segment_slot(name);
    if (slot < 0 || v.mv_size < lmdb_layout::kDbBytes) continue;
    std::size_t entries = 0;
    std::memcpy(&entries, static_cast<const char*>(v.mv_data) + lmdb_layout::kDbEntries, sizeof entries);
    const MDB_dbi dbi = slot_dbis_[static_cast<unsigned>(slot)];
    if (entries == 0 || dbi == 0) continue;
    if (auto segment = segment_in(txn, static_cast<unsigned>(slot), dbi)) out.push_back(*segment);
  }
  std::sort(out.begin(), out.end(), [](const Segment& a, const Segment& b) { return a.first < b.first; });
  return out;
}

std::vector<Segment> Queue::Impl::segments_in_write(MDB_txn* txn) const {
  std::vector<Segment> out;
  for (unsigned slot = 0; slot < kSegmentSlots; ++slot) {
    const MDB_dbi dbi = slot_dbis_[slot];
    if (dbi == 0 || stat_of(txn, dbi).ms_entries == 0) continue;
    if (auto segment = segment_in(txn, slot, dbi)) out.push_back(*segment);
  }
  std::sort(out.begin(), out.end(), [](const Segment& a, const Segment& b) { return a.first < b.first; });
  return out;
}

std::uint64_t Queue::Impl::front_of(MDB_txn* txn) const { return get_meta(txn, meta_dbi_, "front").value_or(0); }

std::uint64_t Queue::Impl::pressure_pages() const {
  return static_cast<std::uint64_t>(options_.low_watermark * static_cast<double>(bound_pages_));
}

// ---------------------------------------------------------------------------------------------
// Acknowledging

void Queue::Impl::delete_through(Group& g, std::uint64_t seq) {
  if (seq <= g.front) return;
  // Count what the front passes: the records stored after the old front, up to `seq`. The reads
  // of the consumers that acknowledged them counted them already (ReadSpan): the longest span
  // starting where the count stands, again and again; what no span covers is walked (a read of
  // another consumer stopped elsewhere, a queue reopened since the read, records evicted since).
  std::uint64_t passed = 0;
  std::uint64_t passed_bytes = 0;
  std::uint64_t counted_to = g.front;
  {
    std::lock_guard lock(spans_mutex_);
    const std::uint64_t evictions = evictions_.load();
    // Not in a group that evicted records itself (its spans describe records it deleted).
    while (g.evicted_records == 0) {
      const ReadSpan* best = nullptr;
      for (const ReadSpan& span : read_spans_) {
        if (span.evictions == evictions && span.after == counted_to && span.through <= seq &&
            (best == nullptr || span.through > best->through)) {
          best = &span;
        }
      }
      if (best == nullptr) break;
      passed += best->records;
      passed_bytes += best->bytes;
      counted_to = best->through;
    }
    std::erase_if(read_spans_, [&](const ReadSpan& span) { return span.through <= seq; });
  }
  if (counted_to < seq) {
    RecordCursor cursor(g.txn, g.segments);
    MDB_val k, v;
    std::uint64_t walked = 0;
    std::uint64_t walked_bytes = 0;
    for (bool more = cursor.seek(counted_to + 1, k, v); more && lmdb::seq_of(k) <= seq; more = cursor.next(k, v)) {
      ++walked;
      walked_bytes += v.mv_size;
    }
    passed += walked;
    passed_bytes += walked_bytes;
    ack_walked_records += walked;
    release_mapped_pages(walked_bytes * kFaultAroundPages);
  }
  g.front = seq;
  g.disk_bytes -= std::min(g.disk_bytes, passed_bytes);
  g.disk_records -= std::min(g.disk_records, passed);
  g.acknowledged_records += passed;
  g.acknowledged_kept += passed;
  g.wrote = true;
  // Empty the segments the front has passed whole.
  while (!g.segments.empty() && g.segments.front().last <= g.front) {
    const Segment& s = g.segments.front();
    const std::uint64_t entries = stat_of(g.txn, s.dbi).ms_entries;
    lmdb::check(mdb_drop(g.txn, s.dbi, 0), "emptying a segment of acknowledged records");
    g.acknowledged_kept -= std::min(g.acknowledged_kept, entries);
    g.segments.erase(g.segments.begin());
  }
  if (g.segments.empty()) g.acknowledged_kept = 0;
}

void Queue::Impl::reclaim_acknowledged(Group& g) {
  if (g.acknowledged_kept == 0 || g.segments.empty()) return;
  Segment& s = g.segments.front();
  lmdb::Cursor cursor(g.txn, s.dbi);
  MDB_val k, v;
  std::uint64_t deleted = 0;
  bool more = cursor.get(k, v, MDB_FIRST);
  while (more && lmdb::seq_of(k) <= g.front) {
    deleted += v.mv_size;
    lmdb::check(mdb_cursor_del(cursor.get(), 0), "deleting acknowledged records");
    // After a delete the cursor stands on the next record.
    const int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_GET_CURRENT);
    if (rc == MDB_NOTFOUND || rc == EINVAL) break;
    lmdb::check(rc, "reading records");
  }
  release_mapped_pages(deleted * kFaultAroundPages);
  g.acknowledged_kept = 0;
  g.wrote = true;
  if (stat_of(g.txn, s.dbi).ms_entries == 0) {
    g.segments.erase(g.segments.begin());
  } else {
    MDB_val fk, fv;
    lmdb::Cursor first(g.txn, s.dbi);
    if (first.get(fk, fv, MDB_FIRST)) s.first = lmdb::seq_of(fk);
  }
}

}  // namespace tank::queue
