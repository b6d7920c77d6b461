#pragma once

// What a processor plugin is to the agent. Processors come in two kinds, by where they sit on
// the data path (docs/architecture.md):
//
//   input -> decode -> [RecordCheck, ...] -> commit -> queue -> [Stage] -> outputs
//
// - A RecordCheck runs on the input's own thread for every record before it is committed
//   (processors.validate). A record it refuses is committed to the dead-letter store instead, in
//   the same transaction, with the reason and detail the check gave; the source is acknowledged
//   either way. Checks are immutable and shared; each input thread gets its own Session.
// - A Stage reads the queue after the commit as a consumer with its own thread
//   (processors.aggregate, deadband, dedup, throttle, lua). What it derives it appends to the
//   queue as records flagged kRecordDerived, committed together with its own state and its
//   consumer position, so a kill -9 at any point replays exactly what was not yet committed.
//   The stages of an input form a chain in file order: each reads what the one before derived
//   (the first: what the input committed), and outputs get what the last one derived.
//
// Every processor instance has a `name` (default: the plugin's name; unique among processors)
// and `inputs` (the inputs whose records it takes; default: all).

#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/fwd.hpp>

#include "common/clock.hpp"
#include "common/clock_sync.hpp"
#include "config/document.hpp"
#include "config/schema.hpp"

namespace tank::metrics {
class Registry;
}
namespace tank::queue {
class Queue;
}

namespace tank::plugin {

// Why a record was refused: a reason code (schema_violation, time_out_of_range...) and a detail
// for people (which field, what was expected). The reason must be a string with static storage.
struct Rejection {
  std::string_view reason;
  std::string detail;
};

class RecordCheck {
 public:
  virtual ~RecordCheck() = default;

  // State one thread keeps while checking (a validator with its caches). Not thread-safe.
  class Session {
   public:
    virtual ~Session() = default;
    // True when the record passes. `document` is the decoded payload for inputs with
    // format = "json" and null otherwise. On refusal fills `rejection`. Never throws for bad data.
    virtual bool check(std::string_view payload, const boost::json::value* document, Rejection& rejection) = 0;
  };

  // Whether check() needs the decoded JSON document (the input must then have format = "json").
  virtual bool needs_document() const = 0;
  virtual std::unique_ptr<Session> session() const = 0;
};

class Stage {
 public:
  virtual ~Stage() = default;
  // Starts the consumer thread. Throws StartError when it cannot start (state it cannot use).
  virtual void start() = 0;
  // Stops the thread after its current commit; idempotent. What was not committed is read again
  // at the next start.
  virtual void stop() = 0;
};

struct ProcessorContext {
  std::string name;                 // the instance's unique name; for a Stage also its queue consumer name
  std::vector<std::string> inputs;  // the inputs it takes (resolved: never empty)
  queue::Queue* queue = nullptr;    // for stages (null when only checks are built, e.g. `tank dlq replay`)
  metrics::Registry& metrics;
  const Clock& clock;
  std::string agent_id;
  std::filesystem::path data_dir;
  // For a stage: its position in each input's chain of stages (same order as `inputs`; 0 = the
  // first after the queue). It reads records at that chain level and derives records with
  // queue::derived_flags(position) (queue/record.hpp).
  std::vector<unsigned> positions = {};
  // Whether the wall clock is trusted now (null: always), for stages that read event times.
  const ClockSync* clock_sync = nullptr;
};

using CheckFactory =
    std::function<std::shared_ptr<const RecordCheck>(const config::SectionValues& options, const ProcessorContext& context)>;
using StageFactory =
    std::function<std::unique_ptr<Stage>(const config::SectionValues& options, const ProcessorContext& context)>;

// Options every processor has, declared once: `name`, `inputs`.
std::span<const config::Option> processor_common_options();

// The name a processor instance gets: its `name` option, or the plugin's name when unset.
std::string processor_name(const config::SectionValues& values, std::string_view plugin_name);

// Checks that each value of the option `option` (a string, or a list of strings) is a field path
// (process::FieldPath: `a`, `a.b`, `/a/b`), reporting each bad one at its place; "*" passes when
// `star` is true. Nothing when the option is not set.
void check_field_paths(const config::SectionValues& values, std::string_view option, config::Diagnostics& diagnostics,
                       bool star = false);

// The queue consumer name of a stage (consumer names are shared with outputs, so they are
// prefixed by kind).
std::string stage_consumer_name(std::string_view processor_name);

}  // namespace tank::plugin
