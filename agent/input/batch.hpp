#pragma once

// What an input accumulates between two commits: records and dead letters, with limits that
// keep one commit within what the queue accepts (Queue::max_commit_bytes()).

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/clock_sync.hpp"
#include "process/route.hpp"
#include "queue/queue.hpp"

namespace tank::input {

// What `tank check` counts for a record's attributes (the MQTT topic, the peer, the file's path)
// when it checks that an input's largest line or message fits one commit as a record. A record
// with more is still stored if it fits, and dead-lettered (record_too_large) if not.
inline constexpr std::size_t kAttributeReserve = 1024;

// The detail of a record_too_large dead letter: the record's size, its payload's, the limit, and
// what to change.
std::string record_too_large_detail(std::size_t record_bytes, std::size_t payload_bytes, std::size_t limit);

// The records and dead letters an input has read and not committed yet (a Committer commits it).
class PendingBatch {
 public:
  // `limit`: the most bytes of records and dead letters one commit may carry
  // (Queue::max_commit_bytes()); full() turns true at half of it, so batches are committed at a
  // good size and one more line always fits.
  // `route`: the decoding and checks every record goes through before it is added (null: none,
  // every payload is taken as it is). It must outlive the batch.
  // `clock_sync`: while it says the wall clock is not synchronised, each record added carries the
  // attribute clock_unsynced (common/clock_sync.hpp) besides its own; null: never. Must outlive
  // the batch.
  explicit PendingBatch(std::string input, std::size_t limit, std::size_t max_records = 8192,
                        const process::Route* route = nullptr, const ClockSync* clock_sync = nullptr)
      : input_(std::move(input)),
        limit_(limit),
        max_records_(max_records),
        session_(route != nullptr ? route->session() : nullptr),
        clock_sync_(clock_sync) {}
  PendingBatch(std::string input, std::size_t limit, const process::Route* route,
               const ClockSync* clock_sync = nullptr)
      : PendingBatch(std::move(input), limit, 8192, route, clock_sync) {}

  // Whether a record with a payload of `payload_bytes` still fits this batch; if not, commit
  // the batch first.
  bool fits(std::size_t payload_bytes, std::size_t attribute_bytes = 0) const {
    // With a route the record may become a dead letter, whose detail takes room too.
    const std::size_t overhead = session_ ? kDeadLetterOverhead + kMaxDetailBytes : kRecordOverhead;
    return used() + payload_bytes + attribute_bytes + overhead + input_.size() <= limit_;
  }
  // Whether a dead letter of an original of `original_bytes` fits whole (up to the bytes a dead
  // letter keeps); if not, commit the batch first. On an empty batch always true: a dead letter is
  // shrunk to fit one commit.
  bool fits_dead_letter(std::size_t original_bytes) const {
    const std::size_t need = kDeadLetterOverhead + std::min(original_bytes, queue::kMaxDeadLetterBytes);
    return used() + std::min(need, dead_letter_limit()) <= dead_letter_limit();
  }

  // Adds a record after the route's decoding and checks; a record they refuse becomes a dead
  // letter with their reason (keeping its attributes, for a replay), and so does a record that
  // alone exceeds one commit (reason record_too_large, keeping as much of it as fits). Returns
  // whether it became a record. `known_json`: the input parsed the payload as one JSON value already.
  bool add(std::string_view payload, std::int64_t ingest_ns, std::span<const queue::Attribute> attributes = {},
           bool known_json = false);
  // Adds a dead letter of this input, shrunk (detail first, then the original bytes kept) to fit
  // what is left of this batch, or a whole commit (less 4 KiB for the input's state) when less
  // than 4 KiB is left (the Committer then commits the batch in parts): a dead letter never makes
  // a commit too large to be stored.
  void dead_letter(std::string_view reason, std::string detail, std::string_view original, std::uint64_t original_size,
                   std::int64_t time_ns, std::span<const queue::Attribute> attributes = {});

  // Replaces what the batch holds with `rest` (what a commit in parts left to do).
  void replace(queue::WriteBatch rest);

  bool empty() const { return batch_.records.empty() && batch_.dead_letters.empty() && batch_.state_puts.empty(); }
  bool full() const { return used() >= limit_ / 2 || batch_.records.size() >= max_records_; }
  std::size_t records() const { return batch_.records.size(); }
  std::uint64_t payload_bytes() const { return payload_bytes_; }
  std::size_t dead_letters() const { return batch_.dead_letters.size(); }

  queue::WriteBatch& write_batch() { return batch_; }
  const queue::WriteBatch& write_batch() const { return batch_; }
  const std::string& input() const { return input_; }
  // The most bytes one commit may carry (Queue::max_commit_bytes()).
  std::size_t limit() const { return limit_; }
  // What the batch counts for against that limit, as the queue counts it.
  std::size_t used() const {
    std::size_t state = 0;
    for (const auto& [k, v] : batch_.state_puts) state += k.size() + v.size();
    return batch_.records.bytes() + dead_letter_bytes_ + state;
  }

  void clear() {
    batch_.records.clear();
    batch_.dead_letters.clear();
    batch_.state_puts.clear();
    batch_.state_deletes.clear();
    batch_.acks.clear();
    batch_.dead_letter_deletes.clear();
    payload_bytes_ = 0;
    dead_letter_bytes_ = 0;
  }

 private:
  static constexpr std::size_t kRecordOverhead = queue::kRecordHeaderBytes + 64;
  static constexpr std::size_t kDeadLetterOverhead = 64 + 512;  // header, names, detail
  static constexpr std::size_t kMaxDetailBytes = 2048;
  // Room a dead letter leaves in a commit for the input's state committed with it (file offsets).
  static constexpr std::size_t kStateReserve = 4096;
  std::size_t dead_letter_limit() const { return limit_ > 2 * kStateReserve ? limit_ - kStateReserve : limit_ / 2; }

  std::string input_;
  std::size_t limit_;
  std::size_t max_records_;
  std::unique_ptr<process::Route::Session> session_;
  const ClockSync* clock_sync_;
  std::vector<queue::Attribute> marked_;  // add()'s scratch: the attributes and clock_unsynced
  std::string stamp_;
  plugin::Rejection rejection_;
  queue::WriteBatch batch_;
  std::uint64_t payload_bytes_ = 0;
  std::size_t dead_letter_bytes_ = 0;
};

// The batch limit for inputs of a queue.
inline std::size_t batch_limit(const queue::Queue& q) { return static_cast<std::size_t>(q.max_commit_bytes()); }

}  // namespace tank::input
