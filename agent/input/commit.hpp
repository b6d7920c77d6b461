#pragma once

// The one place that decides what a commit's outcome means for a producer.
//
// Every input (file, TCP, UDP, unix, HTTP, MQTT) offers its PendingBatch to the queue through
// a Committer and acts on the Settlement it gets back; the delivery engine and the aggregate stage
// read a CommitStatus through queue::settlement_of() (queue/settlement.hpp). What each input then does with its source is in
// docs/inputs.md ("What an input does with each outcome"):
//
//   queue says   Settlement   records                         dead letters  source
//   committed    stored       in the queue                    stored        acknowledged
//   dropped      dropped      counted as dropped by policy    stored        acknowledged
//                             (overflow = "drop_newest")
//   full         held         kept in the batch               kept          not acknowledged; offer
//                                                                           again when the queue
//                                                                           takes records
//   failed       failed       kept in the batch               kept          not acknowledged; offer
//                                                                           again after a backoff
//   too_large    (split)      the batch is committed in parts that fit; a record that alone
//                             exceeds one commit becomes a record_too_large dead letter: never
//                             offered again as it is, so it cannot wedge or spin an input
//
// So every record is committed, dead-lettered with a reason, or counted as dropped by policy,
// and the source is acknowledged only then.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/log.hpp"
#include "input/batch.hpp"
#include "input/input_metrics.hpp"
#include "queue/queue.hpp"
#include "queue/settlement.hpp"

namespace tank::input {

using queue::acknowledges;
using queue::Settlement;
using queue::settlement_of;

struct Outcome {
  Settlement settlement = Settlement::stored;
  std::size_t stored_records = 0;   // records committed by this call (also before a held or failed part)
  std::size_t dropped_records = 0;  // records dropped by policy by this call
  std::size_t dead_letters = 0;     // dead letters committed by this call
  std::string error;                // why, for failed (and held: the queue's words)

  bool acknowledge() const { return acknowledges(settlement); }
};

// Splits `batch` into batches that each fit a commit of `limit` bytes, in order: records as they
// are (one that alone exceeds `limit` becomes a dead letter of `input` with reason
// record_too_large), dead letters shrunk to fit, and the state changes, acknowledgements and
// dead-letter deletes with the last part. Exposed for tests.
std::vector<queue::WriteBatch> split_for_commit(const queue::WriteBatch& batch, std::size_t limit,
                                                const std::string& input, std::int64_t now_ns);

// What an input that cannot hold its source back (UDP datagrams, Modbus polls) does with a batch
// the queue did not take (held or failed): drops its records, counted in
// tank_input_dropped_records_total{reason}, and still commits its dead letters, which are evidence,
// not load (the queue stores them while it refuses records); when even that fails they are counted
// as dropped too, with the same reason, and logged. `batch` is empty afterwards.
void drop_records(queue::Queue& queue, InputMetrics& metrics, std::string_view component, PendingBatch& batch,
                  std::string_view reason);

class Committer {
 public:
  // `on_failure`: what the input does while commits fail, for the log ("the lines will be read
  // again", "answering 503"...). The queue, metrics and clock must outlive the committer.
  Committer(queue::Queue& queue, InputMetrics& metrics, const Clock& clock, std::string component,
            std::string on_failure);

  // Offers `batch` to the queue and settles it:
  //   stored, dropped: counted (tank_input_records_total / tank_input_dropped_records_total
  //     {reason="overflow_drop_newest"}); `batch` is cleared.
  //   held, failed: `batch` holds what is left to commit (all of it, unless a too_large batch was
  //     being committed in parts: then the parts committed are gone from it); failed is logged
  //     once per episode and counted in tank_input_errors_total{reason="commit_failed"}.
  // A too_large batch (which PendingBatch's limits are there to prevent) is logged and committed
  // in parts (split_for_commit). An empty batch is stored at once. Never throws for data errors.
  // May be called from several threads at once (the connections of one socket input share it),
  // each with its own batch.
  Outcome commit(PendingBatch& batch);

 private:
  Outcome settle(PendingBatch& batch, const queue::CommitResult& r);
  Outcome commit_in_parts(PendingBatch& batch, const std::string& why);

  queue::Queue& queue_;
  InputMetrics& metrics_;
  const Clock& clock_;
  std::string component_;
  std::string on_failure_;
  log::Episode failures_;
};

}  // namespace tank::input
