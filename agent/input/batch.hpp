#pragma once

// What an input accumulates between two commits: records and dead letters, with limits that
// keep one commit within what the queue accepts (Queue::max_commit_bytes()).

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "process/route.hpp"
#include "queue/queue.hpp"

namespace tank::input {

class Batch {
 public:
  // `limit`: the most bytes of records and dead letters one commit may carry
  // (Queue::max_commit_bytes()); full() turns true at half of it, so batches are committed at a
  // good size and one more line always fits.
  // `route`: the decoding and checks every record goes through before it is added (null: none,
  // every payload is taken as it is). It must outlive the batch.
  explicit Batch(std::string input, std::size_t limit, std::size_t max_records = 8192,
                 const process::Route* route = nullptr)
      : input_(std::move(input)),
        limit_(limit),
        max_records_(max_records),
        session_(route != nullptr ? route->session() : nullptr) {}
  Batch(std::string input, std::size_t limit, const process::Route* route)
      : Batch(std::move(input), limit, 8192, route) {}

  // Whether a record with a payload of `payload_bytes` still fits this batch; if not, commit
  // the batch first.
  bool fits(std::size_t payload_bytes, std::size_t attribute_bytes = 0) const {
    // With a route the record may become a dead letter, whose detail takes room too.
    const std::size_t overhead = session_ ? kDeadLetterOverhead + kMaxDetailBytes : kRecordOverhead;
    return used() + payload_bytes + attribute_bytes + overhead + input_.size() <= limit_;
  }
  bool fits_dead_letter(std::size_t original_bytes) const {
    return used() + kDeadLetterOverhead + std::min(original_bytes, queue::kMaxDeadLetterBytes) <= limit_;
  }

  // Adds a record after the route's decoding and checks; a record they refuse becomes a dead
  // letter with their reason (keeping its attributes, for a replay). Returns whether it became
  // a record. `known_json`: the input parsed the payload as one JSON value already.
  bool add(std::string_view payload, std::int64_t ingest_ns, std::span<const queue::Attribute> attributes = {},
           bool known_json = false) {
    if (session_ && !session_->admit(payload, rejection_, known_json)) {
      dead_letter(rejection_.reason, std::move(rejection_.detail), payload, payload.size(), ingest_ns, attributes);
      return false;
    }
    batch_.records.add(input_, ingest_ns, payload, attributes);
    payload_bytes_ += payload.size();
    return true;
  }
  void dead_letter(std::string_view reason, std::string detail, std::string_view original, std::uint64_t original_size,
                   std::int64_t time_ns, std::span<const queue::Attribute> attributes = {}) {
    queue::DeadLetter d = queue::DeadLetter::make(input_, reason, std::move(detail), original, time_ns);
    d.original_size = original_size;
    if (!attributes.empty()) d.attributes = queue::encode_attributes(attributes);
    if (d.detail.size() > kMaxDetailBytes) d.detail.resize(kMaxDetailBytes);
    dead_letter_bytes_ += kDeadLetterOverhead + d.original.size() + d.detail.size() + d.attributes.size();
    batch_.dead_letters.push_back(std::move(d));
  }

  bool empty() const { return batch_.records.empty() && batch_.dead_letters.empty() && batch_.state_puts.empty(); }
  bool full() const { return used() >= limit_ / 2 || batch_.records.size() >= max_records_; }
  std::size_t records() const { return batch_.records.size(); }
  std::uint64_t payload_bytes() const { return payload_bytes_; }
  std::size_t dead_letters() const { return batch_.dead_letters.size(); }

  queue::WriteBatch& write_batch() { return batch_; }
  const queue::WriteBatch& write_batch() const { return batch_; }
  const std::string& input() const { return input_; }

  void clear() {
    batch_.records.clear();
    batch_.dead_letters.clear();
    batch_.state_puts.clear();
    batch_.state_deletes.clear();
    batch_.acks.clear();
    payload_bytes_ = 0;
    dead_letter_bytes_ = 0;
  }

 private:
  static constexpr std::size_t kRecordOverhead = queue::kRecordHeaderBytes + 64;
  static constexpr std::size_t kDeadLetterOverhead = 64 + 512;  // header, names, detail
  static constexpr std::size_t kMaxDetailBytes = 2048;
  std::size_t used() const {
    std::size_t state = 0;
    for (const auto& [k, v] : batch_.state_puts) state += k.size() + v.size();
    return batch_.records.bytes() + dead_letter_bytes_ + state;
  }

  std::string input_;
  std::size_t limit_;
  std::size_t max_records_;
  std::unique_ptr<process::Route::Session> session_;
  plugin::Rejection rejection_;
  queue::WriteBatch batch_;
  std::uint64_t payload_bytes_ = 0;
  std::size_t dead_letter_bytes_ = 0;
};

// The batch limit for inputs of a queue.
inline std::size_t batch_limit(const queue::Queue& q) { return static_cast<std::size_t>(q.max_commit_bytes()); }

}  // namespace tank::input
