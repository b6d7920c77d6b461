// tank's patch to LMDB (third_party/lmdb/README.md): a protected snapshot keeps its own pages,
// and only those, while small commits reuse the pages they wrote since. Tested on LMDB alone, the
// way the queue uses it (MDB_NOSYNC, keys appended, old keys deleted, a "flush" that protects
// the newest snapshot and then ends the previous protection), with readers reading meanwhile.
// A page of a snapshot that a reader reads or that is protected, handed out again, shows as a
// wrong value, a missing key or an LMDB assertion.

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <lmdb.h>

#include "support/queue_helpers.hpp"

using namespace tank::test;

namespace {

void ok(int rc, const char* what) {
  if (rc != 0) FAIL(what << ": " << mdb_strerror(rc));
}

struct Env {
  MDB_env* env = nullptr;
  MDB_dbi dbi = 0;
  explicit Env(const std::filesystem::path& dir, std::size_t map_size = 64 << 20) {
    ok(mdb_env_create(&env), "mdb_env_create");
    ok(mdb_env_set_mapsize(env, map_size), "mdb_env_set_mapsize");
    ok(mdb_env_set_maxreaders(env, 64), "mdb_env_set_maxreaders");
    ok(mdb_env_set_maxdbs(env, 2), "mdb_env_set_maxdbs");
    ok(mdb_env_open(env, dir.c_str(), MDB_NOSYNC | MDB_NOTLS, 0640), "mdb_env_open");
    MDB_txn* txn = nullptr;
    ok(mdb_txn_begin(env, nullptr, 0, &txn), "mdb_txn_begin");
    ok(mdb_dbi_open(txn, nullptr, 0, &dbi), "mdb_dbi_open");
    ok(mdb_txn_commit(txn), "mdb_txn_commit");
  }
  ~Env() { mdb_env_close(env); }
  std::size_t last_page() const {
    MDB_envinfo info;
    mdb_env_info(env, &info);
    return info.me_last_pgno;
  }
};

std::uint64_t big_endian(std::uint64_t v) {
  std::uint64_t r = 0;
  for (int i = 0; i < 8; ++i) r = (r << 8) | ((v >> (8 * i)) & 0xff);
  return r;
}

std::string value_of(std::uint64_t key) {
  std::string v = "value-" + std::to_string(key) + "-";
  while (v.size() < 100) v += static_cast<char>('a' + (key + v.size()) % 26);
  return v;
}

// Keys [first, next) exist with their values.
struct Range {
  std::uint64_t first = 0;
  std::uint64_t next = 0;
};

// Appends the next key in txn.
void put_key(MDB_txn* txn, Env& e, Range& r) {
  std::uint64_t k = big_endian(r.next);
  std::string v = value_of(r.next);
  MDB_val key{sizeof k, &k};
  MDB_val val{v.size(), v.data()};
  ok(mdb_put(txn, e.dbi, &key, &val, MDB_APPEND), "mdb_put");
  ++r.next;
}

// Deletes all but the newest `keep` keys in txn.
void keep_newest(MDB_txn* txn, Env& e, Range& r, std::uint64_t keep) {
  while (r.next - r.first > keep) {
    std::uint64_t d = big_endian(r.first);
    MDB_val dk{sizeof d, &d};
    ok(mdb_del(txn, e.dbi, &dk, nullptr), "mdb_del");
    ++r.first;
  }
}

// Appends `count` keys in commits of one and deletes all but the newest `keep`.
void churn(Env& e, Range& r, int count, std::uint64_t keep) {
  for (int i = 0; i < count; ++i) {
    MDB_txn* txn = nullptr;
    ok(mdb_txn_begin(e.env, nullptr, 0, &txn), "mdb_txn_begin");
    put_key(txn, e, r);
    keep_newest(txn, e, r, keep);
    ok(mdb_txn_commit(txn), "mdb_txn_commit");
  }
}

// What a read transaction sees: "" if exactly the keys of `expected` (or, without one, any
// contiguous keys) with their values, else what is wrong.
std::string check_snapshot(MDB_txn* txn, MDB_dbi dbi, const Range* expected) {
  MDB_cursor* c = nullptr;
  if (mdb_cursor_open(txn, dbi, &c) != 0) return "cannot open a cursor";
  MDB_val k, v;
  std::uint64_t want = expected ? expected->first : 0;
  bool first = true;
  std::string problem;
  for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    std::uint64_t raw = 0;
    if (k.mv_size != sizeof raw) {
      problem = "a key of " + std::to_string(k.mv_size) + " bytes";
      break;
    }
    std::memcpy(&raw, k.mv_data, sizeof raw);
    const std::uint64_t key = big_endian(raw);
    if (first && !expected) want = key;
    first = false;
    if (key != want) {
      problem = "key " + std::to_string(key) + " where " + std::to_string(want) + " was due";
      break;
    }
    if (std::string(static_cast<const char*>(v.mv_data), v.mv_size) != value_of(key)) {
      problem = "the value of key " + std::to_string(key) + " is wrong";
      break;
    }
    ++want;
  }
  mdb_cursor_close(c);
  if (problem.empty() && expected && want != expected->next) {
    problem = "ends before key " + std::to_string(want) + ", not " + std::to_string(expected->next);
  }
  return problem;
}

