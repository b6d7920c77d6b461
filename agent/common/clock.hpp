#pragma once

// Time sources, injected into every component that reads the time, so tests can drive time by
// hand instead of sleeping.

#include <atomic>
#include <chrono>
#include <cstdint>

namespace tank {

class Clock {
 public:
  virtual ~Clock() = default;
  // Nanoseconds since the Unix epoch (time stamps on records; may jump).
  virtual std::int64_t wall_ns() const = 0;
  // Monotonic nanoseconds (intervals, ages, timeouts; never jumps).
  virtual std::int64_t steady_ns() const = 0;
};

// The real clocks of the machine.
class SystemClock final : public Clock {
 public:
  std::int64_t wall_ns() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch()).count();
  }
  std::int64_t steady_ns() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch()).count();
  }
};

// Returns the process's SystemClock.
const Clock& system_clock();

// A clock that moves only when told to. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(std::int64_t wall_ns = 1'700'000'000'000'000'000, std::int64_t steady_ns = 1'000'000'000)
      : wall_(wall_ns), steady_(steady_ns) {}
  std::int64_t wall_ns() const override { return wall_.load(); }
  std::int64_t steady_ns() const override { return steady_.load(); }
  // Moves both clocks forward by `ns`.
  void advance(std::int64_t ns) {
    wall_ += ns;
    steady_ += ns;
  }
  // Sets the wall clock only (a clock jump); the steady clock is untouched.
  void set_wall(std::int64_t ns) { wall_ = ns; }

 private:
  std::atomic<std::int64_t> wall_;
  std::atomic<std::int64_t> steady_;
};

}  // namespace tank
