#pragma once

// Liveness of tank's own threads, for the systemd watchdog.
//
// Every thread that loops (an output's delivery and sender threads, an input's reader or I/O
// threads, a processor's thread) owns a Beat. The thread marks itself busy when it leaves a wait
// (`busy`) and idle when it goes back to waiting for work (`idle`); an I/O context marks itself
// busy again from a timer every second. A thread that stays busy longer than the stall timeout
// (plus the time it declared a blocking call may take, e.g. a send's own timeouts) has not come
// round its loop: it is stuck. The agent then stops pinging systemd's watchdog (WATCHDOG=1), says
// which thread is stuck, and systemd restarts tank (nothing acknowledged is lost: invariant 1).
//
// Waiting for work, for a retry's backoff or for a full queue to drain is idle, never stuck:
// an upstream that is down does not make the watchdog restart tank.
//
// Beats register themselves in one process-wide list; all functions are thread-safe and never
// throw (a Beat's constructor may throw std::bad_alloc).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace tank::liveness {

class Beat {
 public:
  // Registers the beat, idle. `name` says which thread it is ("output cloud sender 0").
  explicit Beat(std::string name);
  ~Beat();
  Beat(const Beat&) = delete;
  Beat& operator=(const Beat&) = delete;

  // The thread is working: it must come round (call busy or idle again) within the stall timeout
  // plus `may_block` (the longest a blocking call it is about to make may legitimately take).
  void busy(std::chrono::nanoseconds may_block = std::chrono::nanoseconds(0));
  // The thread waits for work (or for a backoff, or for a stop): it is not expected back.
  void idle();

  const std::string& name() const { return name_; }
  // Steady-clock nanoseconds by which the thread must come round; 0 while idle.
  std::int64_t deadline_ns() const { return deadline_ns_.load(std::memory_order_relaxed); }

 private:
  std::string name_;
  std::atomic<std::int64_t> deadline_ns_{0};
};

// Makes `beat` the calling thread's own for as long as it lives: the thread is busy from then on,
// and idle again when it ends. Waiting (below) uses it.
class ThreadBeat {
 public:
  explicit ThreadBeat(Beat& beat);
  ~ThreadBeat();
  ThreadBeat(const ThreadBeat&) = delete;
  ThreadBeat& operator=(const ThreadBeat&) = delete;

 private:
  Beat* previous_;
};

// For as long as it lives, the calling thread's beat (if it has one) is idle: wrap a wait for
// work, a backoff or a condition variable in it. Busy again when it ends.
class Waiting {
 public:
  Waiting();
  ~Waiting();
  Waiting(const Waiting&) = delete;
  Waiting& operator=(const Waiting&) = delete;
};

// The calling thread came round its loop: its beat (if it has one) is busy with a fresh deadline.
// Call at the top of every iteration of a loop that may run for long without waiting.
void alive();

// Marks the calling thread's beat (if it has one) busy, allowing `may_block` beyond the stall
// timeout: call before a blocking call with its own timeouts (Beat::busy).
void blocking(std::chrono::nanoseconds may_block);

// How long a busy thread may go without coming round its loop (default 20 s; agent.stall_timeout).
void set_stall_timeout(std::chrono::nanoseconds timeout);
std::chrono::nanoseconds stall_timeout();

struct Stall {
  std::string name;
  std::chrono::nanoseconds overdue;  // how long past its deadline
};

// The beats past their deadline at `now` (steady clock), most overdue first.
std::vector<Stall> stalled(std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

// How many beats are registered (for tests and diagnostics).
std::size_t registered();

}  // namespace tank::liveness
