#include "tail_file.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace tank::input::tail {

// Reads up to `n` bytes at `offset` (fewer at the end of the file).
std::string read_at(int fd, std::uint64_t offset, std::size_t n) {
  std::string out(n, '\0');
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, out.data() + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<std::size_t>(r);
  }
  out.resize(got);
  return out;
}

bool same_file(const std::string& fingerprint, int fd) {
  if (fingerprint.empty()) return true;  // it was empty: nothing to compare
  return read_at(fd, 0, fingerprint.size()) == fingerprint;
}

// Same first bytes over the shorter of the two fingerprints (a copy may still be written),
// and at least kMinCopyFingerprint of them: a short fingerprint says too little.
bool same_start(const std::string& a, const std::string& b) {
  const std::size_t n = std::min(a.size(), b.size());
  return n >= kMinCopyFingerprint && a.compare(0, n, b, 0, n) == 0;
}

}  // namespace tank::input::tail
