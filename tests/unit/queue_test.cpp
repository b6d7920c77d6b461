#include <catch2/catch.hpp>

#include <fstream>

#include <atomic>
#include <set>
#include <thread>

#include "support/queue_helpers.hpp"

using namespace tank;
using namespace tank::test;
using queue::CommitStatus;
using queue::Queue;

TEST_CASE("appended records are read back in order with their fields", "[queue]") {
  TempDir dir;
  ManualClock clock;
  auto q = Queue::open(small_queue(dir / "q"), clock, nullptr);
  queue::EncodedRecords b;
  queue::Attribute attrs[] = {{"topic", "a/b"}};
  b.add("plant", clock.wall_ns(), "one", attrs);
  b.add("plant", clock.wall_ns() + 1, "two");
  auto r = q->append(std::move(b));
  REQUIRE(r.status == CommitStatus::committed);
  CHECK(r.first_seq == 1);
  CHECK(r.last_seq == 2);
  auto r2 = q->append(batch_of({"three"}, clock));
  CHECK(r2.first_seq == 3);

  auto read = q->read(0, {});
  REQUIRE(read.size() == 3);
  CHECK(payloads_of(read) == std::vector<std::string>{"one", "two", "three"});
  CHECK(seqs_of(read) == std::vector<std::uint64_t>{1, 2, 3});
  CHECK(read.records()[0].input == "plant");
  CHECK(read.records()[0].attribute("topic") == "a/b");
  CHECK(read.records()[1].ingest_ns == clock.wall_ns() + 1);
  CHECK(read.scanned_to() == 3);
  CHECK(payloads_of(q->read(1, {})) == std::vector<std::string>{"two", "three"});
  CHECK(q->read(3, {}).empty());
  CHECK(q->read(3, {}).scanned_to() == 0);

  auto s = q->stats();
  CHECK(s.records == 3);
  CHECK(s.first_seq == 1);
  CHECK(s.last_seq == 3);
  CHECK(s.next_seq == 4);
  CHECK(s.oldest_ingest_ns == clock.wall_ns());
  CHECK(s.bytes > 0);
  CHECK(s.disk_used_bytes >= 4096);
}

TEST_CASE("read limits cap records and bytes but always return one record", "[queue]") {
  TempDir dir;
  ManualClock clock;
  auto q = Queue::open(small_queue(dir / "q"), clock, nullptr);
  REQUIRE(q->append(batch_of(payloads(10, "p", 100), clock)).ok());
  queue::ReadLimits three{3, 1 << 20};
  auto a = q->read(0, three);
  CHECK(seqs_of(a) == std::vector<std::uint64_t>{1, 2, 3});
  CHECK(a.scanned_to() == 3);
  queue::ReadLimits tiny{100, 10};
  auto b = q->read(3, tiny);
  CHECK(seqs_of(b) == std::vector<std::uint64_t>{4});
  queue::ReadLimits some_bytes{100, 300};
  auto c = q->read(4, some_bytes);
  CHECK(c.size() == 2);  // 2 x ~118 bytes fit in 300, a third does not
  CHECK(c.bytes() <= 300);
}

TEST_CASE("route filters skip other inputs but report how far they scanned", "[queue]") {
  TempDir dir;
  ManualClock clock;
  auto q = Queue::open(small_queue(dir / "q"), clock, nullptr);
  queue::EncodedRecords b;
  for (int i = 0; i < 6; ++i) b.add(i % 2 ? "odd" : "even", clock.wall_ns(), std::to_string(i));
  REQUIRE(q->append(std::move(b)).ok());
  queue::RouteFilter odd{{"odd"}};
  auto r = q->read(0, {}, &odd);
  CHECK(payloads_of(r) == std::vector<std::string>{"1", "3", "5"});
  CHECK(r.scanned_to() == 6);
  queue::RouteFilter none{{"nobody"}};
  auto n = q->read(0, {}, &none);
  CHECK(n.empty());
  CHECK(n.scanned_to() == 6);  // the consumer may acknowledge past records it does not take
  queue::RouteFilter all{};
  CHECK(q->read(0, {}, &all).size() == 6);
}

