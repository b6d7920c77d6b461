#pragma once

// A liveness beat (common/liveness.hpp) for the threads running one boost::asio::io_context: a
// timer marks the beat busy every second (a quarter of the stall timeout when that is shorter). When every thread of the context is wedged in a handler
// the timer's handler cannot run, the beat runs past the stall timeout and the watchdog learns
// that the input is stuck. A context that only waits for I/O keeps beating.

#include <atomic>
#include <algorithm>
#include <chrono>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/liveness.hpp"

namespace tank::liveness {

class IoBeat {
 public:
  IoBeat(boost::asio::io_context& io, std::string name) : beat_(std::move(name)), timer_(io) {}

  // Starts beating. Call before the context's threads run, or from one of them.
  void start() {
    stopped_ = false;
    beat_.busy();
    arm();
  }

  // Stops beating (the beat turns idle) so that the context can run out of work. Call from one
  // of the context's threads, or once none of them runs any more.
  void stop() {
    stopped_ = true;
    timer_.cancel();
    beat_.idle();
  }

 private:
  void arm() {
    timer_.expires_after(std::min<std::chrono::nanoseconds>(std::chrono::seconds(1), stall_timeout() / 4));
    timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec || stopped_) return;
      beat_.busy();
      arm();
    });
  }

  Beat beat_;
  boost::asio::steady_timer timer_;
  std::atomic<bool> stopped_{false};
};

}  // namespace tank::liveness
