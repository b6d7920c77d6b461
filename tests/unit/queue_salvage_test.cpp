// Salvage (agent/queue/salvage.hpp): every record that proves itself intact in a damaged queue
// goes back into a live queue, once, with what it carried; the rest is reported.

#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <map>
#include <random>
#include <set>

#include "queue/lmdb_file.hpp"
#include "queue/record.hpp"
#include "queue/salvage.hpp"
#include "queue/verify.hpp"
#include "support/queue_helpers.hpp"

using namespace tank;
using namespace tank::test;
using queue::Queue;

namespace {

struct Original {
  std::string payload;
  std::string topic;
};

// A closed queue of `n` records (every 97th one of 5 KB: on overflow pages), the first
// `acknowledged` of them acknowledged by its only consumer. Returns what each record held.
std::map<std::uint64_t, Original> populate(const std::filesystem::path& dir, std::uint64_t n, std::uint64_t acknowledged) {
  ManualClock clock;
  std::map<std::uint64_t, Original> originals;
  auto q = Queue::open(small_queue(dir, 32 << 20), clock, nullptr);
  std::uint64_t next = 1;
  while (next <= n) {
    queue::EncodedRecords b;
    for (int i = 0; i < 200 && next <= n; ++i, ++next) {
      Original o{"record-" + std::to_string(next) + std::string(next % 97 == 0 ? 5000 : next % 50, '.'),
                 "t/" + std::to_string(next % 7)};
      queue::Attribute attrs[] = {{"topic", o.topic}};
      b.add("in", static_cast<std::int64_t>(next) * 1000, o.payload, attrs);
      originals.emplace(next, std::move(o));
    }
    REQUIRE(q->append(b).ok());
  }
  REQUIRE(q->ack("out", acknowledged).ok());
  return originals;
}

// Overwrites `count` pages of `file` (never the meta pages) with seeded garbage; returns them.
std::set<std::uint64_t> damage_pages(const std::filesystem::path& file, std::size_t count, std::uint32_t seed) {
  const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t pages = std::filesystem::file_size(file) / page;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::uint64_t> pick(2, pages - 1);
  std::set<std::uint64_t> hit;
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  while (hit.size() < count) {
    const std::uint64_t p = pick(rng);
    if (!hit.insert(p).second) continue;
    std::string garbage(page, '\0');
    for (char& c : garbage) c = static_cast<char>(rng());
    f.seekp(static_cast<std::streamoff>(p * page));
    f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  }
  return hit;
}

// The sequence numbers after `after` that have an intact copy on a leaf page not in `lost`, values
// up to `largest` bytes.
std::set<std::uint64_t> recoverable(const std::filesystem::path& file, const std::set<std::uint64_t>& lost,
                                    std::uint64_t after, std::size_t largest = SIZE_MAX) {
  std::set<std::uint64_t> out;
  const queue::lmdb_file::File f(file);
  queue::lmdb_file::scan_leaves(f, static_cast<std::uint32_t>(::sysconf(_SC_PAGESIZE)),
                                [&](const queue::lmdb_file::ScannedEntry& e) {
                                  if (!e.problem.empty() || e.key.size() != 8 || lost.contains(e.page)) return true;
                                  std::uint64_t seq = 0;
                                  for (char c : e.key) seq = (seq << 8) | static_cast<unsigned char>(c);
                                  if (seq > after && e.value.size() <= largest && queue::record_intact(seq, e.value)) {
                                    out.insert(seq);
                                  }
                                  return true;
                                });
  return out;
}

// Every record of `q`: (original sequence number taken from the payload) -> the record.
std::map<std::uint64_t, queue::RecordView> by_origin(const queue::ReadBatch& b) {
  std::map<std::uint64_t, queue::RecordView> out;
  for (const auto& r : b.records()) {
    const std::string_view p = r.payload;
    const auto end = p.find('.', 7);
    out.emplace(std::stoull(std::string(p.substr(7, end == std::string_view::npos ? std::string_view::npos : end - 7))), r);
  }
  return out;
}

queue::ReadBatch read_all(const Queue& q) {
  queue::ReadLimits limits;
  limits.max_records = 1'000'000;
  limits.max_bytes = 256 << 20;
  return q.read(0, limits);
}

}  // namespace

