#include "queue/lmdb_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "queue/lmdb_layout.hpp"
#include "queue/lmdb_page.hpp"

namespace tank::queue::lmdb_file {
namespace {

namespace L = lmdb_layout;

std::uint64_t word_at(std::string_view p, std::size_t off) { return detail::word_at(p.data() + off); }
std::uint32_t u32_at(std::string_view p, std::size_t off) { return detail::u32_at(p.data() + off); }
std::uint16_t u16_at(std::string_view p, std::size_t off) { return detail::u16_at(p.data() + off); }

}  // namespace

int Metas::newest() const {
  const Meta& a = slots[0];
  const Meta& b = slots[1];
  if (a.valid && b.valid) return b.txnid > a.txnid ? 1 : 0;
  if (a.valid) return 0;
  if (b.valid) return 1;
  return -1;
}

Meta parse_meta(std::string_view page, int slot) {
  Meta m;
  m.slot = slot;
  if (page.size() < L::kMetaPageBytes) {
    m.problem = fmt::format("meta page {} is cut short ({} bytes)", slot, page.size());
    return m;
  }
  m.raw = std::string(page.substr(0, L::kMetaPageBytes));
  const std::uint64_t pgno = word_at(page, L::kPagePgno);
  const std::uint16_t flags = u16_at(page, L::kPageFlags);
  const std::uint32_t magic = u32_at(page, L::kMetaMagic);
  const std::uint32_t version = u32_at(page, L::kMetaVersion);
  m.page_size = u32_at(page, L::kMetaPageSize);
  m.map_size = word_at(page, L::kMetaMapSize);
  m.free_db = detail::parse_db(page.data() + L::kMetaFreeDb);
  m.main_db = detail::parse_db(page.data() + L::kMetaMainDb);
  m.last_page = word_at(page, L::kMetaLastPage);
  m.txnid = word_at(page, L::kMetaTxnid);
  if (magic != L::kMagic) {
    m.problem = fmt::format("meta page {} has no LMDB magic number ({:#010x})", slot, magic);
  } else if (version != L::kDataVersion) {
    m.problem = fmt::format("meta page {} has LMDB data version {} (this tank reads {})", slot, version,
                            L::kDataVersion);
  } else if ((flags & L::kMeta) == 0 || pgno != static_cast<std::uint64_t>(slot)) {
    m.problem = fmt::format("meta page {} has page number {} and flags {:#x}", slot, pgno, flags);
  } else if (m.page_size < 512 || m.page_size > (1u << 16) || (m.page_size & (m.page_size - 1)) != 0) {
    m.problem = fmt::format("meta page {} names a page size of {} bytes", slot, m.page_size);
  } else if (m.last_page < 1) {
    m.problem = fmt::format("meta page {} names last page {}", slot, m.last_page);
  } else {
    m.valid = true;
  }
  return m;
}

File::File(const std::filesystem::path& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    int err = errno;
    throw IoError(err, fmt::format("cannot open {}: {}", path.string(), std::strerror(err)));
  }
}

File::~File() {
  if (fd_ >= 0) ::close(fd_);
}

File::File(File&& other) noexcept : path_(std::move(other.path_)), fd_(other.fd_) { other.fd_ = -1; }

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

std::uint64_t File::size() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    int err = errno;
    throw IoError(err, fmt::format("cannot stat {}: {}", path_.string(), std::strerror(err)));
  }
  return static_cast<std::uint64_t>(st.st_size);
}

std::size_t File::read_at(std::uint64_t offset, char* out, std::size_t n) const {
  std::size_t got = 0;
  while (got < n) {
    // An offset off_t cannot hold is past any file's end.
    if (offset + got > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max())) break;
    ssize_t r = ::pread(fd_, out + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      throw IoError(err, fmt::format("cannot read {} at offset {}: {}", path_.string(), offset + got,
                                     std::strerror(err)));
    }
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return got;
}

void File::prefetch(std::uint64_t offset, std::uint64_t length) const noexcept {
  if (offset > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max()) ||
      length > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max())) {
    return;
  }
  (void)::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(length), POSIX_FADV_WILLNEED);
}

Metas File::read_metas() const {
  Metas out;
  std::string page(L::kMetaPageBytes, '\0');
  page.resize(read_at(0, page.data(), page.size()));
  out.slots[0] = parse_meta(page, 0);
  const std::uint64_t second =
      out.slots[0].valid ? out.slots[0].page_size : static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  page.assign(L::kMetaPageBytes, '\0');
  page.resize(read_at(second, page.data(), page.size()));
  out.slots[1] = parse_meta(page, 1);
  // After the metas: a writer grows the file before it writes the meta page naming the new pages.
  out.file_bytes = size();
  return out;
}

Metas read_metas(const std::filesystem::path& data_file) { return File(data_file).read_metas(); }

}  // namespace tank::queue::lmdb_file
