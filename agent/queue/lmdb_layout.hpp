#pragma once

// The on-disk layout of an LMDB 0.9 data file (data.mdb), as liblmdb 0.9.24's mdb.c defines it,
// for the code that reads the file without LMDB (lmdb_file.hpp: the start-up check, salvage) and
// writes one of its meta pages back (recovery_point.hpp: rolling back to the last flushed
// snapshot). LMDB's own structures are private to mdb.c; these offsets are checked against files
// LMDB writes by tests/unit/lmdb_file_test.cpp.
//
// The file is a sequence of pages of one size (the OS page size when the file was created; it is
// in the meta pages). Pages 0 and 1 are the meta pages, written alternately (transaction id % 2);
// the newest valid one is the database. Every other page belongs to one B+tree (the free-page
// tree FREE_DBI, the main tree MAIN_DBI, whose leaves name the other databases, and one tree per
// named database) or is free (listed in FREE_DBI). Words (pgno_t, txnid_t, size_t) are the width
// of the platform's size_t: a file is not portable between 32- and 64-bit builds.

#include <cstddef>
#include <cstdint>

namespace tank::queue::lmdb_layout {

inline constexpr std::size_t kWord = sizeof(std::size_t);
inline constexpr std::uint32_t kMagic = 0xBEEFC0DEu;
inline constexpr std::uint32_t kDataVersion = 1;
inline constexpr std::uint64_t kInvalidPage = static_cast<std::size_t>(-1);  // an empty tree's root
inline constexpr int kFreeDbi = 0;
inline constexpr int kMainDbi = 1;

// MDB_page header: pgno (word), u16 pad, u16 flags, then u16 lower + u16 upper (branch and leaf
// pages) or u32 number of pages (the first page of an overflow run); node offsets (u16) follow.
inline constexpr std::size_t kPageHeader = kWord + 8;
inline constexpr std::size_t kPagePgno = 0;
inline constexpr std::size_t kPageFlags = kWord + 2;
inline constexpr std::size_t kPageLower = kWord + 4;
inline constexpr std::size_t kPageUpper = kWord + 6;
inline constexpr std::size_t kPageOverflowCount = kWord + 4;

// Page flags.
inline constexpr std::uint16_t kBranch = 0x01;
inline constexpr std::uint16_t kLeaf = 0x02;
inline constexpr std::uint16_t kOverflow = 0x04;
inline constexpr std::uint16_t kMeta = 0x08;
inline constexpr std::uint16_t kLeaf2 = 0x20;
inline constexpr std::uint16_t kSubPage = 0x40;

// MDB_node: u16 lo, u16 hi, u16 flags, u16 key size, then the key, then the data (leaf) -- or for
// a branch node, the child page number in lo | hi << 16 | flags << 32 (64-bit builds).
inline constexpr std::size_t kNodeHeader = 8;
inline constexpr std::uint16_t kNodeBigData = 0x01;  // data is on overflow pages: a pgno word
inline constexpr std::uint16_t kNodeSubData = 0x02;  // data is an MDB_db (a named database)
inline constexpr std::uint16_t kNodeDupData = 0x04;

// MDB_db flags (mdb_dbi_open's, as stored): the key order and LMDB's duplicate-data features.
inline constexpr std::uint16_t kDbReverseKey = 0x02;
inline constexpr std::uint16_t kDbDupSort = 0x04;
inline constexpr std::uint16_t kDbIntegerKey = 0x08;
inline constexpr std::uint16_t kDbDupFixed = 0x10;
inline constexpr std::uint16_t kDbIntegerDup = 0x20;
inline constexpr std::uint16_t kDbReverseDup = 0x40;
// The deepest tree LMDB can read: its cursor holds at most CURSOR_STACK pages.
inline constexpr unsigned kMaxDepth = 32;

// MDB_db: u32 pad, u16 flags, u16 depth, branch pages, leaf pages, overflow pages, entries, root.
inline constexpr std::size_t kDbBytes = 8 + 5 * kWord;
inline constexpr std::size_t kDbFlags = 4;
inline constexpr std::size_t kDbDepth = 6;
inline constexpr std::size_t kDbBranchPages = 8;
inline constexpr std::size_t kDbLeafPages = 8 + kWord;
inline constexpr std::size_t kDbOverflowPages = 8 + 2 * kWord;
inline constexpr std::size_t kDbEntries = 8 + 3 * kWord;
inline constexpr std::size_t kDbRoot = 8 + 4 * kWord;

// MDB_meta, at kPageHeader in pages 0 and 1: u32 magic, u32 version, address, map size, the
// FREE_DBI and MAIN_DBI records (FREE_DBI's pad holds the page size, its flags the environment's
// flags), last page number, transaction id. Offsets are from the start of the page.
inline constexpr std::size_t kMetaMagic = kPageHeader;
inline constexpr std::size_t kMetaVersion = kPageHeader + 4;
inline constexpr std::size_t kMetaMapSize = kPageHeader + 8 + kWord;
inline constexpr std::size_t kMetaFreeDb = kPageHeader + 8 + 2 * kWord;
inline constexpr std::size_t kMetaMainDb = kMetaFreeDb + kDbBytes;
inline constexpr std::size_t kMetaPageSize = kMetaFreeDb;  // FREE_DBI's md_pad
inline constexpr std::size_t kMetaLastPage = kMetaMainDb + kDbBytes;
inline constexpr std::size_t kMetaTxnid = kMetaLastPage + kWord;
// The bytes of a meta page that LMDB reads: the header and MDB_meta.
inline constexpr std::size_t kMetaPageBytes = kMetaTxnid + kWord;

}  // namespace tank::queue::lmdb_layout
