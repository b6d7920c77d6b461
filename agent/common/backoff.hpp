#pragma once

// The one retry backoff of tank: capped exponential growth with a choice of jitter, used by every
// loop that waits before trying again (an input whose commit failed, a reconnect to a broker, an
// output's retries, a processor's commits).
//
//   attempt:   0        1          2          ...  n
//   ceiling:   initial  2*initial  4*initial  ...  min(initial * 2^n, max)
//   delay:     Jitter::none    the ceiling
//              Jitter::full    uniform in [0, ceiling]           (many clients, one upstream)
//              Jitter::half    uniform in [ceiling / 2, ceiling] (never retries at once)
//
// The random source is injected, so that tests see exactly which delays a policy gives; without
// one, a generator seeded from std::random_device is used. Not thread-safe: one per retry loop.

#include <chrono>
#include <cstdint>
#include <functional>

namespace tank {

struct BackoffPolicy {
  enum class Jitter { none, full, half };
  std::chrono::nanoseconds initial = std::chrono::milliseconds(100);
  std::chrono::nanoseconds max = std::chrono::seconds(5);  // less than `initial` counts as `initial`
  Jitter jitter = Jitter::none;
};

class Backoff {
 public:
  // `random`: uniformly distributed 64-bit numbers (called once per jittered delay).
  explicit Backoff(BackoffPolicy policy, std::function<std::uint64_t()> random = {});

  // The delay before the next attempt; each call counts one more failed attempt. Never negative,
  // never more than the policy's max (nor less than 1 ns with Jitter::half).
  std::chrono::nanoseconds next();
  // The ceiling for attempt `n` (0-based) without jitter: min(initial * 2^n, max).
  std::chrono::nanoseconds ceiling(unsigned n) const;
  // After a success: the next delay is the first again.
  void reset() { attempt_ = 0; }
  // Failed attempts counted since the last reset().
  unsigned attempts() const { return attempt_; }
  const BackoffPolicy& policy() const { return policy_; }

 private:
  BackoffPolicy policy_;
  std::function<std::uint64_t()> random_;
  unsigned attempt_ = 0;
};

}  // namespace tank
