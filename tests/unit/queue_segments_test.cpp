// Records live in segments (queue_impl.hpp): acknowledged records leave a segment at a time, the
// queue's front hides the ones a segment still holds, and under pressure they are deleted so that
// they never keep new records out.

#include <catch2/catch.hpp>
#include <lmdb.h>

#include <map>
#include <string>

#include "queue/lmdb_file.hpp"
#include "queue/queue.hpp"
#include "queue/queue_impl.hpp"
#include "queue/record.hpp"
#include "queue/verify.hpp"
#include "support/queue_helpers.hpp"
#include "support/raw_lmdb.hpp"

using namespace tank;
using namespace tank::test;
using queue::CommitStatus;
using queue::Queue;
namespace lf = queue::lmdb_file;

namespace {

// The records each segment holds, straight from the file (the writer's pages are in the page
// cache: fsync = "never" writes them with write()). Slot -> (count, first, last).
struct SegmentContent {
  std::uint64_t count = 0;
  std::uint64_t first = 0;
  std::uint64_t last = 0;
};
std::map<unsigned, SegmentContent> segments_in(const std::filesystem::path& dir) {
  lf::File file(dir / "data.mdb");
  lf::Metas metas = file.read_metas();
  const int newest = metas.newest();
  REQUIRE(newest >= 0);
  const lf::Meta& meta = metas.slots[static_cast<std::size_t>(newest)];
  std::map<unsigned, SegmentContent> out;
  for (unsigned slot = 0; slot < queue::kRecordSegments; ++slot) {
    const std::string name = slot == 0 ? "records" : "records." + std::to_string(slot);
    SegmentContent c;
    lf::for_each_entry(file, meta, name, [&](std::string_view k, std::string_view) {
      std::uint64_t seq = 0;
      for (char ch : k) seq = seq << 8 | static_cast<unsigned char>(ch);
      if (c.count == 0) c.first = seq;
      c.last = seq;
      ++c.count;
      return true;
    });
    if (c.count > 0) out[slot] = c;
  }
  return out;
}

}  // namespace

TEST_CASE("records fill segments in order and acknowledged ones leave a segment at a time", "[queue][segments]") {
  TempDir dir;
  ManualClock clock;
  // 4 MiB: segments of 32 pages (128 KiB).
  auto opts = small_queue(dir / "q", 4 << 20);
  auto q = Queue::open(opts, clock, nullptr);
  for (int i = 0; i < 30; ++i) REQUIRE(q->append(batch_of(payloads(200, "b" + std::to_string(i) + "-", 100), clock)).ok());
  REQUIRE(q->stats().records == 6000);

  auto segments = segments_in(dir / "q");
  REQUIRE(segments.size() >= 4);
  // Contiguous runs, in order, together every record.
  std::uint64_t expect = 1;
  std::map<std::uint64_t, unsigned> by_first;
  for (const auto& [slot, c] : segments) by_first[c.first] = slot;
  for (const auto& [first, slot] : by_first) {
    CHECK(first == expect);
    expect = segments[slot].last + 1;
    CHECK(segments[slot].count == segments[slot].last - segments[slot].first + 1);
  }
  CHECK(expect == 6001);

  // Acknowledge into the middle of the third segment: the two before it are emptied whole, the
  // third keeps its acknowledged records, which no reader sees.
  auto it = by_first.begin();
  std::advance(it, 2);
  const unsigned third = it->second;
  const std::uint64_t ack_to = segments[third].first + 10;
  REQUIRE(q->ack("out", ack_to).ok());
  auto after = segments_in(dir / "q");
  CHECK(after.size() == segments.size() - 2);
  CHECK(after.at(third).count == segments[third].count);  // kept whole, not deleted record by record
  CHECK(q->stats().records == 6000 - ack_to);
  CHECK(q->stats().first_seq == ack_to + 1);
  auto all = everything(*q);
  REQUIRE(all.size() == 6000 - ack_to);
  CHECK(all.front().first == ack_to + 1);
  CHECK(all.back().first == 6000);
  // A reader from the start (any position before the front) starts after the front.
  queue::ReadLimits one;
  one.max_records = 1;
  CHECK(seqs_of(q->read(0, one)) == std::vector<std::uint64_t>{ack_to + 1});
  const auto bytes_before = q->stats().bytes;
  CHECK(bytes_before == (6000 - ack_to) * q->read(ack_to, one).bytes());
  CHECK(q->stats().consumers.at(0).lag_records == 6000 - ack_to);
  CHECK(q->disk_bytes_after(std::vector<std::uint64_t>{0, ack_to, 5990}) ==
        std::vector<std::uint64_t>{bytes_before, bytes_before, 10 * q->read(ack_to, one).bytes()});

  // After a reopen: the same queue (the front is stored).
  q->close();
  q = Queue::open(opts, clock, nullptr);
  CHECK(q->stats().records == 6000 - ack_to);
  CHECK(q->stats().bytes == bytes_before);
  CHECK(q->stats().first_seq == ack_to + 1);
  CHECK(everything(*q).size() == 6000 - ack_to);

  // Everything acknowledged: every segment is emptied, appending goes on.
  REQUIRE(q->ack("out", 6000).ok());
  CHECK(segments_in(dir / "q").empty());
  CHECK(q->stats().records == 0);
  CHECK(q->stats().bytes == 0);
  REQUIRE(q->append(batch_of({"next"}, clock)).ok());
  all = everything(*q);
  REQUIRE(all.size() == 1);
  CHECK(all[0] == std::pair<std::uint64_t, std::string>{6001, "next"});
  q->close();
  queue::VerifyOptions full;
  full.depth = queue::Verification::full;
  CHECK(queue::verify_in_child(dir / "q", full).outcome == queue::VerifyResult::Outcome::ok);
}

