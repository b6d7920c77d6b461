#include <algorithm>
#include <catch2/catch.hpp>

#include <fstream>
#include <signal.h>
#include <sstream>

#include <lmdb.h>

#include "queue/verify.hpp"
#include "support/queue_helpers.hpp"

using namespace tank;
using namespace tank::test;
using queue::Queue;
using queue::VerifyResult;

namespace {

queue::VerifyOptions depth(queue::Verification d) {
  queue::VerifyOptions o;
  o.depth = d;
  return o;
}

// A queue with some records, closed.
void populate(const std::filesystem::path& dir, const Clock& clock, int batches = 20) {
  auto q = Queue::open(small_queue(dir), clock, nullptr);
  for (int i = 0; i < batches; ++i) REQUIRE(q->append(batch_of(payloads(50, "p", 200), clock)).ok());
}

void overwrite(const std::filesystem::path& file, std::size_t offset, const std::string& bytes) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::filesystem::path> damaged_copies(const std::filesystem::path& parent) {
  std::vector<std::filesystem::path> out;
  for (const auto& e : std::filesystem::directory_iterator(parent)) {
    if (e.path().filename().string().rfind("q.damaged-", 0) == 0) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());  // oldest first (the names carry the time)
  return out;
}

// Opens the damaged queue and checks that it was moved aside and replaced by an empty one.
void expect_recovery(const TempDir& dir, const Clock& clock, const std::string& problem_part) {
  metrics::Registry registry;
  queue::OpenReport report;
  auto q = Queue::open(small_queue(dir / "q"), clock, &registry, &report);
  CHECK(report.recovered);
  INFO("problem: " << report.problem);
  CHECK(report.problem.find(problem_part) != std::string::npos);
  CHECK(std::filesystem::exists(report.moved_to / "data.mdb"));
  CHECK(q->stats().records == 0);
  CHECK(counter(registry, "tank_queue_damaged_recoveries_total") == 1);
  CHECK(q->append(batch_of({"fresh"}, clock)).ok());
}

}  // namespace

TEST_CASE("a sound queue verifies at both depths", "[queue][recovery]") {
  TempDir dir;
  ManualClock clock;
  populate(dir / "q", clock);
  for (auto d : {queue::Verification::quick, queue::Verification::full}) {
    auto r = queue::verify_in_child(dir / "q", depth(d));
    INFO(r.problem);
    CHECK(r.outcome == VerifyResult::Outcome::ok);
  }
  CHECK(queue::verify_in_child(dir / "absent", depth(queue::Verification::full)).outcome ==
        VerifyResult::Outcome::ok);
}

TEST_CASE("a data file that is not LMDB at all is moved aside", "[queue][recovery]") {
  TempDir dir;
  ManualClock clock;
  std::filesystem::create_directories(dir / "q");
  write_file(dir / "q" / "data.mdb", std::string(64 << 10, 'z'));
  expect_recovery(dir, clock, "neither meta page is valid (meta page 0 has no LMDB magic number");
}

TEST_CASE("a truncated data file is moved aside (reading it would raise SIGBUS)", "[queue][recovery]") {
  TempDir dir;
  ManualClock clock;
  populate(dir / "q", clock);
  auto size = std::filesystem::file_size(dir / "q" / "data.mdb");
  std::filesystem::resize_file(dir / "q" / "data.mdb", size / 2);
  expect_recovery(dir, clock, "lies past the end of the file");
}

TEST_CASE("a file that ends before pages freed unwritten (loose pages) is sound, not truncated", "[queue][recovery]") {
  TempDir dir;
  ManualClock clock;
  populate(dir / "q", clock);
  // One transaction takes 16 new pages at the end of the file (an overflow value) and frees them
  // again: LMDB counts them in its last page number but never writes them.
  {
    MDB_env* env = nullptr;
    REQUIRE(mdb_env_create(&env) == 0);
    mdb_env_set_maxdbs(env, 8);
    mdb_env_set_mapsize(env, 64 << 20);
    REQUIRE(mdb_env_open(env, (dir / "q").c_str(), 0, 0644) == 0);
    MDB_txn* txn = nullptr;
    REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
    MDB_dbi state = 0;
    REQUIRE(mdb_dbi_open(txn, "state", 0, &state) == 0);
    std::string big(60 << 10, 'x');
    MDB_val k{3, const_cast<char*>("big")};
    MDB_val v{big.size(), big.data()};
    REQUIRE(mdb_put(txn, state, &k, &v, 0) == 0);
    REQUIRE(mdb_del(txn, state, &k, nullptr) == 0);
    REQUIRE(mdb_txn_commit(txn) == 0);
    MDB_envinfo info{};
    mdb_env_info(env, &info);
    MDB_stat st{};
    mdb_env_stat(env, &st);
    mdb_env_close(env);
    // The situation this test is about: the file ends before the last page number.
    REQUIRE(std::filesystem::file_size(dir / "q" / "data.mdb") < (info.me_last_pgno + 1) * st.ms_psize);
  }
  for (auto d : {queue::Verification::quick, queue::Verification::full}) {
    auto r = queue::verify_in_child(dir / "q", depth(d));
    INFO(r.problem);
    CHECK(r.outcome == VerifyResult::Outcome::ok);
  }
  metrics::Registry registry;
  queue::OpenReport report;
  auto q = Queue::open(small_queue(dir / "q"), clock, &registry, &report);
  CHECK_FALSE(report.recovered);
  CHECK(q->stats().records == 20 * 50);
}

