// The pread-only reader and checker of LMDB data files (agent/queue/lmdb_file.hpp), against files
// liblmdb itself writes: the layout agrees with mdb_env_info/mdb_stat, every committed state of
// queue-like workloads checks sound, iteration returns what an LMDB cursor returns, and damaged
// copies are reported with the right page, never a crash or a hang (run under ASan too).

#include <catch2/catch.hpp>

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <random>
#include <regex>
#include <set>

#include <fmt/format.h>
#include <lmdb.h>

#include "queue/lmdb_file.hpp"
#include "queue/lmdb_layout.hpp"
#include "queue/verify.hpp"
#include "support/queue_helpers.hpp"

using namespace tank;
using namespace tank::test;
namespace lf = tank::queue::lmdb_file;
namespace L = tank::queue::lmdb_layout;
namespace fs = std::filesystem;

namespace {

// Read faults for the IoError test: when armed (>= 0), the pread that finds it at 0 fails with
// EIO. The test binary's pread is the one tank_core (linked statically) calls.
std::atomic<long> g_eio_countdown{-1};
std::atomic<long> g_preads{0};

}  // namespace

extern "C" ssize_t pread(int fd, void* buf, size_t n, off_t offset) {
  using Fn = ssize_t (*)(int, void*, size_t, off_t);
  static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pread"));
  g_preads.fetch_add(1);
  if (g_eio_countdown.load() >= 0 && g_eio_countdown.fetch_sub(1) == 0) {
    errno = EIO;
    return -1;
  }
  return real(fd, buf, n, offset);
}

#if defined(__USE_LARGEFILE64)
extern "C" ssize_t pread64(int fd, void* buf, size_t n, off64_t offset) {
  using Fn = ssize_t (*)(int, void*, size_t, off64_t);
  static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pread64"));
  g_preads.fetch_add(1);
  if (g_eio_countdown.load() >= 0 && g_eio_countdown.fetch_sub(1) == 0) {
    errno = EIO;
    return -1;
  }
  return real(fd, buf, n, offset);
}
#endif

namespace {

void ok(int rc, const char* what) {
  if (rc != 0) FAIL(what << ": " << mdb_strerror(rc));
}

// A raw LMDB environment, as the queue opens it (no sync: the tests need no durability).
class Env {
 public:
  explicit Env(const fs::path& dir, std::size_t map_bytes = 64 << 20) {
    fs::create_directories(dir);
    ok(mdb_env_create(&env_), "mdb_env_create");
    ok(mdb_env_set_maxdbs(env_, 8), "mdb_env_set_maxdbs");
    ok(mdb_env_set_mapsize(env_, map_bytes), "mdb_env_set_mapsize");
    ok(mdb_env_open(env_, dir.c_str(), MDB_NOSYNC | MDB_NOTLS, 0640), "mdb_env_open");
  }
  ~Env() { mdb_env_close(env_); }
  Env(const Env&) = delete;
  Env& operator=(const Env&) = delete;
  MDB_env* get() const { return env_; }

 private:
  MDB_env* env_ = nullptr;
};

class Txn {
 public:
  Txn(MDB_env* env, unsigned flags, MDB_txn* parent = nullptr) {
    ok(mdb_txn_begin(env, parent, flags, &txn_), "begin");
  }
  ~Txn() {
    if (txn_ != nullptr) mdb_txn_abort(txn_);
  }
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  MDB_txn* get() const { return txn_; }
  void commit() {
    ok(mdb_txn_commit(txn_), "commit");
    txn_ = nullptr;
  }
  void abort() {
    mdb_txn_abort(txn_);
    txn_ = nullptr;
  }

 private:
  MDB_txn* txn_ = nullptr;
};

MDB_val val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
// A pointer to an MDB_val of `s`, valid until the end of the full expression (`s` must be too).
MDB_val* ptr_to(std::string_view s) {
  static thread_local MDB_val slots[8];
  static thread_local unsigned i = 0;
  i = (i + 1) % 8;
  slots[i] = val(s);
  return &slots[i];
}
std::string str(const MDB_val& v) { return std::string(static_cast<const char*>(v.mv_data), v.mv_size); }

std::string seq_key(std::uint64_t seq) {
  std::string k(8, '\0');
  for (int i = 7; i >= 0; --i) {
    k[static_cast<std::size_t>(i)] = static_cast<char>(seq & 0xff);
    seq >>= 8;
  }
  return k;
}

using Entries = std::vector<std::pair<std::string, std::string>>;

// Every entry of a named database, through an LMDB cursor.
Entries lmdb_entries(MDB_env* env, const char* name) {
  Txn txn(env, MDB_RDONLY);
  MDB_dbi dbi = 0;
  if (mdb_dbi_open(txn.get(), name, 0, &dbi) != 0) return {};
  MDB_cursor* c = nullptr;
  ok(mdb_cursor_open(txn.get(), dbi, &c), "cursor");
  Entries out;
  MDB_val k, v;
  for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    out.emplace_back(str(k), str(v));
  }
  mdb_cursor_close(c);
  return out;
}

Entries reader_entries(const lf::File& file, const lf::Meta& meta, std::string_view name) {
  Entries out;
  lf::for_each_entry(file, meta, name, [&](std::string_view k, std::string_view v) {
    out.emplace_back(std::string(k), std::string(v));
    return true;
  });
  return out;
}

lf::Meta newest(const lf::File& file) {
  lf::Metas metas = file.read_metas();
  const int s = metas.newest();
  REQUIRE(s >= 0);
  return metas.slots[static_cast<std::size_t>(s)];
}

lf::CheckResult check(const lf::File& file, const lf::Meta& meta, lf::CheckDepth depth) {
  lf::CheckOptions o;
  o.depth = depth;
  return lf::check_structure(file, meta, o);
}

void expect_same_db(const lf::Db& mine, const MDB_stat& st) {
  CHECK(mine.depth == st.ms_depth);
  CHECK(mine.branch_pages == st.ms_branch_pages);
  CHECK(mine.leaf_pages == st.ms_leaf_pages);
  CHECK(mine.overflow_pages == st.ms_overflow_pages);
  CHECK(mine.entries == st.ms_entries);
}

const char* const kDbs[] = {"records", "meta", "state", "dead_letters", "scratch"};

// What was measured over every state checked (reported by the first test case).
struct Measured {
  std::uint64_t states = 0;
  std::uint64_t unaccounted = 0;
  std::uint64_t states_with_unaccounted = 0;
  std::uint64_t most_free_pages = 0;
  std::uint64_t most_past_end = 0;
  std::uint64_t states_past_end = 0;
};