TEST_CASE("acknowledged records a segment still holds stay gone when no consumer is left", "[queue][segments]") {
  TempDir dir;
  ManualClock clock;
  auto opts = small_queue(dir / "q", 4 << 20);
  {
    auto q = Queue::open(opts, clock, nullptr);
    REQUIRE(q->append(batch_of(payloads(100), clock)).ok());
    REQUIRE(q->ack("out", 40).ok());
    CHECK(segments_in(dir / "q").begin()->second.count == 100);  // still stored
  }
  // Reopened with no consumer: nothing acknowledges any more, and what was acknowledged does not
  // come back.
  opts.consumers.clear();
  auto q = Queue::open(opts, clock, nullptr);
  CHECK(q->stats().records == 60);
  auto all = everything(*q);
  REQUIRE(all.size() == 60);
  CHECK(all.front().first == 41);
}

TEST_CASE("acknowledged records a segment still holds never keep new records out", "[queue][segments]") {
  TempDir dir;
  ManualClock clock;
  // The smallest queue: 64 pages, segments of 16 (a quarter of the bound).
  auto opts = small_queue(dir / "q", 256 << 10);
  auto q = Queue::open(opts, clock, nullptr);
  auto fill = [&] {
    std::uint64_t taken = 0;
    for (int i = 0; i < 10000; ++i) {
      auto r = q->append(batch_of(payloads(10, "f", 200), clock));
      if (r.status == CommitStatus::full) break;
      REQUIRE(r.ok());
      taken += 10;
    }
    return taken;
  };
  const std::uint64_t first_fill = fill();
  REQUIRE(first_fill > 300);
  // Every record but the newest acknowledged: the newest segment is mostly acknowledged records.
  const std::uint64_t last = q->stats().last_seq;
  REQUIRE(q->ack("out", last - 1).ok());
  CHECK(q->stats().records == 1);
  // The queue takes (nearly) as much again as the first time: the acknowledged records the last
  // segment held were deleted to make room. (Kept, they would take a quarter of this queue; the
  // few per cent less are the one record left and where the segments' partly filled pages fall.)
  const std::uint64_t second_fill = fill();
  CHECK(second_fill * 10 >= first_fill * 9);
  CHECK(q->stats().records == second_fill + 1);
  CHECK(q->stats().disk_used_bytes <= opts.max_disk_bytes);
  auto all = everything(*q);
  REQUIRE(all.size() == second_fill + 1);
  CHECK(all.front().first == last);
}

