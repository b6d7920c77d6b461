#include "queue/record.hpp"

#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

#include "common/crc32c.hpp"

namespace tank::queue {
namespace {

void put_u16(char* p, std::uint16_t v) {
  p[0] = static_cast<char>(v & 0xff);
  p[1] = static_cast<char>(v >> 8);
}
void put_u32(char* p, std::uint32_t v) {
  put_u16(p, static_cast<std::uint16_t>(v & 0xffff));
  put_u16(p + 2, static_cast<std::uint16_t>(v >> 16));
}
void put_u64(char* p, std::uint64_t v) {
  put_u32(p, static_cast<std::uint32_t>(v & 0xffffffffULL));
  put_u32(p + 4, static_cast<std::uint32_t>(v >> 32));
}
std::uint64_t load_u64(const char* p) {
  return static_cast<std::uint64_t>(detail::load_u32(p)) | (static_cast<std::uint64_t>(detail::load_u32(p + 4)) << 32);
}
// Whether a length fits a 32-bit length field. Always true where size_t has 32 bits (armhf); a
// function, so that the comparison is on 64 bits there too and not flagged by -Wtype-limits.
constexpr bool fits_u32(std::uint64_t n) { return n <= 0xffffffffULL; }

// The header size of a record's format; 0 for an unknown format.
std::size_t header_bytes(std::string_view encoded) {
  if (encoded.empty()) return 0;
  switch (static_cast<unsigned char>(encoded[0])) {
    case 1: return kRecordHeaderBytesV1;
    case 2: return kRecordHeaderBytes;
    default: return 0;
  }
}

// The CRC32C of a format-2 record without its check field.
std::uint32_t body_crc(const char* p, std::size_t size) {
  std::uint32_t crc = crc32c::value(p, kRecordCheckOffset);
  return crc32c::extend(crc, p + kRecordHeaderBytes, size - kRecordHeaderBytes);
}

std::uint32_t seq_mask(std::uint64_t seq) {
  unsigned char key[8];
  for (int i = 7; i >= 0; --i) {
    key[i] = static_cast<unsigned char>(seq & 0xff);
    seq >>= 8;
  }
  return crc32c::value(key, sizeof key);
}

}  // namespace

void EncodedRecords::reserve(std::size_t records, std::size_t bytes) {
  ends_.reserve(records);
  arena_.reserve(bytes);
}

std::size_t encoded_record_bytes(std::string_view input, std::size_t payload_bytes,
                                 std::span<const Attribute> attributes) {
  std::size_t n = kRecordHeaderBytes + input.size() + payload_bytes;
  for (const Attribute& a : attributes) n += 6 + a.key.size() + a.value.size();
  return n;
}

void EncodedRecords::add_encoded(std::string_view encoded) {
  arena_.append(encoded);
  ends_.push_back(arena_.size());
}

void EncodedRecords::add(std::string_view input, std::int64_t ingest_ns, std::string_view payload,
                      std::span<const Attribute> attributes, std::uint8_t flags) {
  if (input.size() > kMaxInputNameBytes) {
    throw std::invalid_argument(fmt::format("input name longer than {} bytes", kMaxInputNameBytes));
  }
  std::size_t attr_bytes = 0;
  for (const Attribute& a : attributes) {
    if (a.key.size() > 0xffff || !fits_u32(a.value.size())) {
      throw std::invalid_argument("record attribute too long");
    }
    attr_bytes += 6 + a.key.size() + a.value.size();
  }
  if (!fits_u32(attr_bytes)) throw std::invalid_argument("record attributes too long");
  std::size_t start = arena_.size();
  arena_.resize(start + kRecordHeaderBytes + input.size() + attr_bytes + payload.size());
  char* p = arena_.data() + start;
  char* const record = p;
  p[0] = static_cast<char>(kRecordFormat);
  p[1] = static_cast<char>(flags);
  put_u16(p + 2, static_cast<std::uint16_t>(input.size()));
  put_u32(p + 4, static_cast<std::uint32_t>(attr_bytes));
  put_u64(p + 8, static_cast<std::uint64_t>(ingest_ns));
  p += kRecordHeaderBytes;
  std::memcpy(p, input.data(), input.size());
  p += input.size();
  for (const Attribute& a : attributes) {
    put_u16(p, static_cast<std::uint16_t>(a.key.size()));
    put_u32(p + 2, static_cast<std::uint32_t>(a.value.size()));
    p += 6;
    std::memcpy(p, a.key.data(), a.key.size());
    p += a.key.size();
    std::memcpy(p, a.value.data(), a.value.size());
    p += a.value.size();
  }
  if (!payload.empty()) std::memcpy(p, payload.data(), payload.size());
  put_u32(record + kRecordCheckOffset, body_crc(record, arena_.size() - start));
  ends_.push_back(arena_.size());
}

void EncodedRecords::add_with_attributes(std::string_view input, std::int64_t ingest_ns, std::string_view payload,
                                         std::string_view encoded_attributes, std::uint8_t flags) {
  if (input.size() > kMaxInputNameBytes) {
    throw std::invalid_argument(fmt::format("input name longer than {} bytes", kMaxInputNameBytes));
  }
  if (!fits_u32(encoded_attributes.size())) throw std::invalid_argument("record attributes too long");
  std::size_t start = arena_.size();
  arena_.resize(start + kRecordHeaderBytes + input.size() + encoded_attributes.size() + payload.size());
  char* p = arena_.data() + start;
  char* const record = p;
  p[0] = static_cast<char>(kRecordFormat);
  p[1] = static_cast<char>(flags);
  put_u16(p + 2, static_cast<std::uint16_t>(input.size()));
  put_u32(p + 4, static_cast<std::uint32_t>(encoded_attributes.size()));
  put_u64(p + 8, static_cast<std::uint64_t>(ingest_ns));
  p += kRecordHeaderBytes;
  std::memcpy(p, input.data(), input.size());
  p += input.size();
  if (!encoded_attributes.empty()) std::memcpy(p, encoded_attributes.data(), encoded_attributes.size());
  p += encoded_attributes.size();
  if (!payload.empty()) std::memcpy(p, payload.data(), payload.size());
  put_u32(record + kRecordCheckOffset, body_crc(record, arena_.size() - start));
  ends_.push_back(arena_.size());
}

std::string_view EncodedRecords::encoded(std::size_t i) const {
  std::size_t begin = i == 0 ? 0 : ends_[i - 1];
  return std::string_view(arena_).substr(begin, ends_[i] - begin);
}

void EncodedRecords::clear() {
  arena_.clear();
  ends_.clear();
}

std::optional<RecordView> decode_record(std::uint64_t seq, std::string_view encoded, std::string* error) {
  auto fail = [&](std::string message) -> std::optional<RecordView> {
    if (error) *error = fmt::format("record {}: {}", seq, message);
    return std::nullopt;
  };
  if (encoded.empty()) return fail(fmt::format("0 bytes is shorter than the {}-byte header", kRecordHeaderBytes));
  const char* p = encoded.data();
  const std::size_t header = header_bytes(encoded);
  if (header == 0) {
    return fail(fmt::format("unknown record format {}", static_cast<unsigned>(static_cast<unsigned char>(p[0]))));
  }
  if (encoded.size() < header) {
    return fail(fmt::format("{} bytes is shorter than the {}-byte header", encoded.size(), header));
  }
  std::size_t input_len = detail::load_u16(p + 2);
  std::size_t attr_len = detail::load_u32(p + 4);
  std::size_t rest = encoded.size() - header;
  if (input_len > rest || attr_len > rest - input_len) {
    return fail("lengths in the header exceed the record");
  }
  RecordView view;
  view.seq = seq;
  view.ingest_ns = static_cast<std::int64_t>(load_u64(p + 8));
  view.input = encoded.substr(header, input_len);
  view.attributes = encoded.substr(header + input_len, attr_len);
  view.payload = encoded.substr(header + input_len + attr_len);
  view.encoded_bytes = encoded.size();
  view.flags = static_cast<std::uint8_t>(p[1]);
  // Attributes must tile their block exactly.
  std::string_view a = view.attributes;
  while (!a.empty()) {
    if (a.size() < 6) return fail("truncated attribute");
    std::size_t klen = detail::load_u16(a.data());
    std::size_t vlen = detail::load_u32(a.data() + 2);
    if (a.size() - 6 < klen || a.size() - 6 - klen < vlen) return fail("attribute exceeds its block");
    a.remove_prefix(6 + klen + vlen);
  }
  return view;
}

void seal_stored_record(std::uint64_t seq, char* stored, std::size_t size) {
  if (size < kRecordHeaderBytes || static_cast<unsigned char>(stored[0]) != kRecordFormat) return;
  put_u32(stored + kRecordCheckOffset, detail::load_u32(stored + kRecordCheckOffset) ^ seq_mask(seq));
}

bool record_intact(std::uint64_t seq, std::string_view stored, std::string* error) {
  if (!decode_record(seq, stored, error)) return false;
  if (static_cast<unsigned char>(stored[0]) == 1) return true;  // format 1: no check
  const std::uint32_t expected = body_crc(stored.data(), stored.size()) ^ seq_mask(seq);
  if (detail::load_u32(stored.data() + kRecordCheckOffset) != expected) {
    if (error) *error = fmt::format("record {}: checksum mismatch (its bytes or its key changed)", seq);
    return false;
  }
  return true;
}

std::optional<std::string> upgrade_record_v1(std::uint64_t seq, std::string_view v1) {
  if (v1.empty() || static_cast<unsigned char>(v1[0]) != 1 || !decode_record(seq, v1)) return std::nullopt;
  std::string out;
  out.reserve(v1.size() + 4);
  out.append(v1.substr(0, kRecordHeaderBytesV1));
  out.append(4, '\0');
  out.append(v1.substr(kRecordHeaderBytesV1));
  out[0] = static_cast<char>(kRecordFormat);
  put_u32(out.data() + kRecordCheckOffset, body_crc(out.data(), out.size()));
  seal_stored_record(seq, out.data(), out.size());
  return out;
}

std::string encode_attributes(std::span<const Attribute> attributes) {
  std::string out;
  for (const Attribute& a : attributes) {
    if (a.key.size() > 0xffff || !fits_u32(a.value.size())) continue;
    char header[6];
    put_u16(header, static_cast<std::uint16_t>(a.key.size()));
    put_u32(header + 2, static_cast<std::uint32_t>(a.value.size()));
    out.append(header, sizeof header).append(a.key).append(a.value);
  }
  return out;
}

std::vector<Attribute> decode_attributes(std::string_view encoded) {
  std::vector<Attribute> out;
  RecordView view;
  view.attributes = encoded;
  view.for_each_attribute([&](std::string_view k, std::string_view v) { out.push_back({k, v}); });
  return out;
}

std::string_view peek_input(std::string_view encoded) {
  const std::size_t header = header_bytes(encoded);
  if (header == 0 || encoded.size() < header) return {};
  std::size_t input_len = detail::load_u16(encoded.data() + 2);
  if (input_len > encoded.size() - header) return {};
  return encoded.substr(header, input_len);
}

std::optional<std::string_view> RecordView::attribute(std::string_view key) const {
  std::optional<std::string_view> found;
  for_each_attribute([&](std::string_view k, std::string_view v) {
    if (!found && k == key) found = v;
  });
  return found;
}

void ReadBatch::clear() {
  arena_.clear();
  pending_.clear();
  views_.clear();
  scanned_to_ = 0;
}

void ReadBatch::append(std::uint64_t seq, std::string_view encoded) {
  arena_.insert(arena_.end(), encoded.begin(), encoded.end());
  pending_.emplace_back(seq, arena_.size());
}

void ReadBatch::finish(std::vector<std::pair<std::uint64_t, std::string>>* bad) {
  views_.clear();
  views_.reserve(pending_.size());
  std::size_t begin = 0;
  std::string_view all(arena_.data(), arena_.size());
  for (auto [seq, end] : pending_) {
    std::string error;
    if (auto view = decode_record(seq, all.substr(begin, end - begin), &error)) {
      views_.push_back(*view);
    } else if (bad) {
      bad->emplace_back(seq, std::move(error));
    }
    begin = end;
  }
  pending_.clear();
}

}  // namespace tank::queue