// Checks the newest snapshot of the environment in `dir` at both depths and compares what the
// reader sees with what LMDB reports; with `entries`, also every entry of every database.
void expect_sound(const fs::path& dir, MDB_env* env, bool entries, Measured* measured) {
  lf::File file(dir / "data.mdb");
  const lf::Meta meta = newest(file);
  MDB_envinfo info{};
  MDB_stat st{};
  ok(mdb_env_info(env, &info), "mdb_env_info");
  ok(mdb_env_stat(env, &st), "mdb_env_stat");
  CHECK(meta.txnid == info.me_last_txnid);
  CHECK(meta.last_page == info.me_last_pgno);
  CHECK(meta.map_size == info.me_mapsize);
  CHECK(meta.page_size == st.ms_psize);
  expect_same_db(meta.main_db, st);

  const lf::CheckResult quick = check(file, meta, lf::CheckDepth::structure);
  INFO("structure: " << quick.problem);
  REQUIRE(quick.ok());
  const lf::CheckResult full = check(file, meta, lf::CheckDepth::full);
  INFO("full: " << full.problem);
  REQUIRE(full.ok());
  CHECK(full.tree_pages == quick.tree_pages);
  CHECK(full.tree_pages + full.free_pages + full.unaccounted_pages == meta.last_page - 1);
  // The meta page as a recovery point keeps it (its first bytes, decoded again) names the same.
  const lf::Meta copy = lf::parse_meta(meta.raw, meta.slot);
  REQUIRE(copy.valid);
  CHECK(check(file, copy, lf::CheckDepth::structure).tree_pages == quick.tree_pages);
  // The other slot names the previous commit: a commit never reuses a page of the snapshot
  // before it (those it frees become reusable one commit later, when that slot is overwritten).
  const lf::Metas metas = file.read_metas();
  const lf::Meta& older = metas.slots[static_cast<std::size_t>(1 - meta.slot)];
  if (older.valid && older.txnid + 1 == meta.txnid) {
    const lf::CheckResult previous = check(file, older, lf::CheckDepth::full);
    INFO("the previous commit: " << previous.problem);
    CHECK(previous.ok());
  }
  if (measured != nullptr) {
    ++measured->states;
    measured->unaccounted += full.unaccounted_pages;
    if (full.unaccounted_pages != 0) ++measured->states_with_unaccounted;
    measured->most_free_pages = std::max(measured->most_free_pages, full.free_pages);
    measured->most_past_end = std::max(measured->most_past_end, full.free_past_end);
    if (full.free_past_end != 0) ++measured->states_past_end;
  }

  Txn txn(env, MDB_RDONLY);
  MDB_stat free_st{};
  ok(mdb_stat(txn.get(), 0, &free_st), "mdb_stat FREE_DBI");
  expect_same_db(meta.free_db, free_st);
  std::set<std::string> names;
  for (const lf::NamedDb& n : quick.databases) {
    names.insert(n.name);
    MDB_dbi dbi = 0;
    ok(mdb_dbi_open(txn.get(), n.name.c_str(), 0, &dbi), "mdb_dbi_open");
    MDB_stat dst{};
    ok(mdb_stat(txn.get(), dbi, &dst), "mdb_stat");
    INFO("database " << n.name);
    expect_same_db(n.db, dst);
    lf::Db found;
    REQUIRE(lf::find_database(file, meta, n.name, &found));
    CHECK(found.root == n.db.root);
  }
  CHECK(names.size() == st.ms_entries);
  txn.abort();
  if (entries) {
    for (const char* name : kDbs) {
      INFO("database " << name);
      CHECK(reader_entries(file, meta, name) == lmdb_entries(env, name));
    }
  }
}

// A value of `size` bytes that tells its key and its size.
std::string value_of(std::uint64_t seq, std::size_t size) {
  std::string v = "v" + std::to_string(seq) + ":" + std::to_string(size) + ":";
  v.resize(size, static_cast<char>('a' + seq % 26));
  return v;
}

enum class Sizes {
  mixed,  // many large records: overflow runs of up to 16 pages, few records per leaf
  small,  // mostly small records (tank's usual load): many per leaf, deeper trees
};

std::size_t record_size(std::mt19937_64& rng, Sizes sizes) {
  const auto r = rng() % 100;
  if (sizes == Sizes::small) {
    if (r < 85) return 20 + rng() % 130;
    if (r < 98) return 150 + rng() % 1350;
    return 2000 + rng() % 8000;
  }
  if (r < 60) return 20 + rng() % 300;
  if (r < 88) return 300 + rng() % 1700;
  if (r < 97) return 2000 + rng() % 12000;  // one to four overflow pages
  return 14000 + rng() % 50000;             // up to 16 overflow pages
}

// The queue's pattern on raw LMDB: appends at the end of "records", deletes from its front,
// positions in "meta", component state in "state", dead letters; some transactions abort, some
// use nested transactions (committed or aborted), and a reader sometimes pins an old snapshot
// across commits so freed pages pile up before they are reused.
class Workload {
 public:
  Workload(const fs::path& dir, std::uint64_t seed, std::size_t backlog_bytes = 1 << 20, Sizes sizes = Sizes::mixed)
      : dir_(dir), env_(dir), rng_(seed), backlog_limit_(backlog_bytes), sizes_(sizes) {
    Txn txn(env_.get(), 0);
    for (const char* name : kDbs) {
      MDB_dbi dbi = 0;
      ok(mdb_dbi_open(txn.get(), name, MDB_CREATE, &dbi), "create");
      dbis_[name] = dbi;
    }
    ok(mdb_put(txn.get(), dbis_["meta"], ptr_to(("format")), ptr_to(("1")), 0), "put");
    txn.commit();
  }
  ~Workload() {
    if (pin_ != nullptr) mdb_txn_abort(pin_);
  }

  MDB_env* env() const { return env_.get(); }
  const fs::path& dir() const { return dir_; }

  // One transaction (committed or not). Returns whether it committed.
  bool step() {
    if (pin_ != nullptr && rng_() % 4 == 0) {
      mdb_txn_abort(pin_);
      pin_ = nullptr;
    } else if (pin_ == nullptr && rng_() % 12 == 0) {
      ok(mdb_txn_begin(env_.get(), nullptr, MDB_RDONLY, &pin_), "pin");
    }
    Txn txn(env_.get(), 0);
    const auto kind = rng_() % 20;
    apply(txn.get());
    if (kind == 0) {
      const State before = state_;
      Txn child(env_.get(), 0, txn.get());
      apply(child.get());
      child.abort();  // its changes must leave no trace
      state_ = before;
    } else if (kind == 1) {
      Txn child(env_.get(), 0, txn.get());
      apply(child.get());
      child.commit();
    }
    if (kind == 2) {
      txn.abort();
      state_ = committed_;
      return false;
    }
    if (kind == 3 || kind == 4) scratch(txn.get(), kind == 4);
    txn.commit();
    committed_ = state_;
    return true;
  }

 private:
  // What the database holds, to know what to delete and append next.
  struct State {
    std::uint64_t next = 1, first = 1, bytes = 0, dead = 1, dead_first = 1;
    std::deque<std::size_t> sizes;
  };

  // A database that is filled (overflow values included) and then emptied or dropped whole:
  // mdb_drop frees every page of a tree at once.
  void scratch(MDB_txn* txn, bool drop) {
    MDB_dbi dbi = 0;
    ok(mdb_dbi_open(txn, "scratch", MDB_CREATE, &dbi), "scratch");
    if (drop) {
      ok(mdb_drop(txn, dbi, rng_() % 2 == 0 ? 1 : 0), "mdb_drop");
      return;
    }
    for (int i = 0; i < 30; ++i) {
      const std::string k = "s" + std::to_string(rng_() % 500);
      const std::string v = value_of(rng_(), rng_() % 4 == 0 ? 3000 + rng_() % 20000 : rng_() % 300);
      ok(mdb_put(txn, dbi, ptr_to(k), ptr_to(v), 0), "scratch put");
    }
  }

