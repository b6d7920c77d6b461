// The dead-letter entry decoder (queue/dead_letter.hpp): the bytes of one entry as LMDB returns
// them -- written by this or an older tank, or damaged on disk -- decoded as `tank dlq list|show`
// and `tank queue verify` decode them, with their attributes (queue/record.hpp).
//
// Input: the stored entry.
// Properties: malformed bytes are refused with a reason, never read past; an entry that decodes
// encodes back to an entry that decodes to the same fields.

#include <string>

#include "fuzz_support.hpp"
#include "queue/dead_letter.hpp"
#include "queue/record.hpp"
#include "targets.hpp"

namespace tank::fuzz {

int dead_letter_target(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes = as_text(data, size);
  std::string error;
  const auto decoded = queue::decode_dead_letter(7, bytes, &error);
  if (!decoded) {
    require(!error.empty(), "a refused entry says why");
    return 0;
  }
  std::size_t attribute_bytes = 0;
  for (const auto& a : queue::decode_attributes(decoded->letter.attributes)) attribute_bytes += a.key.size() + a.value.size();
  require(attribute_bytes <= decoded->letter.attributes.size(), "attributes lie within the entry");

  const std::string again = queue::encode_dead_letter(decoded->letter, decoded->version);
  const auto round = queue::decode_dead_letter(7, again, &error);
  require(round.has_value(), "an entry re-encoded decodes");
  const queue::DeadLetter& a = decoded->letter;
  const queue::DeadLetter& b = round->letter;
  require(a.input == b.input && a.reason == b.reason && round->version == decoded->version, "names survive");
  require(a.attributes == b.attributes && a.time_ns == b.time_ns, "contents survive");
  require(a.original.size() > queue::kMaxDeadLetterBytes || a.original == b.original, "the original survives");
  require(a.detail.starts_with(b.detail), "the detail survives, perhaps shortened");
  return 0;
}

}  // namespace tank::fuzz

TANK_FUZZ_TARGET(tank::fuzz::dead_letter_target)
