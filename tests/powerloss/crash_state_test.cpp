// The crash-state builder's model, proven on small traces: each test lists EXACTLY the states a
// cut may leave (crash_state.hpp) and compares them with CrashModel::enumerate, so a change to
// the model shows up here before it changes what the power-cut tests accept.

#include <algorithm>
#include <deque>

#include <catch2/catch.hpp>

#include "powerloss/crash_state.hpp"

namespace tank::powerloss {
namespace {

using Kind = Op::Kind;

std::string page(char c, std::size_t n = kPageBytes) { return std::string(n, c); }

// Builds a trace one operation at a time; each takes one tick of a fake clock unless told.
class Script {
 public:
  Op& add(Kind kind, std::string path, std::uint64_t ino = 0) {
    Op op;
    op.kind = kind;
    op.path = std::move(path);
    op.ino = ino;
    op.start_ns = clock_ + 1;
    op.end_ns = clock_ + 2;
    clock_ += 2;
    ops_.push_back(std::move(op));
    return ops_.back();
  }
  Op& create(const std::string& path, std::uint64_t ino) { return add(Kind::create, path, ino); }
  Op& write(const std::string& path, std::uint64_t ino, std::int64_t offset, std::string data, bool dsync = false) {
    Op& op = add(Kind::write, path, ino);
    op.offset = offset;
    written_.push_back(std::move(data));
    op.data = written_.back();
    op.dsync = dsync;
    return op;
  }
  Op& fsync(const std::string& path, std::uint64_t ino) { return add(Kind::sync, path, ino); }
  Op& fsync_dir(const std::string& path) {
    Op& op = add(Kind::sync, path);
    op.dir = true;
    return op;
  }
  Op& rename(const std::string& from, const std::string& to) {
    Op& op = add(Kind::rename, from);
    op.path2 = to;
    return op;
  }
  Op& truncate(const std::string& path, std::uint64_t ino, std::int64_t size) {
    Op& op = add(Kind::truncate, path, ino);
    op.offset = size;
    return op;
  }
  Trace trace() const { return Trace::from_ops({ops_.begin(), ops_.end()}); }
  std::size_t last() const { return ops_.size() - 1; }

