// Line framing (input/line_framer.hpp), as the tcp, unix and file inputs use it: the same bytes
// fed whole and fed in reads of another size must give the same lines and the same oversize
// reports, every line within max_line_bytes, none holding a newline.
//
// Input: [max_line_bytes control] [read size control] bytes...

#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "input/line_framer.hpp"
#include "targets.hpp"

namespace tank::fuzz {
namespace {

struct Event {
  bool oversize = false;
  std::string bytes;  // the line, or the oversize line's head
  std::uint64_t length = 0;
  bool operator==(const Event&) const = default;
};

std::vector<Event> frame(std::string_view bytes, std::size_t max_line, std::size_t read_size) {
  std::vector<Event> events;
  input::LineFramer framer(max_line);
  auto on_line = [&](std::string_view line) { events.push_back({false, std::string(line), line.size()}); };
  auto on_oversize = [&](std::string_view head, std::uint64_t length) {
    events.push_back({true, std::string(head), length});
  };
  while (!bytes.empty()) {
    const std::string_view read = bytes.substr(0, read_size);
    framer.feed(read, on_line, on_oversize);
    require(framer.pending_bytes() <= max_line + 1, "the framer holds at most max_line_bytes + 1 bytes");
    bytes.remove_prefix(read.size());
  }
  framer.finish(on_line, on_oversize);
  require(framer.pending_bytes() == 0 && !framer.in_oversize_line(), "finish() leaves nothing held");
  return events;
}

}  // namespace

int line_framer_target(const std::uint8_t* data, std::size_t size) {
  Controls controls(data, size);
  const std::uint8_t m = controls.byte();
  // Mostly small limits, so that lines cross them often; sometimes one larger than the input.
  const std::size_t max_line = m < 0xf0 ? 1 + m % 48 : std::size_t{1} << 20;
  const std::size_t read_size = 1 + controls.byte() % 32;
  const std::string_view bytes = as_text(data, size);

  const std::vector<Event> whole = frame(bytes, max_line, bytes.size() + 1);
  for (const Event& e : whole) {
    require(e.bytes.find('\n') == std::string::npos, "no newline in a line or an oversize head");
    if (e.oversize) {
      require(e.length > max_line, "an oversize line is longer than max_line_bytes");
      require(e.bytes.size() <= queue::kMaxDeadLetterBytes, "an oversize head is at most a dead letter's size");
      require(e.bytes.size() <= e.length + 1, "an oversize head is not longer than the line");
    } else {
      require(!e.bytes.empty(), "no empty line");
      require(e.bytes.size() <= max_line, "a line is at most max_line_bytes");
    }
  }
  require(frame(bytes, max_line, read_size) == whole, "reads of another size give the same lines");
  return 0;
}

}  // namespace tank::fuzz

TANK_FUZZ_TARGET(tank::fuzz::line_framer_target)
