#include <catch2/catch.hpp>

#include <lmdb.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "support/queue_helpers.hpp"

using namespace tank;
using namespace tank::test;
using queue::CommitStatus;
using queue::Overflow;
using queue::Queue;

namespace {

constexpr std::uint64_t kBound = 256 << 10;

std::uint64_t data_file_size(const std::filesystem::path& dir) {
  std::error_code ec;
  auto s = std::filesystem::file_size(dir / "data.mdb", ec);
  return ec ? 0 : s;
}

}  // namespace

TEST_CASE("overflow = block refuses records at the bound and resumes below the low watermark", "[queue][bounds]") {
  TempDir dir;
  ManualClock clock;
  metrics::Registry registry;
  auto opts = small_queue(dir / "q", kBound);
  opts.overflow = Overflow::block;
  opts.low_watermark = 0.5;
  auto q = Queue::open(opts, clock, &registry);
  std::vector<bool> events;
  std::mutex events_mutex;
  q->set_pressure_listener([&](bool blocked) {
    std::lock_guard lock(events_mutex);
    events.push_back(blocked);
  });

  std::uint64_t stored = 0;
  queue::CommitResult last;
  for (int i = 0; i < 1000; ++i) {
    last = q->append(batch_of(payloads(20, "b" + std::to_string(i) + "-", 400), clock));
    CHECK(q->stats().disk_used_bytes <= kBound);
    if (!last.ok()) break;
    stored = last.last_seq;
  }
  REQUIRE(last.status == CommitStatus::full);
  CHECK(last.error.find("the queue is full") != std::string::npos);
  CHECK(q->blocked());
  CHECK(q->stats().records == stored);  // the refused batch left nothing behind
  CHECK(q->stats().disk_used_bytes > kBound * 8 / 10);  // it was really near the bound
  CHECK(counter(registry, "tank_queue_refused_batches_total{reason=\"full\"}") == 1);
  CHECK(counter(registry, "tank_queue_blocked") == 1);
  {
    std::lock_guard lock(events_mutex);
    CHECK(events == std::vector<bool>{true});
  }

  // Drain a little: still above the low watermark, still blocked (hysteresis).
  REQUIRE(q->ack("out", stored / 10).ok());
  CHECK(q->blocked());
  // Drain below half the bound: accepted again, and the listener hears it once.
  REQUIRE(q->ack("out", stored * 7 / 10).ok());
  CHECK_FALSE(q->blocked());
  {
    std::lock_guard lock(events_mutex);
    CHECK(events == std::vector<bool>{true, false});
  }
  CHECK(q->append(batch_of(payloads(20, "after", 400), clock)).ok());
  CHECK(counter(registry, "tank_queue_dropped_records_total{policy=\"drop_newest\"}") == 0);
  CHECK(counter(registry, "tank_queue_dropped_records_total{policy=\"drop_oldest\"}") == 0);
}

TEST_CASE("overflow = drop_newest drops incoming records, counted, and keeps the rest", "[queue][bounds]") {
  TempDir dir;
  ManualClock clock;
  metrics::Registry registry;
  auto opts = small_queue(dir / "q", kBound);
  opts.overflow = Overflow::drop_newest;
  auto q = Queue::open(opts, clock, &registry);
  std::uint64_t stored = 0;
  std::uint64_t dropped_records = 0;
  std::uint64_t dropped_batches = 0;
  for (int i = 0; i < 200; ++i) {
    queue::WriteBatch w;
    w.records = batch_of(payloads(20, "b" + std::to_string(i) + "-", 400), clock);
    w.state_puts.emplace_back("offset", std::to_string(i));
    auto r = q->commit(std::move(w));
    CHECK(q->stats().disk_used_bytes <= kBound);
    if (r.status == CommitStatus::committed) {
      CHECK(dropped_batches == 0);  // once full it stays full: nothing is acknowledged here
      stored = r.last_seq;
    } else {
      REQUIRE(r.status == CommitStatus::dropped);
      dropped_records += 20;
      ++dropped_batches;
    }
    // The state moves on either way: the source's data was taken (and dropped by policy).
    CHECK(q->state("offset") == std::to_string(i));
  }
  CHECK(dropped_batches > 100);
  CHECK(q->stats().records == stored);
  CHECK(q->stats().last_seq == stored);
  CHECK_FALSE(q->blocked());
  CHECK(counter(registry, "tank_queue_dropped_records_total{policy=\"drop_newest\"}") ==
        static_cast<double>(dropped_records));
  CHECK(counter(registry, "tank_queue_dropped_bytes_total{policy=\"drop_newest\"}") > 0);
  // The oldest records are untouched.
  auto all = everything(*q);
  CHECK(all.front().second.rfind("b0-0", 0) == 0);
}

