#pragma once

// Decoding one page of an LMDB 0.9 data file from bytes read with pread, for lmdb_check.cpp (the
// tree walk) and lmdb_scan.cpp (the leaf scan). Internal to agent/queue: nothing here trusts the
// bytes; every accessor is bounds-checked by the function that validates the page first.

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "queue/lmdb_file.hpp"
#include "queue/lmdb_layout.hpp"

namespace tank::queue::lmdb_file::detail {

namespace L = lmdb_layout;

// The largest page size LMDB 0.9 writes (MAX_PAGESIZE without MDB_DEVEL: lower and upper are u16).
inline constexpr std::uint32_t kMaxPageSize = 0x8000;

inline std::uint64_t word_at(const char* p) {
  std::size_t v = 0;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline std::uint32_t u32_at(const char* p) {
  std::uint32_t v = 0;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline std::uint16_t u16_at(const char* p) {
  std::uint16_t v = 0;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// An MDB_db record (lmdb_layout::kDbBytes at `p`).
inline Db parse_db(const char* p) {
  Db d;
  d.flags = u16_at(p + L::kDbFlags);
  d.depth = u16_at(p + L::kDbDepth);
  d.branch_pages = word_at(p + L::kDbBranchPages);
  d.leaf_pages = word_at(p + L::kDbLeafPages);
  d.overflow_pages = word_at(p + L::kDbOverflowPages);
  d.entries = word_at(p + L::kDbEntries);
  d.root = word_at(p + L::kDbRoot);
  return d;
}

// OVPAGES of mdb.c: the pages an overflow run of `bytes` data needs.
inline std::uint64_t overflow_pages_for(std::uint64_t bytes, std::uint32_t page_size) {
  return (L::kPageHeader - 1 + bytes) / page_size + 1;
}

// A page's bytes (exactly the page size).
struct View {
  const char* p = nullptr;
  std::uint32_t size = 0;

  std::uint64_t pgno() const { return word_at(p + L::kPagePgno); }
  std::uint16_t flags() const { return u16_at(p + L::kPageFlags); }
  std::uint16_t lower() const { return u16_at(p + L::kPageLower); }
  std::uint16_t upper() const { return u16_at(p + L::kPageUpper); }
  std::uint32_t overflow_count() const { return u32_at(p + L::kPageOverflowCount); }
  // Valid once bounds() passed.
  unsigned keys() const { return (lower() - static_cast<unsigned>(L::kPageHeader)) / 2; }
  std::uint16_t node_offset(unsigned i) const { return u16_at(p + L::kPageHeader + 2 * i); }
};

// "" when header <= lower <= upper <= size and lower - header is even, else why not.
inline std::string bounds_problem(const View& v) {
  const unsigned lower = v.lower(), upper = v.upper();
  if (lower < L::kPageHeader || lower > upper || upper > v.size || (lower - L::kPageHeader) % 2 != 0) {
    return "lower " + std::to_string(lower) + " and upper " + std::to_string(upper) +
           " are not the bounds of a page of " + std::to_string(v.size) + " bytes";
  }
  return {};
}

// One node of a branch or leaf page, decoded after node_problem() passed.
struct Node {
  unsigned offset = 0;       // from the page's start
  unsigned end = 0;          // one past its last byte in the page
  std::uint16_t flags = 0;   // leaf: F_BIGDATA, F_SUBDATA, F_DUPDATA; branch: part of the child
  std::uint32_t data_size = 0;  // leaf: the value's size (on overflow pages with F_BIGDATA)
  std::string_view key;
  std::string_view data;     // leaf: the inline data (the overflow page number with F_BIGDATA)
  std::uint64_t child = 0;   // branch: the child page
};

// Decodes node `i` of a page whose bounds() passed; "" or why it does not lie in the page.
inline std::string read_node(const View& v, unsigned i, bool leaf, Node* n) {
  const unsigned offset = v.node_offset(i);
  if (offset < v.upper() || offset + L::kNodeHeader > v.size) {
    return "node " + std::to_string(i) + " lies outside the page (offset " + std::to_string(offset) + ", upper " +
           std::to_string(v.upper()) + ")";
  }
  if (offset % 2 != 0) return "node " + std::to_string(i) + " lies at an odd offset (" + std::to_string(offset) + ")";
  const char* h = v.p + offset;
  const std::uint16_t lo = u16_at(h), hi = u16_at(h + 2);
  n->offset = offset;
  n->flags = u16_at(h + 4);
  const unsigned key_size = u16_at(h + 6);
  std::uint64_t inline_size = 0;
  if (leaf) {
    n->data_size = lo | static_cast<std::uint32_t>(hi) << 16;
    inline_size = (n->flags & L::kNodeBigData) != 0 ? L::kWord : n->data_size;
    n->child = 0;
  } else {
    n->data_size = 0;
    n->child = lo | static_cast<std::uint64_t>(hi) << 16;
    if constexpr (L::kWord > 4) n->child |= static_cast<std::uint64_t>(n->flags) << 32;
  }
  const std::uint64_t end = offset + L::kNodeHeader + key_size + inline_size;
  if (end > v.size) {
    return "node " + std::to_string(i) + " (offset " + std::to_string(offset) + ", key " + std::to_string(key_size) +
           " bytes, data " + std::to_string(inline_size) + " bytes) runs past the end of the page";
  }
  n->end = static_cast<unsigned>(end);
  n->key = std::string_view(h + L::kNodeHeader, key_size);
  n->data = std::string_view(h + L::kNodeHeader + key_size, static_cast<std::size_t>(inline_size));
  return {};
}

// How a tree orders its keys (mdb.c's md_cmp).
enum class KeyOrder {
  bytes,     // mdb_cmp_memn: memcmp, then the shorter first
  reversed,  // mdb_cmp_memnr (MDB_REVERSEKEY): bytes compared from the end
  integer,   // mdb_cmp_cint (MDB_INTEGERKEY): native unsigned integers of one size
  size_t_key,  // mdb_cmp_long (FREE_DBI): native size_t
};

// <0, 0, >0 as LMDB's comparison. For integer orders the sizes must already be equal.
inline int compare(KeyOrder order, std::string_view a, std::string_view b) {
  switch (order) {
    case KeyOrder::bytes: {
      const std::size_t n = a.size() < b.size() ? a.size() : b.size();
      const int d = n == 0 ? 0 : std::memcmp(a.data(), b.data(), n);
      if (d != 0) return d;
      return a.size() < b.size() ? -1 : a.size() > b.size() ? 1 : 0;
    }
    case KeyOrder::reversed: {
      std::size_t i = a.size(), j = b.size();
      while (i > 0 && j > 0) {
        const int d = static_cast<unsigned char>(a[--i]) - static_cast<unsigned char>(b[--j]);
        if (d != 0) return d;
      }
      return a.size() < b.size() ? -1 : a.size() > b.size() ? 1 : 0;
    }
    case KeyOrder::integer:
    case KeyOrder::size_t_key: {
      // Native byte order: compare from the most significant byte.
      const std::size_t n = a.size();
      for (std::size_t k = 0; k < n; ++k) {
        const std::size_t at = (std::endian::native == std::endian::little) ? n - 1 - k : k;
        const int d = static_cast<unsigned char>(a[at]) - static_cast<unsigned char>(b[at]);
        if (d != 0) return d;
      }
      return 0;
    }
  }
  return 0;
}

}  // namespace tank::queue::lmdb_file::detail
