// The queue's recovery point (agent/queue/recovery_point.hpp): what each flush records, the
// rollback after a reboot, the pinned snapshot that makes the rollback safe, and the format-2
// records with their checksums. The power-cut simulator (tests/powerloss) proves the whole against
// disk states a power cut can leave; these tests prove each part on its own.

#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>

#include <lmdb.h>

#include "common/fs.hpp"
#include "queue/lmdb_file.hpp"
#include "queue/recovery_point.hpp"
#include "queue/verify.hpp"
#include "support/queue_helpers.hpp"
#include "support/raw_lmdb.hpp"

using namespace tank;
using namespace tank::test;
using queue::Queue;
using queue::RecoveryPoint;

namespace {

// Sets an environment variable for the life of the object (the queue reads TANK_BOOT_ID and the
// test switches when it opens).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

queue::Options interval_queue(const std::filesystem::path& dir, std::uint64_t max_disk = 4 << 20) {
  auto o = small_queue(dir, max_disk);
  o.fsync = queue::Fsync::interval;
  o.fsync_interval = std::chrono::hours(1);  // flushes only when the test says (sync) or close
  return o;
}

// The files of a running queue as the OS has them now (everything committed is in the page
// cache): what a power cut leaves when every write had reached the disk, and what a kill -9
// leaves. Without LMDB's lock file (a new boot has none that matters).
void copy_queue(const std::filesystem::path& from, const std::filesystem::path& to) {
  std::filesystem::create_directories(to);
  for (const char* name : {"data.mdb", queue::kRecoveryPointFile}) {
    std::filesystem::copy_file(from / name, to / name, std::filesystem::copy_options::overwrite_existing);
  }
}

RecoveryPoint point_of(const std::filesystem::path& dir) {
  std::string why;
  auto p = queue::read_recovery_point(dir, &why);
  INFO(why);
  REQUIRE(p);
  return *p;
}

std::uint64_t newest_txnid(const std::filesystem::path& dir) {
  auto metas = queue::lmdb_file::read_metas(dir / "data.mdb");
  REQUIRE(metas.newest() >= 0);
  return metas.slots[metas.newest()].txnid;
}

}  // namespace

TEST_CASE("a flush records the flushed snapshot, close records a clean end", "[queue][recovery_point]") {
  TempDir dir;
  ManualClock clock;
  ScopedEnv boot("TANK_BOOT_ID", "boot-one");
  auto q = Queue::open(interval_queue(dir / "q"), clock, nullptr);
  // Opening flushed: the recovery point names the newest state, written by this boot.
  RecoveryPoint opened = point_of(dir / "q");
  CHECK(opened.boot_id == "boot-one");
  CHECK_FALSE(opened.closed_cleanly());
  CHECK_FALSE(opened.every_commit_durable());

  REQUIRE(q->append(batch_of(payloads(100), clock)).ok());
  CHECK(point_of(dir / "q").generation == opened.generation);  // a commit alone does not move it
  q->sync();
  RecoveryPoint flushed = point_of(dir / "q");
  CHECK(flushed.generation == opened.generation + 1);
  CHECK(flushed.txnid == newest_txnid(dir / "q"));
  CHECK(flushed.next_seq == 101);
  CHECK(flushed.records == 100);
  CHECK(flushed.page_size > 0);
  q->close();
  RecoveryPoint closed = point_of(dir / "q");
  CHECK(closed.closed_cleanly());
  CHECK(closed.txnid == newest_txnid(dir / "q"));
}

TEST_CASE("with fsync = always the recovery point says every commit is durable", "[queue][recovery_point]") {
  TempDir dir;
  ManualClock clock;
  auto opts = small_queue(dir / "q");
  opts.fsync = queue::Fsync::always;
  auto q = Queue::open(opts, clock, nullptr);
  CHECK(point_of(dir / "q").every_commit_durable());
}

