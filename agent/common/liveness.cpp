#include "common/liveness.hpp"

#include <algorithm>
#include <mutex>

namespace tank::liveness {
namespace {

struct Beats {
  std::mutex mutex;
  std::vector<const Beat*> all;
};

Beats& beats() {
  static Beats* b = new Beats;  // never destroyed: threads may end during exit
  return *b;
}

std::atomic<std::int64_t> g_stall_ns{std::chrono::nanoseconds(std::chrono::seconds(20)).count()};

thread_local Beat* t_beat = nullptr;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Beat::Beat(std::string name) : name_(std::move(name)) {
  std::lock_guard lock(beats().mutex);
  beats().all.push_back(this);
}

Beat::~Beat() {
  std::lock_guard lock(beats().mutex);
  auto& all = beats().all;
  all.erase(std::remove(all.begin(), all.end(), this), all.end());
}

void Beat::busy(std::chrono::nanoseconds may_block) {
  const std::int64_t deadline = now_ns() + g_stall_ns.load(std::memory_order_relaxed) + std::max<std::int64_t>(0, may_block.count());
  deadline_ns_.store(std::max<std::int64_t>(deadline, 1), std::memory_order_relaxed);
}

void Beat::idle() { deadline_ns_.store(0, std::memory_order_relaxed); }

ThreadBeat::ThreadBeat(Beat& beat) : previous_(t_beat) {
  t_beat = &beat;
  beat.busy();
}

ThreadBeat::~ThreadBeat() {
  if (t_beat != nullptr) t_beat->idle();
  t_beat = previous_;
}

Waiting::Waiting() {
  if (t_beat != nullptr) t_beat->idle();
}

Waiting::~Waiting() {
  if (t_beat != nullptr) t_beat->busy();
}

void alive() {
  if (t_beat != nullptr) t_beat->busy();
}

void blocking(std::chrono::nanoseconds may_block) {
  if (t_beat != nullptr) t_beat->busy(may_block);
}

void set_stall_timeout(std::chrono::nanoseconds timeout) {
  g_stall_ns.store(std::max<std::int64_t>(timeout.count(), 1), std::memory_order_relaxed);
}

std::chrono::nanoseconds stall_timeout() { return std::chrono::nanoseconds(g_stall_ns.load(std::memory_order_relaxed)); }

std::vector<Stall> stalled(std::chrono::steady_clock::time_point now) {
  const std::int64_t at =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
  std::vector<Stall> out;
  {
    std::lock_guard lock(beats().mutex);
    for (const Beat* b : beats().all) {
      const std::int64_t deadline = b->deadline_ns();
      if (deadline != 0 && at > deadline) out.push_back({b->name(), std::chrono::nanoseconds(at - deadline)});
    }
  }
  std::sort(out.begin(), out.end(), [](const Stall& a, const Stall& b) { return a.overdue > b.overdue; });
  return out;
}

std::size_t registered() {
  std::lock_guard lock(beats().mutex);
  return beats().all.size();
}

}  // namespace tank::liveness
