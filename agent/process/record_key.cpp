#include "process/record_key.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "process/aggregator_detail.hpp"

namespace tank::process {

void append_value_key(std::string& out, const boost::json::value* v) {
  if (v == nullptr) {
    out.push_back('\0');  // not a tag put_group_value writes
    return;
  }
  aggregator_detail::put_group_value(out, v);
}

Key128 hash_key(std::string_view bytes) {
  const XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  return Key128{h.high64, h.low64};
}

Key128 fields_key(std::string& scratch, std::string_view input, std::span<const FieldPath> paths,
                  const boost::json::value* doc) {
  scratch.assign(input.data(), input.size());
  scratch.push_back('\0');  // input names have no NUL: the input ends here
  for (const FieldPath& p : paths) append_value_key(scratch, p.find(*doc));
  return hash_key(scratch);
}

std::string to_hex(const Key128& key) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(32, '0');
  for (int i = 0; i < 16; ++i) {
    out[static_cast<std::size_t>(15 - i)] = kDigits[(key.high >> (4 * i)) & 0xF];
    out[static_cast<std::size_t>(31 - i)] = kDigits[(key.low >> (4 * i)) & 0xF];
  }
  return out;
}

bool from_hex(std::string_view text, Key128& key) {
  if (text.size() != 32) return false;
  std::uint64_t parts[2] = {0, 0};
  for (std::size_t i = 0; i < 32; ++i) {
    const char c = text[i];
    unsigned d = 0;
    if (c >= '0' && c <= '9') {
      d = static_cast<unsigned>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      d = static_cast<unsigned>(c - 'a' + 10);
    } else {
      return false;
    }
    parts[i / 16] = (parts[i / 16] << 4) | d;
  }
  key = Key128{parts[0], parts[1]};
  return true;
}

}  // namespace tank::process
