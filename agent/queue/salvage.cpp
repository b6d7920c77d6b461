#include "queue/salvage.hpp"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <optional>
#include <thread>
#include <unordered_set>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "common/fs.hpp"
#include "common/units.hpp"
#include "queue/dead_letter.hpp"
#include "queue/lmdb.hpp"
#include "queue/lmdb_file.hpp"
#include "queue/record.hpp"
#include "queue/verify.hpp"

namespace tank::queue {
namespace {

enum class Kind {
  other,       // not a record (meta, state, a dead letter, another database's entry)
  intact,      // a format-2 record whose checksum matches its bytes and its key
  unverified,  // a format-1 record that decodes (it has no checksum)
  unreadable,  // claims to be a record, but fails its checksum or does not decode
};

std::uint64_t seq_of_key(std::string_view key) {
  std::uint64_t seq = 0;
  for (char c : key) seq = (seq << 8) | static_cast<unsigned char>(c);
  return seq;
}

Kind classify(std::uint64_t seq, std::string_view value) {
  if (value.empty()) return Kind::other;
  const auto format = static_cast<unsigned char>(value[0]);
  if (format != 1 && format != 2) return Kind::other;
  if (format == 2 && record_intact(seq, value)) return Kind::intact;
  // Dead letters share the key size and a format byte of 2 with records.
  if (decode_dead_letter(seq, value)) return Kind::other;
  if (format == 1 && decode_record(seq, value)) return Kind::unverified;
  return Kind::unreadable;
}

std::uint64_t u64_le(std::string_view v) {
  MDB_val val{v.size(), const_cast<char*>(v.data())};
  return lmdb::decode_u64(val);
}

// Seen sequence numbers: a bitmap over the range found in the first pass, or a set when that range
// is too wide for one.
class Seen {
 public:
  Seen(std::uint64_t first, std::uint64_t last) : first_(first) {
    if (last >= first && last - first < (std::uint64_t{1} << 31)) bits_.resize(static_cast<std::size_t>(last - first + 1));
  }
  // True when `seq` was not seen before (and now is).
  bool insert(std::uint64_t seq) {
    if (!bits_.empty() && seq >= first_ && seq - first_ < bits_.size()) {
      const auto i = static_cast<std::size_t>(seq - first_);
      if (bits_[i]) return false;
      bits_[i] = true;
      return true;
    }
    return set_.insert(seq).second;
  }