TEST_CASE("a data file shorter than its meta pages is moved aside", "[queue][recovery]") {
  TempDir dir;
  ManualClock clock;
  populate(dir / "q", clock);
  std::filesystem::resize_file(dir / "q" / "data.mdb", 100);
  expect_recovery(dir, clock, "less than LMDB's two meta pages");
}

TEST_CASE("garbage in the middle of the file is found by the full check", "[queue][recovery]") {
  TempDir dir;
  ManualClock clock;
  populate(dir / "q", clock, 60);
  auto size = std::filesystem::file_size(dir / "q" / "data.mdb");
  // Trash every page except the two meta pages: branch and leaf pages alike.
  std::string junk(4096, '\xA5');
  for (std::size_t off = 2 * 4096; off + 4096 <= size; off += 4096) overwrite(dir / "q" / "data.mdb", off, junk);
  auto quick = queue::verify_in_child(dir / "q", depth(queue::Verification::full));
  CHECK(quick.outcome == VerifyResult::Outcome::damaged);
  metrics::Registry registry;
  queue::OpenReport report;
  auto opts = small_queue(dir / "q");
  opts.verification = queue::Verification::full;
  auto q = Queue::open(opts, clock, &registry, &report);
  CHECK(report.recovered);
  CHECK(q->stats().records == 0);
}

TEST_CASE("damage to a single record's bytes is found by the full check", "[queue][recovery]") {
  TempDir dir;
  ManualClock clock;
  {
    auto q = Queue::open(small_queue(dir / "q"), clock, nullptr);
    REQUIRE(q->append(batch_of({"MARKER-a", "MARKER-b", "MARKER-c"}, clock)).ok());
  }
  // Find the middle record's header in the file and give it an unknown format byte.
  std::string content = read_file(dir / "q" / "data.mdb");
  auto pos = content.find("MARKER-b");
  REQUIRE(pos != std::string::npos);
  std::size_t header = pos - queue::kRecordHeaderBytes - 2;  // "in" is the input name
  overwrite(dir / "q" / "data.mdb", header, std::string(1, '\x07'));
  CHECK(queue::verify_in_child(dir / "q", depth(queue::Verification::quick)).outcome ==
        VerifyResult::Outcome::ok);  // first and last records are fine
  auto full = queue::verify_in_child(dir / "q", depth(queue::Verification::full));
  CHECK(full.outcome == VerifyResult::Outcome::damaged);
  CHECK(full.problem.find("record 2: unknown record format 7") != std::string::npos);
}

TEST_CASE("a garbage lock file is recreated, the records kept", "[queue][recovery]") {
  TempDir dir;
  ManualClock clock;
  populate(dir / "q", clock, 2);
  write_file(dir / "q" / "lock.mdb", std::string(8192, 'L'));
  queue::OpenReport report;
  auto q = Queue::open(small_queue(dir / "q"), clock, nullptr, &report);
  CHECK_FALSE(report.recovered);
  CHECK(q->stats().records == 100);
}