TEST_CASE("salvage recovers every intact record of a queue with garbage pages, and reports the rest",
          "[queue][salvage]") {
  TempDir dir;
  ManualClock clock;
  const auto originals = populate(dir / "q", 6000, 1500);
  std::filesystem::create_directories(dir / "damaged");
  std::filesystem::copy_file(dir / "q" / "data.mdb", dir / "damaged" / "data.mdb");
  for (std::uint32_t seed : {1u, 2u, 3u}) {
    DYNAMIC_SECTION("garbage pages, seed " << seed) {
      const auto lost = damage_pages(dir / "damaged" / "data.mdb", 25, seed);
      // What a salvage must recover: every record with an intact copy on a page the garbage missed
      // (a large record's value also needs its overflow pages, hence read from the damaged file)...
      const auto expected = recoverable(dir / "damaged" / "data.mdb", lost, 1500);
      // ...which is, for records held inside their leaf page, every one that had a copy on such a
      // page before the damage.
      const auto inline_before = recoverable(dir / "q" / "data.mdb", lost, 1500, 1000);
      CHECK(std::includes(expected.begin(), expected.end(), inline_before.begin(), inline_before.end()));
      REQUIRE(expected.size() > 3000);  // most survive 25 garbage pages
      auto live = Queue::open(small_queue(dir / "live", 64 << 20), clock, nullptr);
      const queue::SalvageReport report = queue::salvage(dir / "damaged", *live);
      INFO(queue::describe(report, dir / "damaged"));
      CHECK(report.complete);
      CHECK(report.recovered == expected.size());
      CHECK(report.recovered_unverified == 0);
      CHECK(report.delivered > 0);  // acknowledged records found on intact pages, left out
      const queue::ReadBatch all = read_all(*live);  // the views below point into it
      const auto got = by_origin(all);
      REQUIRE(got.size() == expected.size());
      for (const auto& [origin, r] : got) {
        INFO("record " << origin);
        REQUIRE(expected.contains(origin));
        const Original& o = originals.at(origin);
        CHECK(r.payload == o.payload);
        CHECK(r.attribute("topic") == o.topic);
        CHECK(r.input == "in");
        CHECK(r.ingest_ns == static_cast<std::int64_t>(origin) * 1000);
      }
      // Nothing was changed in the damaged copy but the marker, which lets tank prune it.
      CHECK(std::filesystem::exists(dir / "damaged" / queue::kSalvagedMarker));
      CHECK_FALSE(queue::holds_records(dir / "damaged"));
    }
  }
}

TEST_CASE("salvage runs once: again it takes nothing, after an interruption it goes on", "[queue][salvage]") {
  TempDir dir;
  ManualClock clock;
  populate(dir / "q", 4000, 0);
  // The live queue can take about half: the salvage stops there, full (overflow = block).
  auto small = small_queue(dir / "live", 512 << 10);
  auto live = Queue::open(small, clock, nullptr);
  const queue::SalvageReport first = queue::salvage(dir / "q", *live);
  INFO(queue::describe(first, dir / "q"));
  CHECK_FALSE(first.complete);
  CHECK(first.stopped.find("the live queue is full") != std::string::npos);
  REQUIRE(first.recovered > 0);
  REQUIRE(first.recovered < 4000);
  CHECK_FALSE(std::filesystem::exists(dir / "q" / queue::kSalvagedMarker));
  // Its output delivers them; the salvage is run again and goes on where it stopped.
  std::set<std::uint64_t> origins;
  auto drain = [&] {
    auto b = read_all(*live);
    for (const auto& [origin, r] : by_origin(b)) CHECK(origins.insert(origin).second);  // never twice
    if (!b.empty()) REQUIRE(live->ack("out", b.scanned_to()).ok());
  };
  drain();
  queue::SalvageReport next;
  for (int round = 0; round < 10; ++round) {
    next = queue::salvage(dir / "q", *live);
    drain();
    if (next.complete) break;
  }
  CHECK(next.complete);
  CHECK(next.already_taken > 0);
  CHECK(origins.size() == 4000);
  // A further run takes nothing.
  const queue::SalvageReport again = queue::salvage(dir / "q", *live);
  CHECK(again.recovered == 0);
  CHECK(again.already_taken == 4000);
}

TEST_CASE("a dry run of salvage counts and changes nothing", "[queue][salvage]") {
  TempDir dir;
  ManualClock clock;
  populate(dir / "q", 1000, 400);
  auto live = Queue::open(small_queue(dir / "live", 8 << 20), clock, nullptr);
  queue::SalvageOptions options;
  options.dry_run = true;
  const queue::SalvageReport report = queue::salvage(dir / "q", *live, options);
  CHECK(report.complete);
  CHECK(report.recovered == 600);
  CHECK(report.delivered > 0);
  CHECK(report.positions_from.find("its meta database") != std::string::npos);
  CHECK(live->stats().records == 0);
  CHECK_FALSE(std::filesystem::exists(dir / "q" / queue::kSalvagedMarker));
}
