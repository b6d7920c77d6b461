// The leaf scan for salvage (lmdb_file.hpp, scan_leaves): every page of the file, in file order,
// that looks like a leaf page where it lies, trusting no meta page and no tree.

#include <algorithm>
#include <cerrno>
#include <new>
#include <stdexcept>

#include <fmt/format.h>

#include "queue/lmdb_file.hpp"
#include "queue/lmdb_layout.hpp"
#include "queue/lmdb_page.hpp"

namespace tank::queue::lmdb_file {
namespace {

namespace L = lmdb_layout;
using detail::Node;
using detail::View;

// Pages read at once: sequential reads of 1 MiB at 4 KiB pages.
constexpr std::size_t kChunkBytes = 1 << 20;

class Scanner {
 public:
  Scanner(const File& file, std::uint32_t page_size, const std::function<bool(const ScannedEntry&)>& visit)
      : file_(file), psize_(page_size), visit_(visit) {}

  ScanStats run() {
    file_pages_ = file_.size() / psize_;
    const std::uint64_t per_chunk = std::max<std::uint64_t>(1, kChunkBytes / psize_);
    chunk_.resize(static_cast<std::size_t>(per_chunk * psize_));
    for (std::uint64_t first = 2; first < file_pages_; first += per_chunk) {
      const std::uint64_t n = std::min(per_chunk, file_pages_ - first);
      const std::size_t want = static_cast<std::size_t>(n * psize_);
      const std::size_t got = file_.read_at(first * psize_, chunk_.data(), want);
      stats_.bytes_read += got;
      const std::uint64_t whole = got / psize_;  // the file may have shrunk since
      for (std::uint64_t k = 0; k < whole; ++k) {
        ++stats_.pages;
        if (!page(first + k, View{chunk_.data() + k * psize_, psize_})) return stats_;
      }
      if (whole < n) break;
    }
    return stats_;
  }

  // The same for the given pages only, in the given order (pages past the end are skipped).
  ScanStats run(const std::vector<std::uint64_t>& pages) {
    file_pages_ = file_.size() / psize_;
    chunk_.resize(psize_);
    for (std::uint64_t pgno : pages) {
      if (pgno < 2 || pgno >= file_pages_) continue;
      const std::size_t got = file_.read_at(pgno * psize_, chunk_.data(), psize_);
      stats_.bytes_read += got;
      if (got < psize_) continue;
      ++stats_.pages;
      if (!page(pgno, View{chunk_.data(), psize_})) break;
    }
    return stats_;
  }

 private:
  // Returns false when visit asked to stop.
  bool page(std::uint64_t pgno, const View& v) {
    if (v.pgno() != pgno || v.flags() != L::kLeaf || !detail::bounds_problem(v).empty() || v.keys() == 0) return true;
    ++stats_.leaf_pages;
    const unsigned n = v.keys();
    for (unsigned i = 0; i < n; ++i) {
      ScannedEntry e;
      e.page = pgno;
      e.index = i;
      Node node;
      if (std::string problem = detail::read_node(v, i, true, &node); !problem.empty()) {
        e.problem = std::move(problem);
      } else {
        e.node_flags = node.flags;
        e.key = node.key;
        if ((node.flags & ~(L::kNodeBigData | L::kNodeSubData)) != 0 ||
            ((node.flags & L::kNodeBigData) != 0 && (node.flags & L::kNodeSubData) != 0)) {
          e.problem = fmt::format("node {} has flags {:#x}, which LMDB never gives a node tank writes", i, node.flags);
        } else if ((node.flags & L::kNodeBigData) != 0) {
          e.problem = overflow(node, &e.value);
        } else {
          e.value = node.data;
        }
      }
      if (e.problem.empty()) {
        ++stats_.entries;
      } else {
        e.value = {};
        ++stats_.unreadable;
      }
      if (!visit_(e)) return false;
    }
    return true;
  }

  // Reads a F_BIGDATA node's value into value_; "" or why it cannot be read.
  std::string overflow(const Node& node, std::string_view* value) {
    const std::uint64_t first = detail::word_at(node.data.data());
    const std::uint64_t needed = detail::overflow_pages_for(node.data_size, psize_);
    if (first < 2 || first >= file_pages_ || needed > file_pages_ - first) {
      return fmt::format("its value of {} bytes on {} pages from page {} lies outside the file ({} pages)",
                         node.data_size, needed, first, file_pages_);
    }
    char header[L::kPageHeader];
    if (file_.read_at(first * psize_, header, sizeof header) < sizeof header) {
      return fmt::format("its value's overflow page {} lies past the end of the file", first);
    }
    stats_.bytes_read += sizeof header;
    const View h{header, psize_};
    if (h.pgno() != first || h.flags() != L::kOverflow) {
      return fmt::format("page {}, where its value of {} bytes should begin, is not an overflow page of that number "
                         "(it names page {}, flags {:#x}): reused since",
                         first, node.data_size, h.pgno(), h.flags());
    }
    if (h.overflow_count() < needed) {
      return fmt::format("overflow page {} begins a run of {} pages, too short for the value's {} bytes", first,
                         h.overflow_count(), node.data_size);
    }
    value_.resize(node.data_size);
    const std::size_t got = file_.read_at(first * psize_ + L::kPageHeader, value_.data(), node.data_size);
    stats_.bytes_read += got;
    if (got < node.data_size) return fmt::format("the file ends inside the value on overflow page {}", first);
    *value = std::string_view(value_.data(), node.data_size);
    return {};
  }

  const File& file_;
  std::uint32_t psize_;
  const std::function<bool(const ScannedEntry&)>& visit_;
  std::uint64_t file_pages_ = 0;
  std::vector<char> chunk_;
  std::vector<char> value_;
  ScanStats stats_;
};

void check_page_size(std::uint32_t page_size) {
  if (page_size < 512 || page_size > detail::kMaxPageSize || (page_size & (page_size - 1)) != 0) {
    throw std::invalid_argument(fmt::format("LMDB 0.9 has no pages of {} bytes", page_size));
  }
}

}  // namespace

ScanStats scan_leaf_pages(const File& file, std::uint32_t page_size, const std::vector<std::uint64_t>& pages,
                          const std::function<bool(const ScannedEntry&)>& visit) {
  check_page_size(page_size);
  try {
    return Scanner(file, page_size, visit).run(pages);
  } catch (const std::bad_alloc&) {
    throw IoError(ENOMEM, fmt::format("out of memory while scanning {}", file.path().string()));
  }
}

ScanStats scan_leaves(const File& file, std::uint32_t page_size,
                      const std::function<bool(const ScannedEntry&)>& visit) {
  check_page_size(page_size);
  try {
    return Scanner(file, page_size, visit).run();
  } catch (const std::bad_alloc&) {
    throw IoError(ENOMEM, fmt::format("out of memory while scanning {}", file.path().string()));
  }
}

}  // namespace tank::queue::lmdb_file