  void apply(MDB_txn* txn) {
    // A large value written and deleted in one transaction: its dirty overflow pages are freed
    // at once (mdb_ovpage_free, which treats nested transactions apart).
    if (rng_() % 8 == 0) {
      const std::string v = value_of(rng_(), 3000 + rng_() % 20000);
      ok(mdb_put(txn, dbis_["state"], ptr_to("tmp"), ptr_to(v), 0), "tmp");
      ok(mdb_del(txn, dbis_["state"], ptr_to("tmp"), nullptr), "tmp delete");
    }
    // Append a group of records (MDB_APPEND, as the queue does; with MDB_RESERVE half the time).
    const std::size_t n = rng_() % (sizes_ == Sizes::small ? 120 : 40);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t size = record_size(rng_, sizes_);
      const std::string k = seq_key(state_.next);
      const std::string v = value_of(state_.next, size);
      MDB_val kv = val(k), vv = val(v);
      if (rng_() % 2 == 0) {
        ok(mdb_put(txn, dbis_["records"], &kv, &vv, MDB_APPEND), "append");
      } else {
        MDB_val reserved{v.size(), nullptr};
        ok(mdb_put(txn, dbis_["records"], &kv, &reserved, MDB_APPEND | MDB_RESERVE), "append");
        std::memcpy(reserved.mv_data, v.data(), v.size());
      }
      state_.sizes.push_back(size);
      state_.bytes += size;
      ++state_.next;
    }
    // Delete from the front while over the backlog, and now and then a consumer catches up.
    std::size_t drop = state_.bytes > backlog_limit_ ? state_.sizes.size() / 3 : (rng_() % 3 == 0 ? rng_() % 30 : 0);
    // Now and then the backlog drains completely (not in the small-record files the damage tests
    // start from: those want a deep tree).
    if (sizes_ == Sizes::mixed && rng_() % 40 == 0) drop = state_.sizes.size();
    for (std::size_t i = 0; i < drop && !state_.sizes.empty(); ++i) {
      const std::string k = seq_key(state_.first);
      MDB_val kv = val(k);
      ok(mdb_del(txn, dbis_["records"], &kv, nullptr), "delete");
      state_.bytes -= state_.sizes.front();
      state_.sizes.pop_front();
      ++state_.first;
    }
    const std::string next = std::to_string(state_.next), first = std::to_string(state_.first);
    ok(mdb_put(txn, dbis_["meta"], ptr_to(("next_seq")), ptr_to((next)), 0), "meta");
    ok(mdb_put(txn, dbis_["meta"], ptr_to(("consumer:out")), ptr_to((first)), 0), "meta");
    // Component state: offsets that change, keys that come and go, a large value now and then.
    for (int i = 0; i < 3; ++i) {
      const std::string key = "input/file/" + std::to_string(rng_() % 50);
      if (rng_() % 4 == 0) {
        MDB_val kv = val(key);
        const int rc = mdb_del(txn, dbis_["state"], &kv, nullptr);
        if (rc != 0 && rc != MDB_NOTFOUND) ok(rc, "state delete");
      } else {
        const std::string v = value_of(rng_() % 1000, rng_() % 10 == 0 ? 3000 + rng_() % 9000 : 8 + rng_() % 64);
        ok(mdb_put(txn, dbis_["state"], ptr_to((key)), ptr_to((v)), 0), "state");
      }
    }
    // Dead letters: appended now and then, evicted from the front.
    if (rng_() % 5 == 0) {
      const std::string k = seq_key(state_.dead), v = value_of(state_.dead, 100 + rng_() % 6000);
      MDB_val kv = val(k), vv = val(v);
      ok(mdb_put(txn, dbis_["dead_letters"], &kv, &vv, MDB_APPEND), "dead letter");
      ++state_.dead;
    }
    if (state_.dead - state_.dead_first > 40) {
      const std::string k = seq_key(state_.dead_first);
      MDB_val kv = val(k);
      ok(mdb_del(txn, dbis_["dead_letters"], &kv, nullptr), "dead letter delete");
      ++state_.dead_first;
    }
  }

  fs::path dir_;
  Env env_;
  std::mt19937_64 rng_;
  std::size_t backlog_limit_;
  Sizes sizes_;
  std::map<std::string, MDB_dbi> dbis_;
  MDB_txn* pin_ = nullptr;
  State state_, committed_;
};

// --- Ground truth for the damage tests: the owner of every page of an intact file, found by a
// walk that trusts the file (it is only run on files LMDB just wrote and the checker passed).

struct Owner {
  std::string tree;  // "free", "(main)", "(free tree)", or a database name
  char kind = '?';   // 'b'ranch, 'l'eaf, 'o' first overflow page, 'r' rest of a run, 'f' free
};

struct Truth {
  std::map<std::uint64_t, Owner> owners;
  std::uint32_t psize = 0;
  std::uint64_t last_page = 0;
  std::vector<std::uint64_t> pages(const std::string& tree, char kind) const {
    std::vector<std::uint64_t> out;
    for (const auto& [p, o] : owners) {
      if ((tree.empty() || o.tree == tree) && o.kind == kind) out.push_back(p);
    }
    return out;
  }
};

std::uint64_t word(const std::string& b, std::size_t off) {
  std::size_t v = 0;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}
std::uint16_t u16(const std::string& b, std::size_t off) {
  std::uint16_t v = 0;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}
std::uint32_t u32(const std::string& b, std::size_t off) {
  std::uint32_t v = 0;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}

void trusting_walk(const std::string& file, std::uint32_t ps, std::uint64_t pg, const std::string& tree, Truth* t,
                   std::vector<std::pair<std::string, std::uint64_t>>* named, std::vector<std::uint64_t>* free_ids) {
  const std::size_t base = static_cast<std::size_t>(pg) * ps;
  const std::uint16_t flags = u16(file, base + L::kPageFlags);
  const unsigned n = (u16(file, base + L::kPageLower) - L::kPageHeader) / 2;
  t->owners[pg] = Owner{tree, (flags & L::kBranch) != 0 ? 'b' : 'l'};
  for (unsigned i = 0; i < n; ++i) {
    const std::size_t node = base + u16(file, base + L::kPageHeader + 2 * i);
    const std::uint16_t lo = u16(file, node), hi = u16(file, node + 2), nflags = u16(file, node + 4);
    const std::uint16_t ksize = u16(file, node + 6);
    if ((flags & L::kBranch) != 0) {
      std::uint64_t child = lo | static_cast<std::uint64_t>(hi) << 16;
      if (L::kWord > 4) child |= static_cast<std::uint64_t>(nflags) << 32;
      trusting_walk(file, ps, child, tree, t, named, free_ids);
      continue;
    }
    const std::uint32_t dsize = lo | static_cast<std::uint32_t>(hi) << 16;
    const std::size_t data = node + L::kNodeHeader + ksize;
    std::string value = file.substr(data, (nflags & L::kNodeBigData) != 0 ? L::kWord : dsize);
    if ((nflags & L::kNodeBigData) != 0) {
      const std::uint64_t first = word(file, data);
      const std::uint32_t count = u32(file, static_cast<std::size_t>(first) * ps + L::kPageOverflowCount);
      t->owners[first] = Owner{tree, 'o'};
      for (std::uint32_t k = 1; k < count; ++k) t->owners[first + k] = Owner{tree, 'r'};
      value = file.substr(static_cast<std::size_t>(first) * ps + L::kPageHeader, dsize);
    }
    if ((nflags & L::kNodeSubData) != 0) {
      named->emplace_back(file.substr(node + L::kNodeHeader, ksize), word(file, data + L::kDbRoot));
    }
    if (tree == "(free tree)") {
      const std::uint64_t count = word(value, 0);
      for (std::uint64_t k = 1; k <= count; ++k) {
        free_ids->push_back(word(value, static_cast<std::size_t>(k) * L::kWord));
      }
    }
  }
}

Truth truth_of(const fs::path& data, const lf::Meta& meta) {
  const std::string file = read_file(data);
  Truth t;
  t.psize = meta.page_size;
  t.last_page = meta.last_page;
  std::vector<std::pair<std::string, std::uint64_t>> named;
  std::vector<std::uint64_t> free_ids;
  if (meta.free_db.root != L::kInvalidPage) {
    trusting_walk(file, t.psize, meta.free_db.root, "(free tree)", &t, &named, &free_ids);
  }
  if (meta.main_db.root != L::kInvalidPage) {
    trusting_walk(file, t.psize, meta.main_db.root, "(main)", &t, &named, &free_ids);
  }
  for (const auto& [name, root] : named) {
    if (root != L::kInvalidPage) trusting_walk(file, t.psize, root, name, &t, &named, &free_ids);
  }
  for (std::uint64_t id : free_ids) t.owners[id] = Owner{"free", 'f'};
  return t;
}

