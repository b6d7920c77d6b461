#include "common/backoff.hpp"

#include <algorithm>
#include <random>

namespace tank {

Backoff::Backoff(BackoffPolicy policy, std::function<std::uint64_t()> random)
    : policy_(policy), random_(std::move(random)) {
  if (policy_.initial.count() < 1) policy_.initial = std::chrono::nanoseconds(1);
  if (policy_.max < policy_.initial) policy_.max = policy_.initial;
  if (!random_ && policy_.jitter != BackoffPolicy::Jitter::none) {
    random_ = [engine = std::mt19937_64(std::random_device{}())]() mutable { return engine(); };
  }
}

std::chrono::nanoseconds Backoff::ceiling(unsigned n) const {
  std::int64_t c = policy_.initial.count();
  const std::int64_t max = policy_.max.count();
  for (unsigned i = 0; i < n && c < max; ++i) c = c > max / 2 ? max : c * 2;
  return std::chrono::nanoseconds(std::min(c, max));
}

std::chrono::nanoseconds Backoff::next() {
  const auto cap = static_cast<std::uint64_t>(ceiling(attempt_).count());
  if (attempt_ < 64) ++attempt_;
  switch (policy_.jitter) {
    case BackoffPolicy::Jitter::none:
      return std::chrono::nanoseconds(cap);
    case BackoffPolicy::Jitter::full:
      return std::chrono::nanoseconds(static_cast<std::int64_t>(random_() % (cap + 1)));
    case BackoffPolicy::Jitter::half: {
      const std::uint64_t floor = std::max<std::uint64_t>(1, cap / 2);
      return std::chrono::nanoseconds(static_cast<std::int64_t>(floor + random_() % (cap - floor + 1)));
    }
  }
  return std::chrono::nanoseconds(cap);
}

}  // namespace tank
