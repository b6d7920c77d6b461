// The recorder (recorder/recorder.c) under a probe program that makes each kind of call in a
// known order (recorder/probe.c): what it logs, what it must not log, that concurrent entries
// never interleave, that a torn last entry is dropped, and that it refuses a shared writable
// mapping of a recorded file.

#include <signal.h>

#include <filesystem>
#include <map>
#include <set>

#include <catch2/catch.hpp>

#include "powerloss/trace.hpp"
#include "support/helpers.hpp"

namespace tank::powerloss {
namespace {

using Kind = Op::Kind;

test::ProcessResult run_probe(const test::TempDir& dir, const std::string& scenario, std::map<std::string, std::string> extra = {}) {
  std::filesystem::create_directories(dir / "data");
  std::map<std::string, std::string> env{{"LD_PRELOAD", TANK_POWERLOSS_RECORDER},
                                         {"TANK_RECORD_DIR", (dir / "data").string()},
                                         {"TANK_RECORD_LOG", (dir / "ops.log").string()}};
  env.merge(extra);
  return test::run({POWERLOSS_PROBE_PATH, (dir / "data").string(), scenario}, env);
}

struct Expected {
  Kind kind;
  std::string path;
  std::int64_t offset = 0;
  std::string data = {};
  bool flag = false;  // write: dsync; sync: datasync or dir
  std::string path2 = {};
};

std::string show(const Trace& t) {
  std::string s;
  for (const auto& op : t.ops()) s += op.describe() + "\n";
  return s;
}

TEST_CASE("recorder: every call that changes the directory is logged once, in order, with its bytes", "[powerloss][recorder]") {
  test::TempDir dir;
  auto r = run_probe(dir, "basic");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const Trace t = Trace::load(dir / "ops.log");
  INFO(show(t));
  CHECK(t.root() == (dir / "data").string());
  CHECK(!t.torn_tail());
  const std::vector<Expected> want = {
      {Kind::mkdir, "d"},
      {Kind::create, "d/f"},
      {Kind::write, "d/f", 0, "AAAA"},
      {Kind::write, "d/f", 4096, "BBCC"},  // lseek + writev
      {Kind::write, "d/f", 4100, "DD"},    // write at the position
      {Kind::write, "d/f", 10, "E"},       // through dup()
      {Kind::sync, "d/f", 0, "", true},    // fdatasync through fcntl(F_DUPFD_CLOEXEC)
      {Kind::write, "d/f", 30, "PV"},      // pwritev
      {Kind::write, "d/f", 20, "M", true}, // O_DSYNC
      {Kind::truncate, "d/f", 8192},
      {Kind::sync, "d/f", 0, "", false},   // fsync
      {Kind::sync, "d", 0, "", true},      // the directory
      {Kind::create, "d/g"},               // openat relative to the directory (O_TRUNC of a new file: no truncate)
      {Kind::write, "d/g", 0, "G"},
      {Kind::create, "d/h"},               // relative to the working directory, with "." and ".."
      {Kind::rename, "d/g", 0, "", false, "d/g2"},
      {Kind::unlink, "d/h"},
      {Kind::unlink, "d/g2"},              // remove()
  };
  REQUIRE(t.ops().size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    const Op& op = t.ops()[i];
    const Expected& w = want[i];
    INFO("op " << i << ": " << op.describe());
    CHECK(op.kind == w.kind);
    CHECK(op.path == w.path);
    CHECK(op.path2 == w.path2);
    if (w.kind == Kind::write || w.kind == Kind::truncate) CHECK(op.offset == w.offset);
    if (w.kind == Kind::write) {
      CHECK(op.data == w.data);
      CHECK(op.dsync == w.flag);
    }
    if (w.kind == Kind::sync) CHECK((w.path == "d" ? op.dir : op.datasync) == w.flag);
    CHECK(op.start_ns <= op.end_ns);
    if (i > 0) CHECK(t.ops()[i - 1].end_ns <= op.start_ns);  // one thread: one after the other
  }
  // The same inode for the file through every descriptor.
  CHECK(t.ops()[2].ino == t.ops()[8].ino);
  CHECK(t.ops()[2].ino != 0);
}

TEST_CASE("recorder: TANK_RECORD_SKIP_SYNC makes a file's syncs do nothing (the self-test's broken program)", "[powerloss][recorder]") {
  test::TempDir dir;
  auto r = run_probe(dir, "basic", {{"TANK_RECORD_SKIP_SYNC", "f"}});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const Trace t = Trace::load(dir / "ops.log");
  INFO(show(t));
  std::size_t syncs = 0, dsync_writes = 0;
  for (const auto& op : t.ops()) {
    if (op.kind == Kind::sync) {
      ++syncs;
      CHECK(op.path == "d");  // the directory's sync stays
    }
    if (op.kind == Kind::write && op.dsync) ++dsync_writes;
  }
  CHECK(syncs == 1);
  CHECK(dsync_writes == 0);
}

TEST_CASE("recorder: entries of concurrent threads never interleave, a torn last entry is dropped", "[powerloss][recorder]") {
  test::TempDir dir;
  auto r = run_probe(dir, "threads");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const Trace t = Trace::load(dir / "ops.log");
  std::map<std::string, std::int64_t> next_offset;
  std::size_t writes = 0;
  std::set<std::uint32_t> threads;
  for (const auto& op : t.ops()) {
    if (op.kind != Kind::write) continue;
    ++writes;
    threads.insert(op.tid);
    // O_APPEND: each write lands where the previous one of the same file ended.
    CHECK(op.offset == next_offset[op.path]);
    next_offset[op.path] = op.offset + static_cast<std::int64_t>(op.data.size());
    CHECK(op.data.starts_with(op.path + " "));
  }
  CHECK(writes == 4000);
  CHECK(threads.size() == 2);

  // A kill -9 in the middle of the last append.
  std::filesystem::resize_file(dir / "ops.log", std::filesystem::file_size(dir / "ops.log") - 3);
  const Trace torn = Trace::load(dir / "ops.log");
  CHECK(torn.torn_tail());
  CHECK(torn.ops().size() == t.ops().size() - 1);
}

TEST_CASE("recorder: a shared writable mapping of a recorded file stops the program with the reason", "[powerloss][recorder]") {
  test::TempDir dir;
  auto r = run_probe(dir, "mmap");
  CHECK(r.exit_code == 128 + SIGABRT);
  CHECK(r.err.find("mapped shared and writable") != std::string::npos);
  CHECK(r.out.empty());
}

}  // namespace
}  // namespace tank::powerloss
