#pragma once

// Logging for every component.
//
// One process-wide sink, configured once at start-up (`configure`). Three line formats:
//   text     "2026-11-21T23:19:00.123Z info  queue: opened /var/lib/tank/queue"
//   journal  "<6>queue: opened ..."   (chosen automatically when JOURNAL_STREAM is set:
//            journald adds its own time stamps and reads the <N> syslog priority)
//   json     {"ts":"...","level":"info","component":"queue","msg":"..."}
// Payload content never goes into a log line unless a component is asked to (debug options).
//
// A condition that repeats (a broker that refuses connections, a full queue) is logged once per
// episode with `Episode`, never once per record.

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace tank::log {

enum class Level : int { debug = 0, info = 1, warn = 2, error = 3 };
enum class Format { text, journal, json };

struct Config {
  Level level = Level::info;
  Format format = Format::text;
};

// Picks the format tank should use by default: journal when stderr is the journal (JOURNAL_STREAM
// names it), text otherwise.
Format default_format();

// Whether `journal_stream` (the value of JOURNAL_STREAM, "<device>:<inode>") names the file open
// on `fd`. systemd sets it for a service whose stderr goes to the journal; a program started from
// such a service with stderr elsewhere (a redirect, a terminal) inherits the variable, and must
// not write <N> prefixes there (systemd.exec(5)). False for null, malformed, or another file.
bool is_journal_stream(const char* journal_stream, int fd);

// Sets the level and format. Thread-safe; takes effect for the next line.
void configure(const Config& config);

// Replaces the sink (stderr by default) with `sink`, which receives each complete line without
// its trailing newline. Used by tests; pass nullptr to restore stderr.
void set_sink(std::function<void(std::string_view)> sink);

bool enabled(Level level);

// Writes one line. Never throws; a failing sink loses the line.
void emit(Level level, std::string_view component, std::string_view message);

template <class... Args>
void debug(std::string_view component, fmt::format_string<Args...> format, Args&&... args) {
  if (enabled(Level::debug)) emit(Level::debug, component, fmt::format(format, std::forward<Args>(args)...));
}
template <class... Args>
void info(std::string_view component, fmt::format_string<Args...> format, Args&&... args) {
  if (enabled(Level::info)) emit(Level::info, component, fmt::format(format, std::forward<Args>(args)...));
}
template <class... Args>
void warn(std::string_view component, fmt::format_string<Args...> format, Args&&... args) {
  if (enabled(Level::warn)) emit(Level::warn, component, fmt::format(format, std::forward<Args>(args)...));
}
template <class... Args>
void error(std::string_view component, fmt::format_string<Args...> format, Args&&... args) {
  if (enabled(Level::error)) emit(Level::error, component, fmt::format(format, std::forward<Args>(args)...));
}

// Logs a repeating condition once when it starts and once when it ends, with the number of
// occurrences, so that a condition hit a million times produces two lines. Thread-safe.
class Episode {
 public:
  Episode(std::string component, Level level);

  // Counts one occurrence. The first occurrence of an episode is logged with `message`; later
  // ones are only counted. Returns true when this call started the episode.
  bool occur(std::string_view message);

  // Ends the current episode, if any, logging `message` followed by the occurrence count.
  // Returns true when an episode was active.
  bool end(std::string_view message);

  bool active() const;

 private:
  std::string component_;
  Level level_;
  mutable std::mutex mutex_;
  bool active_ = false;
  std::uint64_t count_ = 0;
};

}  // namespace tank::log
