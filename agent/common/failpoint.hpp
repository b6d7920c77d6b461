#pragma once

// Crash points for the failure tests: a deterministic kill -9 (or a wedged thread) at a chosen
// moment.
//
// With the environment variable TANK_FAILPOINTS="name=N[,name=N...]", the Nth call of
// failpoint::hit("name") in this process sends SIGKILL to the process itself, exactly as a
// kill -9 from outside would land at that moment. "name=N:hang" instead blocks the thread that
// makes the Nth call for ever (a wedged thread, for the watchdog's tests). Random kills find a narrow window (say, between
// two commits of one step) only by luck; a failpoint finds it every time.
//
// Without the variable (production), hit() costs a static's guard check and one relaxed load. A malformed value is
// ignored with one warning; tank never refuses to start because of it.

#include <string_view>

namespace tank::failpoint {

void hit(std::string_view name);

}  // namespace tank::failpoint
