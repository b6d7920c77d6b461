#include "tail_state.hpp"

#include <algorithm>

namespace tank::input::tail {

std::string encode_checkpoint(const Checkpoint& c) {
  std::string out = "F1";
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((c.offset >> (8 * i)) & 0xff));
  auto fp = static_cast<std::uint16_t>(std::min<std::size_t>(c.fingerprint.size(), 0xffff));
  out.push_back(static_cast<char>(fp & 0xff));
  out.push_back(static_cast<char>(fp >> 8));
  out.append(c.fingerprint, 0, fp);
  out.append(c.path);
  return out;
}

std::optional<Checkpoint> decode_checkpoint(std::string_view v) {
  if (v.size() < 12 || v.substr(0, 2) != "F1") return std::nullopt;
  Checkpoint c;
  for (int i = 0; i < 8; ++i) c.offset |= static_cast<std::uint64_t>(static_cast<unsigned char>(v[2 + i])) << (8 * i);
  std::size_t fp = static_cast<unsigned char>(v[10]) | (static_cast<std::size_t>(static_cast<unsigned char>(v[11])) << 8);
  if (v.size() < 12 + fp) return std::nullopt;
  c.fingerprint = std::string(v.substr(12, fp));
  c.path = std::string(v.substr(12 + fp));
  return c;
}

}  // namespace tank::input::tail
