#include "input/handover.hpp"

#include <unistd.h>

#include <map>
#include <mutex>
#include <set>

#include "common/log.hpp"

namespace tank::input::handover {
namespace {

struct Registry {
  std::mutex mutex;
  bool open = false;
  std::map<std::string, Parked> parked;
  std::set<std::string> claimed;
};

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

void close_all(Parked& p) {
  for (auto& c : p.connections) {
    if (c.fd >= 0) ::close(c.fd);
  }
  if (p.fd >= 0) ::close(p.fd);
  p.connections.clear();
  p.fd = -1;
}

Window::Window() {
  Registry& r = registry();
  std::lock_guard hold(r.mutex);
  r.open = true;
  r.claimed.clear();
}

Window::~Window() {
  Registry& r = registry();
  std::lock_guard hold(r.mutex);
  for (auto& [key, p] : r.parked) close_all(p);
  r.parked.clear();
  r.claimed.clear();
  r.open = false;
}

bool parking() {
  Registry& r = registry();
  std::lock_guard hold(r.mutex);
  return r.open;
}

void park(const std::string& key, Parked sockets) {
  Registry& r = registry();
  std::lock_guard hold(r.mutex);
  if (!r.open || r.parked.contains(key)) {
    close_all(sockets);
    return;
  }
  r.parked.emplace(key, std::move(sockets));
}

void claim(const std::string& key) {
  Registry& r = registry();
  std::lock_guard hold(r.mutex);
  if (r.open) r.claimed.insert(key);
}

void close_unclaimed() {
  Registry& r = registry();
  std::lock_guard hold(r.mutex);
  for (auto it = r.parked.begin(); it != r.parked.end();) {
    if (r.claimed.contains(it->first)) {
      ++it;
      continue;
    }
    if (!it->second.connections.empty()) {
      log::info("reload", "{}: not in the new configuration; closing its {} connection{}", it->first,
                it->second.connections.size(), it->second.connections.size() == 1 ? "" : "s");
    }
    close_all(it->second);
    it = r.parked.erase(it);
  }
  r.claimed.clear();
}

std::optional<Parked> take(const std::string& key) {
  Registry& r = registry();
  std::lock_guard hold(r.mutex);
  auto it = r.parked.find(key);
  if (it == r.parked.end()) return std::nullopt;
  Parked p = std::move(it->second);
  r.parked.erase(it);
  return p;
}

}  // namespace tank::input::handover