TEST_CASE("after a reboot the commits past the last flush are undone, after a process crash they stay",
          "[queue][recovery_point]") {
  TempDir dir;
  ManualClock clock;
  {
    ScopedEnv boot("TANK_BOOT_ID", "boot-one");
    auto q = Queue::open(interval_queue(dir / "q"), clock, nullptr);
    REQUIRE(q->append(batch_of(payloads(100, "flushed-"), clock)).ok());
    q->sync();
    REQUIRE(q->append(batch_of(payloads(50, "late-"), clock)).ok());
    REQUIRE(q->ack("out", 20).ok());
    // The state a crash leaves at this instant.
    copy_queue(dir / "q", dir / "crashed");
    copy_queue(dir / "q", dir / "killed");
  }

  SECTION("a new boot rolls back to the flush") {
    ScopedEnv boot("TANK_BOOT_ID", "boot-two");
    metrics::Registry registry;
    queue::OpenReport report;
    auto q = Queue::open(interval_queue(dir / "crashed"), clock, &registry, &report);
    CHECK(report.rolled_back);
    CHECK_FALSE(report.recovered);
    CHECK(report.rollback.find("restarted while tank was running") != std::string::npos);
    auto all = everything(*q);
    REQUIRE(all.size() == 100);  // the 50 late records are undone, and so is the acknowledgement
    CHECK(all.front().second == "flushed-0");
    CHECK(all.back().second == "flushed-99");
    CHECK(q->position("out") == 0);
    CHECK(counter(registry, "tank_queue_power_loss_rollbacks_total") == 1);
    // What was undone, as far as the newest meta page still tells: the 50 late records.
    CHECK(counter(registry, "tank_queue_power_loss_lost_records_total") == 50);
    CHECK(report.rollback.find("50 record(s) by the newest meta page, sequence numbers 101 to 150") != std::string::npos);
    // Sequence numbers given by the undone commits (101..150) are never given again.
    auto r = q->append(batch_of({"after"}, clock));
    REQUIRE(r.ok());
    CHECK(r.first_seq > 150);
    // The rolled-back queue is sound all through.
    q->close();
    queue::VerifyOptions full;
    full.depth = queue::Verification::full;
    CHECK(queue::verify_in_child(dir / "crashed", full).outcome == queue::VerifyResult::Outcome::ok);
  }
  SECTION("the same boot (kill -9) keeps everything") {
    ScopedEnv boot("TANK_BOOT_ID", "boot-one");
    queue::OpenReport report;
    auto q = Queue::open(interval_queue(dir / "killed"), clock, nullptr, &report);
    CHECK_FALSE(report.rolled_back);
    CHECK(everything(*q).size() == 130);
    CHECK(q->position("out") == 20);
  }
}

TEST_CASE("a queue flushed and closed cleanly is never rolled back, whatever the boot", "[queue][recovery_point]") {
  TempDir dir;
  ManualClock clock;
  {
    ScopedEnv boot("TANK_BOOT_ID", "boot-one");
    auto q = Queue::open(interval_queue(dir / "q"), clock, nullptr);
    REQUIRE(q->append(batch_of(payloads(30), clock)).ok());
  }
  ScopedEnv boot("TANK_BOOT_ID", "boot-two");
  queue::OpenReport report;
  auto q = Queue::open(interval_queue(dir / "q"), clock, nullptr, &report);
  CHECK_FALSE(report.rolled_back);
  CHECK(q->stats().records == 30);
}

TEST_CASE("a damaged newest state falls back to the last flush instead of moving the queue aside",
          "[queue][recovery_point]") {
  TempDir dir;
  ManualClock clock;
  ScopedEnv boot("TANK_BOOT_ID", "boot-one");
  {
    auto q = Queue::open(interval_queue(dir / "q"), clock, nullptr);
    REQUIRE(q->append(batch_of(payloads(100), clock)).ok());
    q->sync();
    REQUIRE(q->append(batch_of(payloads(10, "late-"), clock)).ok());
    copy_queue(dir / "q", dir / "damaged");
  }
  // Both meta pages garbage: LMDB cannot open it at all.
  {
    std::fstream f(dir / "damaged" / "data.mdb", std::ios::in | std::ios::out | std::ios::binary);
    const std::string garbage(256, '\x5a');
    f.seekp(0);
    f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
    f.seekp(static_cast<std::streamoff>(point_of(dir / "damaged").page_size));
    f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  }
  queue::OpenReport report;
  auto q = Queue::open(interval_queue(dir / "damaged"), clock, nullptr, &report);
  CHECK(report.rolled_back);
  CHECK_FALSE(report.recovered);
  CHECK(report.rollback.find("newest state is damaged") != std::string::npos);
  CHECK(q->stats().records == 100);
}