TEST_CASE("a record is deleted once every consumer has acknowledged it", "[queue]") {
  TempDir dir;
  ManualClock clock;
  auto opts = small_queue(dir / "q");
  opts.consumers = {"cloud", "archive"};
  auto q = Queue::open(opts, clock, nullptr);
  REQUIRE(q->append(batch_of(payloads(5), clock)).ok());
  CHECK(q->position("cloud") == 0u);
  CHECK_FALSE(q->position("nobody"));

  REQUIRE(q->ack("cloud", 3).ok());
  CHECK(q->position("cloud") == 3u);
  CHECK(q->stats().records == 5);  // archive still needs them
  REQUIRE(q->ack("archive", 2).ok());
  CHECK(q->stats().records == 3);
  CHECK(q->stats().first_seq == 3);
  REQUIRE(q->ack("archive", 5).ok());
  CHECK(q->stats().records == 2);
  REQUIRE(q->ack("cloud", 5).ok());
  CHECK(q->stats().records == 0);
  CHECK(q->stats().first_seq == 0);
  // Positions never move back.
  REQUIRE(q->ack("cloud", 1).ok());
  CHECK(q->position("cloud") == 5u);

  auto unknown = q->ack("nobody", 1);
  CHECK(unknown.status == CommitStatus::failed);
  CHECK(unknown.error == "unknown consumer \"nobody\"");
  auto beyond = q->ack("cloud", 99);
  CHECK(beyond.status == CommitStatus::failed);
  CHECK(beyond.error.find("newest record is 5") != std::string::npos);
}

TEST_CASE("a consumer removed at runtime no longer holds records and stays forgotten after a reopen", "[queue]") {
  TempDir dir;
  ManualClock clock;
  auto opts = small_queue(dir / "q");
  opts.consumers = {"cloud", "archive"};
  {
    auto q = Queue::open(opts, clock, nullptr);
    REQUIRE(q->append(batch_of(payloads(5), clock)).ok());
    REQUIRE(q->ack("archive", 5).ok());
    CHECK(q->stats().records == 5);  // cloud holds them
    CHECK(q->remove_consumer("cloud"));
    CHECK_FALSE(q->position("cloud"));
    CHECK(q->stats().records == 0);  // what archive passed is gone at once
    CHECK(q->remove_consumer("nobody"));  // unknown: nothing to do
    REQUIRE(q->append(batch_of(payloads(2), clock)).ok());
    CHECK(q->stats().records == 2);
    q->close();
  }
  // Reopened with the same list (a restart before the configuration file changed): cloud is new
  // again and starts after the newest record.
  auto q = Queue::open(opts, clock, nullptr);
  CHECK(q->position("cloud") == 7u);
  CHECK(q->position("archive") == 5u);
}

