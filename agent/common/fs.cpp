#include "common/fs.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace tank::fs {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

}  // namespace

std::string prepare_writable_directory(const std::filesystem::path& dir, std::string_view what) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return fmt::format("cannot create {} {}: {}", what, dir.string(), ec.message());
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    return fmt::format("cannot use {} {}: it exists and is not a directory", what, dir.string());
  }
  std::filesystem::path probe = dir / fmt::format(".tank-write-probe-{}", ::getpid());
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return fmt::format("cannot write in {} {}: {}", what, dir.string(), errno_text(errno));
  }
  bool ok = write_all(fd, "probe") && ::fsync(fd) == 0;
  int err = errno;
  ::close(fd);
  ::unlink(probe.c_str());
  if (!ok) {
    return fmt::format("cannot write in {} {}: {}", what, dir.string(), errno_text(err));
  }
  return {};
}

std::string write_file_atomic(const std::filesystem::path& path, std::string_view content) {
  std::filesystem::path tmp = path;
  tmp += fmt::format(".tmp-{}", ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fmt::format("cannot write {}: {}", tmp.string(), errno_text(errno));
  bool ok = write_all(fd, content) && ::fsync(fd) == 0;
  int err = errno;
  ::close(fd);
  if (!ok) {
    ::unlink(tmp.c_str());
    return fmt::format("cannot write {}: {}", tmp.string(), errno_text(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    ::unlink(tmp.c_str());
    return fmt::format("cannot rename {} to {}: {}", tmp.string(), path.string(), errno_text(err));
  }
  sync_directory(path.parent_path());
  return {};
}

std::string sync_directory(const std::filesystem::path& dir) {
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return fmt::format("cannot open the directory {}: {}", dir.string(), errno_text(errno));
  int rc = ::fsync(dfd);
  int err = errno;
  ::close(dfd);
  if (rc != 0) return fmt::format("cannot sync the directory {}: {}", dir.string(), errno_text(err));
  return {};
}

std::optional<std::string> read_file(const std::filesystem::path& path, std::string* error, std::size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (error) *error = fmt::format("cannot read {}: {}", path.string(), errno_text(errno));
    return std::nullopt;
  }
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (error) *error = fmt::format("cannot read {}: {}", path.string(), errno_text(errno));
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > max_bytes) {
      if (error) *error = fmt::format("{} has more than {} bytes", path.string(), max_bytes);
      ::close(fd);
      return std::nullopt;
    }
  }
  ::close(fd);
  return out;
}

std::string boot_id() {
  if (const char* forced = std::getenv("TANK_BOOT_ID"); forced != nullptr && *forced != '\0') return forced;
  std::string error;
  auto text = read_file("/proc/sys/kernel/random/boot_id", &error);
  if (!text) return {};
  while (!text->empty() && (text->back() == '\n' || text->back() == ' ')) text->pop_back();
  return *text;
}

std::optional<ExclusiveLock> ExclusiveLock::acquire(const std::filesystem::path& path, std::string* error) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (error) *error = fmt::format("cannot open lock file {}: {}", path.string(), errno_text(errno));
    return std::nullopt;
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    std::string holder;
    char buf[32] = {};
    ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    if (n > 0) {
      holder = std::string(buf, static_cast<std::size_t>(n));
      while (!holder.empty() && (holder.back() == '\n')) holder.pop_back();
    }
    ::close(fd);
    if (error) {
      if (err == EWOULDBLOCK) {
        *error = fmt::format("{} is locked by another running tank{}; stop it or give this one another data_dir",
                             path.string(), holder.empty() ? "" : " (pid " + holder + ")");
      } else {
        *error = fmt::format("cannot lock {}: {}", path.string(), errno_text(err));
      }
    }
    return std::nullopt;
  }
  std::string pid = fmt::format("{}\n", ::getpid());
  if (::ftruncate(fd, 0) == 0) {
    (void)::pwrite(fd, pid.data(), pid.size(), 0);
  }
  return ExclusiveLock(fd);
}

ExclusiveLock::ExclusiveLock(ExclusiveLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }

ExclusiveLock& ExclusiveLock::operator=(ExclusiveLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

ExclusiveLock::~ExclusiveLock() {
  if (fd_ >= 0) ::close(fd_);
}

std::string compact_utc_timestamp(std::int64_t wall_ns) {
  std::time_t secs = static_cast<std::time_t>(wall_ns / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}{:02}{:02}T{:02}{:02}{:02}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec);
}

std::string rfc3339_utc(std::int64_t wall_ns) {
  std::int64_t secs_total = wall_ns / 1'000'000'000;
  std::int64_t ms = (wall_ns / 1'000'000) % 1000;
  if (wall_ns < 0 && ms != 0) {
    secs_total -= 1;
    ms += 1000;
  }
  std::time_t secs = static_cast<std::time_t>(secs_total);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

}  // namespace tank::fs