TEST_CASE("beyond keep_damaged, only damaged copies with nothing to salvage are deleted", "[queue][recovery]") {
  TempDir dir;
  ManualClock clock;
  auto damage_and_open = [&](std::size_t bytes, char fill) {
    std::filesystem::create_directories(dir / "q");
    write_file(dir / "q" / "data.mdb", std::string(bytes, fill));
    clock.advance(1'000'000'000);
    queue::OpenReport report;
    auto opts = small_queue(dir / "q");
    opts.keep_damaged = 3;
    auto q = Queue::open(opts, clock, nullptr, &report);
    REQUIRE(report.recovered);
    q.reset();
    std::filesystem::remove_all(dir / "q");
    return report;
  };
  // Five copies that may hold records (more pages than LMDB's two meta pages): none is deleted.
  for (int i = 0; i < 5; ++i) damage_and_open(16 * 4096, static_cast<char>('a' + i));
  auto copies = damaged_copies(dir.path());
  REQUIRE(copies.size() == 5);
  // One salvaged (`tank queue salvage` leaves the marker) and one too short to hold any record: the
  // next move deletes both (the oldest beyond the newest 3), never one that may hold records.
  write_file(copies[0] / queue::kSalvagedMarker, "");
  auto report = damage_and_open(2 * 4096, 'z');
  CHECK(report.pruned == std::vector<std::filesystem::path>{copies[0]});
  CHECK(damaged_copies(dir.path()).size() == 5);
  const std::filesystem::path short_one = damaged_copies(dir.path()).back();
  CHECK(damage_and_open(16 * 4096, 'y').pruned.empty());
  CHECK(damage_and_open(16 * 4096, 'x').pruned.empty());
  report = damage_and_open(16 * 4096, 'w');  // the short one is now beyond the newest 3
  CHECK(report.pruned == std::vector<std::filesystem::path>{short_one});
  CHECK(damaged_copies(dir.path()).size() == 7);
}

TEST_CASE("a queue from a newer tank is refused, not moved aside", "[queue][recovery]") {
  TempDir dir;
  ManualClock clock;
  populate(dir / "q", clock, 1);
  {
    // Rewrite the format version as a future tank would.
    MDB_env* env = nullptr;
    REQUIRE(mdb_env_create(&env) == 0);
    mdb_env_set_maxdbs(env, 8);
    REQUIRE(mdb_env_open(env, (dir / "q").c_str(), 0, 0640) == 0);
    MDB_txn* txn = nullptr;
    REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
    MDB_dbi meta;
    REQUIRE(mdb_dbi_open(txn, "meta", 0, &meta) == 0);
    std::string key = "format";
    std::string value("\x04\0\0\0\0\0\0\0", 8);
    MDB_val k{key.size(), key.data()};
    MDB_val v{value.size(), value.data()};
    REQUIRE(mdb_put(txn, meta, &k, &v, 0) == 0);
    REQUIRE(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);
  }
  try {
    Queue::open(small_queue(dir / "q"), clock, nullptr);
    FAIL("expected OpenError");
  } catch (const queue::OpenError& e) {
    CHECK(std::string(e.what()).find("format 4 by a newer tank") != std::string::npos);
  }
  CHECK(damaged_copies(dir.path()).empty());
}

TEST_CASE("an unreadable queue directory is an error, not damage", "[queue][recovery]") {
  if (::geteuid() == 0) {
    SUCCEED("running as root: permissions do not apply");
    return;
  }
  TempDir dir;
  ManualClock clock;
  populate(dir / "q", clock, 1);
  std::filesystem::permissions(dir / "q" / "data.mdb", std::filesystem::perms::none);
  CHECK_THROWS_AS(Queue::open(small_queue(dir / "q"), clock, nullptr), queue::OpenError);
  CHECK(damaged_copies(dir.path()).empty());
}

namespace {

// The pids of this process's children (from /proc).
std::vector<pid_t> children() {
  std::vector<pid_t> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat = read_file(e.path() / "stat");
    auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream in(stat.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    in >> state >> ppid;
    if (ppid == ::getpid()) out.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return out;
}

}  // namespace

TEST_CASE("a check killed from outside does not condemn a sound queue", "[queue][recovery]") {
  TempDir dir;
  ManualClock clock;
  {
    // 200,000 records: the full check reports progress as it walks them.
    auto q = Queue::open(small_queue(dir / "q", 256 << 20), clock, nullptr);
    for (int i = 0; i < 200; ++i) REQUIRE(q->append(batch_of(payloads(1000, "p", 20), clock)).ok());
  }
  queue::VerifyOptions options = depth(queue::Verification::full);
  bool killed = false;
  options.on_wait = [&] {
    if (killed) return;
    for (pid_t child : children()) ::kill(child, SIGKILL);  // as the OOM killer would
    killed = true;
  };
  auto r = queue::verify_in_child(dir / "q", options);
  REQUIRE(killed);
  CHECK(r.outcome == VerifyResult::Outcome::inaccessible);
  CHECK(r.problem.find("was killed by Killed") != std::string::npos);
  // And open() refuses to start rather than moving the queue aside.
  auto opts = small_queue(dir / "q", 256 << 20);
  opts.verification = queue::Verification::full;
  bool killed_again = false;
  opts.on_verification_wait = [&] {
    if (killed_again) return;
    for (pid_t child : children()) ::kill(child, SIGKILL);
    killed_again = true;
  };
  CHECK_THROWS_WITH(Queue::open(opts, clock, nullptr), Catch::Contains("was killed by Killed"));
  REQUIRE(killed_again);
  CHECK(damaged_copies(dir.path()).empty());
}
