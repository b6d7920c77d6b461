#include "common/log.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include <sys/stat.h>
#include <unistd.h>

#include "common/strings.hpp"

namespace tank::log {
namespace {

struct State {
  std::mutex mutex;
  std::atomic<int> level{static_cast<int>(Level::info)};
  Format format = default_format();
  std::function<void(std::string_view)> sink;
};

State& state() {
  static State s;
  return s;
}

const char* level_name(Level level) {
  switch (level) {
    case Level::debug: return "debug";
    case Level::info: return "info";
    case Level::warn: return "warn";
    case Level::error: return "error";
  }
  return "?";
}

int syslog_priority(Level level) {
  switch (level) {
    case Level::debug: return 7;
    case Level::info: return 6;
    case Level::warn: return 4;
    case Level::error: return 3;
  }
  return 6;
}

std::string timestamp() {
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
}

}  // namespace

bool is_journal_stream(const char* journal_stream, int fd) {
  if (journal_stream == nullptr || *journal_stream == '\0') return false;
  unsigned long long device = 0, inode = 0;
  char extra = 0;
  if (std::sscanf(journal_stream, "%llu:%llu%c", &device, &inode, &extra) != 2) return false;
  struct stat st {};
  if (::fstat(fd, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == device && static_cast<unsigned long long>(st.st_ino) == inode;
}

Format default_format() {
  return is_journal_stream(std::getenv("JOURNAL_STREAM"), STDERR_FILENO) ? Format::journal : Format::text;
}

void configure(const Config& config) {
  State& s = state();
  std::lock_guard lock(s.mutex);
  s.level.store(static_cast<int>(config.level));
  s.format = config.format;
}

void set_sink(std::function<void(std::string_view)> sink) {
  State& s = state();
  std::lock_guard lock(s.mutex);
  s.sink = std::move(sink);
}

bool enabled(Level level) { return static_cast<int>(level) >= state().level.load(std::memory_order_relaxed); }

void emit(Level level, std::string_view component, std::string_view message) {
  State& s = state();
  try {
    std::string line;
    std::lock_guard lock(s.mutex);
    switch (s.format) {
      case Format::text:
        line = fmt::format("{} {:<5} {}: {}", timestamp(), level_name(level), component, message);
        break;
      case Format::journal:
        line = fmt::format("<{}>{}: {}", syslog_priority(level), component, message);
        break;
      case Format::json:
        line = "{\"ts\":\"" + timestamp() + "\",\"level\":\"" + level_name(level) + "\",\"component\":";
        strings::append_json_string(line, component);
        line += ",\"msg\":";
        strings::append_json_string(line, message);
        line += "}";
        break;
    }
    if (s.sink) {
      s.sink(line);
    } else {
      line.push_back('\n');
      std::fwrite(line.data(), 1, line.size(), stderr);
    }
  } catch (...) {
    // A log line is never worth a crash.
  }
}

Episode::Episode(std::string component, Level level) : component_(std::move(component)), level_(level) {}

bool Episode::occur(std::string_view message) {
  std::lock_guard lock(mutex_);
  ++count_;
  if (active_) return false;
  active_ = true;
  count_ = 1;
  emit(level_, component_, message);
  return true;
}

bool Episode::end(std::string_view message) {
  std::lock_guard lock(mutex_);
  if (!active_) return false;
  active_ = false;
  emit(Level::info, component_, fmt::format("{} ({} occurrence{} in this episode)", message, count_,
                                            count_ == 1 ? "" : "s"));
  count_ = 0;
  return true;
}

bool Episode::active() const {
  std::lock_guard lock(mutex_);
  return active_;
}

}  // namespace tank::log