TEST_CASE("overflow = drop_oldest evicts the oldest records, counted, and stores the new ones", "[queue][bounds]") {
  TempDir dir;
  ManualClock clock;
  metrics::Registry registry;
  auto opts = small_queue(dir / "q", kBound);
  opts.overflow = Overflow::drop_oldest;
  auto q = Queue::open(opts, clock, &registry);
  std::uint64_t appended = 0;
  std::uint64_t last = 0;
  for (int i = 0; i < 300; ++i) {
    auto r = q->append(batch_of(payloads(20, "b" + std::to_string(i) + "-", 400), clock));
    REQUIRE(r.status == CommitStatus::committed);
    appended += 20;
    last = r.last_seq;
    REQUIRE(q->stats().disk_used_bytes <= kBound);
  }
  auto s = q->stats();
  CHECK(s.last_seq == last);
  // What is left is the newest, contiguous run.
  auto all = everything(*q);
  REQUIRE_FALSE(all.empty());
  CHECK(all.back().first == last);
  for (std::size_t i = 1; i < all.size(); ++i) REQUIRE(all[i].first == all[i - 1].first + 1);
  CHECK(all.size() < appended / 3);
  CHECK(counter(registry, "tank_queue_dropped_records_total{policy=\"drop_oldest\"}") ==
        static_cast<double>(appended - all.size()));
  // The consumer skips what was evicted.
  auto read = q->read(0, {10, 1 << 20});
  CHECK(read.records()[0].seq == all.front().first);
}

TEST_CASE("a batch larger than a commit may carry is refused, not split", "[queue][bounds]") {
  TempDir dir;
  ManualClock clock;
  metrics::Registry registry;
  auto q = Queue::open(small_queue(dir / "q", kBound), clock, &registry);
  CHECK(q->max_commit_bytes() == 64 << 10);
  auto r = q->append(batch_of({std::string(70 << 10, 'x')}, clock));
  CHECK(r.status == CommitStatus::too_large);
  CHECK(r.error.find("split it") != std::string::npos);
  CHECK(q->stats().records == 0);
  CHECK(counter(registry, "tank_queue_refused_batches_total{reason=\"too_large\"}") == 1);
  // Large records that fit are stored in overflow pages and read back whole.
  auto ok = q->append(batch_of({std::string(60 << 10, 'y')}, clock));
  REQUIRE(ok.ok());
  CHECK(q->read(0, {}).records()[0].payload.size() == 60 << 10);
}

TEST_CASE("free pages are reused: 100 times the bound moves through without growing the file", "[queue][bounds]") {
  TempDir dir;
  ManualClock clock;
  constexpr std::uint64_t bound = 1 << 20;
  auto opts = small_queue(dir / "q", bound);
  auto q = Queue::open(opts, clock, nullptr);
  const std::uint64_t limit = q->file_limit_bytes();
  const std::uint64_t parts = bound + q->disk_margin_bytes() + (256 << 10) + (2 << 10);
  CHECK(limit >= parts);
  CHECK(limit < parts + 4096);  // rounded up to a whole page
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> reads{0};
  // A concurrent reader, as an output would be, copying batches out.
  std::thread reader([&] {
    while (!stop) {
      auto b = q->read(0, {500, 1 << 20});
      reads += b.size();
    }
  });
  std::uint64_t moved = 0;
  std::uint64_t largest_file = 0;
  std::uint64_t position = 0;
  int batch = 0;
  while (moved < 100 * bound) {
    auto w = batch_of(payloads(40, "m" + std::to_string(batch++) + "-", 300), clock);
    moved += w.bytes();
    auto r = q->append(std::move(w));
    if (r.status == CommitStatus::full) {
      // Consume everything, as a healthy output does.
      REQUIRE(q->ack("out", q->stats().last_seq).ok());
      continue;
    }
    REQUIRE(r.ok());
    // Acknowledge up to a lagging position so the queue holds a backlog while churning.
    position = r.last_seq > 400 ? r.last_seq - 400 : 0;
    if (position > 0) REQUIRE(q->ack("out", position).ok());
    largest_file = std::max(largest_file, data_file_size(dir / "q"));
    REQUIRE(largest_file <= limit);
    REQUIRE(q->stats().disk_used_bytes <= bound);
  }
  stop = true;
  reader.join();
  INFO("largest file: " << largest_file << " limit: " << limit << " reads: " << reads.load());
  CHECK(largest_file <= limit);
  CHECK(reads > 0);
}

