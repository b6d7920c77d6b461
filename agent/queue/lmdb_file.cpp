#include "queue/lmdb_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "queue/lmdb_layout.hpp"

namespace tank::queue::lmdb_file {
namespace {

namespace L = lmdb_layout;

std::uint64_t word_at(std::string_view p, std::size_t off) {
  std::size_t v = 0;
  std::memcpy(&v, p.data() + off, sizeof v);
  return v;
}
std::uint32_t u32_at(std::string_view p, std::size_t off) {
  std::uint32_t v = 0;
  std::memcpy(&v, p.data() + off, sizeof v);
  return v;
}
std::uint16_t u16_at(std::string_view p, std::size_t off) {
  std::uint16_t v = 0;
  std::memcpy(&v, p.data() + off, sizeof v);
  return v;
}

Db parse_db(std::string_view p, std::size_t off) {
  Db d;
  d.flags = u16_at(p, off + L::kDbFlags);
  d.depth = u16_at(p, off + L::kDbDepth);
  d.branch_pages = word_at(p, off + L::kDbBranchPages);
  d.leaf_pages = word_at(p, off + L::kDbLeafPages);
  d.overflow_pages = word_at(p, off + L::kDbOverflowPages);
  d.entries = word_at(p, off + L::kDbEntries);
  d.root = word_at(p, off + L::kDbRoot);
  return d;
}

// Reads up to `n` bytes at `off`; fewer at the end of the file. Throws IoError.
std::string read_at(int fd, const std::filesystem::path& path, std::uint64_t off, std::size_t n) {
  std::string out(n, '\0');
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, out.data() + got, n - got, static_cast<off_t>(off + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      throw IoError(err, fmt::format("cannot read {}: {}", path.string(), std::strerror(err)));
    }
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  out.resize(got);
  return out;
}

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
  m.free_db = parse_db(page, L::kMetaFreeDb);
  m.main_db = parse_db(page, L::kMetaMainDb);
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

Metas read_metas(const std::filesystem::path& data_file) {
  int fd = ::open(data_file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    throw IoError(err, fmt::format("cannot open {}: {}", data_file.string(), std::strerror(err)));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  Metas out;
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    throw IoError(err, fmt::format("cannot stat {}: {}", data_file.string(), std::strerror(err)));
  }
  out.file_bytes = static_cast<std::uint64_t>(st.st_size);
  out.slots[0] = parse_meta(read_at(fd, data_file, 0, L::kMetaPageBytes), 0);
  std::uint64_t second = out.slots[0].valid ? out.slots[0].page_size : static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  out.slots[1] = parse_meta(read_at(fd, data_file, second, L::kMetaPageBytes), 1);
  return out;
}

}  // namespace tank::queue::lmdb_file