TEST_CASE("the flushed snapshot stays intact however much is written after it, because it is pinned",
          "[queue][recovery_point]") {
  // After a flush, many commits that append and acknowledge (each frees pages LMDB would reuse two
  // commits later). The snapshot of the flush must still be whole in the file: rolling a copy of the
  // file back to it gives exactly the flushed records. Without the pin (TANK_TEST_NO_PIN=1) the same
  // churn overwrites the snapshot's pages, which is what a power cut would then find.
  auto churn_then_roll_back = [](const std::filesystem::path& root) {
    ManualClock clock;
    ScopedEnv boot("TANK_BOOT_ID", "boot-one");
    auto q = Queue::open(interval_queue(root / "q", 64 << 20), clock, nullptr);
    for (int i = 0; i < 4; ++i) {
      REQUIRE(q->append(batch_of(payloads(500, "flushed-" + std::to_string(i) + "-", 120), clock)).ok());
    }
    q->sync();
    const RecoveryPoint flushed = point_of(root / "q");
    // The first acknowledgement deletes every flushed record: their pages are free from then on.
    for (int i = 0; i < 30; ++i) {
      auto r = q->append(batch_of(payloads(40, "churn-", 120), clock));
      REQUIRE(r.ok());
      REQUIRE(q->ack("out", r.last_seq).ok());
    }
    // Still the same recovery point (the queue flushes early only when the pinned pages would take
    // half of its disk margin, 2.75 MiB here).
    REQUIRE(point_of(root / "q").generation == flushed.generation);
    std::filesystem::create_directories(root / "copy");
    std::filesystem::copy_file(root / "q" / "data.mdb", root / "copy" / "data.mdb");
    queue::roll_back_to(root / "copy" / "data.mdb", flushed);
    queue::VerifyOptions full;
    full.depth = queue::Verification::full;
    auto check = queue::verify_in_child(root / "copy", full);
    if (check.outcome != queue::VerifyResult::Outcome::ok) return std::string("damaged: " + check.problem);
    auto copy = Queue::open_read_only(root / "copy", clock);
    auto all = everything(*copy);
    if (all.size() != 2000) return "holds " + std::to_string(all.size()) + " records";
    for (std::size_t i = 0; i < all.size(); ++i) {
      const std::string expected = "flushed-" + std::to_string(i / 500) + "-" + std::to_string(i % 500);
      if (all[i].first != i + 1 || !all[i].second.starts_with(expected)) {
        return "record " + std::to_string(i + 1) + " is " + all[i].second;
      }
    }
    return std::string("intact");
  };
  TempDir pinned;
  CHECK(churn_then_roll_back(pinned.path()) == "intact");
  TempDir unpinned;
  ScopedEnv no_pin("TANK_TEST_NO_PIN", "1");
  CHECK(churn_then_roll_back(unpinned.path()) != "intact");
}

TEST_CASE("small commits after a flush reuse the pages they wrote, not the flushed snapshot's",
          "[queue][recovery_point]") {
  // The flushed snapshot is protected (third_party/lmdb's patch): its own pages stay as they are,
  // and a page a commit wrote after it and the next commit freed again is reused. A read
  // transaction alone would keep every page freed since the flush: each of these 2000 commits
  // would take 5-8 fresh pages, the file would grow by some 50 MiB and the flush write all of it.
  TempDir dir;
  ManualClock clock;
  metrics::Registry registry;
  auto q = Queue::open(interval_queue(dir / "q", 256 << 20), clock, &registry);
  q->sync();
  const RecoveryPoint flushed = point_of(dir / "q");
  const double before = counter(registry, "tank_queue_written_bytes_total");
  const auto size_before = std::filesystem::file_size(dir / "q" / "data.mdb");
  for (int i = 0; i < 2000; ++i) {
    auto r = q->append(batch_of(payloads(1, "r", 100), clock));
    REQUIRE(r.ok());
    if (i % 10 == 9) REQUIRE(q->ack("out", r.last_seq).ok());
  }
  CHECK(point_of(dir / "q").generation == flushed.generation);  // all of it in one window
  const auto grown = std::filesystem::file_size(dir / "q" / "data.mdb") - size_before;
  INFO("the file grew by " << grown << " bytes");
  CHECK(grown <= 64 * 4096);
  q->sync();
  const double written = counter(registry, "tank_queue_written_bytes_total") - before;
  // Every page written since the flush, each counted once (what the fdatasync wrote): the
  // distinct pages these commits touched, a few dozen.
  INFO("the flush wrote " << written << " bytes");
  CHECK(written > 0);
  CHECK(written <= 2000 * 100 * 3);
}

