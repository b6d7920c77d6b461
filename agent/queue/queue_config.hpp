#pragma once

// The [queue] configuration section and its translation into queue::Options.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>

#include "config/document.hpp"
#include "config/schema.hpp"
#include "queue/queue.hpp"

namespace tank::queue {

const config::Section& config_section();
const config::Section& dead_letter_section();

// Options from the validated [queue] and [dead_letter] sections of `document`. `dir` is where
// the LMDB environment lives (<data_dir>/queue).
Options options_from(const config::Document& document, const std::filesystem::path& dir);

// --- The LMDB map and the address space -----------------------------------------------------

// The size of the LMDB map (the most data.mdb can hold, Queue::file_limit_bytes()) for these
// bounds: max_disk_bytes + Queue::margin_for(max_disk_bytes) + dead_letter_max_bytes +
// dead_letter_max_bytes / 128, rounded up to whole pages of `page_size`. Saturates at UINT64_MAX
// instead of wrapping (only values far past the options' bounds get there). Queue::open and
// `tank check` both size the map with it.
std::uint64_t map_bytes_for(std::uint64_t max_disk_bytes, std::uint64_t dead_letter_max_bytes, std::uint64_t page_size);

// The largest LMDB map a 32-bit tank (armhf) can rely on mapping: 1.5 GiB.
//
// LMDB maps the whole map at open as one contiguous region (mdb_env_set_mapsize takes a size_t,
// so a map of 4 GiB or more would also wrap), and a 32-bit process shares at most 3 GiB of address
// space with its libraries, heap and thread stacks (8 MiB reserved for each). Measured on a real
// ARMv7 kernel booted under qemu-system-arm (cross/README.md, "32-bit: the largest LMDB map"):
// with Debian 12's (3G/1G split) a 32-bit process opens a map of up to 2909 MiB. Raspberry Pi's
// own 32-bit kernel for the Pi 2 and 3 (bcm2709_defconfig) has a 2G/2G split, which lowers the top
// of that same layout by 1 GiB: about 1885 MiB (derived; tank with the largest map allowed ran
// within that much address space, RLIMIT_AS, in the VM). tank itself takes 66 MiB next to its map with the
// default configuration (8 threads), and 8 MiB more per further thread: a 1.5 GiB map leaves it
// about 350 MiB on such a Pi, and takes the default bounds (a 1 GiB queue and a 64 MiB dead-letter
// store: a map of 1114 MiB). qemu-user is no measure of it: its guest layout is its own.
inline constexpr std::uint64_t kMapLimit32Bit = 1536ULL << 20;

// The largest map this build can map: kMapLimit32Bit where size_t has 32 bits, otherwise size_t's
// maximum (in effect no limit: the options' bounds allow a map of about 1.1 TiB). Always at most
// SIZE_MAX, so a map within it converts to size_t without wrapping.
constexpr std::uint64_t platform_map_limit() {
  return sizeof(std::size_t) == 4 ? kMapLimit32Bit : std::uint64_t{std::numeric_limits<std::size_t>::max()};
}

// The largest max_disk_bytes, in whole MiB, whose map fits within `map_limit` next to a dead-letter
// store of `dead_letter_max_bytes`; 0 when not even 1 MiB fits.
std::uint64_t largest_max_disk_bytes(std::uint64_t dead_letter_max_bytes, std::uint64_t page_size,
                                     std::uint64_t map_limit);

// "" when the map for these bounds fits within `map_limit`; otherwise why it does not: the map's
// size, the limit, the largest max_disk_bytes that fits with this dead-letter bound, and what to
// do. `tank check` reports it at the option; Queue::open throws it (OpenError) for callers that
// bypass the check.
std::string map_too_large(std::uint64_t max_disk_bytes, std::uint64_t dead_letter_max_bytes, std::uint64_t page_size,
                          std::uint64_t map_limit = platform_map_limit());

// The check of the map run by `tank check` and at every start and reload (a DocumentCheck of the
// schema): an error at queue.max_disk_bytes (at dead_letter.max_bytes when only that one is set
// in the file) when map_too_large() says so. `map_limit` is a parameter so that a 64-bit test can
// apply the 32-bit limit; `page_size` defaults to this machine's.
void check_map_size(const config::Document& document, config::Diagnostics& diagnostics,
                    std::uint64_t map_limit = platform_map_limit(), std::uint64_t page_size = 0);

}  // namespace tank::queue