// A sound environment with several databases, a records tree of depth >= 3, overflow values and
// a free list, closed; returns its directory's data file.
fs::path build_base(const TempDir& dir, std::uint64_t seed = 7, int steps = 250) {
  Workload w(dir / "base", seed, 4 << 20, Sizes::small);
  for (int i = 0; i < steps; ++i) w.step();
  return dir / "base" / "data.mdb";
}

fs::path copy_of(const fs::path& data, const fs::path& to) {
  fs::create_directories(to.parent_path());
  fs::copy_file(data, to, fs::copy_options::overwrite_existing);
  return to;
}

void write_at(const fs::path& file, std::uint64_t offset, const void* bytes, std::size_t n) {
  const int fd = ::open(file.c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, bytes, n, static_cast<off_t>(offset)) == static_cast<ssize_t>(n));
  ::close(fd);
}

template <class T>
void put_at(const fs::path& file, std::uint64_t offset, T v) {
  write_at(file, offset, &v, sizeof v);
}

template <class T>
T get_at(const fs::path& file, std::uint64_t offset) {
  lf::File f(file);
  T v{};
  REQUIRE(f.read_at(offset, reinterpret_cast<char*>(&v), sizeof v) == sizeof v);
  return v;
}

// Runs both depths on a damaged copy; each must finish within `limit`.
struct Verdicts {
  lf::CheckResult quick, full;
};
Verdicts judge(const fs::path& file, std::chrono::milliseconds limit = std::chrono::milliseconds(3000)) {
  lf::File f(file);
  lf::Metas metas = f.read_metas();
  const int s = metas.newest();
  Verdicts v;
  const auto start = std::chrono::steady_clock::now();
  if (s < 0) {
    v.quick.outcome = v.full.outcome = lf::CheckResult::Outcome::damaged;
    v.quick.problem = v.full.problem = metas.slots[0].problem;
    return v;
  }
  v.quick = check(f, metas.slots[static_cast<std::size_t>(s)], lf::CheckDepth::structure);
  v.full = check(f, metas.slots[static_cast<std::size_t>(s)], lf::CheckDepth::full);
  // Iterating and scanning a damaged file must be as safe as checking it.
  for (const char* name : kDbs) {
    try {
      reader_entries(f, metas.slots[static_cast<std::size_t>(s)], name);
    } catch (const lf::DamageError&) {
    }
  }
  lf::scan_leaves(f, metas.slots[static_cast<std::size_t>(s)].page_size, [](const lf::ScannedEntry&) { return true; });
  CHECK(std::chrono::steady_clock::now() - start < limit);
  return v;
}

bool names_page(const std::string& problem, std::uint64_t page) {
  return std::regex_search(problem, std::regex("page " + std::to_string(page) + "\\b"));
}

// The node offsets of page `pg`.
std::vector<std::uint16_t> node_offsets(const fs::path& file, std::uint32_t ps, std::uint64_t pg) {
  const std::uint16_t lower = get_at<std::uint16_t>(file, pg * ps + L::kPageLower);
  std::vector<std::uint16_t> out;
  for (std::size_t at = L::kPageHeader; at < lower; at += 2) out.push_back(get_at<std::uint16_t>(file, pg * ps + at));
  return out;
}

// Points node `i` of branch page `pg` at `child`.
void set_child(const fs::path& file, std::uint32_t ps, std::uint64_t pg, unsigned i, std::uint64_t child) {
  const std::uint64_t node = pg * ps + node_offsets(file, ps, pg).at(i);
  put_at<std::uint16_t>(file, node, static_cast<std::uint16_t>(child & 0xffff));
  put_at<std::uint16_t>(file, node + 2, static_cast<std::uint16_t>((child >> 16) & 0xffff));
  if (L::kWord > 4) put_at<std::uint16_t>(file, node + 4, static_cast<std::uint16_t>((child >> 32) & 0xffff));
}

}  // namespace

TEST_CASE("lmdb_file: every committed state of a queue-like workload checks sound, as LMDB reports it",
          "[lmdb_file]") {
  Measured measured;
  for (std::uint64_t seed : {1, 2, 3}) {
    TempDir dir;
    Workload w(dir / "env", seed, seed == 3 ? 4 << 20 : 512 << 10);
    int committed = 0;
    for (int i = 0; i < 220; ++i) {
      if (!w.step()) continue;
      ++committed;
      INFO("seed " << seed << ", step " << i);
      expect_sound(w.dir(), w.env(), committed % 15 == 0, &measured);
    }
    expect_sound(w.dir(), w.env(), true, &measured);
  }
  // What LMDB 0.9.24 leaves unaccounted (see CheckResult::unaccounted_pages): measured, never seen.
  WARN("states checked: " << measured.states << ", unaccounted pages: " << measured.unaccounted << " in "
                          << measured.states_with_unaccounted << " states; largest free list " << measured.most_free_pages
                          << " pages; free pages past the file's end in " << measured.states_past_end
                          << " states (at most " << measured.most_past_end << ")");
  CHECK(measured.unaccounted == 0);
}

TEST_CASE("lmdb_file: the tank queue's own files check sound after every commit", "[lmdb_file]") {
  // The queue under both overflow policies at its bound (drop_oldest evicts in the same
  // transaction, block refuses; near the bound batches go through nested transactions), with
  // acknowledgements, component state and dead letters past their own bound, reopened now and then.
  Measured measured;
  for (const auto policy : {queue::Overflow::drop_oldest, queue::Overflow::block}) {
    TempDir dir;
    ManualClock clock;
    auto options = small_queue(dir / "q", 1 << 20);
    options.overflow = policy;
    auto q = queue::Queue::open(options, clock, nullptr);
    std::mt19937_64 rng(policy == queue::Overflow::block ? 12 : 11);
    std::uint64_t acked = 0;
    int refused = 0, at_bound = 0;
    for (int i = 0; i < 180; ++i) {
      if (i % 60 == 59) {
        q->close();
        q = queue::Queue::open(options, clock, nullptr);
      }
      queue::WriteBatch batch;
      const std::size_t n = rng() % 30;
      for (std::size_t k = 0; k < n; ++k) {
        const std::size_t size = rng() % 10 == 0 ? 2500 + rng() % 9000 : 50 + rng() % 400;
        batch.records.add("in", clock.wall_ns(), std::string(size, static_cast<char>('a' + k % 26)));
      }
      if (rng() % 4 == 0) {
        batch.state_puts.emplace_back("input/x/" + std::to_string(rng() % 9), std::string(rng() % 200, 's'));
      }
      if (rng() % 3 == 0) {
        batch.dead_letters.push_back(queue::DeadLetter::make("in", "line_too_long", "d",
                                                             std::string(rng() % 20000, 'd'), clock.wall_ns()));
      }
      const auto r = q->commit(batch);
      const bool ack = policy == queue::Overflow::block ? rng() % 6 == 0 : rng() % 12 == 0;
      if (ack && q->stats().records > 0) {
        acked = std::max(acked, q->oldest_seq() + q->stats().records / 10);
        q->ack("out", acked);
      }
      if (r.status == queue::CommitStatus::full) ++refused;
      if (q->stats().disk_used_bytes + (64 << 10) > options.max_disk_bytes) ++at_bound;
      // The queue commits synchronously: between calls the file holds a committed state.
      lf::File file(dir / "q" / "data.mdb");
      const lf::Meta meta = newest(file);
      const lf::CheckResult full = check(file, meta, lf::CheckDepth::full);
      INFO("step " << i << ": " << full.problem);
      REQUIRE(full.ok());
      ++measured.states;
      measured.unaccounted += full.unaccounted_pages;
      if (i % 20 == 0) {
        // Records live in segments ("records", "records.1"...); the ones up to the consumer's
        // position are acknowledged, whether or not their segment still holds them.
        std::size_t records = 0;
        const std::uint64_t front = q->position("out").value_or(0);
        for (unsigned slot = 0; slot < queue::kRecordSegments; ++slot) {
          std::uint64_t previous = 0;
          const std::string name = slot == 0 ? "records" : "records." + std::to_string(slot);
          lf::for_each_entry(file, meta, name, [&](std::string_view k, std::string_view v) {
            CHECK(k.size() == 8);
            std::uint64_t seq = 0;
            for (char c : k) seq = seq << 8 | static_cast<unsigned char>(c);
            CHECK(seq > previous);
            previous = seq;
            CHECK(!v.empty());
            if (seq > front) ++records;
            return true;
          });
        }
        CHECK(records == q->stats().records);
      }
    }
    // The bound was reached (evictions or refusals happened on the way).
    CHECK(at_bound > 10);
    if (policy == queue::Overflow::block) CHECK(refused > 0);
  }
  WARN("tank queue: " << measured.states << " states, unaccounted pages: " << measured.unaccounted);
  CHECK(measured.unaccounted == 0);
}