TEST_CASE("each consumer reports its lag", "[queue]") {
  TempDir dir;
  ManualClock clock;
  auto opts = small_queue(dir / "q");
  opts.consumers = {"fast", "slow"};
  auto q = Queue::open(opts, clock, nullptr);
  REQUIRE(q->append(batch_of(payloads(4), clock)).ok());
  clock.advance(1'000'000'000);
  REQUIRE(q->append(batch_of(payloads(2), clock)).ok());
  REQUIRE(q->ack("fast", 5).ok());
  auto s = q->stats();
  REQUIRE(s.consumers.size() == 2);
  CHECK(s.consumers[0].name == "fast");
  CHECK(s.consumers[0].lag_records == 1);
  CHECK(s.consumers[0].oldest_unacked_ns == clock.wall_ns());
  CHECK(s.consumers[1].name == "slow");
  CHECK(s.consumers[1].lag_records == 6);
  CHECK(s.consumers[1].oldest_unacked_ns == clock.wall_ns() - 1'000'000'000);
}

TEST_CASE("each consumer's lag in bytes is the encoded size of the records after its position", "[queue]") {
  TempDir dir;
  ManualClock clock;
  auto opts = small_queue(dir / "q");
  opts.consumers = {"fast", "slow"};
  auto q = Queue::open(opts, clock, nullptr);
  REQUIRE(q->append(batch_of(payloads(10, "r", 100), clock)).ok());
  REQUIRE(q->ack("fast", 7).ok());
  const std::uint64_t all = q->stats().bytes;
  REQUIRE(all > 1000);
  const std::uint64_t positions[] = {7, 0, 10, 3, 99};
  const auto bytes = q->disk_bytes_after(positions);
  REQUIRE(bytes.size() == 5);
  CHECK(bytes[1] == all);  // nothing acknowledged: everything
  CHECK(bytes[2] == 0);
  CHECK(bytes[4] == 0);
  // Records of one size: bytes in proportion to the records after the position.
  CHECK(bytes[0] * 10 == all * 3);
  CHECK(bytes[3] * 10 == all * 7);
  CHECK(q->disk_bytes_after({}).empty());
}

TEST_CASE("sequence numbers keep increasing across restarts, also after the queue emptied", "[queue]") {
  TempDir dir;
  ManualClock clock;
  {
    auto q = Queue::open(small_queue(dir / "q"), clock, nullptr);
    REQUIRE(q->append(batch_of(payloads(3), clock)).last_seq == 3);
    REQUIRE(q->ack("out", 3).ok());
    CHECK(q->stats().records == 0);
  }
  {
    auto q = Queue::open(small_queue(dir / "q"), clock, nullptr);
    CHECK(q->position("out") == 3u);
    auto r = q->append(batch_of(payloads(2), clock));
    CHECK(r.first_seq == 4);
    CHECK(r.last_seq == 5);
  }
  auto q = Queue::open(small_queue(dir / "q"), clock, nullptr);
  CHECK(seqs_of(q->read(0, {})) == std::vector<std::uint64_t>{4, 5});
  CHECK(q->stats().next_seq == 6);
}

TEST_CASE("new consumers start after the newest record, removed ones release their records", "[queue]") {
  TempDir dir;
  ManualClock clock;
  auto opts = small_queue(dir / "q");
  opts.consumers = {"a", "b"};
  {
    auto q = Queue::open(opts, clock, nullptr);
    REQUIRE(q->append(batch_of(payloads(4), clock)).ok());
    REQUIRE(q->ack("a", 4).ok());
    CHECK(q->stats().records == 4);  // b holds them
    q->add_consumer("c");
    CHECK(q->position("c") == 4u);
  }
  opts.consumers = {"a", "d"};  // b and c removed, d added
  auto q = Queue::open(opts, clock, nullptr);
  CHECK(q->stats().records == 0);  // b no longer holds anything
  CHECK(q->position("d") == 4u);
  CHECK_FALSE(q->position("b"));
}

TEST_CASE("with no consumers records stay", "[queue]") {
  TempDir dir;
  ManualClock clock;
  auto opts = small_queue(dir / "q");
  opts.consumers = {};
  auto q = Queue::open(opts, clock, nullptr);
  REQUIRE(q->append(batch_of(payloads(3), clock)).ok());
  CHECK(q->stats().records == 3);
  CHECK(q->stats().consumers.empty());
}

TEST_CASE("state is committed atomically with records and acknowledgements", "[queue]") {
  TempDir dir;
  ManualClock clock;
  {
    auto q = Queue::open(small_queue(dir / "q"), clock, nullptr);
    queue::WriteBatch w;
    w.records = batch_of({"line 1", "line 2"}, clock);
    w.state_puts.emplace_back("input/logs/offset", "14");
    REQUIRE(q->commit(std::move(w)).ok());
    CHECK(q->state("input/logs/offset") == "14");
    CHECK_FALSE(q->state("input/other"));

    queue::WriteBatch w2;
    w2.acks.emplace_back("out", 2);
    w2.state_puts.emplace_back("output/out/batch", "1-2");
    w2.state_deletes.push_back("input/logs/offset");
    REQUIRE(q->commit(std::move(w2)).ok());
    CHECK_FALSE(q->state("input/logs/offset"));
    CHECK(q->stats().records == 0);

    queue::WriteBatch bad;
    bad.state_puts.emplace_back("", "x");
    CHECK(q->commit(std::move(bad)).status == CommitStatus::failed);

    // A bad acknowledgement refuses the whole batch: the records and the state do not apply.
    queue::WriteBatch mixed;
    mixed.records = batch_of({"r"}, clock);
    mixed.state_puts.emplace_back("k", "v");
    mixed.acks.emplace_back("nobody", 1);
    CHECK(q->commit(std::move(mixed)).status == CommitStatus::failed);
    CHECK_FALSE(q->state("k"));
    CHECK(q->stats().records == 0);
  }
  auto q = Queue::open(small_queue(dir / "q"), clock, nullptr);
  CHECK(q->state("output/out/batch") == "1-2");
}

TEST_CASE("concurrent commits are grouped into shared transactions", "[queue][group]") {
  TempDir dir;
  ManualClock clock;
  metrics::Registry registry;
  auto opts = small_queue(dir / "q", 64 << 20);
  opts.fsync = queue::Fsync::always;  // each transaction costs an fsync, so grouping shows
  auto q = Queue::open(opts, clock, &registry);
  constexpr int kThreads = 8;
  constexpr int kPerThread = 40;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  std::vector<std::vector<std::uint64_t>> seqs(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto r = q->append(batch_of({"t" + std::to_string(t) + "-" + std::to_string(i)}, clock));
        if (!r.ok()) ++failures;
        seqs[static_cast<std::size_t>(t)].push_back(r.first_seq);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  std::set<std::uint64_t> all;
  for (const auto& s : seqs) {
    CHECK(std::is_sorted(s.begin(), s.end()));  // each producer's order is kept
    all.insert(s.begin(), s.end());
  }
  CHECK(all.size() == kThreads * kPerThread);  // every record got its own number
  CHECK(*all.begin() == 1);
  CHECK(*all.rbegin() == kThreads * kPerThread);
  double commits = counter(registry, "tank_queue_commits_total");
  INFO("commits: " << commits);
  CHECK(commits >= 1);
  CHECK(commits < kThreads * kPerThread);  // some were grouped
  CHECK(counter(registry, "tank_queue_appended_records_total") == kThreads * kPerThread);
}

TEST_CASE("fsync = interval flushes in the background and sync() flushes now", "[queue][fsync]") {
  TempDir dir;
  ManualClock clock;
  metrics::Registry registry;
  auto opts = small_queue(dir / "q");
  opts.fsync = queue::Fsync::interval;
  opts.fsync_interval = std::chrono::milliseconds(5);
  auto q = Queue::open(opts, clock, &registry);
  // The open flushes once itself: wait for the background flush of the append, past that one (on
  // a loaded machine it can come after the open's, and would then race with sync() below).
  const double at_open = counter(registry, "tank_queue_fsyncs_total");
  REQUIRE(q->append(batch_of(payloads(3), clock)).ok());
  CHECK(wait_until([&] { return counter(registry, "tank_queue_fsyncs_total") >= at_open + 1; }));
  double before = counter(registry, "tank_queue_fsyncs_total");
  q->sync();
  CHECK(counter(registry, "tank_queue_fsyncs_total") == before + 1);
}

TEST_CASE("fsync = never flushes only at open, when asked and at close", "[queue][fsync]") {
  TempDir dir;
  ManualClock clock;
  metrics::Registry registry;
  auto opts = small_queue(dir / "q");
  opts.fsync = queue::Fsync::never;
  auto q = Queue::open(opts, clock, &registry);
  CHECK(counter(registry, "tank_queue_fsyncs_total") == 1);  // open: the recovery point
  REQUIRE(q->append(batch_of(payloads(3), clock)).ok());
  CHECK(counter(registry, "tank_queue_fsyncs_total") == 1);
  q->sync();
  CHECK(counter(registry, "tank_queue_fsyncs_total") == 2);
  q->close();
  CHECK(counter(registry, "tank_queue_fsyncs_total") == 3);  // close flushed
}

TEST_CASE("fsync = always commits durably before returning", "[queue][fsync]") {
  TempDir dir;
  ManualClock clock;
  auto opts = small_queue(dir / "q");
  opts.fsync = queue::Fsync::always;
  auto q = Queue::open(opts, clock, nullptr);
  for (int i = 0; i < 5; ++i) REQUIRE(q->append(batch_of(payloads(10), clock)).ok());
  CHECK(q->stats().records == 50);
}

TEST_CASE("queue metrics are exported with the depth gauges", "[queue][metrics]") {
  TempDir dir;
  ManualClock clock(system_clock().wall_ns());
  metrics::Registry registry;
  auto q = Queue::open(small_queue(dir / "q"), clock, &registry);
  REQUIRE(q->append(batch_of(payloads(7), clock)).ok());
  REQUIRE(q->ack("out", 2).ok());
  std::string text = registry.serialize();
  CHECK(metric_value(text, "tank_queue_records") == 5);
  CHECK(metric_value(text, "tank_queue_appended_records_total") == 7);
  CHECK(metric_value(text, "tank_queue_acknowledged_records_total") == 2);
  CHECK(metric_value(text, "tank_queue_consumer_lag_records{consumer=\"out\"}") == 5);
  CHECK(metric_value(text, "tank_queue_disk_limit_bytes") == 1 << 20);
  CHECK(metric_value(text, "tank_queue_disk_bytes").value_or(0) >= 4096);
  CHECK(metric_value(text, "tank_queue_bytes").value_or(0) > 0);
  CHECK(metric_value(text, "tank_queue_oldest_record_age_seconds").has_value());
  CHECK(metric_value(text, "tank_queue_blocked") == 0);
  CHECK(metric_value(text, "tank_queue_dropped_records_total{policy=\"drop_oldest\"}") == 0);
  CHECK(metric_value(text, "tank_queue_damaged_recoveries_total") == 0);
}

TEST_CASE("a closed queue refuses commits and a read-only queue refuses writes", "[queue]") {
  TempDir dir;
  ManualClock clock;
  auto q = Queue::open(small_queue(dir / "q"), clock, nullptr);
  REQUIRE(q->append(batch_of({"x"}, clock)).ok());
  q->close();
  q->close();  // idempotent
  CHECK_THROWS_AS(q->append(batch_of({"y"}, clock)), std::logic_error);
  auto ro = Queue::open_read_only(dir / "q", clock);
  CHECK(payloads_of(ro->read(0, {})) == std::vector<std::string>{"x"});
  CHECK(ro->stats().records == 1);
  CHECK(ro->position("out") == 0u);
  CHECK_THROWS_AS(ro->append(batch_of({"y"}, clock)), std::logic_error);
  CHECK_THROWS_AS(Queue::open_read_only(dir / "nothing-here", clock), queue::OpenError);
}

TEST_CASE("closing while producers are committing refuses their batches cleanly", "[queue]") {
  TempDir dir;
  ManualClock clock;
  auto q = Queue::open(small_queue(dir / "q", 64 << 20), clock, nullptr);
  std::atomic<std::uint64_t> committed{0};
  std::atomic<int> refused{0};
  std::vector<std::thread> producers;
  for (int t = 0; t < 4; ++t) {
    producers.emplace_back([&] {
      for (;;) {
        try {
          auto r = q->append(batch_of(payloads(10), clock));
          if (!r.ok()) {
            CHECK(r.error == "the queue is closed (tank is stopping)");
            ++refused;
            return;
          }
          committed += 10;
        } catch (const std::logic_error&) {
          ++refused;  // called after close() returned
          return;
        }
      }
    });
  }
  // Readers too, as outputs and the metrics endpoint would be.
  std::atomic<bool> reading{true};
  std::thread reader([&] {
    while (reading) {
      try {
        (void)q->read(0, {100, 1 << 20});
        (void)q->stats();
        (void)q->state("x");
      } catch (const std::logic_error&) {
        return;  // closed
      }
    }
  });
  REQUIRE(wait_until([&] { return committed > 1000; }));
  q->close();
  for (auto& t : producers) t.join();
  reading = false;
  reader.join();
  CHECK(refused == 4);
  // Everything that was reported committed is there.
  auto reopened = Queue::open(small_queue(dir / "q", 64 << 20), clock, nullptr);
  CHECK(reopened->stats().records == committed.load());
}

namespace {
// This process's resident file-backed pages (RssFile in /proc/self/status), in bytes.
std::uint64_t rss_file_bytes() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("RssFile:")) return std::stoull(line.substr(8)) * 1024;
  }
  return 0;
}
}  // namespace

