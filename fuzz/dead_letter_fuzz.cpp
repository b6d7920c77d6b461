// The dead-letter entry decoder (queue/dead_letter.hpp): the bytes of one entry as LMDB returns
// them -- written by this or an older tank, or damaged on disk -- decoded as `tank dlq list|show`
// and `tank queue verify` decode them, with their attributes (queue/record.hpp).
//
// Input: the stored entry.
// Properties: malformed bytes are refused with a reason, never read past; an entry that decodes
// encodes back to an entry that decodes to the same fields; shrunk to fit a commit
// (queue::shrink_to_fit) it fits, keeps its names and the start of its original, and decodes.

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

  // Shrunk to fit a commit of some size (the input's batch does this to every dead letter): it
  // then fits, keeps its input and reason, and still decodes; its original only gets shorter.
  const std::size_t sizes[] = {600, 700 + size % 4096, 64 << 10};
  for (std::size_t limit : sizes) {
    queue::DeadLetter shrunk = a;
    const bool fits = queue::shrink_to_fit(shrunk, limit);
    require(!fits || queue::commit_bytes(shrunk) <= limit, "a dead letter that fits is within the limit");
    require(fits || 64 + a.input.size() + a.reason.size() + 256 > limit, "only a tiny limit does not fit");
    require(shrunk.input == a.input && shrunk.reason == a.reason, "input and reason are never cut");
    require(a.original.starts_with(shrunk.original), "the original is only cut at its end");
    require(shrunk.original.size() == a.original.size() || shrunk.original_size >= a.original.size(),
            "a cut original keeps its size");
    require(queue::decode_dead_letter(7, queue::encode_dead_letter(shrunk, decoded->version)).has_value(),
            "a shrunk entry decodes");
  }
  return 0;
}

}  // namespace tank::fuzz

TANK_FUZZ_TARGET(tank::fuzz::dead_letter_target)