TEST_CASE("lmdb_file: the states around MDB_MAP_FULL check sound", "[lmdb_file]") {
  // A small map, a reader pinning old snapshots: transactions fail with MDB_MAP_FULL (in a put or
  // in the commit's free-list save) and are aborted; what is committed stays sound and accounted.
  TempDir dir;
  Env env(dir / "env", 1 << 20);
  MDB_dbi records = 0;
  {
    Txn txn(env.get(), 0);
    ok(mdb_dbi_open(txn.get(), "records", MDB_CREATE, &records), "create");
    txn.commit();
  }
  std::mt19937_64 rng(8);
  MDB_txn* pin = nullptr;
  std::uint64_t next = 1, first = 1;
  int full = 0, committed = 0;
  Measured measured;
  for (int i = 0; i < 300; ++i) {
    if (pin == nullptr && rng() % 10 == 0) ok(mdb_txn_begin(env.get(), nullptr, MDB_RDONLY, &pin), "pin");
    MDB_txn* txn = nullptr;
    ok(mdb_txn_begin(env.get(), nullptr, 0, &txn), "begin");
    int rc = 0;
    std::uint64_t appended = next, deleted = first;
    for (std::size_t k = 0, n = rng() % 40; k < n && rc == 0; ++k, ++appended) {
      const std::string key = seq_key(appended), v = value_of(appended, 100 + rng() % (rng() % 5 == 0 ? 12000 : 900));
      MDB_val kv = val(key), vv = val(v);
      rc = mdb_put(txn, records, &kv, &vv, MDB_APPEND);
    }
    for (std::size_t k = 0, n = rng() % 30; k < n && rc == 0 && deleted < appended; ++k, ++deleted) {
      const std::string key = seq_key(deleted);
      MDB_val kv = val(key);
      rc = mdb_del(txn, records, &kv, nullptr);
    }
    if (rc == 0) {
      rc = mdb_txn_commit(txn);  // aborts the transaction itself when it fails
    } else {
      mdb_txn_abort(txn);
    }
    if (rc == MDB_MAP_FULL) {
      ++full;
      if (pin != nullptr) mdb_txn_abort(pin);
      pin = nullptr;
      // Make room: a consumer catches up.
      MDB_txn* drain = nullptr;
      ok(mdb_txn_begin(env.get(), nullptr, 0, &drain), "begin");
      for (; first + 20 < next; ++first) {
        const std::string key = seq_key(first);
        MDB_val kv = val(key);
        ok(mdb_del(drain, records, &kv, nullptr), "drain");
      }
      ok(mdb_txn_commit(drain), "commit the drain");
      expect_sound(dir / "env", env.get(), false, &measured);
      continue;
    }
    ok(rc, "a transaction");
    next = appended;
    first = deleted;
    ++committed;
    expect_sound(dir / "env", env.get(), committed % 20 == 0, &measured);
  }
  if (pin != nullptr) mdb_txn_abort(pin);
  CHECK(full > 5);
  WARN("around MDB_MAP_FULL: " << full << " transactions failed, " << measured.states
                               << " states checked, unaccounted pages: " << measured.unaccounted);
  CHECK(measured.unaccounted == 0);
}

TEST_CASE("lmdb_file: iteration returns exactly what an LMDB cursor returns", "[lmdb_file]") {
  TempDir dir;
  Env env(dir / "env");
  {
    Txn txn(env.get(), 0);
    MDB_dbi big = 0, empty = 0, integer = 0, reversed = 0;
    ok(mdb_dbi_open(txn.get(), "big", MDB_CREATE, &big), "create");
    ok(mdb_dbi_open(txn.get(), "empty", MDB_CREATE, &empty), "create");
    ok(mdb_dbi_open(txn.get(), "integer", MDB_CREATE | MDB_INTEGERKEY, &integer), "create");
    ok(mdb_dbi_open(txn.get(), "reversed", MDB_CREATE | MDB_REVERSEKEY, &reversed), "create");
    std::mt19937_64 rng(5);
    for (std::uint64_t i = 0; i < 3000; ++i) {
      // Values of every size class: inline, just below and above the overflow threshold, many pages.
      const std::size_t size = i % 100 == 0 ? 100000 + i : i % 7 == 0 ? 2000 + i % 80 : i % 50;
      const std::string v = value_of(i, size);
      const std::string k = "key-" + std::to_string(rng() % 100000);
      ok(mdb_put(txn.get(), big, ptr_to(k), ptr_to(v), 0), "put");
      std::size_t ik = static_cast<std::size_t>(rng());
      MDB_val ikv{sizeof ik, &ik};
      ok(mdb_put(txn.get(), integer, &ikv, ptr_to(v), 0), "put");
      ok(mdb_put(txn.get(), reversed, ptr_to(k + "/" + std::to_string(i)), ptr_to(v), 0), "put");
    }
    // A plain key in the main database beside the named ones.
    ok(mdb_put(txn.get(), 1, ptr_to(std::string("plain")), ptr_to(std::string("value")), 0), "put main");
    txn.commit();
  }
  lf::File file(dir / "env" / "data.mdb");
  const lf::Meta meta = newest(file);
  const lf::CheckResult r = check(file, meta, lf::CheckDepth::full);
  INFO(r.problem);
  REQUIRE(r.ok());
  CHECK(r.databases.size() == 4);
  for (const char* name : {"big", "empty", "integer", "reversed"}) {
    INFO(name);
    const Entries mine = reader_entries(file, meta, name);
    CHECK(mine == lmdb_entries(env.get(), name));
    if (std::string(name) != "empty") CHECK(!mine.empty());
  }
  // Stopping early, and a database that is not there.
  int seen = 0;
  CHECK(lf::for_each_entry(file, meta, "big", [&](std::string_view, std::string_view) { return ++seen < 10; }));
  CHECK(seen == 10);
  CHECK_FALSE(lf::for_each_entry(file, meta, "absent", [](std::string_view, std::string_view) { return true; }));
  CHECK_FALSE(lf::for_each_entry(file, meta, "plain", [](std::string_view, std::string_view) { return true; }));
  lf::Db db;
  CHECK_FALSE(lf::find_database(file, meta, "absent", &db));
}

