#include "queue/verify.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "common/fs.hpp"
#include "queue/lmdb.hpp"
#include "queue/lmdb_file.hpp"
#include "queue/dead_letter.hpp"
#include "queue/record.hpp"

namespace tank::queue {
namespace {

using Outcome = VerifyResult::Outcome;

VerifyResult damaged(std::string problem) { return {Outcome::damaged, std::move(problem)}; }

// Reports progress every so many entries walked.
const std::function<void()>* g_progress = nullptr;

// Walks every entry of a database; calls `check(key, value)` on each.
template <class F>
void walk(MDB_txn* txn, MDB_dbi dbi, F&& check) {
  lmdb::Cursor cursor(txn, dbi);
  MDB_val key, value;
  bool more = cursor.get(key, value, MDB_FIRST);
  std::uint64_t n = 0;
  while (more) {
    check(key, value);
    if (++n % 4096 == 0 && g_progress != nullptr && *g_progress) (*g_progress)();
    more = cursor.get(key, value, MDB_NEXT);
  }
}

// One segment of records (queue_impl.hpp): its first and last record are intact and before
// next_seq, and with a full check every record in order. `range` gets its first and last record
// ({0, 0} when it is empty).
VerifyResult verify_records(MDB_txn* txn, MDB_dbi dbi, Verification depth, std::uint64_t next_seq,
                            std::pair<std::uint64_t, std::uint64_t>* range) {
  lmdb::Cursor cursor(txn, dbi);
  MDB_val key, value;
  std::string error;
  *range = {0, 0};
  if (!cursor.get(key, value, MDB_FIRST)) return {};
  std::uint64_t first = lmdb::seq_of(key);
  if (!record_intact(first, lmdb::view_of(value), &error)) return damaged(error);
  if (!cursor.get(key, value, MDB_LAST)) return damaged("records database lost its last entry");
  std::uint64_t last = lmdb::seq_of(key);
  if (!record_intact(last, lmdb::view_of(value), &error)) return damaged(error);
  if (last < first) return damaged("records out of order");
  *range = {first, last};
  if (next_seq != 0 && last >= next_seq) {
    return damaged(fmt::format("record {} is beyond the stored next sequence number {}", last, next_seq));
  }
  if (depth == Verification::full) {
    std::uint64_t previous = 0;
    bool bad = false;
    walk(txn, dbi, [&](const MDB_val& k, const MDB_val& v) {
      if (bad) return;
      std::uint64_t seq = lmdb::seq_of(k);
      if (seq <= previous && previous != 0) {
        error = fmt::format("record {} follows record {}", seq, previous);
        bad = true;
        return;
      }
      previous = seq;
      if (!record_intact(seq, lmdb::view_of(v), &error)) bad = true;
    });
    if (bad) return damaged(error);
  }
  return {};
}

// The structure first, read without LMDB (lmdb_file.hpp: pread only, every offset checked): only
// its proof sentence condemns a queue. Then the meaning, through LMDB, which is safe on a file
// whose structure was proven (a crash there can only be the device failing a read: not damage).
//
// Beside a running writer (use_lock_file: `tank queue verify` while tank runs) the snapshot must
// be pinned while its pages are read, or the writer may reuse them meanwhile: LMDB's read
// transaction is begun first, and the structure checked is that transaction's.
VerifyResult verify_env(const std::filesystem::path& dir, Verification depth, bool use_lock_file,
                        const std::function<void()>& progress) {
  const std::filesystem::path data = dir / "data.mdb";
  struct stat st {};
  if (::stat(data.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return {Outcome::inaccessible, fmt::format("cannot stat {}: {}", data.string(), std::strerror(errno))};
  }
  auto open_lmdb = [&](lmdb::Env& env) -> std::optional<VerifyResult> {
    lmdb::check(mdb_env_set_maxdbs(env.get(), 8 + kRecordSegments), "mdb_env_set_maxdbs");
    unsigned flags = MDB_RDONLY | MDB_NOTLS | MDB_NORDAHEAD | (use_lock_file ? 0 : MDB_NOLOCK);
    int rc = mdb_env_open(env.get(), dir.c_str(), flags, 0);
    if (rc != 0 && !lmdb::is_damage(rc)) {
      // ENOMEM (address space: `ulimit -v`), EIO, EMFILE/ENFILE, EAGAIN, EACCES...: a fault of the
      // moment or of the setup, never proof that the file is wrong.
      return VerifyResult{Outcome::inaccessible,
                          fmt::format("cannot open {}: {}{}", dir.string(), mdb_strerror(rc),
                                      rc == ENOMEM ? " (LMDB maps the whole queue file into the address space: raise "
                                                     "the process's limit, `ulimit -v` or systemd's LimitAS=, or lower "
                                                     "queue.max_disk_bytes)"
                                                   : "")};
    }
    if (rc != 0) return damaged(fmt::format("LMDB refuses to open it: {}", mdb_strerror(rc)));
    return std::nullopt;
  };

  lmdb::Env env;
  std::optional<lmdb::Txn> txn;
  if (use_lock_file) {
    if (auto r = open_lmdb(env)) return *r;
    txn.emplace(env.get(), MDB_RDONLY);
  }
  try {
    lmdb_file::File file(data);
    lmdb_file::Metas metas = file.read_metas();
    int slot = metas.newest();
    if (txn) {
      // The meta page of the pinned snapshot (a writer overwrites meta pages in place: after two
      // more commits it is gone, so read again with a fresh transaction).
      for (int attempt = 0; attempt < 100; ++attempt) {
        const std::uint64_t id = mdb_txn_id(txn->get());
        slot = metas.slots[0].valid && metas.slots[0].txnid == id ? 0 : metas.slots[1].valid && metas.slots[1].txnid == id ? 1 : -1;
        if (slot >= 0) break;
        txn.reset();
        txn.emplace(env.get(), MDB_RDONLY);
        metas = file.read_metas();
      }
      if (slot < 0) return {Outcome::inaccessible, "the queue changed too fast to read one snapshot of it; try again"};
    }
    // A file cut short inside the meta pages: said as such, also when the first meta page is whole
    // (with a 32-bit size_t it takes 96 bytes, and a file of 100 bytes still holds it).
    const std::uint64_t page_bytes =
        slot >= 0 ? metas.slots[slot].page_size : static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    if (metas.file_bytes < 2 * page_bytes) {
      return damaged(fmt::format("{} has {} bytes, less than LMDB's two meta pages", data.string(), metas.file_bytes));
    }
    if (slot < 0) {
      return damaged(fmt::format("neither meta page is valid ({}; {})", metas.slots[0].problem, metas.slots[1].problem));
    }
    lmdb_file::CheckOptions options;
    options.depth = depth == Verification::full ? lmdb_file::CheckDepth::full : lmdb_file::CheckDepth::structure;
    options.progress = progress;
    const lmdb_file::CheckResult structure = lmdb_file::check_structure(file, metas.slots[slot], options);
    if (structure.outcome == lmdb_file::CheckResult::Outcome::damaged) return damaged(structure.problem);
    if (structure.outcome == lmdb_file::CheckResult::Outcome::unsupported) {
      return damaged(fmt::format("not a tank queue: {}", structure.problem));
    }
  } catch (const lmdb_file::IoError& e) {
    return {Outcome::inaccessible, e.what()};
  }

  if (!txn) {
    if (auto r = open_lmdb(env)) return *r;
    txn.emplace(env.get(), MDB_RDONLY);
  }

  auto open_db = [&](const char* name, MDB_dbi* dbi) {
    int orc = mdb_dbi_open(txn->get(), name, 0, dbi);
    if (orc == MDB_NOTFOUND) return false;
    lmdb::check(orc, "mdb_dbi_open");
    return true;
  };
  MDB_stat env_stat{};
  lmdb::check(mdb_env_stat(env.get(), &env_stat), "mdb_env_stat");
  MDB_dbi meta = 0, records = 0, state = 0;
  bool has_meta = open_db("meta", &meta);
  bool has_records = open_db("records", &records);
  // The other segments (a queue written before segments has none).
  std::vector<std::pair<std::string, MDB_dbi>> segments{{"records", records}};
  for (unsigned slot = 1; slot < kRecordSegments && has_records; ++slot) {
    const std::string name = fmt::format("records.{}", slot);
    MDB_dbi dbi = 0;
    if (open_db(name.c_str(), &dbi)) segments.emplace_back(name, dbi);
  }
  bool has_state = open_db("state", &state);
  MDB_dbi dead_letters = 0;
  bool has_dead_letters = open_db("dead_letters", &dead_letters);
  if (!has_meta) {
    if (has_records || has_state) return damaged("the meta database is missing");
    // An environment created but never initialised by tank: fine, it will be.
    if (env_stat.ms_entries != 0) return damaged("unknown databases in the environment (not a tank queue?)");
    return {};
  }
  std::uint64_t next_seq = 0;
  std::uint64_t front = 0;
  bool format_found = false;
  std::uint64_t newer_format = 0;
  walk(txn->get(), meta, [&](const MDB_val& k, const MDB_val& v) {
    std::string_view key = lmdb::view_of(k);
    if (key == "format") {
      format_found = true;
      std::uint64_t format = lmdb::decode_u64(v);
      if (format > kQueueFormat) newer_format = format;
    } else if (key == "next_seq") {
      next_seq = lmdb::decode_u64(v);
    } else if (key == "front") {
      front = lmdb::decode_u64(v);
    } else if (key == "bytes" || key == "seq_reserved" || key.starts_with("consumer:")) {
      (void)lmdb::decode_u64(v);  // throws on a malformed value
    }
    // Other keys may come from a later tank of the same format; they are kept, not judged.
  });
  if (newer_format != 0) {
    return {Outcome::newer_format,
            fmt::format("the queue was written in format {} by a newer tank; this tank reads format {}", newer_format,
                        kQueueFormat)};
  }
  if (!format_found) return damaged("the meta database has no format version");
  if (!has_records || !has_state) return damaged("the records or state database is missing");

  // Each segment, and their runs of sequence numbers, which never overlap.
  std::vector<std::pair<std::pair<std::uint64_t, std::uint64_t>, std::string>> ranges;
  for (const auto& [name, dbi] : segments) {
    std::pair<std::uint64_t, std::uint64_t> range;
    if (auto r = verify_records(txn->get(), dbi, depth, next_seq, &range); r.outcome != Outcome::ok) return r;
    if (range.first != 0) ranges.emplace_back(range, name);
  }
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first.first <= ranges[i - 1].first.second) {
      return damaged(fmt::format("records {} to {} (database \"{}\") overlap records {} to {} (database \"{}\")",
                                 ranges[i].first.first, ranges[i].first.second, ranges[i].second,
                                 ranges[i - 1].first.first, ranges[i - 1].first.second, ranges[i - 1].second));
    }
  }
  if (next_seq != 0 && front >= next_seq) {
    return damaged(fmt::format("the queue's front, record {}, is beyond the stored next sequence number {}", front,
                               next_seq));
  }

