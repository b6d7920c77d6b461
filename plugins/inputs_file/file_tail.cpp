#include "file_tail.hpp"

#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "common/failpoint.hpp"
#include "common/liveness.hpp"
#include "common/log.hpp"
#include "common/units.hpp"
#include "input/queue_side.hpp"
#include "queue/queue.hpp"
#include "tail_file.hpp"
#include "tail_scan.hpp"
#include "tail_state.hpp"

namespace tank::input {
namespace {

using namespace tail;

class FileTail final : public plugin::Input {
 public:
  FileTail(const FileTailSettings& settings, const plugin::InputContext& context)
      : settings_(settings),
        side_(context, "file", "the lines will be read again"),
        state_prefix_("file/" + context.name + "/") {}

  ~FileTail() override {
    stop();
    for (auto& [id, f] : files_) {
      if (f.fd >= 0) ::close(f.fd);
    }
    if (inotify_fd_ >= 0) ::close(inotify_fd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
  }

  void start() override {
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) throw plugin::StartError(fmt::format("eventfd: {}", std::strerror(errno)));
    if (settings_.inotify) {
      inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
      if (inotify_fd_ < 0) {
        log::warn(side_.component, "inotify is not available ({}); polling every {}", std::strerror(errno),
                  units::format_duration(settings_.poll_interval));
      }
    }
    for (const auto& [key, value] : side_.queue.state_with_prefix(state_prefix_)) {
      auto c = decode_checkpoint(value);
      if (!c) continue;
      if (key.starts_with(retired_prefix_)) {
        retired_[key] = std::move(*c);
        retired_seq_ = std::max<std::uint64_t>(retired_seq_, std::strtoull(key.c_str() + retired_prefix_.size(), nullptr, 16));
      } else {
        checkpoints_[key] = std::move(*c);
      }
    }
    first_start_ = checkpoints_.empty() && retired_.empty();
    scan(true);
    // Offsets of files that are gone are dropped from the store (they stay in memory for this
    // run, so that a copy made by copytruncate while tank was down is still recognised).
    queue::WriteBatch stale;
    std::set<std::string> open_keys;
    for (const auto& [id, f] : files_) open_keys.insert(key_of(id));
    for (const auto& [key, c] : checkpoints_) {
      if (!open_keys.contains(key)) stale.state_deletes.push_back(key);
    }
    if (!stale.state_deletes.empty() && !side_.queue.commit(stale).ok()) {
      log::warn(side_.component, "could not drop {} stored offsets of files that are gone; trying at the next start",
                stale.state_deletes.size());
    }
    log::info(side_.component, "tailing {} file(s) matching {}", files_.size(), fmt::join(settings_.paths, ", "));
    thread_ = std::thread([this] { run(); });
  }

  void stop() override {
    if (!thread_.joinable()) return;
    stopping_ = true;
    wake();
    thread_.join();
  }

  void set_paused(bool paused) override {
    side_.set_paused(paused);
    if (!paused) wake();
  }

 private:
  using File = TailedFile;

  std::string key_of(const FileId& id) const { return fmt::format("{}{}:{}", state_prefix_, id.dev, id.ino); }

  void wake() {
    std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
  }

  void run() {
    auto next_scan = std::chrono::steady_clock::now() + settings_.poll_interval;
    while (!stopping_) {
      beat_.busy();
      failpoint::hit("input.file.round");
      bool rescan = false;
      if (std::chrono::steady_clock::now() >= next_scan) {
        rescan = true;
        next_scan = std::chrono::steady_clock::now() + settings_.poll_interval;
      }
      rescan = drain_inotify(inotify_fd_) || rescan;
      if (rescan) scan(false);
      if (!side_.paused) read_round();
      // Wait for a file event, the next scan, or a wake-up (stop, resume).
      pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {inotify_fd_, POLLIN, 0}};
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_scan - std::chrono::steady_clock::now());
      int timeout = static_cast<int>(std::clamp<long long>(wait.count(), 0, 60000));
      if (more_to_read_ && !side_.paused) timeout = 0;
      beat_.idle();
      ::poll(fds, inotify_fd_ >= 0 ? 2 : 1, timeout);
      std::uint64_t drained;
      while (::read(wake_fd_, &drained, sizeof drained) > 0) {
      }
    }
  }

  void watch(const std::string& dir) {
    if (inotify_fd_ < 0 || watched_.contains(dir)) return;
    int wd = ::inotify_add_watch(inotify_fd_, dir.c_str(),
                                 IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_MODIFY | IN_ATTRIB |
                                     IN_CLOSE_WRITE | IN_DELETE_SELF);
    if (wd >= 0) watched_.insert(dir);
  }

