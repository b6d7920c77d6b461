#pragma once

// Reading an LMDB 0.9 data file (data.mdb) without LMDB: with pread, never through a memory map,
// checking every offset before using it. So a damaged file gives a sentence naming the page that
// is wrong (never a crash, never a loop), and a failing device gives IoError (EIO: a transient
// fault, not damage). The layout is in lmdb_layout.hpp.
//
// Used where LMDB itself cannot be trusted with the file: the start-up check (verify.hpp) judges
// the structure before LMDB maps it, the recovery point (recovery_point.hpp) reads and restores
// meta pages, and salvage reads records from damaged files.
//
//   File ──read_metas()──▶ Metas ──slots[newest()]──▶ Meta ─┬─▶ check_structure()  ok | damaged
//     │                                                     │    (every tree, every page LMDB
//     │                                                     │     would dereference; `full`: the
//     │                                                     │     free list and an accounting)
//     │                                                     └─▶ for_each_entry()   key, value
//     │                                                          (of a named database, in order)
//     └──────────────────scan_leaves()──▶ every plausible leaf page's entries, no meta, no tree
//
// What the reader knows of LMDB (mdb.c of 0.9.24; tank uses none of DUPSORT, LEAF2 pages,
// sub-pages, MDB_WRITEMAP's own quirks aside):
//   - A snapshot is a meta page: the roots of FREE_DBI (transaction id -> page numbers freed by
//     it) and MAIN_DBI (whose leaf nodes with F_SUBDATA hold the MDB_db of each named database),
//     and last_page. Every page 2..last_page is in exactly one tree or listed free ("Each
//     non-metapage up to mm_last_pg is reachable exactly once in the snapshot", mdb.c).
//   - Pages are copy-on-write: a commit writes new pages, never the pages of the snapshots a
//     reader may hold; only meta pages are overwritten. So old copies of pages stay in the file
//     (free) until reused: a leaf scan finds the same key several times.
//   - The file may end before last_page: pages a transaction took at the end of the file and
//     freed again before its commit ("loose" pages) go to the free list without ever being
//     written. Only free pages may lie past the end (up to 15 of them seen in the tests).
//   - The other meta slot names the previous commit, whose pages stay intact until the next
//     commit starts: commit N frees that snapshot's pages, and they are reused from commit N+1
//     on, which overwrites that slot last. A commit cut short (a crash, a power cut) may have
//     reused them while the slot still names them.
//   - An overflow run may be longer than its value needs (LMDB rewrites a smaller value in the
//     run it had), and a FREE_DBI value may have room for more page numbers than it counts.
//
// Concurrency: the functions read the file as it is while they run. Checking a file that a writer
// changes at the same time proves nothing unless the snapshot is pinned (an LMDB read transaction
// on that snapshot, held across the check, keeps its pages from being reused); the start-up check
// runs before any writer. Every function is safe to call from several threads on one File.

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tank::queue::lmdb_file {

// Reading the file failed (EIO, ENOMEM, EMFILE...): says nothing about its content. Also thrown,
// with ENOMEM, when memory for a page, a value or the page map cannot be allocated.
class IoError : public std::runtime_error {
 public:
  IoError(int code, const std::string& what) : std::runtime_error(what), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

// The file is not what LMDB writes: `what()` is the proof sentence, naming the page. Thrown by
// the functions below that cannot return a CheckResult (for_each_entry, find_database).
class DamageError : public std::runtime_error {
 public:
  DamageError(std::uint64_t page, const std::string& what) : std::runtime_error(what), page_(page) {}
  // The page the problem was found on (0 or 1 for a meta page).
  std::uint64_t page() const { return page_; }

 private:
  std::uint64_t page_;
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
// Never fails: a page that is not a meta page gives valid = false and `problem`.
Meta parse_meta(std::string_view page, int slot);

// An LMDB data file open for reading (O_RDONLY, O_CLOEXEC). Reads with pread only: a truncated or
// damaged file can never raise SIGBUS or SIGSEGV in the reader. Movable, not copyable.
class File {
 public:
  // Opens `path`. Throws IoError when it cannot be opened (ENOENT included: the caller decides
  // what a missing file means).
  explicit File(const std::filesystem::path& path);
  ~File();
  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::filesystem::path& path() const { return path_; }

  // The file's length now (fstat). Throws IoError.
  std::uint64_t size() const;

  // Reads up to `n` bytes at `offset` into `out`: exactly `n` unless the file ends first (then
  // what is there, possibly 0). Retries EINTR and short reads. Throws IoError on any other error.
  std::size_t read_at(std::uint64_t offset, char* out, std::size_t n) const;

  // Asks the kernel to read [offset, offset + length) ahead (POSIX_FADV_WILLNEED), so that reads
  // of pages scattered over the file are queued at once instead of one after the other. Advice
  // only: never fails, never blocks for the reads.
  void prefetch(std::uint64_t offset, std::uint64_t length) const noexcept;

  // Reads both meta pages (page 1 lies at the page size page 0 names, else at the OS page size;
  // a file too short for them gives invalid metas). file_bytes is the size after the metas were
  // read, so a writer that grew the file before committing is seen. Throws IoError.
  Metas read_metas() const;

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

// Opens `data_file` and reads its meta pages (File::read_metas). Throws IoError.
Metas read_metas(const std::filesystem::path& data_file);

// --- Checking a snapshot -------------------------------------------------------------------------

enum class CheckDepth {
  // Every tree: FREE_DBI, MAIN_DBI and each named database, every branch and leaf page, and the
  // first page of every overflow run. Reads about the file minus its overflow pages' contents; for
  // every start-up.
  structure,
  // Also the free list: each FREE_DBI value is a count and that many page numbers in descending
  // order (as LMDB writes them), each in [2, last_page], named once, in no tree (values on
  // overflow pages are read whole); and an accounting of pages 2..last_page, each in exactly one
  // tree or free.
  full,
};

struct CheckOptions {
  CheckDepth depth = CheckDepth::structure;
  // Called about every 1024 pages read (a long check extends systemd's start timeout with it).
  // May throw: the exception ends the check and propagates out of check_structure.
  std::function<void()> progress;
};

struct NamedDb {
  std::string name;  // MAIN_DBI's key (bytes, not necessarily text)
  Db db;             // its MDB_db as stored in MAIN_DBI
};

struct CheckResult {
  enum class Outcome {
    ok,           // every check passed
    damaged,      // `problem` proves the snapshot is not what LMDB writes
    unsupported,  // a feature tank never uses (DUPSORT, a page size above 32 KiB): not judged
  };
  Outcome outcome = Outcome::ok;
  // damaged: one sentence naming where and what, e.g. 'page 4711 (database "records", depth 2,
  // child 3 of page 12): node 7 lies outside the page'. unsupported: what was met.
  std::string problem;
  std::uint64_t page = 0;  // the page `problem` is about (0 or 1: the meta page)

  // Found on the way (complete when ok, partial otherwise):
  std::vector<NamedDb> databases;    // MAIN_DBI's F_SUBDATA entries, in key order
  std::uint64_t tree_pages = 0;      // branch, leaf and overflow pages of every tree
  std::uint64_t file_pages = 0;      // whole pages in the file when the check started
  std::uint64_t pages_read = 0;      // page reads done (overflow runs read whole count each page)
  std::uint64_t bytes_read = 0;

  // full only:
  std::uint64_t free_pages = 0;          // page numbers in the free list
  std::uint64_t free_past_end = 0;       // of them, past the file's end (never written, legitimate)
  // Pages 2..last_page in no tree and not free. LMDB 0.9.24 left none in any state measured
  // (about 1,300 commits of raw LMDB workloads with nested and aborted transactions, pinned
  // readers, mdb_drop and values freed by the transaction that wrote them, and of tank's queue at
  // its bound: tests/unit/lmdb_file_test.cpp), and mdb.c states the invariant; but mdb_audit,
  // LMDB's own check of it, only prints, and a lost page harms nothing LMDB reads (it is space
  // lost until a compacting copy). So they are reported here, not taken for damage.
  std::uint64_t unaccounted_pages = 0;
  std::vector<std::uint64_t> unaccounted_sample;  // the lowest of them, at most 16

  bool ok() const { return outcome == Outcome::ok; }
};

// Checks the snapshot `meta` names (from File::read_metas(), or a recovery point's copy decoded
// with parse_meta) in `file`, reading only through `file`. For every page it reaches it checks
// what LMDB dereferences when it reads that page (and first that last_page lies inside the map
// size the meta page records):
//   - the page number lies in [2, last_page] and inside the file; the header names that number;
//   - the flags fit the position: branch above md_depth, leaf at md_depth, overflow for F_BIGDATA
//     data (exactly these flags: LMDB clears P_DIRTY before writing a page);
//   - lower/upper: header <= lower <= upper <= page size, lower - header even; a branch page has
//     at least 2 keys (1 in FREE_DBI), a leaf at least 1;
//   - every node lies at an even offset in [upper, page size), its header, key and inline data
//     inside the page, and the nodes tile [upper, page size): no overlap, no gap (LMDB moves the
//     other nodes whenever it adds, deletes or resizes one);
//   - keys strictly increasing within a page and inside the range the parent's separators give
//     (byte order, MDB_REVERSEKEY's reversed byte order, MDB_INTEGERKEY's native integers; FREE_DBI
//     keys are native size_t);
//   - leaf node flags: F_BIGDATA, and F_SUBDATA in MAIN_DBI with an MDB_db of the right size;
//   - overflow runs: first page's header and flags, a page count big enough for the data size,
//     the whole run inside [2, last_page] and inside the file;
//   - per tree: depth == md_depth, branch/leaf/overflow pages and entries == its MDB_db;
//   - no page reached twice (a cycle, or two trees sharing a page).
// With CheckDepth::full also the free list and the accounting (see CheckDepth, unaccounted_pages).
//
// Returns ok, damaged with the first problem found, or unsupported. An invalid `meta` (valid ==
// false) gives damaged with its problem. Throws IoError when the file cannot be read (never
// reported as damage), and whatever `options.progress` throws.
//
// Caveats: a passing check proves the snapshot's structure, not its values: a value's bytes are
// only as good as its record's own checksum says. Time: one read of each branch and leaf page in
// tree order, the children of each branch page asked for at once (File::prefetch); on a cold
// cache a queue whose leaves lie on reused pages is bound by the device's random reads. Memory:
// 2 bytes per page of the file for the page map, a page per tree level, the largest value read.
CheckResult check_structure(const File& file, const Meta& meta, const CheckOptions& options = {});

// --- Reading entries -----------------------------------------------------------------------------

// Called with each entry; the views are valid only during the call. Return false to stop.
using EntryVisitor = std::function<bool(std::string_view key, std::string_view value)>;

// The named database `name` of the snapshot (its MDB_db, read from MAIN_DBI), or false when the
// snapshot has none by that name. Throws DamageError when a page on the way is damaged, IoError.
bool find_database(const File& file, const Meta& meta, std::string_view name, Db* db);

// Calls `visit` for each entry of the named database `name` in key order, with its whole value
// (values on overflow pages read whole). Returns false when the snapshot has no such database,
// true otherwise (also when `visit` stopped early).
// Meant for a snapshot check_structure passed: it makes the same checks on every page it reads,
// so a damaged page still never crashes or loops, but throws DamageError at the first problem
// (after visiting the entries before it). Throws IoError, and whatever `visit` throws. A
// DUPSORT database throws DamageError (not supported).
bool for_each_entry(const File& file, const Meta& meta, std::string_view name, const EntryVisitor& visit);

// --- Salvage ---------------------------------------------------------------------------------------

struct ScannedEntry {
  std::uint64_t page = 0;       // the leaf page it is on
  unsigned index = 0;           // its node's index on that page
  std::uint16_t node_flags = 0; // lmdb_layout::kNodeBigData, kNodeSubData (a MAIN_DBI leaf) or 0
  std::string_view key;         // empty when the node itself lies outside the page
  std::string_view value;       // the whole value; empty when `problem` is set
  std::string problem;          // empty, or why the value (or the node) could not be read
};

struct ScanStats {
  std::uint64_t pages = 0;        // pages looked at (2 .. the last whole page of the file)
  std::uint64_t leaf_pages = 0;   // of them, plausible leaf pages
  std::uint64_t entries = 0;      // entries visited with their value
  std::uint64_t unreadable = 0;   // entries visited with a problem
  std::uint64_t bytes_read = 0;
};

// Visits every entry of every plausible leaf page of the file (pages 2 up to its end), trusting
// no meta page and no tree: a page is a plausible leaf when its header names its own page number,
// its flags are exactly P_LEAF, and lower/upper are sane. Each node is checked on its own (inside
// the page, known flags); a node that is not gives an entry with `problem` (and no key when it
// lies outside the page). A value on overflow pages is read whole when its run looks valid (first
// page's number, flags and count, inside the file), else the entry has `problem`.
// `page_size` is the file's page size (a valid meta page's, else the OS page size). Leaves of
// every database come out in file order, old copies too (copy-on-write): the same key may come
// several times with different values, and free pages hold stale leaves; the caller tells records
// from other keys, proves each with its own checksum, and deduplicates. `visit` returns false to
// stop. Throws IoError, std::invalid_argument for a page size LMDB never uses, and whatever
// `visit` throws. Memory: about 1 MiB plus the largest value read.
ScanStats scan_leaves(const File& file, std::uint32_t page_size,
                      const std::function<bool(const ScannedEntry&)>& visit);

// scan_leaves for the given pages only, in the given order (pages that are not plausible leaf
// pages, or lie past the end, give nothing): a second pass over pages a first scan found.
ScanStats scan_leaf_pages(const File& file, std::uint32_t page_size, const std::vector<std::uint64_t>& pages,
                          const std::function<bool(const ScannedEntry&)>& visit);

}  // namespace tank::queue::lmdb_file