TEST_CASE("drop_oldest evicts across segments and keeps their runs in order", "[queue][segments]") {
  TempDir dir;
  ManualClock clock;
  auto opts = small_queue(dir / "q", 256 << 10);
  opts.overflow = queue::Overflow::drop_oldest;
  auto q = Queue::open(opts, clock, nullptr);
  for (int i = 0; i < 300; ++i) REQUIRE(q->append(batch_of(payloads(10, "d", 200), clock)).ok());
  REQUIRE(q->ack("out", 5).ok());
  const auto s = q->stats();
  CHECK(s.disk_used_bytes <= opts.max_disk_bytes);
  CHECK(s.last_seq == 3000);
  auto all = everything(*q);
  REQUIRE(all.size() == s.records);
  REQUIRE(!all.empty());
  CHECK(all.back().first == 3000);
  for (std::size_t i = 1; i < all.size(); ++i) CHECK(all[i].first == all[i - 1].first + 1);
  q->close();
  queue::VerifyOptions full;
  full.depth = queue::Verification::full;
  CHECK(queue::verify_in_child(dir / "q", full).outcome == queue::VerifyResult::Outcome::ok);
}

TEST_CASE("a queue of format 2 (one records database) opens as it is: its records are the first segment",
          "[queue][segments]") {
  TempDir dir;
  ManualClock clock;
  auto opts = small_queue(dir / "q", 4 << 20);
  // What a format-2 tank left: the databases "records", "meta", "state" and "dead_letters", the
  // records after the consumer's position, format 2 in meta, no "front".
  {
    RawLmdb raw(dir / "q");
    const MDB_dbi meta = raw.db("meta", true);
    const MDB_dbi records = raw.db("records", true);
    raw.db("state", true);
    raw.db("dead_letters", true);
    std::uint64_t bytes = 0;
    for (std::uint64_t seq = 1001; seq <= 3000; ++seq) {
      queue::EncodedRecords b;
      b.add("in", 1000 + static_cast<std::int64_t>(seq), "old-" + std::to_string(seq));
      std::string v(b.encoded(0));
      queue::seal_stored_record(seq, v.data(), v.size());
      raw.put(records, RawLmdb::seq_key(seq), v);
      bytes += v.size();
    }
    raw.put(meta, "format", RawLmdb::u64(2));
    raw.put(meta, "next_seq", RawLmdb::u64(3001));
    raw.put(meta, "bytes", RawLmdb::u64(bytes));
    raw.put(meta, "consumer:out", RawLmdb::u64(1000));
    raw.put(meta, "queue_id", RawLmdb::u64(42));
    raw.commit();
  }
  auto q = Queue::open(opts, clock, nullptr);
  CHECK(q->stats().records == 2000);
  auto all = everything(*q);
  REQUIRE(all.size() == 2000);
  CHECK(all.front() == std::pair<std::uint64_t, std::string>{1001, "old-1001"});
  CHECK(all.back() == std::pair<std::uint64_t, std::string>{3000, "old-3000"});
  // Part of it acknowledged: kept in its segment; new records go on in other segments.
  REQUIRE(q->ack("out", 2500).ok());
  CHECK(segments_in(dir / "q").at(0).count == 2000);
  for (int i = 0; i < 20; ++i) REQUIRE(q->append(batch_of(payloads(500, "new", 100), clock)).ok());
  CHECK(segments_in(dir / "q").size() >= 3);
  all = everything(*q);
  REQUIRE(all.size() == 500 + 10000);
  CHECK(all.front().first == 2501);
  CHECK(all[500].second.starts_with("new"));
  // Past the old database's last record (the first appends filled it up to a segment's size): it
  // is emptied whole.
  const std::uint64_t old_last = segments_in(dir / "q").at(0).last;
  CHECK(old_last >= 3000);
  REQUIRE(q->ack("out", old_last).ok());
  CHECK_FALSE(segments_in(dir / "q").contains(0));
  CHECK(q->stats().records == 13000 - old_last);
  q->close();
  queue::VerifyOptions full;
  full.depth = queue::Verification::full;
  CHECK(queue::verify_in_child(dir / "q", full).outcome == queue::VerifyResult::Outcome::ok);
}

