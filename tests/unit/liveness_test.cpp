// The liveness beats behind the systemd watchdog: a busy thread past its deadline is stalled,
// an idle one never is, a declared blocking call extends the deadline.

#include <catch2/catch.hpp>

#include <thread>

#include "common/liveness.hpp"

using namespace tank;
using namespace std::chrono_literals;

namespace {

bool listed(const std::vector<liveness::Stall>& stalls, const std::string& name) {
  for (const auto& s : stalls) {
    if (s.name == name) return true;
  }
  return false;
}

struct StallTimeout {
  explicit StallTimeout(std::chrono::nanoseconds t) : previous(liveness::stall_timeout()) {
    liveness::set_stall_timeout(t);
  }
  ~StallTimeout() { liveness::set_stall_timeout(previous); }
  std::chrono::nanoseconds previous;
};

}  // namespace

TEST_CASE("liveness: a busy beat past the stall timeout is stalled and an idle one is not", "[liveness]") {
  StallTimeout timeout(1s);
  const auto now = std::chrono::steady_clock::now();
  liveness::Beat busy("busy thread");
  liveness::Beat idle("idle thread");
  liveness::Beat blocking("sending thread");
  busy.busy();
  idle.busy();
  idle.idle();
  blocking.busy(10s);  // a send with 10 s of its own timeouts
  CHECK(liveness::stalled(now).empty());
  const auto later = now + 2s;
  const auto stalls = liveness::stalled(later);
  CHECK(listed(stalls, "busy thread"));
  CHECK_FALSE(listed(stalls, "idle thread"));
  CHECK_FALSE(listed(stalls, "sending thread"));
  CHECK(listed(liveness::stalled(now + 12s), "sending thread"));
  // Most overdue first.
  const auto both = liveness::stalled(now + 12s);
  REQUIRE(both.size() >= 2);
  CHECK(both.front().name == "busy thread");
  CHECK(both.front().overdue >= both.back().overdue);
  // Coming round again clears it.
  busy.busy();
  CHECK_FALSE(listed(liveness::stalled(std::chrono::steady_clock::now()), "busy thread"));
}

TEST_CASE("liveness: a beat is forgotten when destroyed", "[liveness]") {
  const std::size_t before = liveness::registered();
  {
    liveness::Beat b("short-lived");
    b.busy();
    CHECK(liveness::registered() == before + 1);
  }
  CHECK(liveness::registered() == before);
  CHECK_FALSE(listed(liveness::stalled(std::chrono::steady_clock::now() + 1h), "short-lived"));
}

TEST_CASE("liveness: a thread's waits are idle and its blocking calls get their own time", "[liveness]") {
  StallTimeout timeout(1s);
  liveness::Beat beat("worker");
  std::thread worker([&] {
    liveness::ThreadBeat mine(beat);
    CHECK(beat.deadline_ns() != 0);  // busy from the start
    {
      liveness::Waiting waiting;
      CHECK(beat.deadline_ns() == 0);  // waiting for work: not expected back
    }
    CHECK(beat.deadline_ns() != 0);
    liveness::blocking(30s);
    const auto now = std::chrono::steady_clock::now();
    CHECK_FALSE(listed(liveness::stalled(now + 20s), "worker"));
    CHECK(listed(liveness::stalled(now + 40s), "worker"));
  });
  worker.join();
  CHECK(beat.deadline_ns() == 0);  // the thread ended: idle
  // A thread without a beat: Waiting and blocking do nothing.
  liveness::Waiting waiting;
  liveness::blocking(1s);
  CHECK(beat.deadline_ns() == 0);
}
