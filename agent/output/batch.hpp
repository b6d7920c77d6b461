#pragma once

// Batches as outputs send them: the body (encoding and compression), the idempotency key, and
// the boundaries of the batch in flight as they are kept in the queue's state.
//
// Idempotency key (documented in docs/outputs.md, stable across versions):
//
//   <agent_id>/<output>/<queue id>/<first_seq>-<last_seq>/<content hash>
//
//   queue id       16 hex digits: Queue::id(), drawn when the queue was created, so a queue that
//                  was moved aside and a fresh one (whose sequence numbers start again) never
//                  give the same key
//   first, last    decimal: the queue sequence numbers the batch spans
//   content hash   16 hex digits: the first 8 bytes of the SHA-256 of the encoded, uncompressed
//                  body, so the same range with other content (records evicted by drop_oldest,
//                  a configuration that now routes other inputs here) never reuses a key; for an
//                  output that sends each record on its own (outputs.kafka), which gets no body,
//                  of the records: each payload preceded by its length (8 bytes, little-endian)
//
// Agent ids and output names are letters, digits, '.', '_' and '-', so the key is safe in an HTTP
// header and an MQTT user property as it is.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "queue/record.hpp"

struct ZSTD_CCtx_s;

namespace tank::output {

enum class Encoding { ndjson, json_array };
enum class Compression { zstd, gzip, none };

std::optional<Encoding> parse_encoding(std::string_view text);          // "ndjson", "json_array"
std::optional<Compression> parse_compression(std::string_view text);    // "zstd", "gzip", "none"
std::string_view content_type(Encoding encoding);          // "application/x-ndjson", "application/json"
std::string_view content_encoding(Compression compression);  // "zstd", "gzip", ""

// How a record's payload goes into a body: a JSON value as it is (JSON inputs, aggregates), text
// as {"message": "<text>"} (the route checked it is UTF-8), anything else as
// {"message_base64": "<base64>"}.
enum class PayloadKind { json, text, raw };

// Builds one body. Not thread-safe; reuse it for the next batch with clear().
class BodyEncoder {
 public:
  explicit BodyEncoder(Encoding encoding) : encoding_(encoding) {}
  void add(std::string_view payload, PayloadKind kind);
  // Room for `bytes` more, so that adding them does not grow the body step by step.
  void reserve(std::size_t bytes) { body_.reserve(body_.size() + bytes); }
  // The finished body (closes a JSON array). add() must not follow until clear().
  const std::string& finish();
  // Empties the body for the next batch, keeping its memory.
  void clear();
  // Starts a body of another encoding (clears it).
  void reset(Encoding encoding) {
    clear();
    encoding_ = encoding;
  }
  std::size_t records() const { return records_; }

 private:
  Encoding encoding_;
  std::string body_;
  std::size_t records_ = 0;
  bool finished_ = false;
};

// Compresses `in` into `out` (replacing its content); none copies. zstd at level 3, gzip at level
// 6 (the libraries' defaults). Throws std::runtime_error only when the library fails (out of
// memory).
void compress(Compression compression, std::string_view in, std::string& out);

// Bytes for a compressed body, grown and never zeroed: std::string::resize zeroes, which made the
// whole bound resident (ZSTD_compressBound of a megabyte body) where a tenth of it is written.
class ScratchBuffer {
 public:
  // At least `bytes` bytes, their content undefined until written.
  char* reserve(std::size_t bytes) {
    if (bytes > capacity_) {
      data_.reset(new char[bytes]);  // not value-initialised: not zeroed, not touched
      capacity_ = bytes;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<char[]> data_;
  std::size_t capacity_ = 0;
};

// Compresses body after body as compress() does, keeping its zstd context from one to the next:
// creating a context and clearing its tables for every batch cost more than compressing the batch
// (docs/BENCHMARKS.md, issue 23). Not thread-safe.
class Compressor {
 public:
  explicit Compressor(Compression compression);
  ~Compressor();
  Compressor(const Compressor&) = delete;
  Compressor& operator=(const Compressor&) = delete;

  // Compresses `in` into `buffer` and returns the compressed bytes (a view into `buffer`, valid
  // until it is used again); with Compression::none returns `in` itself, not copied. Throws
  // std::runtime_error only when the library fails (out of memory).
  std::string_view compress(std::string_view in, ScratchBuffer& buffer);

 private:
  Compression compression_;
  ZSTD_CCtx_s* zstd_ = nullptr;
};

std::string idempotency_key(std::string_view agent_id, std::string_view output, std::uint64_t queue_id,
                            std::uint64_t first_seq, std::uint64_t last_seq, std::string_view uncompressed_body);
// The key of a batch sent record by record: its content hash is over the records' payloads.
std::string idempotency_key(std::string_view agent_id, std::string_view output, std::uint64_t queue_id,
                            std::uint64_t first_seq, std::uint64_t last_seq,
                            std::span<const queue::RecordView* const> records);

// A batch in flight, committed to the queue's state before its first send and deleted in the
// transaction that acknowledges it. After a restart the same records are read again from it.
struct InFlightBatch {
  std::uint64_t first_seq = 0;  // the first and last record in the batch
  std::uint64_t last_seq = 0;
  std::uint64_t ack_seq = 0;    // the position to acknowledge once it is done (>= last_seq:
                                // records after last_seq the output does not take are passed too)
  std::uint32_t records = 0;
  // Delivered or dead-lettered, but not acknowledged yet because a batch before it is still in
  // flight (max_in_flight > 1): not sent again after a restart.
  bool done = false;
  // The upstream refused the batch for good and its records up to this one are in the
  // dead-letter store already (a refused batch is dead-lettered in commits that fit the queue's
  // largest commit); 0: none. A restart sends the batch again and dead-letters only the rest.
  std::uint64_t rejected_through = 0;

  bool operator==(const InFlightBatch&) const = default;
};

// One batch (format 1, 29 bytes, never done) or a list in queue order (format 2: count, then
// each batch with its done flag and rejected_through).
std::string encode_in_flight_batch(const InFlightBatch& batch);
std::string encode_in_flight_batches(const std::vector<InFlightBatch>& batches);
// What the state stores for `batches`: format 1 for one batch that is neither done nor partly
// dead-lettered (what max_in_flight = 1 writes), format 2 otherwise.
std::string encode_open_state(const std::vector<InFlightBatch>& batches);
// nullopt (and `error`) for bytes that are not an InFlightBatch of format 1.
std::optional<InFlightBatch> decode_in_flight_batch(std::string_view bytes, std::string* error = nullptr);
// Either format; nullopt (and `error`) for anything else, or batches out of order or overlapping.
std::optional<std::vector<InFlightBatch>> decode_in_flight_batches(std::string_view bytes, std::string* error = nullptr);

}  // namespace tank::output