  if (depth == Verification::full && has_dead_letters) {
    std::string problem;
    walk(txn->get(), dead_letters, [&](const MDB_val& k, const MDB_val& v) {
      if (!problem.empty()) return;
      if (!decode_dead_letter(lmdb::seq_of(k), lmdb::view_of(v), &problem) && problem.empty()) problem = "?";
    });
    if (!problem.empty()) return damaged(problem);
  }
  return {};
}

}  // namespace

VerifyResult verify_here(const std::filesystem::path& dir, const VerifyOptions& options,
                         const std::function<void()>& progress) {
  if (options.depth == Verification::none) return {};
  g_progress = &progress;
  try {
    return verify_env(dir, options.depth, options.use_lock_file, progress);
  } catch (const lmdb::Error& e) {
    if (!lmdb::is_damage(e.code())) return {Outcome::inaccessible, e.what()};
    return damaged(e.what());
  } catch (const std::bad_alloc&) {
    return {Outcome::inaccessible, "out of memory while checking"};
  } catch (const std::exception& e) {
    return damaged(e.what());
  }
}

VerifyResult verify_in_child(const std::filesystem::path& dir, const VerifyOptions& options) {
  if (options.depth == Verification::none) return {};
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return {Outcome::inaccessible, fmt::format("cannot create a pipe to verify the queue: {}", std::strerror(errno))};
  }
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    return {Outcome::inaccessible, fmt::format("cannot fork to verify the queue: {}", std::strerror(err))};
  }
  if (pid == 0) {
    ::close(fds[0]);
    // Die with the parent: an orphan would keep the data directory's lock (inherited) after a
    // kill -9 of tank and block its restart.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    // Let a crash be a crash: the parent reads the signal.
    ::signal(SIGSEGV, SIG_DFL);
    ::signal(SIGBUS, SIG_DFL);
    auto send = [&](std::string_view bytes) {
      while (!bytes.empty()) {
        ssize_t n = ::write(fds[1], bytes.data(), bytes.size());
        if (n <= 0) return;
        bytes.remove_prefix(static_cast<std::size_t>(n));
      }
    };
    std::function<void()> progress = [&] { send("."); };
    VerifyResult r = verify_here(dir, options, progress);
    send(fmt::format("\n{}\n{}", static_cast<int>(r.outcome), r.problem));
    ::_exit(0);
  }
  ::close(fds[1]);
  if (options.on_wait) options.on_wait();  // once at the start: a short check may never wait a second
  std::string answer;
  auto last_progress = std::chrono::steady_clock::now();
  bool stalled = false;
  for (;;) {
    if (std::chrono::steady_clock::now() - last_progress > options.stall_timeout) {
      stalled = true;
      break;
    }
    struct pollfd pfd {fds[0], POLLIN, 0};
    int pr = ::poll(&pfd, 1, 1000);
    if (options.on_wait) options.on_wait();
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    answer.append(buf, static_cast<std::size_t>(n));
    last_progress = std::chrono::steady_clock::now();
  }
  ::close(fds[0]);
  if (stalled) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  // Only a proof found by the check condemns a queue (the structure is proven before LMDB reads
  // it): a check that dies, stalls or says nothing proves nothing about the file.
  if (stalled) {
    return {Outcome::inaccessible,
            fmt::format("the check made no progress for {}s (a device that stopped answering?); the queue was not "
                        "judged",
                        options.stall_timeout.count())};
  }
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return {Outcome::inaccessible,
            sig == SIGBUS ? std::string("reading the queue raised SIGBUS (an I/O error of the device?); the queue was "
                                        "not judged")
                          : fmt::format("the check was killed by {} before it finished ({}); the queue was not judged",
                                        strsignal(sig),
                                        sig == SIGKILL ? "out of memory?" : "a fault of the check itself: please report it")};
  }
  auto start = answer.find('\n');
  auto newline = start == std::string::npos ? std::string::npos : answer.find('\n', start + 1);
  if (newline == std::string::npos) {
    return {Outcome::inaccessible, fmt::format("the check exited with status {} without an answer; the queue was not judged",
                                               WIFEXITED(status) ? WEXITSTATUS(status) : -1)};
  }
  int outcome = std::atoi(answer.substr(start + 1, newline - start - 1).c_str());
  if (outcome < 0 || outcome > 3) return {Outcome::inaccessible, "the check gave an unreadable answer"};
  return {static_cast<Outcome>(outcome), answer.substr(newline + 1)};
}

