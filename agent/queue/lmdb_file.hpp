#pragma once

// Reading an LMDB 0.9 data file (data.mdb) without LMDB: with pread, never through a memory map,
// checking every offset before using it. So a damaged file gives a sentence naming the page that
// is wrong (never a crash, never a loop), and a failing device gives IoError (EIO: a transient
// fault, not damage). The layout is in lmdb_layout.hpp.
//
// Used where LMDB itself cannot be trusted with the file: the start-up check (verify.hpp) judges
// the structure before LMDB maps it, the recovery point (recovery_point.hpp) reads and restores
// meta pages, and salvage reads records from damaged files.

#include <array>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

namespace tank::queue::lmdb_file {

// Reading the file failed (EIO, ENOMEM, EMFILE...): says nothing about its content.
class IoError : public std::runtime_error {
 public:
  IoError(int code, const std::string& what) : std::runtime_error(what), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

struct Db {
  std::uint16_t flags = 0;
  std::uint16_t depth = 0;
  std::uint64_t branch_pages = 0;
  std::uint64_t leaf_pages = 0;
  std::uint64_t overflow_pages = 0;
  std::uint64_t entries = 0;
  std::uint64_t root = 0;  // lmdb_layout::kInvalidPage for an empty tree
};

struct Meta {
  int slot = 0;            // 0 or 1: the page it was read from
  bool valid = false;      // magic, version, page number and flags as LMDB writes them
  std::string problem;     // why not valid
  std::uint32_t page_size = 0;
  std::uint64_t map_size = 0;
  Db free_db;
  Db main_db;
  std::uint64_t last_page = 0;
  std::uint64_t txnid = 0;
  std::string raw;         // the page's first lmdb_layout::kMetaPageBytes bytes
};

struct Metas {
  std::array<Meta, 2> slots;
  std::uint64_t file_bytes = 0;
  // The slot LMDB would open (the valid one with the larger transaction id), or -1 when neither is
  // valid.
  int newest() const;
};

// Decodes a meta page's first bytes (at least lmdb_layout::kMetaPageBytes; fewer: not valid).
Meta parse_meta(std::string_view page, int slot);

// Reads both meta pages of `data_file` (page 1 lies at the page size page 0 names, else at the
// OS page size). A file too short for them gives invalid metas. Throws IoError when the file
// cannot be opened or read.
Metas read_metas(const std::filesystem::path& data_file);

}  // namespace tank::queue::lmdb_file