TEST_CASE("the pages a queue writes are counted", "[queue][recovery_point]") {
  TempDir dir;
  ManualClock clock;
  metrics::Registry registry;
  auto q = Queue::open(interval_queue(dir / "q"), clock, &registry);
  q->sync();  // the first accounting sets the baseline
  const double before = counter(registry, "tank_queue_written_bytes_total");
  for (int i = 0; i < 4; ++i) REQUIRE(q->append(batch_of(payloads(250, "r", 100), clock)).ok());
  q->sync();
  const double written = counter(registry, "tank_queue_written_bytes_total") - before;
  // 1000 records of ~130 bytes with LMDB's overhead: some 40 pages of leaves, plus branches, the
  // meta and free-page trees and the meta pages; not more than a few times that.
  CHECK(written >= 130.0 * 1000);
  CHECK(written <= 130.0 * 1000 * 3);
}

TEST_CASE("records prove their bytes and their key", "[record]") {
  ManualClock clock;
  queue::EncodedRecords b;
  queue::Attribute attrs[] = {{"topic", "a/b"}};
  b.add("in", 42, "payload", attrs);
  std::string stored(b.encoded(0));
  queue::seal_stored_record(7, stored.data(), stored.size());
  std::string error;
  CHECK(queue::record_intact(7, stored, &error));
  CHECK_FALSE(queue::record_intact(8, stored, &error));  // the same bytes under another key
  CHECK(error.find("record 8: checksum mismatch") != std::string::npos);
  for (std::size_t i = 0; i < stored.size(); ++i) {
    std::string flipped = stored;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x10);
    INFO("byte " << i);
    CHECK_FALSE(queue::record_intact(7, flipped));
  }
  // Format 1 (no check): read as it is, and upgraded to a sealed format-2 record.
  std::string v1 = stored.substr(0, queue::kRecordHeaderBytesV1) + stored.substr(queue::kRecordHeaderBytes);
  v1[0] = 1;
  CHECK(queue::record_intact(7, v1));
  auto view = queue::decode_record(7, v1);
  REQUIRE(view);
  CHECK(view->payload == "payload");
  CHECK(view->attribute("topic") == "a/b");
  auto v2 = queue::upgrade_record_v1(7, v1);
  REQUIRE(v2);
  CHECK(*v2 == stored);
}