struct Pin {
  MDB_txn* txn = nullptr;
  Range range;
};

// The queue's flush: protect the newest snapshot, then end the previous pin and its protection.
Pin flush(Env& e, Pin& previous, const Range& now) {
  Pin p;
  ok(mdb_txn_begin(e.env, nullptr, MDB_RDONLY, &p.txn), "mdb_txn_begin (pin)");
  ok(mdb_env_protect(e.env, p.txn), "mdb_env_protect");
  p.range = now;
  if (previous.txn != nullptr) {
    const std::size_t id = mdb_txn_id(previous.txn);
    mdb_txn_abort(previous.txn);
    previous.txn = nullptr;
    ok(mdb_env_unprotect(e.env, id), "mdb_env_unprotect");
  }
  return p;
}

// The longest run of contiguous page numbers in the first `records` freeDB records together.
std::size_t longest_free_run(Env& e, std::size_t records) {
  MDB_txn* txn = nullptr;
  ok(mdb_txn_begin(e.env, nullptr, MDB_RDONLY, &txn), "mdb_txn_begin");
  MDB_cursor* c = nullptr;
  ok(mdb_cursor_open(txn, 0, &c), "mdb_cursor_open (freeDB)");
  std::vector<std::size_t> pages;  // LMDB's page numbers are size_t (midl.h)
  MDB_val k, v;
  for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && records > 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT), --records) {
    const auto* ids = static_cast<const std::size_t*>(v.mv_data);  // a count, then the page numbers
    pages.insert(pages.end(), ids + 1, ids + 1 + ids[0]);
  }
  mdb_cursor_close(c);
  mdb_txn_abort(txn);
  std::sort(pages.begin(), pages.end());
  std::size_t longest = pages.empty() ? 0 : 1, run = 1;
  for (std::size_t i = 1; i < pages.size(); ++i) {
    run = pages[i] == pages[i - 1] + 1 ? run + 1 : 1;
    longest = std::max(longest, run);
  }
  return longest;
}

}  // namespace

TEST_CASE("lmdb: single-key commits after a protected snapshot reuse the pages they wrote", "[lmdb][protect]") {
  TempDir dir;
  Env e(dir.path());
  Range r;
  churn(e, r, 300, 300);
  Pin pin{};
  std::size_t largest = 0;
  for (int round = 0; round < 30; ++round) {
    Pin previous = pin;
    pin = flush(e, previous, r);
    churn(e, r, 200, 300);
    std::size_t written = 0, held = 0;
    ok(mdb_env_protected_pages(e.env, mdb_txn_id(pin.txn), &written, &held), "mdb_env_protected_pages");
    INFO("round " << round << ": " << written << " pages written, " << held << " held");
    REQUIRE(check_snapshot(pin.txn, e.dbi, &pin.range) == "");
    // 200 commits of 100 bytes: with a plain read transaction on the snapshot each would take 3
    // or more fresh pages; reused, they touch little more than the pages of the keys kept.
    CHECK(written < 150);
    largest = std::max(largest, e.last_page());
  }
  INFO("the file's last page: " << largest);
  CHECK(largest < 400);
  mdb_txn_abort(pin.txn);
}

