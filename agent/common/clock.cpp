#include "common/clock.hpp"

namespace tank {
const Clock& system_clock() {
  static const SystemClock clock;
  return clock;
}
}  // namespace tank
