#include "queue/recovery_point.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/crc32c.hpp"
#include "common/fs.hpp"
#include "queue/lmdb_file.hpp"
#include "queue/lmdb_layout.hpp"

namespace tank::queue {
namespace {

constexpr char kMagic[8] = {'t', 'a', 'n', 'k', 'R', 'P', '0', '1'};
constexpr std::uint32_t kLayoutVersion = 1;
constexpr std::size_t kBootIdBytes = 40;
constexpr std::size_t kMetaCopyBytes = 256;
constexpr std::size_t kCrcOffset = kRecoveryPointSlotBytes - 4;
static_assert(lmdb_layout::kMetaPageBytes <= kMetaCopyBytes);

template <class T>
void put(std::string& s, std::size_t off, T v) {
  std::memcpy(s.data() + off, &v, sizeof v);
}
template <class T>
T get(std::string_view s, std::size_t off) {
  T v{};
  std::memcpy(&v, s.data() + off, sizeof v);
  return v;
}

[[noreturn]] void fail(int err, const std::string& what) { throw lmdb_file::IoError(err, what + ": " + std::strerror(err)); }

void write_all_at(int fd, std::string_view bytes, off_t off, const std::filesystem::path& path) {
  while (!bytes.empty()) {
    ssize_t n = ::pwrite(fd, bytes.data(), bytes.size(), off);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(errno, fmt::format("cannot write {}", path.string()));
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
    off += n;
  }
}

}  // namespace

std::string encode_recovery_slot(const RecoveryPoint& p) {
  std::string s(kRecoveryPointSlotBytes, '\0');
  std::memcpy(s.data(), kMagic, sizeof kMagic);
  put<std::uint32_t>(s, 8, kLayoutVersion);
  put<std::uint32_t>(s, 12, p.flags);
  put<std::uint64_t>(s, 16, p.generation);
  put<std::uint64_t>(s, 24, p.txnid);
  put<std::uint64_t>(s, 32, p.data_device);
  put<std::uint64_t>(s, 40, p.data_inode);
  put<std::int64_t>(s, 48, p.pinned_mono_ns);
  put<std::int64_t>(s, 56, p.pinned_wall_ns);
  put<std::uint64_t>(s, 64, p.next_seq);
  put<std::uint64_t>(s, 72, p.records);
  put<std::uint32_t>(s, 80, p.page_size);
  const std::size_t meta = std::min(p.meta_page.size(), kMetaCopyBytes);
  put<std::uint32_t>(s, 84, static_cast<std::uint32_t>(meta));
  std::memcpy(s.data() + 88, p.boot_id.data(), std::min(p.boot_id.size(), kBootIdBytes - 1));
  std::memcpy(s.data() + 128, p.meta_page.data(), meta);
  put<std::uint32_t>(s, kCrcOffset, crc32c::value(s.data(), kCrcOffset));
  return s;
}

std::optional<RecoveryPoint> decode_recovery_slot(std::string_view s, std::string* why) {
  auto no = [&](std::string reason) -> std::optional<RecoveryPoint> {
    if (why != nullptr) *why = std::move(reason);
    return std::nullopt;
  };
  if (s.size() < kRecoveryPointSlotBytes) return no("the slot is cut short");
  if (std::all_of(s.begin(), s.begin() + kRecoveryPointSlotBytes, [](char c) { return c == 0; })) {
    return no("the slot is empty");
  }
  if (std::memcmp(s.data(), kMagic, sizeof kMagic) != 0) return no("the slot has no recovery-point magic");
  if (get<std::uint32_t>(s, kCrcOffset) != crc32c::value(s.data(), kCrcOffset)) {
    return no("the slot's checksum does not match (written half-way?)");
  }
  if (get<std::uint32_t>(s, 8) != kLayoutVersion) return no("the slot has an unknown layout version");
  RecoveryPoint p;
  p.flags = get<std::uint32_t>(s, 12);
  p.generation = get<std::uint64_t>(s, 16);
  p.txnid = get<std::uint64_t>(s, 24);
  p.data_device = get<std::uint64_t>(s, 32);
  p.data_inode = get<std::uint64_t>(s, 40);
  p.pinned_mono_ns = get<std::int64_t>(s, 48);
  p.pinned_wall_ns = get<std::int64_t>(s, 56);
  p.next_seq = get<std::uint64_t>(s, 64);
  p.records = get<std::uint64_t>(s, 72);
  p.page_size = get<std::uint32_t>(s, 80);
  const std::uint32_t meta = get<std::uint32_t>(s, 84);
  if (meta > kMetaCopyBytes) return no("the slot's meta page copy has a bad length");
  p.boot_id = std::string(s.substr(88, kBootIdBytes));
  p.boot_id.resize(std::strlen(p.boot_id.c_str()));
  p.meta_page = std::string(s.substr(128, meta));
  return p;
}

std::optional<RecoveryPoint> read_recovery_point(const std::filesystem::path& queue_dir, std::string* why) {
  const std::filesystem::path path = queue_dir / kRecoveryPointFile;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      if (why != nullptr) *why = fmt::format("there is no {}", path.string());
      return std::nullopt;
    }
    fail(errno, fmt::format("cannot open {}", path.string()));
  }
  std::string bytes(2 * kRecoveryPointSlotBytes, '\0');
  std::size_t got = 0;
  while (got < bytes.size()) {
    ssize_t n = ::pread(fd, bytes.data() + got, bytes.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      fail(err, fmt::format("cannot read {}", path.string()));
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  bytes.resize(got);
  std::optional<RecoveryPoint> best;
  std::string reasons;
  for (std::size_t slot = 0; slot < 2; ++slot) {
    std::string reason;
    std::optional<RecoveryPoint> p =
        bytes.size() >= (slot + 1) * kRecoveryPointSlotBytes
            ? decode_recovery_slot(std::string_view(bytes).substr(slot * kRecoveryPointSlotBytes, kRecoveryPointSlotBytes), &reason)
            : std::nullopt;
    if (!p && reason.empty()) reason = "the slot is cut short";
    if (!p) {
      reasons += fmt::format("{}slot {}: {}", reasons.empty() ? "" : "; ", slot, reason);
      continue;
    }
    if (!best || p->generation > best->generation) best = std::move(p);
  }
  if (!best && why != nullptr) *why = fmt::format("{} holds no valid recovery point ({})", path.string(), reasons);
  return best;
}

RecoveryPointFile::RecoveryPointFile(const std::filesystem::path& queue_dir) : path_(queue_dir / kRecoveryPointFile) {
  std::string why;
  std::optional<RecoveryPoint> existing = read_recovery_point(queue_dir, &why);
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (fd_ < 0) fail(errno, fmt::format("cannot open {}", path_.string()));
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    int err = errno;
    ::close(fd_);
    fail(err, fmt::format("cannot stat {}", path_.string()));
  }
  if (existing) {
    generation_ = existing->generation;
  } else if (static_cast<std::size_t>(st.st_size) < 2 * kRecoveryPointSlotBytes) {
    // A new file: both slots empty, then the file and its directory entry on stable storage, so a
    // power cut never leaves a recovery point that vanishes.
    try {
      write_all_at(fd_, std::string(2 * kRecoveryPointSlotBytes, '\0'), 0, path_);
      if (::fdatasync(fd_) != 0) fail(errno, fmt::format("cannot sync {}", path_.string()));
      if (std::string error = fs::sync_directory(queue_dir); !error.empty()) throw lmdb_file::IoError(EIO, error);
    } catch (...) {
      ::close(fd_);
      throw;
    }
  }
}

