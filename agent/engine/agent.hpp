#pragma once

// `tank run`: brings the agent up from a validated configuration, serves until SIGTERM or
// SIGINT, and takes it down in order.
//
// Start-up order: logging, data directory (created, checked writable, locked against a second
// tank), run state (how the previous run ended decides how thoroughly the queue is checked),
// queue, metrics endpoint, then READY (run.json "running", sd_notify READY=1, /readyz 200).
// Shut-down runs the other way and ends with run.json "stopped", which tells the next start
// that the queue was closed cleanly.

#include "common/clock.hpp"
#include "config/document.hpp"
#include "plugin/registry.hpp"

namespace tank::engine {

// Runs the agent; returns the process exit code (0 after a clean stop, 1 when something
// outside the configuration failed: the data directory, the lock, the queue, the listener).
// Call from the main thread before any other thread exists: it blocks SIGINT, SIGTERM and
// SIGHUP in every thread and waits for them itself.
int run_agent(const config::Document& document, const plugin::Registry& plugins, const Clock& clock);

}  // namespace tank::engine
