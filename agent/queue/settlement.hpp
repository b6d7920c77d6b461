#pragma once

// What a commit's outcome means for whoever made the batch: the one vocabulary of inputs
// (input/commit.hpp, which acts on it for every input), the delivery engine and the processors.

#include <string_view>

#include "queue/queue.hpp"

namespace tank::queue {

enum class Settlement {
  stored,   // committed: records, dead letters, state and acknowledgements are in the queue
  dropped,  // the queue is full and drops new records by policy (overflow = "drop_newest"): the
            // records are gone (counted), the dead letters, state and acknowledgements were
            // stored; the source is acknowledged
  held,     // the queue is full and refuses records (overflow = "block"): nothing was stored; wait
            // for it to take records again and offer the batch again
  failed,   // the commit failed (I/O, disk full, damaged file): nothing was stored; offer the
            // batch again after a backoff
};

inline std::string_view to_string(Settlement s) {
  switch (s) {
    case Settlement::stored: return "stored";
    case Settlement::dropped: return "dropped";
    case Settlement::held: return "held";
    case Settlement::failed: return "failed";
  }
  return "?";
}

// How a CommitStatus reads for the one who committed. too_large reads as failed: only an input's
// Committer can split a batch (it does); everyone else keeps batches within one commit.
inline Settlement settlement_of(CommitStatus status) {
  switch (status) {
    case CommitStatus::committed: return Settlement::stored;
    case CommitStatus::dropped: return Settlement::dropped;
    case CommitStatus::full: return Settlement::held;
    case CommitStatus::failed: return Settlement::failed;
    case CommitStatus::too_large: return Settlement::failed;
  }
  return Settlement::failed;
}

// True when the source may be told its data is taken: stored, or dropped by policy.
inline bool acknowledges(Settlement s) { return s == Settlement::stored || s == Settlement::dropped; }

}  // namespace tank::queue