  // Finds the files the patterns name now: starts tracking new ones, notices rotated ones.
  void scan(bool initial) {
    std::set<FileId> seen;
    for (const auto& pattern : settings_.paths) {
      const std::string dir = fixed_directory(pattern);
      struct stat dst {};
      if (::stat(dir.c_str(), &dst) != 0 || !S_ISDIR(dst.st_mode)) {
        missing_episode(dir).occur(fmt::format("the directory {} does not exist; watching for it", dir));
        side_.metrics.error("missing_directory");
        continue;
      }
      missing_episode(dir).end(fmt::format("the directory {} exists now", dir));
      watch(dir);
      glob_t g{};
      int rc = ::glob(pattern.c_str(), GLOB_NOSORT | GLOB_BRACE, nullptr, &g);
      if (rc == 0) {
        for (std::size_t i = 0; i < g.gl_pathc; ++i) {
          std::string path = g.gl_pathv[i];
          if (compressed_name(path) || excluded(path, settings_.exclude)) continue;
          consider(path, initial, seen);
        }
      }
      globfree(&g);
    }
    for (auto& [id, f] : files_) f.matched = seen.contains(id);
  }

  log::Episode& missing_episode(const std::string& dir) {
    auto it = missing_dirs_.find(dir);
    if (it == missing_dirs_.end()) it = missing_dirs_.try_emplace(dir, side_.component, log::Level::warn).first;
    return it->second;
  }