TEST_CASE("an acknowledgement counts what the consumers' reads saw instead of walking the records again",
          "[queue][segments]") {
  TempDir dir;
  ManualClock clock;
  auto opts = small_queue(dir / "q", 16 << 20);
  opts.consumers = {"a", "b"};
  auto q = Queue::open(opts, clock, nullptr);
  for (int i = 0; i < 20; ++i) {
    REQUIRE(q->append(batch_of(payloads(500, "p" + std::to_string(i) + "-", 10 + 7 * i), clock)).ok());
  }
  REQUIRE(q->stats().records == 10000);
  // What the queue must say after the front moved to `front`: counted independently of the spans.
  auto check_counts = [&](std::uint64_t front) {
    const auto stats = q->stats();
    CHECK(stats.records == 10000 - front);
    CHECK(stats.bytes == q->disk_bytes_after(std::vector<std::uint64_t>{front}).at(0));
  };

  SECTION("consumers that read and acknowledge the same batches: nothing is walked") {
    const std::uint64_t walked_before = queue::ack_walked_records;
    queue::ReadLimits limits;
    limits.max_records = 700;
    std::uint64_t front = 0;
    while (front < 10000) {
      const auto a = q->read(front, limits);
      const auto b = q->read(front, limits);
      REQUIRE(a.scanned_to() == b.scanned_to());
      REQUIRE(q->ack("a", a.scanned_to()).ok());
      check_counts(front);  // b is behind: the front stays
      REQUIRE(q->ack("b", b.scanned_to()).ok());
      front = b.scanned_to();
      check_counts(front);
    }
    CHECK(queue::ack_walked_records == walked_before);
  }

  SECTION("a front that stops inside a read walks only what no read covered") {
    queue::ReadLimits limits;
    limits.max_records = 300;
    const auto a1 = q->read(0, limits);
    REQUIRE(q->ack("a", a1.scanned_to()).ok());  // a at 300
    limits.max_records = 500;
    const auto b1 = q->read(0, limits);
    REQUIRE(q->ack("b", b1.scanned_to()).ok());  // b at 500: the front at 300, a's read
    check_counts(300);
    const std::uint64_t walked_before = queue::ack_walked_records;
    limits.max_records = 300;
    const auto a2 = q->read(300, limits);
    REQUIRE(q->ack("a", a2.scanned_to()).ok());  // a at 600: the front at 500, inside a's read
    check_counts(500);
    CHECK(queue::ack_walked_records == walked_before + 200);
  }
}

TEST_CASE("records read and then evicted by drop_oldest are not counted again when acknowledged",
          "[queue][segments]") {
  TempDir dir;
  ManualClock clock;
  auto opts = small_queue(dir / "q", 256 << 10);
  opts.overflow = queue::Overflow::drop_oldest;
  auto q = Queue::open(opts, clock, nullptr);
  for (int i = 0; i < 40; ++i) REQUIRE(q->append(batch_of(payloads(10, "d", 200), clock)).ok());
  queue::ReadLimits limits;
  limits.max_records = 100;
  const auto read = q->read(0, limits);
  REQUIRE(read.scanned_to() == 100);
  // Appending on evicts the oldest records, those just read among them.
  for (int i = 0; i < 100; ++i) REQUIRE(q->append(batch_of(payloads(10, "e", 200), clock)).ok());
  REQUIRE(q->stats().first_seq > 100);
  REQUIRE(q->ack("out", read.scanned_to()).ok());
  const auto s = q->stats();
  CHECK(s.records == everything(*q).size());
  CHECK(s.bytes == q->disk_bytes_after(std::vector<std::uint64_t>{0}).at(0));
}