bool holds_records(const std::filesystem::path& dir) {
  std::error_code ec;
  if (std::filesystem::exists(dir / kSalvagedMarker, ec)) return false;
  const auto size = std::filesystem::file_size(dir / "data.mdb", ec);
  if (ec) return std::filesystem::exists(dir / "data.mdb", ec);  // unreadable: assume it holds records
  return size > 2 * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

std::filesystem::path move_aside(const std::filesystem::path& dir, std::int64_t wall_ns, std::size_t keep,
                                 std::vector<std::filesystem::path>* pruned) {
  std::filesystem::path base = dir;
  std::string stem = base.filename().string() + ".damaged-";
  std::filesystem::path target = base.parent_path() / (stem + fs::compact_utc_timestamp(wall_ns));
  std::error_code ec;
  for (int n = 2; std::filesystem::exists(target, ec); ++n) {
    target = base.parent_path() / fmt::format("{}{}-{}", stem, fs::compact_utc_timestamp(wall_ns), n);
  }
  if (::rename(dir.c_str(), target.c_str()) != 0) {
    throw OpenError(fmt::format("the queue in {} is damaged and cannot be moved aside to {}: {}", dir.string(),
                                target.string(), std::strerror(errno)));
  }
  std::vector<std::filesystem::path> copies;
  for (const auto& entry : std::filesystem::directory_iterator(base.parent_path(), ec)) {
    std::string name = entry.path().filename().string();
    if (name.rfind(stem, 0) == 0) copies.push_back(entry.path());
  }
  std::sort(copies.begin(), copies.end());
  // Oldest first, beyond `keep`: only copies with nothing left to salvage.
  for (std::size_t i = 0; i + keep < copies.size(); ++i) {
    if (holds_records(copies[i])) continue;
    std::filesystem::remove_all(copies[i], ec);
    if (pruned) pruned->push_back(copies[i]);
  }
  return target;
}


}  // namespace tank::queue