TEST_CASE("lmdb: a page is a candidate of a protected snapshot at most once however often commits reload it",
          "[lmdb][protect]") {
  TempDir dir;
  Env e(dir.path());
  Range r;
  // Many pages, then most of them free: free in the snapshot protected next. LMDB writes the free
  // pages a commit loaded and did not use back into the freeDB, and the next commit loads them
  // again; each load used to push them onto the candidate stack again.
  churn(e, r, 3000, 3000);
  churn(e, r, 20, 10);
  Pin none{};
  Pin pin = flush(e, none, r);
  churn(e, r, 300, 10);
  std::size_t warm = 0, free_pages = 0;
  ok(mdb_env_protect_candidates(e.env, mdb_txn_id(pin.txn), &warm, &free_pages), "mdb_env_protect_candidates");
  INFO(warm << " candidates written since, " << free_pages << " free in the snapshot; last page " << e.last_page());
  CHECK(warm <= e.last_page());
  CHECK(free_pages <= e.last_page());
  REQUIRE(check_snapshot(pin.txn, e.dbi, &pin.range) == "");
  mdb_txn_abort(pin.txn);
}

TEST_CASE("lmdb: a protected snapshot stays whole while readers read and commits reuse pages",
          "[lmdb][protect]") {
  TempDir dir;
  Env e(dir.path());
  Range r;
  churn(e, r, 300, 300);
  Pin pin{};
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0};
  std::vector<std::string> problems(2);
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      while (!stop) {
        MDB_txn* txn = nullptr;
        if (mdb_txn_begin(e.env, nullptr, MDB_RDONLY, &txn) != 0) {
          problems[t] = "cannot begin a read transaction";
          return;
        }
        // Some readers stay on their snapshot over many commits and flushes.
        if (rng() % 8 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 20));
        std::string p = check_snapshot(txn, e.dbi, nullptr);
        mdb_txn_abort(txn);
        if (!p.empty()) {
          problems[t] = p;
          return;
        }
        ++reads;
      }
    });
  }
  for (int round = 0; round < 30; ++round) {
    Pin previous = pin;
    pin = flush(e, previous, r);
    churn(e, r, 200, 300);
    // The protected snapshot, read from the file as it is now. (Readers that stay on a snapshot
    // keep what was freed after it, so this is not where reuse is measured.)
    REQUIRE(check_snapshot(pin.txn, e.dbi, &pin.range) == "");
  }
  stop = true;
  for (auto& t : readers) t.join();
  CHECK(problems[0] == "");
  CHECK(problems[1] == "");
  CHECK(reads > 0);
  mdb_txn_abort(pin.txn);
}

// Many pages freed at once, before the snapshot: LMDB keeps its free list's leftovers in the
// records of the oldest transactions, so the snapshot's pages freed later go there too.
void free_many_pages(Env& e) {
  MDB_txn* txn = nullptr;
  MDB_dbi pool = 0;
  ok(mdb_txn_begin(e.env, nullptr, 0, &txn), "mdb_txn_begin");
  ok(mdb_dbi_open(txn, "pool", MDB_CREATE, &pool), "mdb_dbi_open");
  for (std::uint64_t i = 0; i < 40000; ++i) {
    std::uint64_t k = big_endian(i);
    std::string v = value_of(i);
    MDB_val key{sizeof k, &k};
    MDB_val val{v.size(), v.data()};
    ok(mdb_put(txn, pool, &key, &val, MDB_APPEND), "mdb_put");
  }
  ok(mdb_txn_commit(txn), "mdb_txn_commit");
  ok(mdb_txn_begin(e.env, nullptr, 0, &txn), "mdb_txn_begin");
  ok(mdb_drop(txn, pool, 1), "mdb_drop");
  ok(mdb_txn_commit(txn), "mdb_txn_commit");
}