 private:
  std::uint64_t first_;
  std::vector<bool> bits_;
  std::unordered_set<std::uint64_t> set_;
};

}  // namespace

SalvageReport salvage(const std::filesystem::path& damaged_dir, Queue& live, const SalvageOptions& options) {
  SalvageReport report;
  const lmdb_file::File file(damaged_dir / "data.mdb");
  const lmdb_file::Metas metas = file.read_metas();
  const int newest = metas.newest();
  const std::uint32_t page_size =
      newest >= 0 ? metas.slots[newest].page_size : static_cast<std::uint32_t>(::sysconf(_SC_PAGESIZE));

  // Consumer positions and the queue's id: from its meta database if either snapshot's tree is
  // sound, else from the leaf pages (the largest value of each key: positions only grow).
  std::map<std::string, std::uint64_t, std::less<>> positions;
  std::uint64_t queue_id = 0;
  for (int slot : {newest, 1 - newest}) {
    if (slot < 0 || slot > 1 || !metas.slots[slot].valid) continue;
    try {
      const lmdb_file::CheckResult r = lmdb_file::check_structure(file, metas.slots[slot]);
      if (!r.ok()) continue;
      std::map<std::string, std::uint64_t, std::less<>> found;
      std::uint64_t id = 0;
      lmdb_file::for_each_entry(file, metas.slots[slot], "meta", [&](std::string_view key, std::string_view value) {
        if (value.size() != 8) return true;
        if (key.starts_with("consumer:")) found.emplace(std::string(key.substr(9)), u64_le(value));
        if (key == "queue_id") id = u64_le(value);
        return true;
      });
      positions = std::move(found);
      queue_id = id;
      report.positions_from = fmt::format("its meta database (transaction {})", metas.slots[slot].txnid);
      break;
    } catch (const lmdb_file::DamageError&) {
      continue;
    }
  }
  const bool positions_from_tree = !report.positions_from.empty();

  // First pass: which leaf pages hold records, and the lowest sequence number on each (the second
  // pass goes in that order, so records go back in about their order).
  std::map<std::string, std::uint64_t, std::less<>> scanned_positions;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> pages;  // (lowest sequence number, page)
  std::uint64_t first_seq = UINT64_MAX;
  std::uint64_t last_seq = 0;
  const lmdb_file::ScanStats scanned = lmdb_file::scan_leaves(file, page_size, [&](const lmdb_file::ScannedEntry& e) {
    if (!e.problem.empty()) {
      ++report.unreadable;
      return true;
    }
    if (e.key.size() == 8) {
      const std::uint64_t seq = seq_of_key(e.key);
      const Kind kind = classify(seq, e.value);
      if (kind == Kind::intact || kind == Kind::unverified) {
        if (pages.empty() || pages.back().second != e.page) pages.emplace_back(seq, e.page);
        pages.back().first = std::min(pages.back().first, seq);
        first_seq = std::min(first_seq, seq);
        last_seq = std::max(last_seq, seq);
      } else if (kind == Kind::unreadable) {
        ++report.unreadable;
      }
    } else if (!positions_from_tree && e.value.size() == 8) {
      if (e.key.starts_with("consumer:")) {
        auto& p = scanned_positions[std::string(e.key.substr(9))];
        p = std::max(p, u64_le(e.value));
      } else if (e.key == "queue_id" && queue_id == 0) {
        queue_id = u64_le(e.value);
      }
    }
    return true;
  });
  report.leaf_pages = scanned.leaf_pages;
  if (!positions_from_tree) {
    positions = std::move(scanned_positions);
    report.positions_from = positions.empty() ? "nowhere (no consumer position found: every intact record is taken)"
                                              : "the newest copy of each position on the leaf pages";
  }
  std::uint64_t delivered_through = 0;  // every consumer has acknowledged up to here
  if (!positions.empty()) {
    delivered_through = UINT64_MAX;
    for (const auto& [name, pos] : positions) {
      delivered_through = std::min(delivered_through, pos);
      report.positions.emplace_back(name, pos);
    }
  }
  std::sort(pages.begin(), pages.end());

  // Where an earlier salvage of this queue stopped.
  const std::string through_key =
      "salvage/" + (queue_id != 0 ? fmt::format("{:016x}", queue_id) : damaged_dir.filename().string()) + "/through";
  std::uint64_t taken_through = 0;
  if (auto v = live.state(through_key)) {
    MDB_val val{v->size(), v->data()};
    if (v->size() == 8) taken_through = lmdb::decode_u64(val);
  }

  // Second pass: the records, each once, appended in batches that fit one commit.
  Seen seen(first_seq, last_seq);
  const std::uint64_t budget = live.max_commit_bytes() > 4096 ? live.max_commit_bytes() - 1024 : live.max_commit_bytes();
  WriteBatch batch;
  std::uint64_t batch_through = taken_through;
  std::uint64_t batch_unverified = 0;
  std::chrono::steady_clock::duration waited{};
  auto flush = [&]() -> bool {
    if (batch.records.empty()) return true;
    if (!options.dry_run) {
      batch.state_puts = {{through_key, lmdb::encode_u64(batch_through)}};
      for (;;) {
        const CommitResult r = live.commit(batch);
        if (r.status == CommitStatus::committed) break;
        if (r.status == CommitStatus::full && waited < options.wait_when_full) {
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
          waited += std::chrono::milliseconds(200);
          continue;
        }
        if (r.status == CommitStatus::full) {
          report.stopped = fmt::format("the live queue is full ({}); run the salvage again once its outputs made room "
                                       "(it goes on where it stopped)",
                                       r.error);
          return false;
        }
        if (r.status == CommitStatus::dropped) {
          report.stopped = fmt::format("the live queue dropped {} salvaged records: it is full and its overflow "
                                       "policy is drop_newest ({})",
                                       batch.records.size(), r.error);
          return false;
        }
        throw std::runtime_error(fmt::format("appending salvaged records failed: {}", r.error));
      }
    }
    report.recovered += batch.records.size();
    report.recovered_unverified += batch_unverified;
    report.recovered_bytes += batch.records.bytes();
    batch = WriteBatch{};
    batch_unverified = 0;
    return true;
  };
  std::vector<std::uint64_t> order;
  order.reserve(pages.size());
  for (const auto& [seq, page] : pages) order.push_back(page);
  bool stopped = false;
  lmdb_file::scan_leaf_pages(file, page_size, order, [&](const lmdb_file::ScannedEntry& e) {
    if (!e.problem.empty() || e.key.size() != 8) return true;
    const std::uint64_t seq = seq_of_key(e.key);
    const Kind kind = classify(seq, e.value);
    if (kind != Kind::intact && kind != Kind::unverified) return true;
    if (!seen.insert(seq)) {
      ++report.duplicates;
      return true;
    }
    if (seq <= delivered_through) {
      ++report.delivered;
      return true;
    }
    if (seq <= taken_through) {
      ++report.already_taken;
      return true;
    }
    const std::optional<RecordView> view = decode_record(seq, e.value);
    if (e.value.size() > budget) {
      ++report.too_large;
      return true;
    }
    if (batch.records.bytes() + e.value.size() > budget && !flush()) {
      stopped = true;
      return false;
    }
    const std::vector<Attribute> attributes = decode_attributes(view->attributes);
    batch.records.add(view->input, view->ingest_ns, view->payload, attributes, view->flags);
    batch_through = std::max(batch_through, seq);
    if (kind == Kind::unverified) ++batch_unverified;
    return true;
  });
  if (!stopped && flush()) {
    report.complete = true;
    if (!options.dry_run) {
      std::ofstream marker(damaged_dir / kSalvagedMarker);
      marker << describe(report, damaged_dir) << "\n";
    }
  }
  return report;
}

std::string describe(const SalvageReport& r, const std::filesystem::path& dir) {
  std::string out = fmt::format(
      "salvaged {} record{} ({}) from {}{}", r.recovered, r.recovered == 1 ? "" : "s",
      units::human_size(r.recovered_bytes), dir.string(),
      r.recovered_unverified > 0
          ? fmt::format(", {} of them without a checksum (written before records had checksums: taken because they decode)",
                        r.recovered_unverified)
          : "");
  out += fmt::format(
      "\n  already delivered (at or below every output's position): {}\n  duplicate copies of pages: {}\n"
      "  unreadable (checksum mismatch, malformed, or a value on a reused page): {}\n  positions from {}",
      r.delivered, r.duplicates, r.unreadable, r.positions_from);
  if (r.already_taken > 0) out += fmt::format("\n  taken by an earlier salvage of this queue: {}", r.already_taken);
  if (r.too_large > 0) out += fmt::format("\n  too large for the live queue's commits, not taken: {}", r.too_large);
  if (!r.stopped.empty()) out += "\n  stopped: " + r.stopped;
  return out;
}

boost::json::object to_json(const SalvageReport& r) {
  boost::json::object o;
  o["ok"] = r.stopped.empty();
  o["leaf_pages"] = r.leaf_pages;
  o["recovered"] = r.recovered;
  o["recovered_unverified"] = r.recovered_unverified;
  o["recovered_bytes"] = r.recovered_bytes;
  o["delivered"] = r.delivered;
  o["duplicates"] = r.duplicates;
  o["unreadable"] = r.unreadable;
  o["already_taken"] = r.already_taken;
  o["too_large"] = r.too_large;
  o["positions_from"] = r.positions_from;
  boost::json::object positions;
  for (const auto& [name, pos] : r.positions) positions[name] = pos;
  o["positions"] = std::move(positions);
  o["complete"] = r.complete;
  o["stopped"] = r.stopped;
  return o;
}

SalvageReport salvage_report_from_json(const boost::json::object& o) {
  SalvageReport r;
  auto u64 = [&](const char* key) -> std::uint64_t {
    const auto* v = o.if_contains(key);
    if (v == nullptr) return 0;
    if (v->is_uint64()) return v->as_uint64();
    if (v->is_int64() && v->as_int64() >= 0) return static_cast<std::uint64_t>(v->as_int64());
    return 0;
  };
  auto str = [&](const char* key) {
    const auto* v = o.if_contains(key);
    return v != nullptr && v->is_string() ? std::string(v->as_string()) : std::string();
  };
  r.leaf_pages = u64("leaf_pages");
  r.recovered = u64("recovered");
  r.recovered_unverified = u64("recovered_unverified");
  r.recovered_bytes = u64("recovered_bytes");
  r.delivered = u64("delivered");
  r.duplicates = u64("duplicates");
  r.unreadable = u64("unreadable");
  r.already_taken = u64("already_taken");
  r.too_large = u64("too_large");
  r.positions_from = str("positions_from");
  if (const auto* p = o.if_contains("positions"); p != nullptr && p->is_object()) {
    for (const auto& [name, v] : p->as_object()) {
      if (v.is_uint64()) r.positions.emplace_back(std::string(name), v.as_uint64());
      else if (v.is_int64()) r.positions.emplace_back(std::string(name), static_cast<std::uint64_t>(v.as_int64()));
    }
  }
  const auto* c = o.if_contains("complete");
  r.complete = c != nullptr && c->is_bool() && c->as_bool();
  r.stopped = str("stopped");
  return r;
}

}  // namespace tank::queue
