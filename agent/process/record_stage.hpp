#pragma once

// The part every record-at-a-time stage after the queue shares (processors.deadband, dedup,
// throttle, lua): the consumer thread, reading its inputs' records at its chain level, and one
// commit of what it derived, the state it changed, its dead letters and its consumer position.
// A plugin supplies only a RecordHandler: what to do with one record.
//
//   queue --read (its inputs, at its chain level)--> handler.process(record) --> pass / emit / drop
//     ^                                                                               |
//     +-- one commit: derived records + handler state + consumer position + dead letters
//
// Exactly-once across kill -9, for a deterministic handler (one that decides from the records
// and its state, not from the processing time): the state and the position are committed in
// the transaction that holds what they produced; after a restart the state is restored as of
// the last commit and the records after the position are read again in the same order, so the
// output is that of an uninterrupted run.
//
// Holding: a handler may refuse a record for now (Decision::hold, e.g. throttle's mode "hold"
// or a record whose time cannot be trusted yet). The stage commits what came before it and reads
// it again at the deadline: the record and everything after it wait in the queue, under its
// bounds. Records of other inputs the stage takes wait too (one cursor).
//
// Thread safety: the handler is called from the stage's thread only.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/json/fwd.hpp>

#include "plugin/processor.hpp"
#include "queue/record.hpp"

namespace tank::process {

// What a handler does with the record it is given; every call goes into the stage's next commit.
class StageOutput {
 public:
  virtual ~StageOutput() = default;
  // Passes the record on unchanged (payload, attributes, ingest time; in its input's format).
  virtual void pass() = 0;
  // Passes on a record made from this one: `json` (a JSON text) with `attributes` (the
  // handler's choice: the record's own are at record.attributes), the record's ingest time.
  virtual void emit(std::string_view json, std::span<const queue::Attribute> attributes) = 0;
  // Drops the record on purpose (a repeat, a value within the deadband): counted in
  // tank_processor_dropped_records_total{reason}. `reason` has static storage.
  virtual void drop(std::string_view reason) = 0;
  // Sends the record to the dead-letter store with `reason` (static storage) and a detail for
  // people; the stage names itself in the detail.
  virtual void dead_letter(std::string_view reason, std::string detail) = 0;
};

class RecordHandler {
 public:
  virtual ~RecordHandler() = default;

  enum class Decision {
    done,  // the record is consumed (by the calls it made on the StageOutput)
    hold,  // not now: no call was made on the StageOutput; read it again at hold_until()
  };

  // Whether process() needs the record decoded as JSON (a record that is not JSON then goes to
  // the dead-letter store with reason decode_error, without reaching process()).
  virtual bool needs_json(std::string_view input) const = 0;

  // Loads the state the stage committed (keys without the stage's prefix), once, before the
  // first record. Throws std::exception when it cannot be used; the stage then does not start
  // and says to move the state aside.
  virtual void restore(std::vector<std::pair<std::string, std::string>> entries) = 0;

  // Decides one record: `document` is its JSON when needs_json(record.input), else null. A
  // record consumed with no call on `out` is counted as dropped with reason "no_output".
  virtual Decision process(const queue::RecordView& record, const boost::json::value* document, StageOutput& out) = 0;

  // For Decision::hold: steady-clock nanoseconds (Clock::steady_ns) at which to try again.
  virtual std::int64_t hold_until() const { return 0; }

  // The state changed since the last call, each key once (puts: key, value; deletes: key),
  // keys without the prefix. Called at every commit. Keys are at most 400 bytes with the prefix.
  virtual void take_changes(std::vector<std::pair<std::string, std::string>>& puts,
                            std::vector<std::string>& deletes) = 0;
  // About how many bytes take_changes() would give now (so the stage commits before a commit
  // grows past its budget).
  virtual std::size_t pending_change_bytes() const = 0;

  // How many state entries it forgot so far to stay within its bound (counted in
  // tank_processor_evicted_keys_total).
  virtual std::uint64_t evictions() const { return 0; }
};

struct RecordStageSettings {
  std::string type;    // "deadband": metrics label and state prefix "<type>/<name>/"
  std::unique_ptr<RecordHandler> handler;
};

// A plugin::Stage running `settings.handler` over the records of `context.inputs`.
std::unique_ptr<plugin::Stage> make_record_stage(RecordStageSettings settings, const plugin::ProcessorContext& context);

// The state prefix of a stage: "<type>/<name>/".
std::string record_stage_prefix(std::string_view type, std::string_view name);

}  // namespace tank::process