TEST_CASE("lmdb: a reader of a snapshot whose protection ended still reads it whole", "[lmdb][protect]") {
  TempDir dir;
  Env e(dir.path());
  Range r;
  churn(e, r, 300, 300);
  free_many_pages(e);
  churn(e, r, 3, 300);  // the drop's pages are free from here on
  Pin none{};
  Pin first = flush(e, none, r);
  // Another reader of the same snapshot: not waited for while it is protected (its pages are).
  MDB_txn* reader = nullptr;
  ok(mdb_txn_begin(e.env, nullptr, MDB_RDONLY, &reader), "mdb_txn_begin");
  REQUIRE(mdb_txn_id(reader) == mdb_txn_id(first.txn));
  const Range seen = r;
  churn(e, r, 400, 100);  // every key of the snapshot deleted: its pages are held
  Pin second = flush(e, first, r);
  // The protection has ended, the reader goes on: the held pages, by now in the free list's
  // records of old transactions, must stay untouched until it is done.
  churn(e, r, 2000, 100);
  CHECK(check_snapshot(reader, e.dbi, &seen) == "");
  mdb_txn_abort(reader);
  // Then they are reused.
  const std::size_t before = e.last_page();
  churn(e, r, 600, 100);
  CHECK(e.last_page() <= before + 8);
  CHECK(check_snapshot(second.txn, e.dbi, &second.range) == "");
  const std::size_t second_id = mdb_txn_id(second.txn);
  mdb_txn_abort(second.txn);
  ok(mdb_env_unprotect(e.env, second_id), "mdb_env_unprotect");
}

// A read transaction takes the newest txnid into its reader slot, then copies that snapshot's meta
// page. A thread preempted in between, while two commits end, finds the meta slot rewritten by the
// second (LMDB keeps two, by txnid parity): it reads that newer snapshot under the older txnid.
// Stock LMDB gets away with it, since a reader keeps everything freed after its txnid. But when
// that txnid is a protected snapshot's, the reader is not waited for: only the protected
// snapshot's own pages are held, and the newer snapshot's pages are reused under it (seen as an
// LMDB assertion or "record key of 12 bytes" in the queue's bounds test, 1 run in 20 under CPU
// contention). The hook stands for the preemption: it runs the two commits right there.
TEST_CASE("lmdb: a reader that begins as commits end reads the snapshot of its txnid, kept whole",
          "[lmdb][protect]") {
  TempDir dir;
  Env e(dir.path());
  Range r;
  churn(e, r, 300, 300);
  Pin none{};
  Pin pin = flush(e, none, r);
  const std::size_t protected_id = mdb_txn_id(pin.txn);
  // What each snapshot holds, by txnid.
  std::vector<std::pair<std::size_t, Range>> snapshots{{protected_id, r}};
  struct Hook {
    Env* e;
    Range* r;
    std::vector<std::pair<std::size_t, Range>>* snapshots;
    std::size_t when;
    int fired = 0;
  } hook{&e, &r, &snapshots, protected_id};
  mdb_env_set_reader_hook(
      e.env,
      [](MDB_env*, std::size_t txnid, void* ctx) {
        auto* h = static_cast<Hook*>(ctx);
        if (h->fired || txnid != h->when) return;
        h->fired = 1;
        for (int i = 0; i < 2; ++i) {
          churn(*h->e, *h->r, 1, 300);
          h->snapshots->emplace_back(h->when + 1 + i, *h->r);
        }
      },
      &hook);
  MDB_txn* reader = nullptr;
  ok(mdb_txn_begin(e.env, nullptr, MDB_RDONLY, &reader), "mdb_txn_begin");
  mdb_env_set_reader_hook(e.env, nullptr, nullptr);
  REQUIRE(hook.fired == 1);
  const std::size_t id = mdb_txn_id(reader);
  Range seen;
  bool known = false;
  for (const auto& [txnid, range] : snapshots) {
    if (txnid == id) {
      seen = range;
      known = true;
    }
  }
  INFO("the protected snapshot: " << protected_id << ", the reader's: " << id);
  REQUIRE(known);
  CHECK(check_snapshot(reader, e.dbi, &seen) == "");
  // Every key the reader sees deleted, the protection moved on twice: its pages must stay.
  churn(e, r, 400, 100);
  Pin second = flush(e, pin, r);
  churn(e, r, 400, 100);
  Pin third = flush(e, second, r);
  churn(e, r, 400, 100);
  CHECK(check_snapshot(reader, e.dbi, &seen) == "");
  mdb_txn_abort(reader);
  CHECK(check_snapshot(third.txn, e.dbi, &third.range) == "");
  const std::size_t third_id = mdb_txn_id(third.txn);
  mdb_txn_abort(third.txn);
  ok(mdb_env_unprotect(e.env, third_id), "mdb_env_unprotect");
}