TEST_CASE("lmdb_file: a DUPSORT database is not judged, an invalid meta page or one past its map is damage", "[lmdb_file]") {
  TempDir dir;
  {
    Env env(dir / "env");
    Txn txn(env.get(), 0);
    MDB_dbi dup = 0;
    ok(mdb_dbi_open(txn.get(), "dup", MDB_CREATE | MDB_DUPSORT, &dup), "create");
    ok(mdb_put(txn.get(), dup, ptr_to(std::string("k")), ptr_to(std::string("a")), 0), "put");
    ok(mdb_put(txn.get(), dup, ptr_to(std::string("k")), ptr_to(std::string("b")), 0), "put");
    txn.commit();
  }
  lf::File file(dir / "env" / "data.mdb");
  const lf::Meta meta = newest(file);
  const lf::CheckResult r = check(file, meta, lf::CheckDepth::full);
  CHECK(r.outcome == lf::CheckResult::Outcome::unsupported);
  CHECK_THROWS_AS(reader_entries(file, meta, "dup"), lf::DamageError);

  lf::Meta broken = meta;
  broken.valid = false;
  broken.problem = "meta page 1 has no LMDB magic number";
  const lf::CheckResult b = check(file, broken, lf::CheckDepth::structure);
  CHECK(b.outcome == lf::CheckResult::Outcome::damaged);
  CHECK(b.problem == broken.problem);

  // A last page LMDB could not have allocated under the map the meta page records.
  lf::Meta huge = meta;
  huge.last_page = meta.map_size / meta.page_size;
  const lf::CheckResult h = check(file, huge, lf::CheckDepth::full);
  CHECK(h.outcome == lf::CheckResult::Outcome::damaged);
  CHECK(h.page == static_cast<std::uint64_t>(meta.slot));
  CHECK(h.problem.find("beyond its map") != std::string::npos);
}

TEST_CASE("lmdb_file: a read error is an IoError, never damage", "[lmdb_file]") {
  TempDir dir;
  CHECK_THROWS_AS(lf::File(dir / "absent"), lf::IoError);
  try {
    lf::File nothing(dir / "absent");
  } catch (const lf::IoError& e) {
    CHECK(e.code() == ENOENT);
  }
  // A directory opens but cannot be read (EISDIR).
  lf::File directory(dir.path());
  try {
    directory.read_metas();
    FAIL("no IoError");
  } catch (const lf::IoError& e) {
    CHECK(e.code() == EISDIR);
  }

  // EIO at any read of a check, an iteration or a scan: IoError, never a verdict.
  {
    Workload w(dir / "env", 9, 1 << 20);
    for (int i = 0; i < 120; ++i) w.step();
  }
  lf::File file(dir / "env" / "data.mdb");
  const lf::Meta meta = newest(file);
  g_preads = 0;
  REQUIRE(check(file, meta, lf::CheckDepth::full).ok());
  const long reads = g_preads.load();
  REQUIRE(reads > 20);  // the test binary's pread is the one called
  for (long n : {0L, 1L, reads / 2, reads - 1}) {
    INFO("EIO at read " << n << " of " << reads);
    g_eio_countdown = n;
    try {
      const lf::CheckResult r = check(file, meta, lf::CheckDepth::full);
      FAIL("no IoError: " << r.problem);
    } catch (const lf::IoError& e) {
      CHECK(e.code() == EIO);
    }
    g_eio_countdown = 0;
    CHECK_THROWS_AS(reader_entries(file, meta, "records"), lf::IoError);
    g_eio_countdown = 3;
    CHECK_THROWS_AS(lf::scan_leaves(file, meta.page_size, [](const lf::ScannedEntry&) { return true; }), lf::IoError);
    g_eio_countdown = -1;
  }
  CHECK(check(file, meta, lf::CheckDepth::full).ok());

}

TEST_CASE("lmdb_file: garbage pages at random offsets are found on the page they hit", "[lmdb_file]") {
  TempDir dir;
  const fs::path base = build_base(dir);
  lf::File base_file(base);
  const lf::Meta meta = newest(base_file);
  const Truth truth = truth_of(base, meta);
  REQUIRE(check(base_file, meta, lf::CheckDepth::full).ok());
  const std::uint64_t file_pages = base_file.size() / meta.page_size;
  std::mt19937_64 rng(1234);
  int tree_hits = 0, free_hits = 0;
  for (int c = 0; c < 200; ++c) {
    const std::uint64_t pg = 2 + rng() % (file_pages - 2);
    const fs::path copy = copy_of(base, dir / "c" / "data.mdb");
    std::string garbage(meta.page_size, '\0');
    for (char& ch : garbage) ch = static_cast<char>(rng());
    const bool keep_header = c % 2 == 1;  // garbage behind a header that names the page: deeper checks
    if (keep_header) {
      lf::File f(base);
      f.read_at(pg * meta.page_size, garbage.data(), L::kPageHeader);
    }
    write_at(copy, pg * meta.page_size, garbage.data(), garbage.size());
    const auto it = truth.owners.find(pg);
    const Owner owner = it == truth.owners.end() ? Owner{"", 'u'} : it->second;
    INFO("case " << c << ": page " << pg << " of " << owner.tree << " (" << owner.kind << ")");
    const Verdicts v = judge(copy);
    INFO("structure: " << v.quick.problem << "\nfull: " << v.full.problem);
    if (owner.kind == 'b' || owner.kind == 'l' || (owner.kind == 'o' && !keep_header)) {
      ++tree_hits;
      CHECK(v.quick.outcome == lf::CheckResult::Outcome::damaged);
      CHECK(v.full.outcome == lf::CheckResult::Outcome::damaged);
      if (!keep_header) CHECK(v.quick.page == pg);
      CHECK((v.quick.page == pg || names_page(v.quick.problem, pg) || owner.kind == 'l'));
    } else if (owner.kind == 'f' || owner.kind == 'u' || owner.kind == 'r') {
      // A free page, or the inside of an overflow run (values are proven by their records'
      // checksums, not by the structure): the structure stands.
      ++free_hits;
      CHECK(v.quick.ok());
      CHECK(v.full.ok());
    }
  }
  CHECK(tree_hits > 20);
  CHECK(free_hits > 5);
}

TEST_CASE("lmdb_file: a branch pointing at a freed page, at itself or into another tree", "[lmdb_file]") {
  TempDir dir;
  const fs::path base = build_base(dir);
  lf::File base_file(base);
  const lf::Meta meta = newest(base_file);
  const Truth truth = truth_of(base, meta);
  const std::uint32_t ps = meta.page_size;
  const auto branches = truth.pages("records", 'b');
  REQUIRE(branches.size() >= 2);
  const std::uint64_t file_pages = base_file.size() / ps;
  std::vector<std::uint64_t> free_in_file;
  for (std::uint64_t p : truth.pages("free", 'f')) {
    if (p < file_pages) free_in_file.push_back(p);
  }
  REQUIRE(free_in_file.size() >= 10);
  std::mt19937_64 rng(99);

  SECTION("a freed page: the full check always proves it, naming the page") {
    int structure_found = 0;
    for (int c = 0; c < 30; ++c) {
      const std::uint64_t b = branches[rng() % branches.size()];
      const std::uint64_t f = free_in_file[rng() % free_in_file.size()];
      const unsigned i = static_cast<unsigned>(rng() % node_offsets(base, ps, b).size());
      const fs::path copy = copy_of(base, dir / "c" / "data.mdb");
      set_child(copy, ps, b, i, f);
      const Verdicts v = judge(copy);
      INFO("branch " << b << " node " << i << " -> free page " << f << "\nstructure: " << v.quick.problem
                     << "\nfull: " << v.full.problem);
      CHECK(v.full.outcome == lf::CheckResult::Outcome::damaged);
      if (!v.quick.ok()) ++structure_found;
      // Either the page does not fit where it is reached, or it is both in the tree and free.
      CHECK((names_page(v.full.problem, f) || names_page(v.full.problem, b) || v.full.problem.find("records") !=
                                                                                  std::string::npos));
    }
    WARN("a branch pointing at a freed page: the structure check alone found " << structure_found << " of 30");
  }
  SECTION("itself") {
    const std::uint64_t b = branches.front();
    const fs::path copy = copy_of(base, dir / "c" / "data.mdb");
    set_child(copy, ps, b, 1, b);
    const Verdicts v = judge(copy);
    INFO(v.quick.problem);
    CHECK(v.quick.outcome == lf::CheckResult::Outcome::damaged);
    CHECK(v.quick.page == b);
    CHECK(v.quick.problem.find("second time") != std::string::npos);
  }
  SECTION("a page of another tree") {
    // "meta" comes before "records" in MAIN_DBI's order: its page is claimed first.
    const auto meta_leaves = truth.pages("meta", 'l');
    REQUIRE(!meta_leaves.empty());
    const std::uint64_t b = branches.back();
    const fs::path copy = copy_of(base, dir / "c" / "data.mdb");
    set_child(copy, ps, b, 0, meta_leaves.front());
    const Verdicts v = judge(copy);
    INFO(v.quick.problem);
    CHECK(v.quick.outcome == lf::CheckResult::Outcome::damaged);
    CHECK(v.quick.page == meta_leaves.front());
    CHECK(v.quick.problem.find("database \"meta\"") != std::string::npos);
  }
  SECTION("past the last page, and past the end of the file") {
    const std::uint64_t b = branches.front();
    const fs::path copy = copy_of(base, dir / "c" / "data.mdb");
    set_child(copy, ps, b, 0, meta.last_page + 5);
    Verdicts v = judge(copy);
    CHECK(v.quick.page == b);
    CHECK(v.quick.problem.find("outside pages 2..") != std::string::npos);
    set_child(copy, ps, b, 0, 1);
    v = judge(copy);
    CHECK(v.quick.page == b);
  }
}

