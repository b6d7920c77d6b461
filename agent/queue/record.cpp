#include "queue/record.hpp"

#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

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

}  // namespace

void RecordBatch::reserve(std::size_t records, std::size_t bytes) {
  ends_.reserve(records);
  arena_.reserve(bytes);
}

void RecordBatch::add(std::string_view input, std::int64_t ingest_ns, std::string_view payload,
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
  p[0] = 1;
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
  ends_.push_back(arena_.size());
}

std::string_view RecordBatch::encoded(std::size_t i) const {
  std::size_t begin = i == 0 ? 0 : ends_[i - 1];
  return std::string_view(arena_).substr(begin, ends_[i] - begin);
}

void RecordBatch::clear() {
  arena_.clear();
  ends_.clear();
}

std::optional<RecordView> decode_record(std::uint64_t seq, std::string_view encoded, std::string* error) {
  auto fail = [&](std::string message) -> std::optional<RecordView> {
    if (error) *error = fmt::format("record {}: {}", seq, message);
    return std::nullopt;
  };
  if (encoded.size() < kRecordHeaderBytes) {
    return fail(fmt::format("{} bytes is shorter than the {}-byte header", encoded.size(), kRecordHeaderBytes));
  }
  const char* p = encoded.data();
  if (static_cast<unsigned char>(p[0]) != 1) {
    return fail(fmt::format("unknown record format {}", static_cast<unsigned>(static_cast<unsigned char>(p[0]))));
  }
  std::size_t input_len = detail::load_u16(p + 2);
  std::size_t attr_len = detail::load_u32(p + 4);
  std::size_t rest = encoded.size() - kRecordHeaderBytes;
  if (input_len > rest || attr_len > rest - input_len) {
    return fail("lengths in the header exceed the record");
  }
  RecordView view;
  view.seq = seq;
  view.ingest_ns = static_cast<std::int64_t>(load_u64(p + 8));
  view.input = encoded.substr(kRecordHeaderBytes, input_len);
  view.attributes = encoded.substr(kRecordHeaderBytes + input_len, attr_len);
  view.payload = encoded.substr(kRecordHeaderBytes + input_len + attr_len);
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
  if (encoded.size() < kRecordHeaderBytes) return {};
  std::size_t input_len = detail::load_u16(encoded.data() + 2);
  if (input_len > encoded.size() - kRecordHeaderBytes) return {};
  return encoded.substr(kRecordHeaderBytes, input_len);
}

std::optional<std::string_view> RecordView::attribute(std::string_view key) const {
  std::optional<std::string_view> found;
  for_each_attribute([&](std::string_view k, std::string_view v) {
    if (!found && k == key) found = v;
  });
  return found;
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
