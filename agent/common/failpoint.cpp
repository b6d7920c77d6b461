#include "common/failpoint.hpp"

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

#include <unistd.h>

#include "common/log.hpp"

namespace tank::failpoint {
namespace {

struct Points {
  std::mutex mutex;
  std::map<std::string, unsigned long, std::less<>> remaining;  // hits left before the kill
  std::map<std::string, bool, std::less<>> hang;                // hang instead of kill
};

std::atomic<bool> g_armed{false};

Points& points() {
  static Points* p = [] {
    auto* out = new Points;  // never destroyed: hit() may run during exit
    const char* spec = std::getenv("TANK_FAILPOINTS");
    if (spec == nullptr || *spec == '\0') return out;
    std::string_view rest(spec);
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      const std::string_view item = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      const auto eq = item.find('=');
      char* end = nullptr;
      std::string count(eq == std::string_view::npos ? "" : item.substr(eq + 1));
      bool hang = false;
      if (count.size() > 5 && count.ends_with(":hang")) {
        count.resize(count.size() - 5);
        hang = true;
      }
      const unsigned long n = count.empty() ? 0 : std::strtoul(count.c_str(), &end, 10);
      if (eq == 0 || eq == std::string_view::npos || n == 0 || end == nullptr || *end != '\0') {
        log::warn("failpoint", "TANK_FAILPOINTS: \"{}\" is not name=N or name=N:hang with N >= 1; ignored",
                  std::string(item));
        continue;
      }
      out->remaining[std::string(item.substr(0, eq))] = n;
      out->hang[std::string(item.substr(0, eq))] = hang;
    }
    g_armed.store(!out->remaining.empty(), std::memory_order_relaxed);
    return out;
  }();
  return *p;
}

}  // namespace

void hit(std::string_view name) {
  static Points& p = points();  // reads the variable at the first hit (thread-safe)
  if (!g_armed.load(std::memory_order_relaxed)) return;
  std::unique_lock lock(p.mutex);
  auto it = p.remaining.find(name);
  if (it == p.remaining.end() || it->second == 0) return;
  if (--it->second == 0) {
    if (p.hang[std::string(name)]) {
      log::warn("failpoint", "failpoint \"{}\" reached: this thread hangs", std::string(name));
      lock.unlock();
      for (;;) ::pause();
    }
    log::warn("failpoint", "failpoint \"{}\" reached: killing this process (SIGKILL)", std::string(name));
    ::kill(::getpid(), SIGKILL);
  }
}

}  // namespace tank::failpoint
