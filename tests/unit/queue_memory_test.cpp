#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include "support/queue_helpers.hpp"

using namespace tank;
using namespace tank::test;
using queue::CommitStatus;
using queue::Queue;

namespace {

queue::Options memory_queue(const std::filesystem::path& dir, std::uint64_t max_memory = 64 << 10) {
  auto o = small_queue(dir, 1 << 20);
  o.mode = queue::Mode::memory;
  o.max_memory_bytes = max_memory;
  return o;
}

}  // namespace

TEST_CASE("memory mode holds records in RAM and writes nothing for them", "[queue][memory]") {
  TempDir dir;
  ManualClock clock;
  auto q = Queue::open(memory_queue(dir / "q"), clock, nullptr);
  auto r = q->append(batch_of(payloads(10, "m", 100), clock));
  REQUIRE(r.ok());
  CHECK(r.first_seq == 1);
  auto s = q->stats();
  CHECK(s.memory_records == 10);
  CHECK(s.disk_records == 0);
  CHECK(s.records == 10);
  CHECK(s.memory_bytes <= 64 << 10);
  CHECK(s.oldest_ingest_ns == clock.wall_ns());
  CHECK(payloads_of(q->read(0, {})) == payloads(10, "m", 100));
  CHECK(seqs_of(q->read(5, {2, 1 << 20})) == std::vector<std::uint64_t>{6, 7});
  REQUIRE(q->ack("out", 4).ok());
  CHECK(q->stats().memory_records == 6);
  CHECK(q->read(0, {}).records()[0].seq == 5);
}

TEST_CASE("memory mode spills to LMDB beyond max_memory_bytes and reads both tiers in order", "[queue][memory]") {
  TempDir dir;
  ManualClock clock;
  auto q = Queue::open(memory_queue(dir / "q", 16 << 10), clock, nullptr);
  std::uint64_t last = 0;
  for (int i = 0; i < 20; ++i) {
    auto r = q->append(batch_of(payloads(10, "b" + std::to_string(i) + "-", 200), clock));
    REQUIRE(r.ok());
    last = r.last_seq;
  }
  auto s = q->stats();
  CHECK(s.memory_bytes <= 16 << 10);
  CHECK(s.memory_records > 0);
  CHECK(s.disk_records > 0);
  CHECK(s.records == last);
  // Free RAM, then append more: the newest go to RAM again, after records already on disk.
  REQUIRE(q->ack("out", 30).ok());
  for (int i = 20; i < 25; ++i) REQUIRE(q->append(batch_of(payloads(2, "c" + std::to_string(i) + "-"), clock)).ok());
  auto all = everything(*q);
  REQUIRE(all.size() == q->stats().records);
  for (std::size_t i = 1; i < all.size(); ++i) REQUIRE(all[i].first == all[i - 1].first + 1);
  CHECK(all.front().first == 31);
  // Small reads walk both tiers without skipping anything.
  std::uint64_t after = 30;
  std::vector<std::uint64_t> walked;
  for (;;) {
    auto b = q->read(after, {7, 1 << 20});
    if (b.empty()) break;
    for (auto seq : seqs_of(b)) walked.push_back(seq);
    after = b.scanned_to();
  }
  REQUIRE(walked.size() == all.size());
  for (std::size_t i = 0; i < all.size(); ++i) CHECK(walked[i] == all[i].first);
}

TEST_CASE("memory mode saves RAM records to disk at close", "[queue][memory]") {
  TempDir dir;
  ManualClock clock;
  {
    auto q = Queue::open(memory_queue(dir / "q"), clock, nullptr);
    REQUIRE(q->append(batch_of(payloads(5, "keep"), clock)).ok());
    REQUIRE(q->ack("out", 2).ok());
  }
  auto disk = small_queue(dir / "q");
  auto q = Queue::open(disk, clock, nullptr);
  CHECK(payloads_of(q->read(2, {})) == std::vector<std::string>{"keep2", "keep3", "keep4"});
  CHECK(q->position("out") == 2u);
  CHECK(q->append(batch_of({"next"}, clock)).first_seq >= 6);
}

TEST_CASE("a crash in memory mode loses RAM records but never reuses their numbers", "[queue][memory]") {
  TempDir dir;
  ManualClock clock;
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    auto q = Queue::open(memory_queue(dir / "q"), clock, nullptr);
    bool ok = q->append(batch_of(payloads(5, "lost"), clock)).ok();
    ::_exit(ok ? 0 : 1);  // no close: the RAM records die with the process
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  auto q = Queue::open(memory_queue(dir / "q"), clock, nullptr);
  CHECK(q->stats().records == 0);
  auto r = q->append(batch_of({"new"}, clock));
  REQUIRE(r.ok());
  CHECK(r.first_seq > 5);  // 1..5 went to records that were lost; they are never handed out again
}

TEST_CASE("memory mode applies the overflow policy when both tiers are full", "[queue][memory]") {
  TempDir dir;
  ManualClock clock;
  metrics::Registry registry;
  auto opts = memory_queue(dir / "q", 16 << 10);
  opts.max_disk_bytes = 256 << 10;
  opts.overflow = queue::Overflow::drop_oldest;
  auto q = Queue::open(opts, clock, &registry);
  std::uint64_t last = 0;
  for (int i = 0; i < 200; ++i) {
    auto r = q->append(batch_of(payloads(10, "o" + std::to_string(i) + "-", 300), clock));
    REQUIRE(r.ok());
    last = r.last_seq;
    REQUIRE(q->stats().memory_bytes <= 16 << 10);
    REQUIRE(q->stats().disk_used_bytes <= 256 << 10);
  }
  auto all = everything(*q);
  CHECK(all.back().first == last);
  CHECK(counter(registry, "tank_queue_dropped_records_total{policy=\"drop_oldest\"}") ==
        static_cast<double>(last - all.size()));

  TempDir dir2;
  auto block = memory_queue(dir2 / "q", 16 << 10);
  block.max_disk_bytes = 256 << 10;
  auto b = Queue::open(block, clock, nullptr);
  queue::CommitResult r;
  for (int i = 0; i < 200 && r.ok(); ++i) r = b->append(batch_of(payloads(10, "x", 300), clock));
  CHECK(r.status == CommitStatus::full);
  CHECK(b->blocked());
}

TEST_CASE("memory mode saves the RAM tier at close even right after a large acknowledgement", "[queue][memory]") {
  // Pages freed by a transaction become reusable only two transactions later: saving the RAM
  // tier right after acknowledging a full disk tier must not lose it.
  TempDir dir;
  ManualClock clock;
  auto opts = memory_queue(dir / "q", 1 << 20);
  opts.max_disk_bytes = 1 << 20;
  std::uint64_t kept = 0;
  {
    auto q = Queue::open(opts, clock, nullptr);
    queue::CommitResult r;
    for (int i = 0; i < 10000; ++i) {
      r = q->append(batch_of(payloads(20, "a", 400), clock));
      if (!r.ok()) break;
    }
    REQUIRE(r.status == CommitStatus::full);  // both tiers full
    REQUIRE(q->ack("out", q->stats().last_seq).ok());
    for (int i = 0; i < 100; ++i) {
      auto m = q->append(batch_of(payloads(20, "b", 400), clock));
      REQUIRE(m.ok());
      if (q->stats().memory_bytes > (900 << 10)) break;
    }
    kept = q->stats().memory_records;
    REQUIRE(q->stats().disk_records == 0);
  }
  auto q = Queue::open(small_queue(dir / "q", 1 << 20), clock, nullptr);
  CHECK(q->stats().records == kept);
}