TEST_CASE("lmdb: protection is refused for what is not a live read transaction, and counted per snapshot",
          "[lmdb][protect]") {
  TempDir dir;
  Env e(dir.path());
  MDB_txn* write = nullptr;
  ok(mdb_txn_begin(e.env, nullptr, 0, &write), "mdb_txn_begin");
  CHECK(mdb_env_protect(e.env, write) == EINVAL);
  mdb_txn_abort(write);
  MDB_txn* a = nullptr;
  ok(mdb_txn_begin(e.env, nullptr, MDB_RDONLY, &a), "mdb_txn_begin");
  // Two protections of one snapshot (a flush with nothing new since the last): both must end.
  ok(mdb_env_protect(e.env, a), "mdb_env_protect");
  ok(mdb_env_protect(e.env, a), "mdb_env_protect");
  const std::size_t id = mdb_txn_id(a);
  ok(mdb_env_unprotect(e.env, id), "mdb_env_unprotect");
  CHECK(mdb_env_protected_pages(e.env, id, nullptr, nullptr) == 0);
  ok(mdb_env_unprotect(e.env, id), "mdb_env_unprotect");
  CHECK(mdb_env_unprotect(e.env, id) == MDB_NOTFOUND);
  mdb_txn_abort(a);
}

namespace {

// "" if every page below the file's end is in a tree (the keys' or the freeDB's), one of the two
// meta pages, or listed free in the freeDB: no page lost or listed twice. Else what is wrong.
std::string page_accounting(Env& e) {
  MDB_txn* txn = nullptr;
  ok(mdb_txn_begin(e.env, nullptr, MDB_RDONLY, &txn), "mdb_txn_begin");
  MDB_stat keys{}, freedb{};
  ok(mdb_stat(txn, e.dbi, &keys), "mdb_stat");
  ok(mdb_stat(txn, 0, &freedb), "mdb_stat (freeDB)");
  MDB_cursor* c = nullptr;
  ok(mdb_cursor_open(txn, 0, &c), "mdb_cursor_open (freeDB)");
  std::size_t listed = 0;
  MDB_val k, v;
  for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    std::size_t n = 0;
    std::memcpy(&n, v.mv_data, sizeof n);
    listed += n;
  }
  mdb_cursor_close(c);
  MDB_envinfo info;
  mdb_env_info(e.env, &info);
  mdb_txn_abort(txn);
  auto pages = [](const MDB_stat& s) { return s.ms_branch_pages + s.ms_leaf_pages + s.ms_overflow_pages; };
  const std::size_t accounted = 2 + pages(keys) + pages(freedb) + listed;
  if (accounted == info.me_last_pgno + 1) return "";
  return std::to_string(info.me_last_pgno + 1) + " pages in the file, " + std::to_string(accounted) +
         " accounted for (" + std::to_string(listed) + " listed free)";
}

}  // namespace