RecoveryPointFile::~RecoveryPointFile() {
  if (fd_ >= 0) ::close(fd_);
}

std::string RecoveryPointFile::write(RecoveryPoint point) {
  point.generation = generation_ + 1;
  const std::string slot = encode_recovery_slot(point);
  try {
    write_all_at(fd_, slot, static_cast<off_t>((point.generation % 2) * kRecoveryPointSlotBytes), path_);
    if (::fdatasync(fd_) != 0) fail(errno, fmt::format("cannot sync {}", path_.string()));
  } catch (const lmdb_file::IoError& e) {
    return e.what();
  }
  generation_ = point.generation;
  return {};
}

void roll_back_to(const std::filesystem::path& data_file, const RecoveryPoint& point) {
  namespace L = lmdb_layout;
  if (point.meta_page.size() != L::kMetaPageBytes || point.page_size == 0) {
    throw lmdb_file::IoError(EINVAL, fmt::format("the recovery point of {} holds no usable meta page", data_file.string()));
  }
  const int own = static_cast<int>(point.txnid % 2);
  std::string mine = point.meta_page;
  std::string twin = point.meta_page;
  const std::size_t other_pgno = static_cast<std::size_t>(1 - own);
  const std::size_t older = static_cast<std::size_t>(point.txnid - 1);
  std::memcpy(twin.data() + L::kPagePgno, &other_pgno, sizeof other_pgno);
  std::memcpy(twin.data() + L::kMetaTxnid, &older, sizeof older);
  int fd = ::open(data_file.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) fail(errno, fmt::format("cannot open {}", data_file.string()));
  try {
    write_all_at(fd, mine, static_cast<off_t>(own) * point.page_size, data_file);
    write_all_at(fd, twin, static_cast<off_t>(1 - own) * point.page_size, data_file);
    if (::fdatasync(fd) != 0) fail(errno, fmt::format("cannot sync {}", data_file.string()));
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

}  // namespace tank::queue