TEST_CASE("appending and reading a large backlog does not keep it resident: RSS follows the working set",
          "[queue]") {
  TempDir dir;
  ManualClock clock;
  auto opts = small_queue(dir / "q", 256 << 20);
  auto q = Queue::open(opts, clock, nullptr);
  // Many small commits (as inputs make them): each copies the last leaf page from the map.
  constexpr std::size_t kCommits = 20000;  // x 25 records of 128 B: about 70 MiB on disk
  const std::uint64_t at_start = rss_file_bytes();
  std::uint64_t peak = at_start;
  for (std::size_t i = 0; i < kCommits; ++i) {
    REQUIRE(q->append(batch_of(payloads(25, "c" + std::to_string(i) + "-", 128), clock)).ok());
    if (i % 500 == 0) peak = std::max(peak, rss_file_bytes());
  }
  CHECK(q->stats().bytes > (64u << 20));
  CHECK(peak - at_start < (12u << 20));  // kMappedBudget (2 MiB) and what one check interval maps; without releasing: the whole backlog

  const std::uint64_t before = rss_file_bytes();
  peak = before;
  std::uint64_t after = 0;
  std::size_t records = 0;
  for (;;) {
    auto b = q->read(after, queue::ReadLimits{1000, 1 << 20});
    if (b.empty()) break;
    records += b.size();
    after = b.scanned_to();
    peak = std::max(peak, rss_file_bytes());
  }
  CHECK(records == kCommits * 25);
  CHECK(peak - before < (12u << 20));

  // One read of the whole backlog (a consumer with a large batch): the map is released within
  // the read, not only after it. Sampled from another thread while the read goes on; without the
  // release inside the read the file pages grow by the backlog's size before it returns.
  REQUIRE(q->append(batch_of(payloads(25, "last-", 128), clock)).ok());
  const std::uint64_t before_one = rss_file_bytes();
  std::atomic<bool> reading{true};
  std::atomic<std::uint64_t> peak_one{before_one};
  std::thread sampler([&] {
    while (reading) peak_one = std::max(peak_one.load(), rss_file_bytes());
  });
  queue::ReadBatch all;
  q->read(0, queue::ReadLimits{kCommits * 25 + 25, std::size_t{1} << 30}, nullptr, all);
  reading = false;
  sampler.join();
  CHECK(all.size() == kCommits * 25 + 25);
  CHECK(peak_one - before_one < (12u << 20));

  // The same ReadBatch read into again keeps its memory and holds only the new records.
  const auto* first_before = all.records().front().payload.data();
  q->read(after, queue::ReadLimits{25, 1 << 20}, nullptr, all);
  REQUIRE(all.size() == 25);
  CHECK(all.records().front().payload.substr(0, 5) == "last-");
  CHECK(all.records().front().payload.data() == first_before);  // the same buffer, not a new one
}
