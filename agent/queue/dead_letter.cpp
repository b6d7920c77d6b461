#include "queue/dead_letter.hpp"

#include <cstring>

#include <fmt/format.h>

namespace tank::queue {
namespace {

constexpr std::size_t kHeaderV1 = 32;
constexpr std::size_t kHeaderV2 = 36;  // + u32 attributes length

template <class T>
void put(std::string& out, std::size_t at, T value) {
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    out[at + i] = static_cast<char>((static_cast<std::uint64_t>(value) >> (8 * i)) & 0xff);
  }
}

template <class T>
T get(std::string_view in, std::size_t at) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(in[at + i])) << (8 * i);
  }
  return static_cast<T>(v);
}

std::string_view clip(std::string_view s, std::size_t max) { return s.substr(0, std::min(s.size(), max)); }
// Whether a length fits a 32-bit length field (always true where size_t has 32 bits; a function,
// so that the comparison is not flagged by -Wtype-limits there).
constexpr bool fits_u32(std::uint64_t n) { return n <= 0xffffffffULL; }

}  // namespace

DeadLetter DeadLetter::make(std::string_view input, std::string_view reason, std::string detail,
                            std::string_view original, std::int64_t time_ns) {
  DeadLetter d;
  d.input = std::string(input);
  d.reason = std::string(reason);
  d.detail = std::move(detail);
  d.original = std::string(clip(original, kMaxDeadLetterBytes));
  d.original_size = original.size();
  d.time_ns = time_ns;
  return d;
}

std::size_t commit_bytes(const DeadLetter& d) {
  return 64 + d.input.size() + d.reason.size() + std::min(d.detail.size(), kMaxDeadLetterDetailBytes) +
         std::min(d.original.size(), kMaxDeadLetterBytes) + d.attributes.size();
}

bool shrink_to_fit(DeadLetter& d, std::size_t max_bytes) {
  if (commit_bytes(d) <= max_bytes) return true;
  if (d.original_size < d.original.size()) d.original_size = d.original.size();
  if (d.detail.size() > kMaxDeadLetterDetailBytes) d.detail.resize(kMaxDeadLetterDetailBytes);
  if (d.original.size() > kMaxDeadLetterBytes) d.original.resize(kMaxDeadLetterBytes);
  const std::size_t fixed = 64 + d.input.size() + d.reason.size();
  if (fixed + d.attributes.size() + std::min<std::size_t>(d.detail.size(), 256) > max_bytes) d.attributes.clear();
  const std::size_t room = max_bytes > fixed + d.attributes.size() ? max_bytes - fixed - d.attributes.size() : 0;
  if (d.detail.size() + d.original.size() > room) {
    const std::size_t detail_room = std::min(room, std::max<std::size_t>(256, room / 4));
    if (d.detail.size() > detail_room) {
      d.detail.resize(detail_room >= 3 ? detail_room - 3 : 0);
      if (detail_room >= 3) d.detail += "...";
    }
    const std::size_t original_room = room > d.detail.size() ? room - d.detail.size() : 0;
    if (d.original.size() > original_room) d.original.resize(original_room);
  }
  return commit_bytes(d) <= max_bytes;
}

std::string encode_dead_letter(const DeadLetter& letter, std::string_view version) {
  std::string_view input = clip(letter.input, 0xffff);
  std::string_view reason = clip(letter.reason, 0xffff);
  std::string_view ver = clip(version, 0xffff);
  std::string_view detail = clip(letter.detail, kMaxDeadLetterDetailBytes);
  std::string_view original = clip(letter.original, kMaxDeadLetterBytes);
  std::uint64_t size = std::max<std::uint64_t>(letter.original_size, letter.original.size());
  std::string_view attributes = fits_u32(letter.attributes.size()) ? std::string_view(letter.attributes) : "";
  std::string out(kHeaderV2, '\0');
  out[0] = 2;
  out[1] = original.size() < size ? 1 : 0;
  put<std::uint16_t>(out, 2, static_cast<std::uint16_t>(input.size()));
  put<std::uint16_t>(out, 4, static_cast<std::uint16_t>(reason.size()));
  put<std::uint16_t>(out, 6, static_cast<std::uint16_t>(ver.size()));
  put<std::uint32_t>(out, 8, static_cast<std::uint32_t>(detail.size()));
  put<std::uint32_t>(out, 12, static_cast<std::uint32_t>(original.size()));
  put<std::uint64_t>(out, 16, size);
  put<std::uint64_t>(out, 24, static_cast<std::uint64_t>(letter.time_ns));
  put<std::uint32_t>(out, 32, static_cast<std::uint32_t>(attributes.size()));
  out.append(input).append(reason).append(ver).append(detail).append(attributes).append(original);
  return out;
}

std::optional<StoredDeadLetter> decode_dead_letter(std::uint64_t id, std::string_view in, std::string* error) {
  auto fail = [&](std::string why) -> std::optional<StoredDeadLetter> {
    if (error) *error = fmt::format("dead letter {}: {}", id, why);
    return std::nullopt;
  };
  if (in.size() < kHeaderV1) return fail("shorter than its header");
  const unsigned format = static_cast<unsigned char>(in[0]);
  if (format != 1 && format != 2) return fail(fmt::format("unknown format {}", format));
  const std::size_t header = format == 1 ? kHeaderV1 : kHeaderV2;
  if (in.size() < header) return fail("shorter than its header");
  const std::size_t attributes_len = format == 1 ? 0 : get<std::uint32_t>(in, 32);
  std::size_t input_len = get<std::uint16_t>(in, 2);
  std::size_t reason_len = get<std::uint16_t>(in, 4);
  std::size_t version_len = get<std::uint16_t>(in, 6);
  std::size_t detail_len = get<std::uint32_t>(in, 8);
  std::size_t original_len = get<std::uint32_t>(in, 12);
  std::size_t total = header + input_len + reason_len + version_len;
  if (total > in.size() || detail_len > in.size() - total) return fail("lengths exceed the entry");
  total += detail_len;
  if (attributes_len > in.size() - total) return fail("lengths exceed the entry");
  total += attributes_len;
  if (original_len != in.size() - total) return fail("lengths do not match the entry");
  StoredDeadLetter s;
  s.id = id;
  s.truncated = (static_cast<unsigned char>(in[1]) & 1) != 0;
  std::size_t at = header;
  s.letter.input = std::string(in.substr(at, input_len));
  at += input_len;
  s.letter.reason = std::string(in.substr(at, reason_len));
  at += reason_len;
  s.version = std::string(in.substr(at, version_len));
  at += version_len;
  s.letter.detail = std::string(in.substr(at, detail_len));
  at += detail_len;
  s.letter.attributes = std::string(in.substr(at, attributes_len));
  at += attributes_len;
  s.letter.original = std::string(in.substr(at));
  s.letter.original_size = get<std::uint64_t>(in, 16);
  s.letter.time_ns = static_cast<std::int64_t>(get<std::uint64_t>(in, 24));
  return s;
}

}  // namespace tank::queue
