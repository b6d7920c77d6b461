#pragma once

// Salvage: the records of a damaged queue (one tank moved aside as queue.damaged-<time>, or any
// LMDB data file of a queue) put back into a live queue.
//
// The damaged file's trees are not trusted: every page of the file that looks like an LMDB leaf
// page is read (lmdb_file::scan_leaves), and each entry that is a record proves itself by its
// checksum, which also covers its sequence number (record.hpp, format 2). What is taken:
//
//   leaf pages ──▶ record? ──no──▶ ignored (meta, state, dead letters)
//                     │yes
//                     ▼
//                 intact? ──no──▶ unreadable (counted)
//                     │yes
//                     ▼
//   at or below every consumer's position? ──yes──▶ delivered already (counted, not taken)
//                     │no
//                     ▼
//   a copy of a record already taken? ──yes──▶ duplicate (LMDB is copy-on-write: old copies of
//                     │no                       pages stay in the file until reused)
//                     ▼
//                 appended to the live queue with its input name, attributes, ingest time and
//                 flags, under a new sequence number
//
// Consumer positions come from the damaged queue's own meta database when its tree is readable
// from either meta page, else from the newest copy of each "consumer:" entry found on leaf pages;
// when none is found nothing counts as delivered. Records of format 1 (written before records had
// a checksum) cannot prove themselves: they are taken when they decode, and counted apart.
//
// Idempotent: the live queue keeps, in the same transactions as the records, the highest
// sequence number of the damaged queue it took (state "salvage/<damaged queue id>/through"), so a
// salvage interrupted (kill -9, a full queue) and run again goes on where it stopped. A complete
// salvage leaves the marker file SALVAGED (verify.hpp) in the damaged directory, so that tank may
// delete it when it prunes moved-aside queues.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <boost/json/object.hpp>

#include "queue/queue.hpp"

namespace tank::queue {

struct SalvageOptions {
  bool dry_run = false;  // count only: nothing is appended, no marker is written
  // How long to wait, in all, while the live queue refuses records as full (an agent delivering
  // makes room); 0: stop at the first refusal.
  std::chrono::seconds wait_when_full{0};
};

struct SalvageReport {
  std::uint64_t leaf_pages = 0;        // plausible leaf pages read
  std::uint64_t recovered = 0;         // records appended (or, dry run, that would be)
  std::uint64_t recovered_unverified = 0;  // of them, format-1 records (no checksum to prove them)
  std::uint64_t recovered_bytes = 0;
  std::uint64_t delivered = 0;         // intact records at or below every consumer's position
  std::uint64_t duplicates = 0;        // further copies of records already counted
  std::uint64_t unreadable = 0;        // entries that claim to be records but fail their checksum or do not decode
  std::uint64_t already_taken = 0;     // taken by an earlier, interrupted salvage of the same queue
  std::uint64_t too_large = 0;         // records larger than the live queue's largest commit: not taken
  std::string positions_from;          // where the consumer positions came from
  std::vector<std::pair<std::string, std::uint64_t>> positions;
  bool complete = false;               // everything that could be taken was (then SALVAGED is written)
  std::string stopped;                 // why it stopped before the end ("" when complete)
};

// Salvages `damaged_dir` (its data.mdb) into `live`. Never modifies anything in `damaged_dir` but
// the marker. Throws lmdb_file::IoError when the damaged file cannot be read, std::runtime_error
// when the live queue fails a commit (what was committed before stays, and a rerun goes on).
SalvageReport salvage(const std::filesystem::path& damaged_dir, Queue& live, const SalvageOptions& options = {});

// The report as sentences for people (`tank queue salvage`).
std::string describe(const SalvageReport& report, const std::filesystem::path& damaged_dir);

// The report as JSON (the control socket's answer, `tank queue salvage --json`), and back.
boost::json::object to_json(const SalvageReport& report);
SalvageReport salvage_report_from_json(const boost::json::object& json);

}  // namespace tank::queue
