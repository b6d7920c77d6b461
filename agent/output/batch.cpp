#include "output/batch.hpp"

#include <cstring>
#include <memory>
#include <stdexcept>

#include <fmt/format.h>
#include <openssl/evp.h>
#include <zlib.h>
#include <zstd.h>

#include "common/strings.hpp"

namespace tank::output {
namespace {

constexpr std::uint8_t kInFlightBatchFormat = 1;
constexpr std::size_t kInFlightBatchBytes = 1 + 8 + 8 + 8 + 4;
constexpr std::uint8_t kInFlightBatchListFormat = 2;
constexpr std::size_t kListEntryBytes = 8 + 8 + 8 + 4 + 1 + 8;

void put_u64(std::string& out, std::uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void put_u32(std::string& out, std::uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
std::uint64_t get_u(std::string_view in, std::size_t at, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(in[at + static_cast<std::size_t>(i)]);
  return v;
}

}  // namespace

std::optional<Encoding> parse_encoding(std::string_view text) {
  if (text == "ndjson") return Encoding::ndjson;
  if (text == "json_array") return Encoding::json_array;
  return std::nullopt;
}

std::optional<Compression> parse_compression(std::string_view text) {
  if (text == "zstd") return Compression::zstd;
  if (text == "gzip") return Compression::gzip;
  if (text == "none") return Compression::none;
  return std::nullopt;
}

std::string_view content_type(Encoding encoding) {
  return encoding == Encoding::ndjson ? "application/x-ndjson" : "application/json";
}

std::string_view content_encoding(Compression compression) {
  switch (compression) {
    case Compression::zstd: return "zstd";
    case Compression::gzip: return "gzip";
    case Compression::none: return "";
  }
  return "";
}

void BodyEncoder::add(std::string_view payload, PayloadKind kind) {
  if (encoding_ == Encoding::json_array) body_.push_back(records_ == 0 ? '[' : ',');
  switch (kind) {
    case PayloadKind::json:
      body_.append(payload);
      break;
    case PayloadKind::text:
      body_ += "{\"message\":";
      strings::append_json_string(body_, payload);
      body_.push_back('}');
      break;
    case PayloadKind::raw:
      body_ += "{\"message_base64\":\"";
      body_ += strings::base64(payload);
      body_ += "\"}";
      break;
  }
  if (encoding_ == Encoding::ndjson) body_.push_back('\n');
  ++records_;
}

const std::string& BodyEncoder::finish() {
  if (!finished_ && encoding_ == Encoding::json_array) body_ += records_ == 0 ? "[]" : "]";
  finished_ = true;
  return body_;
}

void BodyEncoder::clear() {
  body_.clear();
  records_ = 0;
  finished_ = false;
}

void compress(Compression compression, std::string_view in, std::string& out) {
  if (compression == Compression::none) {
    out.assign(in);
    return;
  }
  ScratchBuffer buffer;
  out.assign(Compressor(compression).compress(in, buffer));
}

Compressor::Compressor(Compression compression) : compression_(compression) {}

Compressor::~Compressor() { ZSTD_freeCCtx(zstd_); }

std::string_view Compressor::compress(std::string_view in, ScratchBuffer& buffer) {
  switch (compression_) {
    case Compression::none:
      return in;
    case Compression::zstd: {
      if (zstd_ == nullptr && (zstd_ = ZSTD_createCCtx()) == nullptr) throw std::runtime_error("zstd: out of memory");
      const std::size_t bound = ZSTD_compressBound(in.size());
      char* out = buffer.reserve(bound);
      const std::size_t n = ZSTD_compressCCtx(zstd_, out, bound, in.data(), in.size(), 3);
      if (ZSTD_isError(n)) throw std::runtime_error(fmt::format("zstd: {}", ZSTD_getErrorName(n)));
      return {out, n};
    }
    case Compression::gzip: {
      z_stream z{};
      // 15 + 16: a gzip header and trailer, not zlib's.
      if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        throw std::runtime_error("gzip: cannot initialise zlib");
      }
      const std::size_t bound = deflateBound(&z, static_cast<uLong>(in.size())) + 32;
      char* out = buffer.reserve(bound);
      z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
      z.avail_in = static_cast<uInt>(in.size());
      z.next_out = reinterpret_cast<Bytef*>(out);
      z.avail_out = static_cast<uInt>(bound);
      const int rc = deflate(&z, Z_FINISH);
      const std::size_t n = bound - z.avail_out;
      deflateEnd(&z);
      if (rc != Z_STREAM_END) throw std::runtime_error(fmt::format("gzip: deflate returned {}", rc));
      return {out, n};
    }
  }
  return in;
}

std::string idempotency_key(std::string_view agent_id, std::string_view output, std::uint64_t queue_id,
                            std::uint64_t first_seq, std::uint64_t last_seq, std::string_view uncompressed_body) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(uncompressed_body.data(), uncompressed_body.size(), digest, &length, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("SHA-256 failed");
  }
  std::uint64_t hash = 0;
  for (int i = 0; i < 8; ++i) hash = (hash << 8) | digest[i];
  return fmt::format("{}/{}/{:016x}/{}-{}/{:016x}", agent_id, output, queue_id, first_seq, last_seq, hash);
}

std::string idempotency_key(std::string_view agent_id, std::string_view output, std::uint64_t queue_id,
                            std::uint64_t first_seq, std::uint64_t last_seq,
                            std::span<const queue::RecordView* const> records) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  bool ok = ctx != nullptr && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1;
  for (const queue::RecordView* r : records) {
    unsigned char length[8];
    std::uint64_t n = r->payload.size();
    for (unsigned char& b : length) {
      b = static_cast<unsigned char>(n & 0xff);
      n >>= 8;
    }
    ok = ok && EVP_DigestUpdate(ctx.get(), length, sizeof length) == 1 &&
         EVP_DigestUpdate(ctx.get(), r->payload.data(), r->payload.size()) == 1;
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (!ok || EVP_DigestFinal_ex(ctx.get(), digest, &size) != 1) throw std::runtime_error("SHA-256 failed");
  std::uint64_t hash = 0;
  for (int i = 0; i < 8; ++i) hash = (hash << 8) | digest[i];
  return fmt::format("{}/{}/{:016x}/{}-{}/{:016x}", agent_id, output, queue_id, first_seq, last_seq, hash);
}

std::string encode_in_flight_batch(const InFlightBatch& batch) {
  std::string out;
  out.reserve(kInFlightBatchBytes);
  out.push_back(static_cast<char>(kInFlightBatchFormat));
  put_u64(out, batch.first_seq);
  put_u64(out, batch.last_seq);
  put_u64(out, batch.ack_seq);
  put_u32(out, batch.records);
  return out;
}

std::optional<InFlightBatch> decode_in_flight_batch(std::string_view bytes, std::string* error) {
  auto fail = [&](std::string why) -> std::optional<InFlightBatch> {
    if (error != nullptr) *error = std::move(why);
    return std::nullopt;
  };
  if (bytes.size() != kInFlightBatchBytes) return fail(fmt::format("{} bytes, not {}", bytes.size(), kInFlightBatchBytes));
  if (static_cast<std::uint8_t>(bytes[0]) != kInFlightBatchFormat) {
    return fail(fmt::format("format {} is not {}", static_cast<unsigned>(static_cast<std::uint8_t>(bytes[0])),
                            kInFlightBatchFormat));
  }
  InFlightBatch b;
  b.first_seq = get_u(bytes, 1, 8);
  b.last_seq = get_u(bytes, 9, 8);
  b.ack_seq = get_u(bytes, 17, 8);
  b.records = static_cast<std::uint32_t>(get_u(bytes, 25, 4));
  if (b.first_seq == 0 || b.first_seq > b.last_seq || b.last_seq > b.ack_seq || b.records == 0 ||
      b.records > b.last_seq - b.first_seq + 1) {
    return fail("inconsistent boundaries");
  }
  return b;
}

std::string encode_in_flight_batches(const std::vector<InFlightBatch>& batches) {
  std::string out;
  out.reserve(5 + batches.size() * kListEntryBytes);
  out.push_back(static_cast<char>(kInFlightBatchListFormat));
  put_u32(out, static_cast<std::uint32_t>(batches.size()));
  for (const InFlightBatch& b : batches) {
    put_u64(out, b.first_seq);
    put_u64(out, b.last_seq);
    put_u64(out, b.ack_seq);
    put_u32(out, b.records);
    out.push_back(b.done ? 1 : 0);
    put_u64(out, b.rejected_through);
  }
  return out;
}

std::string encode_open_state(const std::vector<InFlightBatch>& batches) {
  if (batches.size() == 1 && !batches.front().done && batches.front().rejected_through == 0) {
    return encode_in_flight_batch(batches.front());
  }
  return encode_in_flight_batches(batches);
}

std::optional<std::vector<InFlightBatch>> decode_in_flight_batches(std::string_view bytes, std::string* error) {
  auto fail = [&](std::string why) -> std::optional<std::vector<InFlightBatch>> {
    if (error != nullptr) *error = std::move(why);
    return std::nullopt;
  };
  if (!bytes.empty() && static_cast<std::uint8_t>(bytes[0]) == kInFlightBatchFormat) {
    auto one = decode_in_flight_batch(bytes, error);
    if (!one) return std::nullopt;
    return std::vector<InFlightBatch>{*one};
  }
  if (bytes.size() < 5 || static_cast<std::uint8_t>(bytes[0]) != kInFlightBatchListFormat) {
    return fail(bytes.empty() ? "empty" : fmt::format("format {} is neither {} nor {}",
                                                      static_cast<unsigned>(static_cast<std::uint8_t>(bytes[0])),
                                                      kInFlightBatchFormat, kInFlightBatchListFormat));
  }
  const std::size_t count = get_u(bytes, 1, 4);
  if (bytes.size() != 5 + count * kListEntryBytes) {
    return fail(fmt::format("{} bytes for {} batches", bytes.size(), count));
  }
  std::vector<InFlightBatch> out;
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t at = 5 + i * kListEntryBytes;
    InFlightBatch b;
    b.first_seq = get_u(bytes, at, 8);
    b.last_seq = get_u(bytes, at + 8, 8);
    b.ack_seq = get_u(bytes, at + 16, 8);
    b.records = static_cast<std::uint32_t>(get_u(bytes, at + 24, 4));
    b.done = bytes[at + 28] != 0;
    b.rejected_through = get_u(bytes, at + 29, 8);
    if (b.first_seq == 0 || b.first_seq > b.last_seq || b.last_seq > b.ack_seq || b.records == 0 ||
        b.records > b.last_seq - b.first_seq + 1) {
      return fail(fmt::format("batch {}: inconsistent boundaries", i + 1));
    }
    if (!out.empty() && b.first_seq <= out.back().ack_seq) return fail(fmt::format("batch {}: out of order", i + 1));
    out.push_back(b);
  }
  return out;
}

}  // namespace tank::output
