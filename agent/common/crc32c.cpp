#include "common/crc32c.hpp"

#include <cstring>

#include <boost/crc.hpp>

#if defined(__x86_64__)
#include <nmmintrin.h>
#elif defined(__aarch64__)
#include <arm_acle.h>
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace tank::crc32c {
namespace {

using BoostCrc32c = boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true>;

std::uint32_t reflect32(std::uint32_t v) {
  std::uint32_t r = 0;
  for (int i = 0; i < 32; ++i) {
    if ((v & (std::uint32_t{1} << i)) != 0) r |= std::uint32_t{1} << (31 - i);
  }
  return r;
}

// The CPU's instruction works on the inverted running value ("remainder") of the reflected CRC.
#if defined(__x86_64__)
__attribute__((target("sse4.2"))) std::uint32_t extend_cpu(std::uint32_t crc, const void* data, std::size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t r = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    std::uint64_t word;
    std::memcpy(&word, p, 8);
    r = _mm_crc32_u64(r, word);
  }
  auto r32 = static_cast<std::uint32_t>(r);
  for (; n > 0; --n, ++p) r32 = _mm_crc32_u8(r32, *p);
  return ~r32;
}
bool cpu_has_crc() { return __builtin_cpu_supports("sse4.2"); }
constexpr std::string_view kCpuName = "sse4.2";
#elif defined(__aarch64__)
__attribute__((target("+crc"))) std::uint32_t extend_cpu(std::uint32_t crc, const void* data, std::size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint32_t r = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    std::uint64_t word;
    std::memcpy(&word, p, 8);
    r = __crc32cd(r, word);
  }
  for (; n > 0; --n, ++p) r = __crc32cb(r, *p);
  return ~r;
}
bool cpu_has_crc() { return (::getauxval(AT_HWCAP) & HWCAP_CRC32) != 0; }
constexpr std::string_view kCpuName = "armv8-crc";
#else
std::uint32_t extend_cpu(std::uint32_t crc, const void* data, std::size_t n) { return extend_portable(crc, data, n); }
bool cpu_has_crc() { return false; }
constexpr std::string_view kCpuName = "portable";
#endif

using ExtendFn = std::uint32_t (*)(std::uint32_t, const void*, std::size_t);

ExtendFn choose() { return cpu_has_crc() ? &extend_cpu : &extend_portable; }

}  // namespace

std::uint32_t extend_portable(std::uint32_t crc, const void* data, std::size_t n) {
  // Boost keeps the remainder unreflected: continuing from a finished CRC means reflecting its
  // inverse back.
  BoostCrc32c c(crc == 0 ? 0xFFFFFFFFu : reflect32(~crc));
  c.process_bytes(data, n);
  return c.checksum();
}

std::uint32_t extend(std::uint32_t crc, const void* data, std::size_t n) {
  static const ExtendFn fn = choose();
  return fn(crc, data, n);
}

std::string_view implementation() { return cpu_has_crc() ? kCpuName : std::string_view("portable"); }

}  // namespace tank::crc32c