TEST_CASE("a queue of format 1 is upgraded in place at open", "[queue][recovery]") {
  TempDir dir;
  ManualClock clock;
  // A queue as tank wrote it before records had checksums: format 1 in the meta database and
  // format-1 records (16-byte header).
  {
    auto q = Queue::open(small_queue(dir / "q", 8 << 20), clock, nullptr);
  }
  {
    RawLmdb raw(dir / "q");
    const MDB_dbi meta = raw.db("meta");
    const MDB_dbi records = raw.db("records");
    raw.put(meta, "format", RawLmdb::u64(1));
    std::uint64_t bytes = 0;
    for (std::uint64_t seq = 1; seq <= 3000; ++seq) {
      queue::EncodedRecords b;
      b.add("in", 1000 + static_cast<std::int64_t>(seq), "old-" + std::to_string(seq));
      std::string v2(b.encoded(0));
      std::string v1 = v2.substr(0, queue::kRecordHeaderBytesV1) + v2.substr(queue::kRecordHeaderBytes);
      v1[0] = 1;
      raw.put(records, RawLmdb::seq_key(seq), v1);
      bytes += v1.size();
    }
    raw.put(meta, "next_seq", RawLmdb::u64(3001));
    raw.put(meta, "bytes", RawLmdb::u64(bytes));
    raw.commit();
  }
  auto q = Queue::open(small_queue(dir / "q", 8 << 20), clock, nullptr);
  auto all = everything(*q);
  REQUIRE(all.size() == 3000);
  CHECK(all.front().second == "old-1");
  CHECK(all.back().second == "old-3000");
  REQUIRE(q->append(batch_of({"new"}, clock)).ok());
  q->close();
  // Every record now carries its checksum, and the queue says format 3 (an older tank refuses it).
  // The old records stay where they were, in the first segment ("records"); the new one may be
  // in another.
  queue::VerifyOptions full;
  full.depth = queue::Verification::full;
  CHECK(queue::verify_in_child(dir / "q", full).outcome == queue::VerifyResult::Outcome::ok);
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  mdb_env_set_maxdbs(env, 8 + queue::kRecordSegments);
  REQUIRE(mdb_env_open(env, (dir / "q").c_str(), MDB_RDONLY, 0640) == 0);
  MDB_txn* txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn) == 0);
  MDB_dbi meta;
  REQUIRE(mdb_dbi_open(txn, "meta", 0, &meta) == 0);
  MDB_val k, v;
  std::size_t format2 = 0;
  std::size_t in_first = 0;
  for (unsigned slot = 0; slot < queue::kRecordSegments; ++slot) {
    const std::string name = slot == 0 ? "records" : "records." + std::to_string(slot);
    MDB_dbi records;
    REQUIRE(mdb_dbi_open(txn, name.c_str(), 0, &records) == 0);
    MDB_cursor* cursor = nullptr;
    REQUIRE(mdb_cursor_open(txn, records, &cursor) == 0);
    for (int rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)) {
      std::uint64_t seq = 0;
      for (std::size_t i = 0; i < 8; ++i) seq = (seq << 8) | static_cast<unsigned char>(static_cast<char*>(k.mv_data)[i]);
      std::string_view stored(static_cast<const char*>(v.mv_data), v.mv_size);
      if (stored[0] == 2 && queue::record_intact(seq, stored)) ++format2;
      if (slot == 0) ++in_first;
    }
    mdb_cursor_close(cursor);
  }
  CHECK(format2 == 3001);
  CHECK(in_first >= 3000);
  std::string fk = "format";
  MDB_val key{fk.size(), fk.data()};
  REQUIRE(mdb_get(txn, meta, &key, &v) == 0);
  CHECK(*static_cast<const std::uint64_t*>(v.mv_data) == queue::kQueueFormat);
  mdb_txn_abort(txn);
  mdb_env_close(env);
}

TEST_CASE("a data file whose creation a power cut cut short is created again, not moved aside",
          "[queue][recovery_point]") {
  TempDir dir;
  ManualClock clock;
  {
    // LMDB's own creation: both meta pages, no commit.
    MDB_env* env = nullptr;
    REQUIRE(mdb_env_create(&env) == 0);
    std::filesystem::create_directories(dir / "fresh");
    REQUIRE(mdb_env_open(env, (dir / "fresh").c_str(), 0, 0640) == 0);
    mdb_env_close(env);
  }
  const std::string whole = read_file(dir / "fresh" / "data.mdb");
  REQUIRE(whole.size() >= 8192);
  for (std::size_t keep : {std::size_t{0}, std::size_t{4096}, whole.size()}) {
    DYNAMIC_SECTION("the first " << keep << " bytes reached the disk") {
      std::filesystem::create_directories(dir / "q");
      write_file(dir / "q" / "data.mdb", whole.substr(0, keep));
      queue::OpenReport report;
      auto q = Queue::open(interval_queue(dir / "q"), clock, nullptr, &report);
      CHECK_FALSE(report.recovered);
      CHECK(q->append(batch_of({"first"}, clock)).ok());
    }
  }
}