// The patch's allocator skips held pages and prefers pages written since the snapshot; the freeDB
// must still list every page no tree uses, through nested transactions (the queue's try_nested)
// that abort or commit, and the held pages must come back once the protection moves on.
TEST_CASE("lmdb: under a protected snapshot every page stays in a tree or the freeDB, nested transactions too",
          "[lmdb][protect]") {
  TempDir dir;
  Env e(dir.path());
  Range r;
  churn(e, r, 3000, 3000);
  REQUIRE(page_accounting(e) == "");
  Pin none{};
  Pin pin = flush(e, none, r);
  // Most of the snapshot's pages freed at once: held.
  {
    MDB_txn* txn = nullptr;
    ok(mdb_txn_begin(e.env, nullptr, 0, &txn), "mdb_txn_begin");
    keep_newest(txn, e, r, 10);
    ok(mdb_txn_commit(txn), "mdb_txn_commit");
  }
  REQUIRE(page_accounting(e) == "");
  for (int round = 0; round < 40; ++round) {
    MDB_txn* txn = nullptr;
    ok(mdb_txn_begin(e.env, nullptr, 0, &txn), "mdb_txn_begin");
    put_key(txn, e, r);
    INFO("round " << round);
    // A nested transaction reads more of the freeDB; an abort must give the parent its lists back,
    // a commit must pass the child's on.
    Range before = r;
    MDB_txn* child = nullptr;
    ok(mdb_txn_begin(e.env, txn, 0, &child), "mdb_txn_begin (nested)");
    for (int i = 0; i < 50; ++i) put_key(child, e, r);
    if (round % 2 == 0) {
      mdb_txn_abort(child);
      r = before;
    } else {
      ok(mdb_txn_commit(child), "mdb_txn_commit (nested)");
    }
    keep_newest(txn, e, r, 60);
    ok(mdb_txn_commit(txn), "mdb_txn_commit");
    REQUIRE(page_accounting(e) == "");
    REQUIRE(check_snapshot(pin.txn, e.dbi, &pin.range) == "");
  }
  std::size_t held = 0;
  ok(mdb_env_protected_pages(e.env, mdb_txn_id(pin.txn), nullptr, &held), "mdb_env_protected_pages");
  INFO(held << " pages of the snapshot held");
  CHECK(held > 50);
  // Protection moved on: the held pages are reused and the file does not grow.
  const std::size_t end = e.last_page();
  pin = flush(e, pin, r);
  churn(e, r, 300, 60);
  CHECK(page_accounting(e) == "");
  CHECK(e.last_page() == end);
  REQUIRE(check_snapshot(pin.txn, e.dbi, &pin.range) == "");
  mdb_txn_abort(pin.txn);
}

