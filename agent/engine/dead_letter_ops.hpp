#pragma once

// Replaying and purging dead letters: what `tank dlq replay` and `tank dlq purge` do, run by the
// agent itself when it is running (asked over its control socket, engine/control.hpp) or by the
// command on the queue directly when no agent holds the data directory.
//
// A replay puts entries back at the start of the pipeline: each original goes through its
// input's route again (decoding, record checks), as if the input had just read it, with the
// attributes it had. What passes becomes a record; what fails again becomes a new dead letter
// with the new reason. Either way the old entry is deleted in the same transaction, so a replay
// interrupted by kill -9 neither loses nor doubles an entry.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>

#include "common/clock.hpp"
#include "process/route.hpp"
#include "queue/queue.hpp"

namespace tank::engine {

// Which entries: the listed ids, or every entry matching the filter (input, reason, since_ns of
// the query; its limit is ignored) when `ids` is empty. Entries stored after the operation
// started are never taken (a replayed entry that fails again is not replayed twice).
struct DeadLetterSelection {
  std::vector<std::uint64_t> ids;
  queue::DeadLetterQuery filter;
};

struct ReplayOutcome {
  std::uint64_t replayed = 0;       // became records again
  std::uint64_t failed_again = 0;   // went back to the store with the new reason
  std::uint64_t kept = 0;           // left in the store: see `problems`
  std::uint64_t missing = 0;        // ids that do not exist
  std::vector<std::string> problems;  // why entries were kept (input no longer configured, truncated...)
  std::string error;                // set when the replay stopped early (queue full, I/O error)
};

struct PurgeOutcome {
  std::uint64_t purged = 0;
  std::uint64_t missing = 0;
  std::string error;
};

using RouteLookup = std::function<std::shared_ptr<const process::Route>(std::string_view input)>;

// Never throws for data problems; an LMDB failure ends the operation with `error` set (what was
// committed before stays done).
ReplayOutcome replay_dead_letters(queue::Queue& queue, const RouteLookup& routes, const DeadLetterSelection& selection,
                                  const Clock& clock);
PurgeOutcome purge_dead_letters(queue::Queue& queue, const DeadLetterSelection& selection);

// The control socket's form of the above (engine/control.hpp): requests "dlq.replay" and
// "dlq.purge" carry the selection; replies carry the outcome.
boost::json::object to_json(const DeadLetterSelection& selection);
// Throws std::invalid_argument for a malformed selection.
DeadLetterSelection selection_from_json(const boost::json::object& request);
boost::json::object to_json(const ReplayOutcome& outcome);
ReplayOutcome replay_outcome_from_json(const boost::json::object& reply);
boost::json::object to_json(const PurgeOutcome& outcome);
PurgeOutcome purge_outcome_from_json(const boost::json::object& reply);

}  // namespace tank::engine