  void consider(const std::string& path, bool initial, std::set<FileId>& seen) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      unreadable_episode_.occur(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
      side_.metrics.error("unreadable");
      return;
    }
    if (!S_ISREG(st.st_mode)) return;
    FileId id{st.st_dev, st.st_ino};
    seen.insert(id);
    auto it = files_.find(id);
    if (it != files_.end()) {
      it->second.path = path;
      return;
    }
    if (files_.size() >= settings_.max_open_files) {
      open_files_episode_.occur(fmt::format("not opening {}: max_open_files = {} files are open", path,
                                            settings_.max_open_files));
      side_.metrics.error("too_many_files");
      return;
    }
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      unreadable_episode_.occur(fmt::format("cannot open {}: {} (other files are still read)", path,
                                            std::strerror(errno)));
      side_.metrics.error("unreadable");
      return;
    }
    unreadable_episode_.end("all matched files are readable again");
    const auto size_now = static_cast<std::uint64_t>(st.st_size);
    if (!initial && !checkpoints_.contains(key_of(id))) {
      // A new file may be a copy that copytruncate is still writing: decide where to start
      // reading once its size held still for a while (or after rotate_wait).
      const auto now = std::chrono::steady_clock::now();
      auto [it2, fresh] = young_.try_emplace(id, Young{now, now, size_now});
      Young& y = it2->second;
      if (y.size != size_now) {
        y.size = size_now;
        y.size_since = now;
      }
      const auto settle = std::min<std::chrono::nanoseconds>(
          std::max<std::chrono::nanoseconds>(settings_.poll_interval, std::chrono::milliseconds(250)),
          settings_.rotate_wait);
      const bool settled = size_now > 0 && now - y.size_since >= settle;
      if (!settled && now - y.first_seen < settings_.rotate_wait) {
        ::close(fd);
        return;
      }
    }
    young_.erase(id);
    File f;
    f.id = id;
    f.fd = fd;
    f.path = path;
    const auto size = static_cast<std::uint64_t>(st.st_size);
    f.fingerprint = read_at(fd, 0, std::min<std::uint64_t>(settings_.fingerprint_bytes, size));
    std::uint64_t start = 0;
    std::string how;
    auto known = checkpoints_.find(key_of(id));
    if (known != checkpoints_.end() && same_file(known->second.fingerprint, fd)) {
      start = known->second.offset;
      how = fmt::format("resuming at byte {}", start);
    } else if (auto copy = copy_of(f.fingerprint, id)) {
      // Not clamped to the size: a copy still being written is read once it grows past the
      // offset, and one that stays shorter holds nothing that was not read from the original.
      start = copy->offset;
      f.copy_incomplete = start > size;
      how = fmt::format("a copy of a file read up to byte {}: reading from there", copy->offset);
      // Store at once where the copy starts (and forget the truncated file it matched), so that
      // after kill -9 the copy is not read from its beginning.
      queue::WriteBatch identified;
      identified.state_puts.emplace_back(key_of(id), encode_checkpoint(Checkpoint{start, f.fingerprint, path}));
      if (!copy->retired_key.empty()) identified.state_deletes.push_back(copy->retired_key);
      const auto r = side_.queue.commit(identified);
      if (r.ok()) {
        checkpoints_[key_of(id)] = Checkpoint{start, f.fingerprint, path};
        if (!copy->retired_key.empty()) retired_.erase(copy->retired_key);
      } else {
        side_.metrics.error("commit_failed");
        log::warn(side_.component, "could not store where the copy {} starts ({}); reading on", path, r.error);
      }
    } else if (initial && first_start_ && settings_.read_from_end) {
      start = size;
      how = "read_from = \"end\": reading new lines only";
    } else {
      how = known != checkpoints_.end() ? "a new file that reused an inode: reading from the beginning"
                                        : "reading from the beginning";
    }
    if (start > size && !f.copy_incomplete) {
      how += fmt::format("; it is now smaller ({} bytes): it was truncated, reading from the beginning", size);
      start = 0;
    }
    f.committed = start;
    f.read_pos = start;
    log::info(side_.component, "{}: {}", path, how);
    files_.emplace(id, std::move(f));
    more_to_read_ = true;
  }

  struct CopyOf {
    std::uint64_t offset = 0;  // where the original was read up to
    std::string retired_key;   // the stored entry of the truncated original, if that matched
  };

  // The known file (open, stored, or truncated since it was read) that `fingerprint` shows
  // this one is a copy of.
  std::optional<CopyOf> copy_of(const std::string& fingerprint, const FileId& self) const {
    for (const auto& [id, f] : files_) {
      if (!(id == self) && same_start(fingerprint, f.fingerprint)) return CopyOf{f.committed, {}};
    }
    for (const auto& [key, c] : checkpoints_) {
      if (key != key_of(self) && same_start(fingerprint, c.fingerprint)) return CopyOf{c.offset, {}};
    }
    for (const auto& [key, c] : retired_) {
      if (same_start(fingerprint, c.fingerprint)) return CopyOf{c.offset, key};
    }
    return std::nullopt;
  }

  // Remembers, in the store, how far a file that was just truncated had been read, and marks it
  // as read from 0 -- in one transaction, so that a copy found later (also after kill -9) is
  // read from there. Not needed when a copy of it is already open.
  void retire(File& f) {
    bool copy_open = false;
    for (const auto& [id, other] : files_) {
      if (!(id == f.id) && same_start(f.fingerprint, other.fingerprint)) copy_open = true;
    }
    queue::WriteBatch w;
    w.state_puts.emplace_back(key_of(f.id), encode_checkpoint(Checkpoint{0, {}, f.path}));
    std::string key;
    if (!copy_open && f.fingerprint.size() >= kMinCopyFingerprint) {
      key = fmt::format("{}{:016x}", retired_prefix_, ++retired_seq_);
      w.state_puts.emplace_back(key, encode_checkpoint(Checkpoint{f.committed, f.fingerprint, f.path}));
      // Bounded: the oldest go first (copies that `paths` does not match are never found).
      if (retired_.size() >= kMaxRetired) w.state_deletes.push_back(retired_.begin()->first);
    }
    const auto r = side_.queue.commit(w);
    if (!r.ok()) {
      side_.metrics.error("commit_failed");
      log::warn(side_.component, "could not store that {} was truncated ({}); a copy of it found after a restart may be read twice",
                f.path, r.error);
    } else if (!w.state_deletes.empty()) {
      retired_.erase(retired_.begin());
    }
    if (!key.empty()) retired_[key] = Checkpoint{f.committed, f.fingerprint, f.path};
    checkpoints_[key_of(f.id)] = Checkpoint{0, {}, f.path};
  }

  // Reads what every file has grown by, committing as batches fill.
  void read_round() {
    more_to_read_ = false;
    PendingBatch batch = side_.batch();
    std::map<FileId, std::uint64_t> touched;  // file -> offset to store with this batch
    std::vector<FileId> finished;
    bool refused = false;
    auto commit = [&]() {
      if (touched.empty() && batch.empty()) return true;
      for (const auto& [id, offset] : touched) {
        File& f = files_.at(id);
        Checkpoint c{offset, f.fingerprint, f.path};
        batch.write_batch().state_puts.emplace_back(key_of(id), encode_checkpoint(c));
      }
      const bool ok = side_.committer.commit(batch).acknowledge();
      if (ok) {
        for (const auto& [id, offset] : touched) {
          File& f = files_.at(id);
          f.committed = offset;
          checkpoints_[key_of(id)] = Checkpoint{offset, f.fingerprint, f.path};
        }
      } else {
        // Held or failed: read again later from what was stored, every file, so no half-read
        // line is lost.
        for (auto& [id, f] : files_) rewind(f);
        refused = true;
      }
      batch.clear();
      touched.clear();
      return ok;
    };

    for (auto& [id, f] : files_) {
      if (refused || stopping_) break;
      struct stat st {};
      if (::fstat(f.fd, &st) != 0) continue;
      const auto size = static_cast<std::uint64_t>(st.st_size);
      // Truncated: smaller than what was read, or (written past the old size before this round
      // saw it) other first bytes than before.
      const bool other_start = size != f.read_pos && !f.fingerprint.empty() &&
                               read_at(f.fd, 0, f.fingerprint.size()) != f.fingerprint;
      if (f.copy_incomplete && size >= f.read_pos) f.copy_incomplete = false;
      const bool truncated = other_start || (size < f.read_pos && !f.copy_incomplete);
      if (truncated) {
        // Store what was read, then look for a copy (copytruncate makes it before truncating):
        // the copy is read from this file's committed offset, so nothing is lost or doubled.
        if (!commit()) break;
        retire(f);
        scan(false);
        log::info(side_.component, "{} was truncated (now {} bytes, read up to byte {}): reading it from the beginning",
                  f.path, size, f.read_pos);
        side_.metrics.error("truncated");
        f.read_pos = 0;
        f.committed = 0;
        f.partial.clear();
        f.discarding = false;
        f.fingerprint.clear();
        f.copy_incomplete = false;
        touched[id] = 0;
      }
      if (f.fingerprint.size() < settings_.fingerprint_bytes && size > f.fingerprint.size()) {
        f.fingerprint = read_at(f.fd, 0, std::min<std::uint64_t>(settings_.fingerprint_bytes, size));
      }
      std::size_t budget = 16;  // chunks per file per round, so one busy file does not starve others
      while (f.read_pos < size && budget-- > 0 && !refused) {
        std::string chunk = read_at(f.fd, f.read_pos, static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, size - f.read_pos)));
        if (chunk.empty()) break;
        frame(f, id, chunk, batch, touched, commit, refused);
        if (refused) break;
      }
      if (f.read_pos < size) more_to_read_ = true;
      const auto now = std::chrono::steady_clock::now();
      if (!f.matched && f.read_pos >= size && !refused) {
        // Rotated away (or deleted) and read to its end. The writer may still append until it
        // reopens its log: wait rotate_wait without growth, then its unterminated last line (if
        // any) is complete, and the file is done.
        if (f.last_growth == std::chrono::steady_clock::time_point{}) f.last_growth = now;
        if (now - f.last_growth >= settings_.rotate_wait) {
          if (!f.partial.empty() || f.discarding) finish_line(f, id, f.read_pos, batch, touched, commit);
          finished.push_back(id);
        }
      } else {
        f.last_growth = now;
      }
    }
    if (!refused) commit();
    if (!refused && !finished.empty()) {
      queue::WriteBatch forget;
      for (const FileId& id : finished) forget.state_deletes.push_back(key_of(id));
      if (side_.queue.commit(forget).ok()) {
        for (const FileId& id : finished) {
          File& f = files_.at(id);
          log::info(side_.component, "{} was rotated away and is read to its end", f.path);
          ::close(f.fd);
          checkpoints_.erase(key_of(id));
          files_.erase(id);
        }
      }
    }
  }

  void rewind(File& f) {
    f.read_pos = f.committed;
    f.partial.clear();
    f.discarding = false;
    f.discard_head.clear();
    f.discard_length = 0;
  }

  template <class Commit>
  void add_line(File& f, const FileId& id, std::string_view line, std::uint64_t end, PendingBatch& batch,
                std::map<FileId, std::uint64_t>& touched, Commit& commit) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > settings_.max_line_bytes) {
      if (!batch.fits_dead_letter(line.size())) commit();
      batch.dead_letter("line_too_long",
                        fmt::format("a line of {} bytes in {} (ending at byte {}) exceeds max_line_bytes = {}",
                                    line.size(), f.path, end, units::format_size(settings_.max_line_bytes)),
                        line, line.size(), side_.clock.wall_ns());
      side_.metrics.error("line_too_long");
    } else if (!line.empty()) {
      queue::Attribute attrs[] = {{"path", f.path}};
      if (!batch.fits(line.size(), f.path.size() + 10)) {
        if (!commit()) return;
      }
      batch.add(line, side_.clock.wall_ns(), attrs);
    }
    touched[id] = end;
    if (batch.full()) commit();
  }

  template <class Commit>
  void finish_line(File& f, const FileId& id, std::uint64_t end, PendingBatch& batch,
                   std::map<FileId, std::uint64_t>& touched, Commit& commit) {
    if (f.discarding) {
      batch.dead_letter("line_too_long",
                        fmt::format("a line of {} bytes in {} exceeds max_line_bytes = {}", f.discard_length, f.path,
                                    units::format_size(settings_.max_line_bytes)),
                        f.discard_head, f.discard_length, side_.clock.wall_ns());
      side_.metrics.error("line_too_long");
      f.discarding = false;
      f.discard_head.clear();
      touched[id] = end;
    } else {
      std::string line = std::move(f.partial);
      f.partial.clear();
      add_line(f, id, line, end, batch, touched, commit);
    }
  }

  // Splits a chunk read at f.read_pos into lines. Stops at once when a commit is refused (the
  // commit rewound every file).
  template <class Commit>
  void frame(File& f, const FileId& id, std::string_view chunk, PendingBatch& batch,
             std::map<FileId, std::uint64_t>& touched, Commit& commit, const bool& refused) {
    const std::uint64_t base = f.read_pos;
    std::size_t pos = 0;
    while (pos < chunk.size()) {
      std::size_t nl = chunk.find('\n', pos);
      if (nl == std::string_view::npos) {
        std::string_view rest = chunk.substr(pos);
        if (f.discarding) {
          f.discard_length += rest.size();
          if (f.discard_head.size() < queue::kMaxDeadLetterBytes) {
            f.discard_head.append(rest.substr(0, queue::kMaxDeadLetterBytes - f.discard_head.size()));
          }
        } else {
          f.partial.append(rest);
          if (f.partial.size() > settings_.max_line_bytes + 1) {
            f.discarding = true;
            f.discard_length = f.partial.size();
            f.discard_head = f.partial.substr(0, queue::kMaxDeadLetterBytes);
            f.partial.clear();
          }
        }
        break;
      }
      const std::uint64_t end = base + nl + 1;
      std::string_view segment = chunk.substr(pos, nl - pos);
      if (f.discarding) {
        f.discard_length += segment.size();
        if (f.discard_head.size() < queue::kMaxDeadLetterBytes) {
          f.discard_head.append(segment.substr(0, queue::kMaxDeadLetterBytes - f.discard_head.size()));
        }
        finish_line(f, id, end, batch, touched, commit);
      } else if (f.partial.empty()) {
        add_line(f, id, segment, end, batch, touched, commit);
      } else {
        f.partial.append(segment);
        std::string line = std::move(f.partial);
        f.partial.clear();
        add_line(f, id, line, end, batch, touched, commit);
      }
      if (refused) return;
      pos = nl + 1;
    }
    f.read_pos = base + chunk.size();
  }

  FileTailSettings settings_;
  QueueSide side_;
  std::string state_prefix_;
  log::Episode unreadable_episode_{side_.component, log::Level::warn};
  log::Episode open_files_episode_{side_.component, log::Level::warn};
  std::map<std::string, log::Episode> missing_dirs_;
  std::map<std::string, Checkpoint> checkpoints_;  // stored offsets, by state key
  std::map<FileId, File> files_;
  struct Young {
    std::chrono::steady_clock::time_point first_seen;
    std::chrono::steady_clock::time_point size_since;  // when it last changed size
    std::uint64_t size = 0;
  };
  std::map<FileId, Young> young_;  // new files not yet identified
  // Fingerprints and offsets of files that were truncated, for copies found later; stored under
  // "file/<input>/retired/<seq>" and deleted when a copy is identified (or the oldest, past
  // kMaxRetired).
  std::string retired_prefix_ = state_prefix_ + "retired/";
  std::map<std::string, Checkpoint> retired_;
  std::uint64_t retired_seq_ = 0;
  std::set<std::string> watched_;
  bool first_start_ = true;
  bool more_to_read_ = false;
  int inotify_fd_ = -1;
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  liveness::Beat beat_{side_.component};
  std::thread thread_;
};

}  // namespace

std::unique_ptr<plugin::Input> make_file_tail_input(const FileTailSettings& settings,
                                                    const plugin::InputContext& context) {
  return std::make_unique<FileTail>(settings, context);
}

}  // namespace tank::input