TEST_CASE("lmdb_file: a truncated file is damaged only when a tree page is cut off", "[lmdb_file]") {
  TempDir dir;
  const fs::path base = build_base(dir);
  lf::File base_file(base);
  const lf::Meta meta = newest(base_file);
  const Truth truth = truth_of(base, meta);
  const std::uint32_t ps = meta.page_size;
  const std::uint64_t size = base_file.size();
  std::mt19937_64 rng(4);
  for (int c = 0; c < 40; ++c) {
    // Whole pages and torn ones, anywhere from inside the meta pages to the end.
    const std::uint64_t cut = c == 0 ? 0 : c == 1 ? size - ps : c == 2 ? size - 1 : rng() % size;
    const fs::path copy = copy_of(base, dir / "c" / "data.mdb");
    fs::resize_file(copy, cut);
    const std::uint64_t kept_pages = cut / ps;
    bool tree_cut = false;
    std::uint64_t lowest_cut_tree_page = 0;
    for (const auto& [p, o] : truth.owners) {
      if (p >= kept_pages && o.kind != 'f') {
        tree_cut = true;
        lowest_cut_tree_page = p;
        break;
      }
    }
    INFO("cut at " << cut << " bytes (" << kept_pages << " pages), lowest tree page cut " << lowest_cut_tree_page);
    const Verdicts v = judge(copy);
    INFO("structure: " << v.quick.problem << "\nfull: " << v.full.problem);
    if (cut < 2 * static_cast<std::uint64_t>(ps)) {
      CHECK(v.quick.outcome == lf::CheckResult::Outcome::damaged);
    } else if (tree_cut) {
      CHECK(v.quick.outcome == lf::CheckResult::Outcome::damaged);
      CHECK(v.quick.page >= kept_pages);
      CHECK(v.quick.problem.find("past the end of the file") != std::string::npos);
      CHECK(v.full.outcome == lf::CheckResult::Outcome::damaged);
    } else {
      CHECK(v.quick.ok());
      CHECK(v.full.ok());
    }
  }
}

TEST_CASE("lmdb_file: swapped node offsets and wrong overflow counts", "[lmdb_file]") {
  TempDir dir;
  const fs::path base = build_base(dir);
  lf::File base_file(base);
  const lf::Meta meta = newest(base_file);
  const Truth truth = truth_of(base, meta);
  const std::uint32_t ps = meta.page_size;

  SECTION("two node offsets of a leaf swapped: keys out of order on that page") {
    int done = 0;
    for (std::uint64_t leaf : truth.pages("records", 'l')) {
      const auto offsets = node_offsets(base, ps, leaf);
      if (offsets.size() < 2) continue;
      const fs::path copy = copy_of(base, dir / "c" / "data.mdb");
      const std::size_t i = done % (offsets.size() - 1);
      put_at<std::uint16_t>(copy, leaf * ps + L::kPageHeader + 2 * i, offsets[i + 1]);
      put_at<std::uint16_t>(copy, leaf * ps + L::kPageHeader + 2 * (i + 1), offsets[i]);
      const Verdicts v = judge(copy);
      INFO("leaf " << leaf << ": " << v.quick.problem);
      CHECK(v.quick.outcome == lf::CheckResult::Outcome::damaged);
      CHECK(v.quick.page == leaf);
      CHECK(v.quick.problem.find("is not above key") != std::string::npos);
      if (++done == 10) break;
    }
    CHECK(done == 10);
  }
  SECTION("an overflow run too short, too long, or absurd") {
    const auto firsts = truth.pages("records", 'o');
    REQUIRE(firsts.size() >= 3);
    for (std::size_t c = 0; c < firsts.size() && c < 12; ++c) {
      const std::uint64_t o = firsts[c];
      const std::uint32_t count = get_at<std::uint32_t>(base, o * ps + L::kPageOverflowCount);
      for (std::uint32_t wrong : {count - 1, count + 1, 0u, 0xffffffffu}) {
        const fs::path copy = copy_of(base, dir / "c" / "data.mdb");
        put_at<std::uint32_t>(copy, o * ps + L::kPageOverflowCount, wrong);
        const Verdicts v = judge(copy);
        INFO("overflow page " << o << " count " << count << " -> " << wrong << "\nstructure: " << v.quick.problem
                              << "\nfull: " << v.full.problem);
        // One page more may take a free page (only the full check sees it listed free).
        CHECK(v.full.outcome == lf::CheckResult::Outcome::damaged);
        if (wrong != count + 1) {
          CHECK(v.quick.outcome == lf::CheckResult::Outcome::damaged);
          CHECK((v.quick.page == o || names_page(v.quick.problem, o)));
        }
      }
    }
  }
}

TEST_CASE("lmdb_file: hundreds of random byte flips never crash or hang the reader", "[lmdb_file]") {
  TempDir dir;
  const fs::path base = build_base(dir, 21, 150);
  lf::File base_file(base);
  const lf::Meta meta = newest(base_file);
  const Truth truth = truth_of(base, meta);
  const std::uint32_t ps = meta.page_size;
  const std::string original = read_file(base);
  std::mt19937_64 rng(2024);
  int damaged = 0, header_flips = 0;
  for (int c = 0; c < 400; ++c) {
    const fs::path copy = copy_of(base, dir / "c" / "data.mdb");
    const int flips = 1 + static_cast<int>(rng() % 4);
    bool header_of_tree_page = false;
    for (int k = 0; k < flips; ++k) {
      // Half in page headers and node offsets (where the structure is), half anywhere.
      std::uint64_t at = rng() % original.size();
      if (rng() % 2 == 0) at = at / ps * ps + rng() % 24;
      const std::uint8_t bit = static_cast<std::uint8_t>(1u << (rng() % 8));
      const std::uint8_t byte = static_cast<std::uint8_t>(get_at<std::uint8_t>(copy, at) ^ bit);
      put_at<std::uint8_t>(copy, at, byte);
      const auto it = truth.owners.find(at / ps);
      const std::uint64_t in_page = at % ps;
      // The page number and the flags of a branch or leaf page: always proven wrong.
      if (it != truth.owners.end() && (it->second.kind == 'b' || it->second.kind == 'l') &&
          (in_page < L::kWord || (in_page >= L::kPageFlags && in_page < L::kPageFlags + 2))) {
        header_of_tree_page = true;
      }
    }
    INFO("case " << c);
    const Verdicts v = judge(copy, std::chrono::milliseconds(2000));
    if (!v.quick.ok()) ++damaged;
    if (header_of_tree_page) {
      ++header_flips;
      INFO(v.quick.problem);
      CHECK(v.quick.outcome == lf::CheckResult::Outcome::damaged);
    }
  }
  WARN("byte flips: " << damaged << " of 400 copies judged damaged by the structure check (" << header_flips
                      << " hit a tree page's number or flags)");
  CHECK(header_flips > 20);
}

