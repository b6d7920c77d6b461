#pragma once

// What every input holds to put records into the queue: whose records they are (name;
// component, for logs), where they go (queue, route, batch limit), their timestamps (clock), how
// outcomes are counted (metrics, committer), and whether the queue takes records now (paused).
// One per input instance; the members outlive nothing they refer to but the context's.

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>

#include "input/batch.hpp"
#include "input/commit.hpp"
#include "input/input_metrics.hpp"
#include "plugin/input.hpp"

namespace tank::input {

struct QueueSide {
  // `type`: the input's type for its metrics ("file", "mqtt"...). `on_failure`: what the input
  // does while commits fail, for the log ("the lines will be read again", "answering 503"...).
  QueueSide(const plugin::InputContext& context, std::string type, std::string on_failure)
      : name(context.name),
        queue(context.queue),
        clock(context.clock),
        metrics(context.metrics, context.name, type),
        batch_limit(input::batch_limit(context.queue)),
        route(context.route),
        clock_sync(context.clock_sync),
        component("input " + context.name),
        committer(queue, metrics, clock, component, std::move(on_failure)) {}

  QueueSide(const QueueSide&) = delete;
  QueueSide& operator=(const QueueSide&) = delete;

  // A fresh batch for this input (its name, batch limit and route).
  PendingBatch batch() const { return PendingBatch(name, batch_limit, route.get(), clock_sync); }

  // Sets `paused` and the input's paused gauge (plugin::Input::set_paused).
  void set_paused(bool p) {
    paused = p;
    metrics.set_paused(p);
  }

  std::string name;
  queue::Queue& queue;
  const Clock& clock;
  InputMetrics metrics;
  std::size_t batch_limit;
  std::shared_ptr<const process::Route> route;
  const ClockSync* clock_sync;
  std::string component;
  Committer committer;
  std::atomic<bool> paused{false};
};

}  // namespace tank::input