TEST_CASE("drop_oldest churn without consumers keeps the file within its limit", "[queue][bounds]") {
  TempDir dir;
  ManualClock clock;
  constexpr std::uint64_t bound = 512 << 10;
  auto opts = small_queue(dir / "q", bound);
  opts.overflow = Overflow::drop_oldest;
  opts.consumers = {};
  auto q = Queue::open(opts, clock, nullptr);
  const std::uint64_t limit = q->file_limit_bytes();
  std::uint64_t moved = 0;
  int batch = 0;
  while (moved < 100 * bound) {
    auto w = batch_of(payloads(30, "d" + std::to_string(batch++) + "-", 500), clock);
    moved += w.bytes();
    REQUIRE(q->append(std::move(w)).ok());
    REQUIRE(data_file_size(dir / "q") <= limit);
    REQUIRE(q->stats().disk_used_bytes <= bound);
  }
}

TEST_CASE("a reader holding an old snapshot cannot make the queue overflow its file", "[queue][bounds]") {
  // LMDB cannot reuse pages freed after the oldest live read transaction. A reader in another
  // process that stays open (a stopped `tank queue peek`) makes the file grow to the map size;
  // the queue must then refuse records like a full queue -- never crash or corrupt -- and work
  // again once the reader is gone.
  TempDir dir;
  ManualClock clock;
  constexpr std::uint64_t bound = 256 << 10;
  auto opts = small_queue(dir / "q", bound);
  auto q = Queue::open(opts, clock, nullptr);
  REQUIRE(q->append(batch_of({"first"}, clock)).ok());

  int ready[2];
  int release[2];
  REQUIRE(::pipe(ready) == 0);
  REQUIRE(::pipe(release) == 0);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    MDB_env* env = nullptr;
    MDB_txn* txn = nullptr;
    char c = 'x';
    if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 8) != 0 ||
        mdb_env_open(env, (dir / "q").c_str(), MDB_RDONLY, 0) != 0 ||
        mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn) != 0) {
      c = 'e';
    }
    (void)!::write(ready[1], &c, 1);
    (void)!::read(release[0], &c, 1);
    ::_exit(0);
  }
  char c = 0;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  REQUIRE(c == 'x');

  bool refused = false;
  for (int i = 0; i < 2000 && !refused; ++i) {
    auto r = q->append(batch_of(payloads(20, "s" + std::to_string(i) + "-", 300), clock));
    if (r.ok()) {
      auto ack = q->ack("out", r.last_seq);
      if (!ack.ok()) refused = true;
    } else {
      CHECK((r.status == CommitStatus::full || r.status == CommitStatus::failed));
      refused = true;
    }
    REQUIRE(data_file_size(dir / "q") <= q->file_limit_bytes());
  }
  CHECK(refused);

  c = 'g';
  REQUIRE(::write(release[1], &c, 1) == 1);
  int status = 0;
  ::waitpid(child, &status, 0);
  ::close(ready[0]);
  ::close(ready[1]);
  ::close(release[0]);
  ::close(release[1]);

  // The reader is gone: its pages are reusable and records are accepted again.
  bool recovered = wait_until([&] {
    auto ack = q->ack("out", q->stats().last_seq);
    auto r = q->append(batch_of({"again"}, clock));
    return ack.ok() && r.ok();
  });
  CHECK(recovered);
  CHECK(data_file_size(dir / "q") <= q->file_limit_bytes());
}

