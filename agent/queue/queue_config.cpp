#include "queue/queue_config.hpp"

#include <unistd.h>

#include <fmt/format.h>

#include "common/units.hpp"

namespace tank::queue {
namespace {

using config::Option;
using config::Type;

constexpr std::string_view kModes[] = {"disk", "memory"};
constexpr std::string_view kFsyncModes[] = {"always", "interval", "never"};
constexpr std::string_view kOverflow[] = {"block", "drop_oldest", "drop_newest"};

// max_disk_bytes' lower bound, in the table below and in map_too_large().
constexpr std::string_view kSmallestMaxDiskBytes = "256KiB";

const Option kOptions[] = {
    {.name = "mode",
     .type = Type::choice,
     .default_value = "\"disk\"",
     .description = "\"disk\": every record is committed to the LMDB queue before its source is acknowledged "
                    "(survives kill -9; with fsync = \"always\" also power loss). \"memory\": records are held in RAM "
                    "up to max_memory_bytes and written to LMDB beyond that and at shutdown; faster, but a crash "
                    "loses the records held in RAM.",
     .choices = kModes},
    {.name = "max_disk_bytes",
     .type = Type::size,
     .default_value = "\"1GiB\"",
     .description = "Bound on the LMDB pages used by queued records, consumer positions and component state. "
                    "The file data.mdb may exceed it by a margin of 4 x max_disk_bytes/64 (at most 16 MiB) + "
                    "max_disk_bytes/128 + 1 MiB for copy-on-write pages. When reached, `overflow` applies. A 32-bit "
                    "tank (armhf) maps at most 1536MiB (1.5 GiB) for max_disk_bytes + that margin + "
                    "dead_letter.max_bytes + 1/128 of it, so with the default dead_letter.max_bytes max_disk_bytes "
                    "may be at most 1443MiB there; `tank check` names the largest for the dead_letter.max_bytes set.",
     .min = kSmallestMaxDiskBytes,
     .max = "1TiB"},
    {.name = "max_memory_bytes",
     .type = Type::size,
     .default_value = "\"64MiB\"",
     .description = "With mode = \"memory\": bound on the records held in RAM (their bytes plus 8 bytes each).",
     .min = "64KiB",
     .max = "64GiB"},
    {.name = "fsync",
     .type = Type::choice,
     .default_value = "\"interval\"",
     .description = "\"always\": every commit is flushed to stable storage before any source is acknowledged "
                    "(power-loss safe). \"interval\": commits reach the OS at once (safe from a process crash) and "
                    "are flushed every fsync_interval; a power loss may lose that window and, on file systems that "
                    "reorder writes, damage the queue file (tank then checks it in full and moves it aside). "
                    "\"never\": flushed only at shutdown; for data that can be read again from its source.",
     .choices = kFsyncModes},
    {.name = "fsync_interval",
     .type = Type::duration,
     .default_value = "\"200ms\"",
     .description = "With fsync = \"interval\": how often committed records are flushed to disk.",
     .min = "1ms",
     .max = "1h"},
    {.name = "overflow",
     .type = Type::choice,
     .default_value = "\"block\"",
     .description = "What happens when max_disk_bytes is reached: \"block\" refuses new records so inputs "
                    "pause (backpressure) until the queue drains below low_watermark; \"drop_oldest\" evicts the "
                    "oldest records; \"drop_newest\" drops incoming records. Drops are counted in "
                    "tank_queue_dropped_records_total{policy} and logged once per episode.",
     .choices = kOverflow},
    {.name = "low_watermark",
     .type = Type::number,
     .default_value = "0.9",
     .description = "With overflow = \"block\": after the queue refused records, it accepts them again once its "
                    "disk use falls to this fraction of max_disk_bytes (hysteresis, so inputs do not flap).",
     .min = "0.1",
     .max = "0.99"},
};

void check(const config::SectionValues& values, config::Diagnostics& diagnostics) {
  if (values.is_set("fsync_interval") && values.choice("fsync") != "interval") {
    diagnostics.warning(values.location_of("fsync_interval"), "queue.fsync_interval",
                        fmt::format("has no effect with fsync = \"{}\"", values.choice("fsync")));
  }
  if (values.is_set("max_memory_bytes") && values.choice("mode") != "memory") {
    diagnostics.warning(values.location_of("max_memory_bytes"), "queue.max_memory_bytes",
                        "has no effect with mode = \"disk\" (records are not held in RAM)");
  }
  if (values.is_set("low_watermark") && values.choice("overflow") != "block") {
    diagnostics.warning(values.location_of("low_watermark"), "queue.low_watermark",
                        fmt::format("has no effect with overflow = \"{}\"", values.choice("overflow")));
  }
}

const config::Section kSection{
    .path = "queue",
    .summary = "The write-ahead queue: an LMDB environment in `<data_dir>/queue` where every accepted record waits "
               "until every output that should receive it has it acknowledged upstream. Bounded in bytes; see "
               "docs/queue.md for its guarantees.",
    .options = kOptions,
    .repeated = false,
    .check = check,
};

const Option kDeadLetterOptions[] = {
    {.name = "max_bytes",
     .type = Type::size,
     .default_value = "\"64MiB\"",
     .description = "Bound on the dead-letter store (input kept with the reason it could not become a record), "
                    "apart from the queue's own bound. When reached, the oldest entries are evicted, counted in "
                    "tank_dead_letter_evicted_total.",
     .min = "64KiB",
     .max = "64GiB"},
};

const config::Section kDeadLetterSection{
    .path = "dead_letter",
    .summary = "The dead-letter store, in the queue's LMDB environment: each entry keeps the original bytes (up "
               "to 64 KiB), the input, a reason code (e.g. `line_too_long`), a detail, the time and the tank "
               "version. Inspect it with `tank dlq list` and `tank dlq show ID`.",
    .options = kDeadLetterOptions,
    .repeated = false,
};

}  // namespace

const config::Section& config_section() { return kSection; }
const config::Section& dead_letter_section() { return kDeadLetterSection; }

Options options_from(const config::Document& document, const std::filesystem::path& dir) {
  const config::SectionValues& v = document.section("queue");
  Options o;
  o.dead_letter_max_bytes = document.section("dead_letter").size("max_bytes");
  o.dir = dir;
  o.mode = v.choice("mode") == "memory" ? Mode::memory : Mode::disk;
  o.max_disk_bytes = v.size("max_disk_bytes");
  o.max_memory_bytes = v.size("max_memory_bytes");
  const std::string& fsync = v.choice("fsync");
  o.fsync = fsync == "always" ? Fsync::always : fsync == "never" ? Fsync::never : Fsync::interval;
  o.fsync_interval = v.duration("fsync_interval");
  const std::string& overflow = v.choice("overflow");
  o.overflow = overflow == "drop_oldest"   ? Overflow::drop_oldest
               : overflow == "drop_newest" ? Overflow::drop_newest
                                           : Overflow::block;
  o.low_watermark = v.number("low_watermark");
  return o;
}

namespace {

// a + b, or UINT64_MAX when that does not fit.
std::uint64_t add_saturating(std::uint64_t a, std::uint64_t b) {
  return a > std::numeric_limits<std::uint64_t>::max() - b ? std::numeric_limits<std::uint64_t>::max() : a + b;
}

}  // namespace

std::uint64_t map_bytes_for(std::uint64_t max_disk_bytes, std::uint64_t dead_letter_max_bytes, std::uint64_t page_size) {
  // The dead-letter store has a bound of its own next to the queue's, and 1/128 of it for its
  // copy-on-write pages.
  std::uint64_t bytes = add_saturating(max_disk_bytes, Queue::margin_for(max_disk_bytes));
  bytes = add_saturating(bytes, dead_letter_max_bytes);
  bytes = add_saturating(bytes, dead_letter_max_bytes / 128);
  if (page_size == 0) return bytes;
  const std::uint64_t pages = bytes / page_size + (bytes % page_size != 0 ? 1 : 0);
  return pages > std::numeric_limits<std::uint64_t>::max() / page_size ? std::numeric_limits<std::uint64_t>::max()
                                                                       : pages * page_size;
}

std::uint64_t largest_max_disk_bytes(std::uint64_t dead_letter_max_bytes, std::uint64_t page_size,
                                     std::uint64_t map_limit) {
  // The map grows with max_disk_bytes: the largest whole MiB that fits, by bisection, so that
  // the answer comes from the very formula the queue uses.
  constexpr std::uint64_t kMiB = 1 << 20;
  auto fits = [&](std::uint64_t mib) { return map_bytes_for(mib * kMiB, dead_letter_max_bytes, page_size) <= map_limit; };
  std::uint64_t low = 0;                       // fits (or is the answer 0)
  std::uint64_t high = map_limit / kMiB + 1;  // does not fit: the map is larger than max_disk_bytes
  while (high - low > 1) {
    const std::uint64_t mid = low + (high - low) / 2;
    if (fits(mid)) {
      low = mid;
    } else {
      high = mid;
    }
  }
  return low * kMiB;
}

std::string map_too_large(std::uint64_t max_disk_bytes, std::uint64_t dead_letter_max_bytes, std::uint64_t page_size,
                          std::uint64_t map_limit) {
  const std::uint64_t map = map_bytes_for(max_disk_bytes, dead_letter_max_bytes, page_size);
  if (map <= map_limit) return "";
  const std::string head = fmt::format(
      "queue.max_disk_bytes = {} and dead_letter.max_bytes = {} need an LMDB map of {} (max_disk_bytes + its margin "
      "+ dead_letter.max_bytes + 1/128 of it, docs/queue.md \"Bounds\"), more than the {} a 32-bit tank can map "
      "(the map is one contiguous region of its address space)",
      units::format_size(max_disk_bytes), units::format_size(dead_letter_max_bytes), units::human_size(map),
      units::format_size(map_limit));
  const std::uint64_t largest = largest_max_disk_bytes(dead_letter_max_bytes, page_size, map_limit);
  if (largest < units::parse_size(kSmallestMaxDiskBytes).value.value_or(0)) {
    return fmt::format("{}; the dead-letter store alone takes nearly all of it: lower dead_letter.max_bytes, or run "
                       "the 64-bit build (arm64) on a 64-bit kernel",
                       head);
  }
  return fmt::format("{}; with this dead_letter.max_bytes the largest max_disk_bytes this platform takes is {}: set "
                     "max_disk_bytes = \"{}\" or less (or lower dead_letter.max_bytes), or run the 64-bit build "
                     "(arm64) on a 64-bit kernel",
                     head, units::format_size(largest), units::format_size(largest));
}

void check_map_size(const config::Document& document, config::Diagnostics& diagnostics, std::uint64_t map_limit,
                    std::uint64_t page_size) {
  if (page_size == 0) page_size = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const config::SectionValues& queue = document.section("queue");
  const config::SectionValues& dead_letter = document.section("dead_letter");
  const std::string problem =
      map_too_large(queue.size("max_disk_bytes"), dead_letter.size("max_bytes"), page_size, map_limit);
  if (problem.empty()) return;
  // Said where the user can change it: at max_disk_bytes, unless only the dead-letter bound was set.
  if (!queue.is_set("max_disk_bytes") && dead_letter.is_set("max_bytes")) {
    diagnostics.error(dead_letter.location_of("max_bytes"), "dead_letter.max_bytes", problem);
    return;
  }
  diagnostics.error(queue.location_of("max_disk_bytes"), "queue.max_disk_bytes", problem);
}

}  // namespace tank::queue