// A commit that frees thousands of pages at once (the queue dropping a segment with mdb_drop) writes
// a free-page record that needs a run of contiguous pages. With the map's end full, LMDB looked for
// such a run in only `pages * 60` freeDB records and then failed with MDB_MAP_FULL, though a later
// record held one: the queue's acknowledgement was refused at a full queue (docs/BENCHMARKS.md,
// issue 23). Built here: hundreds of freeDB records of scattered single pages, then one record with
// a run, then a map with no room at its end, and a value of eight pages.
TEST_CASE("lmdb: with the map's end full, a run of free pages is found in any freeDB record", "[lmdb][protect]") {
  // With a protected snapshot (the queue's pin) the commit's single-page allocations, warm first,
  // read records up to 4096 pages before the run is asked for, and reach it: that case passes with
  // the stock limit too, and is here for the held-page checks on the longer search.
  const bool protect = GENERATE(false, true);
  INFO((protect ? "with" : "without") << " a protected snapshot");
  TempDir dir;
  Env e(dir.path(), 128 << 20);
  MDB_stat st;
  mdb_env_stat(e.env, &st);
  const std::size_t page = st.ms_psize;
  // Values of one overflow page each, laid out one after the other (with a leaf page now and then).
  const std::string one_page(page * 6 / 10, 'v');
  constexpr std::uint64_t kValues = 16000;
  auto key_of = [](std::uint64_t i) { return big_endian(i); };
  auto commit = [&](auto&& body) {
    MDB_txn* txn = nullptr;
    ok(mdb_txn_begin(e.env, nullptr, 0, &txn), "mdb_txn_begin");
    body(txn);
    ok(mdb_txn_commit(txn), "mdb_txn_commit");
  };
  auto del = [&](MDB_txn* txn, std::uint64_t i) {
    std::uint64_t k = key_of(i);
    MDB_val key{sizeof k, &k};
    ok(mdb_del(txn, e.dbi, &key, nullptr), "mdb_del");
  };
  // LMDB writes the free pages it read and did not use back under the keys of the records it read,
  // split over keys 1..txnid: enough txnids keep those records of one page each.
  auto touch = [&](MDB_txn* txn) {  // a commit that changes nothing but its txnid
    std::uint64_t k = key_of(kValues + 1);
    MDB_val key{sizeof k, &k};
    MDB_val val{1, const_cast<char*>("x")};
    ok(mdb_put(txn, e.dbi, &key, &val, 0), "mdb_put");
    del(txn, kValues + 1);
  };
  for (int n = 0; n < 50; ++n) commit(touch);
  commit([&](MDB_txn* txn) {
    for (std::uint64_t i = 0; i < kValues; ++i) {
      std::uint64_t k = key_of(i);
      MDB_val key{sizeof k, &k};
      MDB_val val{one_page.size(), const_cast<char*>(one_page.data())};
      ok(mdb_put(txn, e.dbi, &key, &val, MDB_APPEND), "mdb_put");
    }
  });
  // A pool of free single pages (every fourth value) for the commits below to take their pages from,
  // freed 200 at a time: a record of 200 page numbers stays in its leaf (a longer one takes
  // overflow pages, side by side at the file's end, and freed together they are a run). From the
  // last values down: the first of these commits copies its leaves to the file's end, side by side
  // too, and those leaves hold values that no commit below frees.
  for (std::uint64_t first = kValues; first > 0; first -= 800) commit([&](MDB_txn* txn) {
      for (std::uint64_t i = first - 800; i < first; i += 4) del(txn, i);
    });
  commit(touch);
  // A reader keeps what the next commits free out of reach, so that each leaves its own record in the
  // freeDB: one value each (every fourth, offset by two: its neighbours stay), with the pages the
  // commit copied from the pool. No two pages in these records are adjacent.
  MDB_txn* reader = nullptr;
  ok(mdb_txn_begin(e.env, nullptr, MDB_RDONLY, &reader), "mdb_txn_begin (reader)");
  constexpr std::uint64_t kScattered = 520;  // more than 8 * 60 records
  for (std::uint64_t n = 0; n < kScattered; ++n) commit([&](MDB_txn* txn) { del(txn, 4 * n + 2); });
  // The newest record: a run of 100 values.
  commit([&](MDB_txn* txn) {
    for (std::uint64_t i = kValues - 100; i < kValues; ++i)
      if (i % 4 != 0) del(txn, i);
  });
  mdb_txn_abort(reader);
  commit(touch);  // LMDB reuses what a commit freed only after one more commit
  // The map's end shrunk to fewer than eight free pages.
  ok(mdb_env_set_mapsize(e.env, (e.last_page() + 3) * page), "mdb_env_set_mapsize");
  Pin none{};
  Pin pin{};
  if (protect) pin = flush(e, none, Range{});
  MDB_txn* txn = nullptr;
  ok(mdb_txn_begin(e.env, nullptr, 0, &txn), "mdb_txn_begin");
  MDB_stat free_db;
  ok(mdb_stat(txn, 0, &free_db), "mdb_stat (freeDB)");
  INFO(free_db.ms_entries << " freeDB records; the file's last page " << e.last_page());
  // What stock LMDB read before it gave up had no run of eight pages: only the newest records have.
  CHECK(free_db.ms_entries > 8 * 60);
  CHECK(longest_free_run(e, 8 * 60 + 10) < 8);
  CHECK(longest_free_run(e, free_db.ms_entries) >= 8);
  const std::string eight_pages(page * 7 + page / 2, 'w');
  std::uint64_t k = key_of(kValues);
  MDB_val key{sizeof k, &k};
  MDB_val val{eight_pages.size(), const_cast<char*>(eight_pages.data())};
  const int rc = mdb_put(txn, e.dbi, &key, &val, MDB_APPEND);
  INFO("mdb_put: " << mdb_strerror(rc));
  CHECK(rc == 0);
  if (rc == 0) {
    ok(mdb_txn_commit(txn), "mdb_txn_commit");
  } else {
    mdb_txn_abort(txn);
  }
  CHECK(page_accounting(e) == "");
  if (pin.txn != nullptr) mdb_txn_abort(pin.txn);
}
