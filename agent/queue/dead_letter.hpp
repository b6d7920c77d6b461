#pragma once

// Dead letters: input that tank could not take as a record (a line over max_line_bytes, and in
// later stages a record that does not decode or validate, a batch an upstream rejects), kept
// with the reason instead of being dropped silently.
//
// They live in the queue's LMDB environment (database `dead_letters`), committed in the same
// transaction as the records and source offsets of the batch they came with, and are bounded by
// dead_letter.max_bytes: when full, the oldest entries are evicted, counted in
// tank_dead_letter_evicted_total. Each entry keeps the original bytes (at most
// kMaxDeadLetterBytes of them; `original_size` says how many there were), the input, a reason
// code, a human detail, the time and the tank version that stored it.
//
// Stored layout (little-endian), version 2:
//   u8 format (2)  u8 flags (bit 0: original truncated)  u16 input length  u16 reason length
//   u16 version length  u32 detail length  u32 stored original length  u64 original size
//   i64 time (ns since the Unix epoch)  u32 attributes length
//   then input, reason, version, detail, attributes (encoded as in records), original bytes
// Version 1 (tank 0.1 before dead-letter replay) is the same without the attributes; it is
// still read.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tank::queue {

// The most bytes of an original kept in one dead letter.
inline constexpr std::size_t kMaxDeadLetterBytes = 64 * 1024;

struct DeadLetter {
  std::string input;     // the input (or output, later) that produced it
  std::string reason;    // a code: line_too_long, decode_error, schema_violation, upstream_rejected...
  std::string detail;    // for people: what was wrong, where
  std::string original;  // the original bytes (at most kMaxDeadLetterBytes; see original_size)
  std::uint64_t original_size = 0;  // how long the original was (0: original.size())
  // The record's attributes (the MQTT topic, the peer...), encoded as in records (record.hpp),
  // so that a replay gives the record back what it had.
  std::string attributes;
  std::int64_t time_ns = 0;

  // Builds a dead letter keeping the first kMaxDeadLetterBytes of `original`.
  static DeadLetter make(std::string_view input, std::string_view reason, std::string detail,
                         std::string_view original, std::int64_t time_ns);
};

// The most bytes of a dead letter's detail kept.
inline constexpr std::size_t kMaxDeadLetterDetailBytes = 16 * 1024;

// What a dead letter counts for against the largest commit (Queue::max_commit_bytes()): its
// names, detail, attributes and kept original bytes, and 64 bytes for its header.
std::size_t commit_bytes(const DeadLetter& letter);

// Shortens `letter` so that commit_bytes(letter) <= max_bytes: first the detail (to a quarter of
// what there is room for, at least 256 bytes, ending in "..."), then the original bytes kept
// (original_size still says how many there were, so the entry reads as truncated), then its
// attributes. Its input and reason are never cut. Returns false when even that does not fit
// (max_bytes below ~600 bytes); the letter is then as short as it can be.
bool shrink_to_fit(DeadLetter& letter, std::size_t max_bytes);

struct StoredDeadLetter {
  std::uint64_t id = 0;
  DeadLetter letter;
  bool truncated = false;  // `original` holds only the first bytes of the original
  std::string version;     // the tank version that stored it
};

std::string encode_dead_letter(const DeadLetter& letter, std::string_view version);
// nullopt (and `error`) for malformed bytes; never reads outside `encoded`.
std::optional<StoredDeadLetter> decode_dead_letter(std::uint64_t id, std::string_view encoded,
                                                   std::string* error = nullptr);

}  // namespace tank::queue