TEST_CASE("lmdb_file: the leaf scan finds every live entry, damaged pages aside", "[lmdb_file]") {
  TempDir dir;
  Workload w(dir / "env", 17, 2 << 20);
  for (int i = 0; i < 200; ++i) w.step();
  const fs::path data = dir / "env" / "data.mdb";
  std::map<std::string, Entries> live;
  for (const char* name : kDbs) live[name] = lmdb_entries(w.env(), name);
  lf::File file(data);
  const lf::Meta meta = newest(file);
  const Truth truth = truth_of(data, meta);

  // Every (key, value) the scan yields, and on which pages.
  auto scan = [&](const fs::path& path, lf::ScanStats* stats) {
    std::map<std::pair<std::string, std::string>, std::set<std::uint64_t>> found;
    lf::File f(path);
    *stats = lf::scan_leaves(f, meta.page_size, [&](const lf::ScannedEntry& e) {
      if (e.problem.empty()) found[{std::string(e.key), std::string(e.value)}].insert(e.page);
      return true;
    });
    return found;
  };
  lf::ScanStats stats;
  const auto found = scan(data, &stats);
  for (const char* name : kDbs) {
    for (const auto& kv : live[name]) CHECK(found.count(kv) == 1);
  }
  CHECK(stats.leaf_pages >= truth.pages("", 'l').size());
  CHECK(stats.entries >= live["records"].size());

  // Garbage over a third of the records' leaves: the entries of every other leaf are still found.
  const fs::path copy = copy_of(data, dir / "c" / "data.mdb");
  std::mt19937_64 rng(3);
  std::set<std::uint64_t> ruined;
  for (std::uint64_t leaf : truth.pages("records", 'l')) {
    if (rng() % 3 != 0) continue;
    std::string garbage(meta.page_size, '\0');
    for (char& c : garbage) c = static_cast<char>(rng());
    write_at(copy, leaf * meta.page_size, garbage.data(), garbage.size());
    ruined.insert(leaf);
  }
  REQUIRE(!ruined.empty());
  lf::ScanStats damaged_stats;
  const auto salvaged = scan(copy, &damaged_stats);
  std::size_t lost = 0;
  for (const auto& kv : live["records"]) {
    if (salvaged.count(kv) == 0) {
      ++lost;
      continue;
    }
  }
  // What is lost lay on the ruined pages only (old copies elsewhere may still hold some of it).
  std::size_t on_ruined = 0;
  for (const auto& [kv, pages] : found) {
    bool only_ruined = std::all_of(pages.begin(), pages.end(), [&](std::uint64_t p) { return ruined.count(p) != 0; });
    if (only_ruined) ++on_ruined;
  }
  CHECK(lost <= on_ruined);
  CHECK(lost > 0);
  CHECK_THROWS_AS(lf::scan_leaves(file, 1000, [](const lf::ScannedEntry&) { return true; }), std::invalid_argument);
}

TEST_CASE("lmdb_file: speed on a file of about 100 MB", "[lmdb_file]") {
  TempDir dir;
  // A queue in its steady state: small records (tank's usual load) with an overflow record now
  // and then, appended in transactions of 1000 up to a backlog of 400,000, then as many acknowledged
  // (deleted from the front) as appended, until the file has turned over: new leaves on reused pages.
  constexpr std::uint64_t kBacklog = 400000;
  {
    Env env(dir / "env", 1ull << 30);
    MDB_dbi records = 0;
    std::uint64_t seq = 1, first = 1;
    std::mt19937_64 rng(1);
    for (int t = 0; t < 800; ++t) {
      Txn txn(env.get(), 0);
      ok(mdb_dbi_open(txn.get(), "records", MDB_CREATE, &records), "create");
      for (int i = 0; i < 1000; ++i, ++seq) {
        const std::string k = seq_key(seq);
        const std::string v = value_of(seq, i % 500 == 0 ? 20000 : 100 + rng() % 200);
        MDB_val kv = val(k), vv = val(v);
        ok(mdb_put(txn.get(), records, &kv, &vv, MDB_APPEND), "append");
      }
      while (seq - first > kBacklog) {
        const std::string k = seq_key(first++);
        MDB_val kv = val(k);
        ok(mdb_del(txn.get(), records, &kv, nullptr), "delete");
      }
      txn.commit();
    }
  }
  const fs::path data = dir / "env" / "data.mdb";
  lf::File file(data);
  const lf::Meta meta = newest(file);
  const double mb = static_cast<double>(file.size()) / 1e6;
  auto seconds = [](auto since) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
  };
  // Cold: the file's pages dropped from the page cache (clean pages go with POSIX_FADV_DONTNEED,
  // no privilege needed), as at a start after a reboot.
  {
    const int fd = ::open(data.c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  auto t0 = std::chrono::steady_clock::now();
  const lf::CheckResult cold = check(file, meta, lf::CheckDepth::structure);
  const double cold_s = seconds(t0);
  REQUIRE(cold.ok());
  t0 = std::chrono::steady_clock::now();
  const lf::CheckResult quick = check(file, meta, lf::CheckDepth::structure);
  const double quick_s = seconds(t0);
  REQUIRE(quick.ok());
  // Progress is reported as the check goes; a callback that throws stops it with its exception.
  lf::CheckOptions o;
  int calls = 0;
  o.progress = [&] { ++calls; };
  REQUIRE(lf::check_structure(file, meta, o).ok());
  CHECK(calls >= static_cast<int>(quick.pages_read / 1024));
  o.progress = [] { throw std::runtime_error("stop"); };
  CHECK_THROWS_AS(lf::check_structure(file, meta, o), std::runtime_error);

  t0 = std::chrono::steady_clock::now();
  const lf::CheckResult full = check(file, meta, lf::CheckDepth::full);
  const double full_s = seconds(t0);
  REQUIRE(full.ok());
  t0 = std::chrono::steady_clock::now();
  std::uint64_t entries = 0;
  lf::for_each_entry(file, meta, "records", [&](std::string_view, std::string_view) { return ++entries > 0; });
  const double iterate_s = seconds(t0);
  CHECK(entries == kBacklog);
  t0 = std::chrono::steady_clock::now();
  lf::ScanStats stats = lf::scan_leaves(file, meta.page_size, [](const lf::ScannedEntry&) { return true; });
  const double scan_s = seconds(t0);
  WARN(fmt::format("cold cache: structure {:.3f} s = {:.0f} MB/s of file", cold_s, mb / cold_s));
  WARN(fmt::format("{:.0f} MB file ({} pages read by the structure check, {:.0f} MB): structure {:.3f} s = {:.0f} MB/s "
                   "of file; full {:.3f} s; iteration of {} records {:.3f} s; leaf scan {:.3f} s = {:.0f} MB/s ({} "
                   "entries)",
                   mb, quick.pages_read, static_cast<double>(quick.bytes_read) / 1e6, quick_s, mb / quick_s, full_s,
                   entries, iterate_s, scan_s, mb / scan_s, stats.entries));
}