 private:
  std::deque<Op> ops_;  // references stay valid as operations are added
  std::deque<std::string> written_;
  std::int64_t clock_ = 0;
};

DiskState state(std::map<std::string, std::string> files, std::set<std::string> dirs = {}) {
  return DiskState{std::move(dirs), std::move(files)};
}

std::vector<DiskState> sorted(std::vector<DiskState> v) {
  std::sort(v.begin(), v.end());
  return v;
}

std::string show(const std::vector<DiskState>& states) {
  std::string s;
  for (const auto& st : states) s += "--\n" + st.describe();
  return s;
}

#define REQUIRE_STATES(model, cut, ...)                                   \
  do {                                                                    \
    const auto got_ = (model).enumerate(cut);                             \
    const auto want_ = sorted(std::vector<DiskState>{__VA_ARGS__});       \
    INFO("got:\n" << show(got_) << "want:\n" << show(want_));             \
    REQUIRE(got_ == want_);                                               \
  } while (0)

// A file created, written and synced with its directory: durable.
void durable_file(Script& s, const std::string& path, std::uint64_t ino, const std::string& data) {
  s.create(path, ino);
  if (!data.empty()) s.write(path, ino, 0, data);
  s.fsync(path, ino);
  s.fsync_dir("");
}

TEST_CASE("crash model: a synced file with a synced name is the only state", "[powerloss][model]") {
  Script s;
  durable_file(s, "a", 1, "AAAA");
  const Trace t = s.trace();
  CrashModel m(t);
  REQUIRE_STATES(m, s.last(), state({{"a", "AAAA"}}));
}

TEST_CASE("crash model: pages written after the sync reach the disk in any order, any version", "[powerloss][model]") {
  Script s;
  durable_file(s, "f", 1, "");
  s.write("f", 1, 0, page('x'));
  s.write("f", 1, kPageBytes, page('y'));
  s.write("f", 1, 0, page('z'));
  const Trace t = s.trace();
  CrashModel m(t);
  // Page 0: nothing, x or z; page 1: nothing or y. A page past the durable size (0) makes the
  // file as long as the page cache held it after that write, up to the page's end.
  REQUIRE_STATES(m, s.last(), state({{"f", ""}}), state({{"f", page('x')}}), state({{"f", page('z')}}),
                 state({{"f", page('\0') + page('y')}}), state({{"f", page('x') + page('y')}}),
                 state({{"f", page('z') + page('y')}}));
  // The order-preserving prefixes are among them: "", x, xy, zy.
  REQUIRE(m.pending(s.last()) == 3);
  CHECK(m.build({.cut = s.last(), .model = Recipe::Model::prefix, .prefix = 0}) == state({{"f", ""}}));
  CHECK(m.build({.cut = s.last(), .model = Recipe::Model::prefix, .prefix = 1}) == state({{"f", page('x')}}));
  CHECK(m.build({.cut = s.last(), .model = Recipe::Model::prefix, .prefix = 2}) == state({{"f", page('x') + page('y')}}));
  CHECK(m.build({.cut = s.last(), .model = Recipe::Model::prefix, .prefix = 3}) == state({{"f", page('z') + page('y')}}));
}

TEST_CASE("crash model: a sync covers the writes that returned before it started, not those racing it", "[powerloss][model]") {
  Script s;
  durable_file(s, "f", 1, "");
  s.write("f", 1, 0, page('a'));
  Op& sync = s.fsync("f", 1);
  sync.datasync = true;
  sync.end_ns += 100;  // a long fdatasync ...
  Op& racing = s.write("f", 1, 0, page('b'));
  racing.start_ns = sync.start_ns + 1;  // ... while another thread writes
  racing.end_ns = sync.start_ns + 2;
  const Trace t = s.trace();
  CrashModel m(t);
  // Sorted by return: the racing write (returned first), then the sync.
  REQUIRE(t.ops()[s.last()].kind == Kind::sync);
  REQUIRE_STATES(m, s.last(), state({{"f", page('a')}}), state({{"f", page('b')}}));
  // Cut before the sync returned: it promised nothing yet.
  REQUIRE_STATES(m, s.last() - 1, state({{"f", ""}}), state({{"f", page('a')}}), state({{"f", page('b')}}));
}

TEST_CASE("crash model: an O_DSYNC write is durable with its page once it returned", "[powerloss][model]") {
  Script s;
  durable_file(s, "f", 1, "");
  s.write("f", 1, 0, page('m'));
  s.write("f", 1, kPageBytes, page('n'), true);
  const Trace t = s.trace();
  CrashModel m(t);
  REQUIRE_STATES(m, s.last(), state({{"f", page('\0') + page('n')}}), state({{"f", page('m') + page('n')}}));
}

TEST_CASE("crash model: a partial write changes only its bytes of the page version", "[powerloss][model]") {
  Script s;
  durable_file(s, "f", 1, page('X'));
  s.write("f", 1, 16, "hello");  // like LMDB's meta page update
  const Trace t = s.trace();
  CrashModel m(t);
  std::string updated = page('X');
  updated.replace(16, 5, "hello");
  REQUIRE_STATES(m, s.last(), state({{"f", page('X')}}), state({{"f", updated}}));
}

TEST_CASE("crash model: a name is durable only after its directory was synced", "[powerloss][model]") {
  Script s;
  s.create("f", 1);
  s.write("f", 1, 0, "data");
  s.fsync("f", 1);  // the data, not the name (POSIX)
  const Trace t = s.trace();
  CrashModel m(t);
  REQUIRE_STATES(m, s.last(), state({}), state({{"f", "data"}}));

  // With one metadata journal (ext4, XFS) the file's fsync carries its name along.
  CrashModel journaled(t, Names::journaled);
  REQUIRE_STATES(journaled, s.last(), state({{"f", "data"}}));

  Script synced;
  durable_file(synced, "f", 1, "data");
  const Trace t2 = synced.trace();
  CrashModel m2(t2);
  REQUIRE_STATES(m2, synced.last(), state({{"f", "data"}}));
}

TEST_CASE("crash model: write, fsync, rename without a directory sync leaves the old file, both, or the new one", "[powerloss][model]") {
  Script s;
  durable_file(s, "run.json", 1, "old");
  s.create("run.json.tmp", 2);
  s.write("run.json.tmp", 2, 0, "new");
  s.fsync("run.json.tmp", 2);
  s.rename("run.json.tmp", "run.json");
  const Trace t = s.trace();
  CrashModel m(t);
  // The directory's pending operations reach the disk as an in-order prefix.
  REQUIRE_STATES(m, s.last(), state({{"run.json", "old"}}), state({{"run.json", "old"}, {"run.json.tmp", "new"}}),
                 state({{"run.json", "new"}}));
  s.fsync_dir("");
  const Trace t2 = s.trace();
  CrashModel m2(t2);
  REQUIRE_STATES(m2, s.last(), state({{"run.json", "new"}}));
}

TEST_CASE("crash model: entries under a directory whose own name was not synced are lost with it", "[powerloss][model]") {
  Script s;
  s.add(Kind::mkdir, "q");
  s.create("q/f", 1);
  s.write("q/f", 1, 0, "data");
  s.fsync("q/f", 1);
  s.fsync_dir("q");
  const Trace t = s.trace();
  CrashModel m(t);
  REQUIRE_STATES(m, s.last(), state({}), state({{"q/f", "data"}}, {"q"}));
}

TEST_CASE("crash model: a write in flight at the cut may or may not have reached the page cache", "[powerloss][model]") {
  Script s;
  durable_file(s, "f", 1, "");
  Op& slow = s.write("f", 1, 0, page('w'));
  slow.end_ns += 1000;  // still running when the other thread's operation returns
  s.create("g", 2);
  const Trace t = s.trace();
  CrashModel m(t);
  REQUIRE(t.ops()[s.last() - 1].kind == Kind::create);
  REQUIRE_STATES(m, s.last() - 1, state({{"f", ""}}), state({{"f", page('w')}}), state({{"f", ""}, {"g", ""}}),
                 state({{"f", page('w')}, {"g", ""}}));
}

TEST_CASE("crash model: a pending truncate is taken in order with the file's other pending operations", "[powerloss][model]") {
  Script s;
  durable_file(s, "f", 1, page('a') + page('b'));
  s.truncate("f", 1, 0);
  s.write("f", 1, 0, page('c'));
  const Trace t = s.trace();
  CrashModel m(t);
  REQUIRE_STATES(m, s.last(), state({{"f", page('a') + page('b')}}), state({{"f", ""}}), state({{"f", page('c')}}));
}

TEST_CASE("crash model: sync_file_range promises nothing, sync() everything", "[powerloss][model]") {
  Script s;
  durable_file(s, "f", 1, "");
  s.write("f", 1, 0, page('r'));
  s.add(Kind::sync_range, "f", 1);
  const Trace t = s.trace();
  CrashModel m(t);
  REQUIRE_STATES(m, s.last(), state({{"f", ""}}), state({{"f", page('r')}}));

  s.create("g", 2);
  s.add(Kind::sync_all, "");
  const Trace t2 = s.trace();
  CrashModel m2(t2);
  REQUIRE_STATES(m2, s.last(), state({{"f", page('r')}, {"g", ""}}));
}

TEST_CASE("crash model: a file recreated under the same inode number is a new file", "[powerloss][model]") {
  Script s;
  durable_file(s, "a", 7, "first");
  s.add(Kind::unlink, "a");
  s.create("b", 7);  // the inode number is free again
  s.write("b", 7, 0, "second");
  s.fsync("b", 7);
  s.fsync_dir("");
  const Trace t = s.trace();
  CrashModel m(t);
  REQUIRE_STATES(m, s.last(), state({{"b", "second"}}));
  CHECK(m.durable_content(s.last(), "a") == "first");
  CHECK(m.durable_content(s.last(), "b") == "second");
  CHECK(!m.durable_content(s.last(), "c"));
}

TEST_CASE("crash model: drawn states are among the enumerated ones and replay from their seed", "[powerloss][model]") {
  Script s;
  durable_file(s, "f", 1, page('0') + page('1') + page('2'));
  for (char c : std::string("abcdef")) s.write("f", 1, static_cast<std::int64_t>((c - 'a') % 3 * kPageBytes), page(c));
  s.create("g", 2);
  const Trace t = s.trace();
  CrashModel m(t);
  const auto all = m.enumerate(s.last());
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    const DiskState d = m.build({.cut = s.last(), .model = Recipe::Model::pages, .seed = seed});
    REQUIRE(std::binary_search(all.begin(), all.end(), d));
    REQUIRE(d == m.build({.cut = s.last(), .model = Recipe::Model::pages, .seed = seed}));
  }
}

TEST_CASE("crash model: a file that existed before the recording or a rename across directories is refused", "[powerloss][model]") {
  Script s;
  s.write("old", 3, 0, "x");
  const Trace t = s.trace();
  CHECK_THROWS_WITH(CrashModel(t), Catch::Contains("existed before the recording"));
  Script r;
  r.add(Kind::mkdir, "q");
  r.rename("a", "q/a");
  const Trace t2 = r.trace();
  CHECK_THROWS_WITH(CrashModel(t2), Catch::Contains("across directories"));
}

}  // namespace
}  // namespace tank::powerloss
