#pragma once

// CRC32C (Castagnoli, as in iSCSI, ext4 metadata and Kafka record batches): the checksum that
// proves a queued record intact (queue/record.hpp) and a recovery point whole
// (queue/recovery_point.hpp).
//
// Computed with the CPU's own instruction where there is one (SSE 4.2 on x86-64, the CRC
// extension on ARMv8, chosen at run time), else with Boost.CRC's table: both give the same value
// (tested against Boost.CRC and the standard check value, crc32c("123456789") = 0xe3069283).

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tank::crc32c {

// The CRC32C of `n` bytes continuing from `crc`, the CRC32C of the bytes before them (0 for none):
// extend(value(a), b) == value(a + b). Never fails.
std::uint32_t extend(std::uint32_t crc, const void* data, std::size_t n);

inline std::uint32_t value(const void* data, std::size_t n) { return extend(0, data, n); }
inline std::uint32_t value(std::string_view bytes) { return extend(0, bytes.data(), bytes.size()); }

// The portable computation alone (Boost.CRC), for tests that compare it with the CPU's.
std::uint32_t extend_portable(std::uint32_t crc, const void* data, std::size_t n);

// "sse4.2", "armv8-crc" or "portable": how extend() computes, for `tank version` and benchmarks.
std::string_view implementation();

}  // namespace tank::crc32c
