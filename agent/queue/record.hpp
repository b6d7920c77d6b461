#pragma once

// Records as the queue stores them.
//
// A record is an input name, an ingest time, optional attributes (the MQTT topic, the peer
// address...) and the payload bytes. Producers encode records into an EncodedRecords (one
// contiguous buffer, no allocation per record); the queue copies each encoded record into its
// LMDB page as is, under a sequence number it assigns, and seals it (seal_stored_record).
//
// Stored layout (little-endian), format 2:
//   u8  format (2)      u8  flags              u16 input length      u32 attributes length
//   i64 ingest time, nanoseconds since the Unix epoch
//   u32 check
//   input name bytes
//   attributes: repeated { u16 key length, u32 value length, key bytes, value bytes }
//   payload bytes (the rest)
// Flags: bit 0 (kRecordDerived) = made by a processor after the queue (an aggregate), not by an
// input; the input name is then the input whose records it was made from. Bit 1
// (kRecordKeepsFormat) = a derived record whose payload is in its input's format (a record a
// stage passed on as it was, e.g. processors.throttle on a text input), not JSON. Bits 2-7: the
// chain position of the stage that made it (0 = the first stage after the queue; see
// chain_level()). Records written before stages were chained have flags 0x01: position 0.
// Check: in an EncodedRecords, the CRC32C of the record without its check field (computed once, by
// the producer's thread); in the queue, that value XOR the CRC32C of the sequence number (8 bytes,
// big-endian, as the key), so a record proves both its bytes and the key it was stored under
// (record_intact). A damaged page, a stale copy of a page or a record under the wrong key fails.
//
// Format 1 (before issue 17) is the same without the check (a 16-byte header). It is still read;
// Queue::open rewrites a format-1 queue's records in format 2 (docs/queue.md).

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tank::queue {

struct Attribute {
  std::string_view key;
  std::string_view value;
};

inline constexpr std::uint8_t kRecordFormat = 2;
inline constexpr std::size_t kRecordHeaderBytes = 20;       // format 2
inline constexpr std::size_t kRecordHeaderBytesV1 = 16;     // format 1
inline constexpr std::size_t kRecordCheckOffset = 16;
inline constexpr std::size_t kMaxInputNameBytes = 255;
inline constexpr std::uint8_t kRecordDerived = 0x01;
inline constexpr std::uint8_t kRecordKeepsFormat = 0x02;

// Stages after the queue form a chain per input, in file order: the first reads the records the
// input committed (level 0), the next what the first derived (level 1), and so on; outputs read
// the last level. At most kMaxChainStages stages per input.
inline constexpr unsigned kMaxChainStages = 64;
// The flags of a record derived by the stage at chain `position` (0-based, < kMaxChainStages).
constexpr std::uint8_t derived_flags(unsigned position, bool keeps_format = false) {
  return static_cast<std::uint8_t>(kRecordDerived | (keeps_format ? kRecordKeepsFormat : 0) | ((position & 0x3F) << 2));
}
// A record's chain level: 0 for a record an input committed, position + 1 for a derived one.
constexpr unsigned chain_level(std::uint8_t flags) {
  return (flags & kRecordDerived) != 0 ? ((flags >> 2) & 0x3Fu) + 1 : 0;
}

// Records ready to append, encoded back to back in one buffer.
// The encoded size of a record: what it counts for against the largest commit.
std::size_t encoded_record_bytes(std::string_view input, std::size_t payload_bytes,
                                 std::span<const Attribute> attributes = {});

class EncodedRecords {
 public:
  void reserve(std::size_t records, std::size_t bytes);

  // Adds one record. `input` is at most kMaxInputNameBytes (longer is a programming error and
  // throws std::invalid_argument); attribute keys at most 65535 bytes.
  void add(std::string_view input, std::int64_t ingest_ns, std::string_view payload,
           std::span<const Attribute> attributes = {}, std::uint8_t flags = 0);

  // As add(), with the attributes in their encoded form (RecordView::attributes, which must be
  // well formed: a record's own).
  void add_with_attributes(std::string_view input, std::int64_t ingest_ns, std::string_view payload,
                           std::string_view encoded_attributes, std::uint8_t flags);

  // Adds a record encoded already (encoded(i) of another batch), as it is.
  void add_encoded(std::string_view encoded);

  std::size_t size() const { return ends_.size(); }
  bool empty() const { return ends_.empty(); }
  // Total encoded bytes (what the queue stores, before LMDB's own overhead).
  std::size_t bytes() const { return arena_.size(); }
  // The encoded form of record `i`.
  std::string_view encoded(std::size_t i) const;
  void clear();

 private:
  std::string arena_;
  std::vector<std::size_t> ends_;
};

// A decoded record. Views point into the buffer the record was decoded from.
struct RecordView {
  std::uint64_t seq = 0;
  std::int64_t ingest_ns = 0;
  std::string_view input;
  std::string_view attributes;  // encoded; use attribute() or for_each_attribute()
  std::string_view payload;
  std::size_t encoded_bytes = 0;
  std::uint8_t flags = 0;

  bool derived() const { return (flags & kRecordDerived) != 0; }
  std::optional<std::string_view> attribute(std::string_view key) const;
  // Calls f(key, value) for each attribute in order.
  template <class F>
  void for_each_attribute(F&& f) const;
};

// Decodes one stored record (format 1 or 2). Never reads outside `encoded`; on malformed input
// returns nullopt and, if `error` is given, says what is wrong. Does not verify the check (that is
// record_intact's job, with its cost).
std::optional<RecordView> decode_record(std::uint64_t seq, std::string_view encoded, std::string* error = nullptr);

// Seals a record the queue has just copied to its storage under `seq`: its check becomes the
// producer's CRC32C XOR the sequence number's (see the layout above). `stored` holds the record's
// bytes, at least kRecordHeaderBytes of format 2 (anything else is left alone).
void seal_stored_record(std::uint64_t seq, char* stored, std::size_t size);

// Whether a record stored under `seq` is intact: it decodes, and for format 2 its check matches its
// bytes and `seq`. Format 1 records have no check: they only have to decode. On failure `error`
// says what is wrong ("record 17: checksum mismatch").
bool record_intact(std::uint64_t seq, std::string_view stored, std::string* error = nullptr);

// A format-1 record re-encoded in format 2 and sealed under `seq`; nullopt when it does not decode.
std::optional<std::string> upgrade_record_v1(std::uint64_t seq, std::string_view v1);

// Only the input name of an encoded record (for route filters), or "" if malformed.
std::string_view peek_input(std::string_view encoded);
// Attributes in their encoded form (as records store them), and back. decode_attributes stops at
// the first malformed entry; the views point into `encoded`.
std::string encode_attributes(std::span<const Attribute> attributes);
std::vector<Attribute> decode_attributes(std::string_view encoded);

// Only the flags of an encoded record, or 0 if malformed.
inline std::uint8_t peek_flags(std::string_view encoded) {
  return encoded.size() >= kRecordHeaderBytesV1 ? static_cast<std::uint8_t>(encoded[1]) : 0;
}

// Records read from the queue: copies, safe to keep after the read returns.
class ReadBatch {
 public:
  ReadBatch() = default;
  ReadBatch(ReadBatch&&) noexcept = default;
  ReadBatch& operator=(ReadBatch&&) noexcept = default;

  std::span<const RecordView> records() const { return views_; }
  std::size_t size() const { return views_.size(); }
  bool empty() const { return views_.empty(); }
  // Encoded bytes of the records returned.
  std::size_t bytes() const { return arena_.size(); }
  // The sequence number of the last record examined, including records skipped by a route
  // filter; 0 when nothing was examined. Read again after this position to continue, and
  // acknowledge up to it once the records returned are delivered.
  std::uint64_t scanned_to() const { return scanned_to_; }

  // Empties the batch and keeps its memory, so that a consumer reading batch after batch into
  // the same ReadBatch (Queue::read's second form) allocates nothing once it has the size of its
  // batches: fresh megabyte buffers per read left freed memory in the allocator's arenas (6 MiB of
  // tank's resident memory, docs/BENCHMARKS.md).
  void clear();
  // The memory it holds for records and their views, in bytes (what clear() keeps).
  std::size_t capacity_bytes() const {
    return arena_.capacity() + pending_.capacity() * sizeof(pending_[0]) + views_.capacity() * sizeof(RecordView);
  }

  // Used by the queue while building the batch.
  void append(std::uint64_t seq, std::string_view encoded);
  void set_scanned_to(std::uint64_t seq) { scanned_to_ = seq; }
  // Decodes what was appended; records that do not decode are reported through `bad`.
  void finish(std::vector<std::pair<std::uint64_t, std::string>>* bad);

 private:
  std::vector<char> arena_;
  std::vector<std::pair<std::uint64_t, std::size_t>> pending_;  // seq, end offset
  std::vector<RecordView> views_;
  std::uint64_t scanned_to_ = 0;
};

namespace detail {
inline std::uint16_t load_u16(const char* p) {
  return static_cast<std::uint16_t>(static_cast<unsigned char>(p[0]) | (static_cast<unsigned char>(p[1]) << 8));
}
inline std::uint32_t load_u32(const char* p) {
  return static_cast<std::uint32_t>(load_u16(p)) | (static_cast<std::uint32_t>(load_u16(p + 2)) << 16);
}
}  // namespace detail

template <class F>
void RecordView::for_each_attribute(F&& f) const {
  std::string_view rest = attributes;
  while (rest.size() >= 6) {
    std::size_t klen = detail::load_u16(rest.data());
    std::size_t vlen = detail::load_u32(rest.data() + 2);
    if (rest.size() - 6 < klen || rest.size() - 6 - klen < vlen) return;
    f(rest.substr(6, klen), rest.substr(6 + klen, vlen));
    rest.remove_prefix(6 + klen + vlen);
  }
}

}  // namespace tank::queue