TEST_CASE("a queue whose bound shrank below its content stays readable and refuses new records",
          "[queue][bounds]") {
  TempDir dir;
  ManualClock clock;
  {
    auto q = Queue::open(small_queue(dir / "q", 1 << 20), clock, nullptr);
    for (int i = 0; i < 40; ++i) REQUIRE(q->append(batch_of(payloads(20, "x", 500), clock)).ok());
  }
  auto q = Queue::open(small_queue(dir / "q", kBound), clock, nullptr);
  CHECK(q->blocked());
  CHECK(q->stats().records == 800);
  CHECK(q->append(batch_of({"new"}, clock)).status == CommitStatus::full);
  REQUIRE(q->ack("out", 800).ok());
  CHECK_FALSE(q->blocked());
  CHECK(q->append(batch_of({"new"}, clock)).ok());
}

TEST_CASE("a batch whose acknowledgements make room for its records is accepted at the bound", "[queue][bounds]") {
  // A processor acknowledges its input and appends its output in one batch: at the bound the
  // acknowledgement must free the room first, or the processor could never move again.
  for (auto policy : {Overflow::block, Overflow::drop_newest, Overflow::drop_oldest}) {
    INFO(queue::to_string(policy));
    TempDir dir;
    ManualClock clock;
    auto opts = small_queue(dir / "q", kBound);
    opts.overflow = policy;
    auto q = Queue::open(opts, clock, nullptr);
    std::uint64_t last = 0;
    for (int i = 0; i < 1000; ++i) {
      auto r = q->append(batch_of(payloads(20, "f", 400), clock));
      if (r.status != CommitStatus::committed) break;
      last = r.last_seq;
      if (policy == Overflow::drop_oldest && q->stats().disk_used_bytes > kBound * 9 / 10) break;
    }
    queue::WriteBatch w;
    w.acks.emplace_back("out", last);
    w.records = batch_of(payloads(20, "output", 400), clock);
    w.state_puts.emplace_back("processor/window", "7");
    auto r = q->commit(w);
    CHECK(r.status == CommitStatus::committed);
    CHECK(q->position("out") == last);
    CHECK(q->state("processor/window") == "7");
    CHECK(q->stats().records == 20);
  }
}

TEST_CASE("component state counts against the bound and a batch that does not fit leaves no trace",
          "[queue][bounds]") {
  TempDir dir;
  ManualClock clock;
  metrics::Registry registry;
  auto opts = small_queue(dir / "q", kBound);
  opts.overflow = Overflow::drop_oldest;
  auto q = Queue::open(opts, clock, &registry);
  REQUIRE(q->append(batch_of(payloads(100, "keep", 100), clock)).ok());
  // Fill the bound with state, 32 KiB at a time, until it is refused.
  queue::CommitResult r;
  int puts = 0;
  for (; puts < 100; ++puts) {
    queue::WriteBatch w;
    w.state_puts.emplace_back("big/" + std::to_string(puts), std::string(32 << 10, 's'));
    r = q->commit(w);
    REQUIRE(q->stats().disk_used_bytes <= kBound);
    if (!r.ok()) break;
  }
  REQUIRE(r.status == CommitStatus::full);
  CHECK(r.error.find("no room for the component state") != std::string::npos);
  CHECK_FALSE(q->state("big/" + std::to_string(puts)));
  // drop_oldest may evict records for records, but a batch that would still not fit is refused
  // whole: nothing is evicted for it.
  double dropped_before = counter(registry, "tank_queue_dropped_records_total{policy=\"drop_oldest\"}");
  queue::WriteBatch big;
  big.records = batch_of(payloads(100, "new", 500), clock);
  big.state_puts.emplace_back("more", std::string(8 << 10, 'm'));
  auto refused = q->commit(big);
  CHECK(refused.status == CommitStatus::full);
  CHECK(q->stats().records == 100);
  CHECK(counter(registry, "tank_queue_dropped_records_total{policy=\"drop_oldest\"}") == dropped_before);
  CHECK(q->stats().disk_used_bytes <= kBound);
}
