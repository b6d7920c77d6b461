#pragma once

// processors.dedup: drops a record equal to one passed on within `window` before it. Equal: the
// same input and the same values of `fields` (JSON values compared as values: 1 and 1.0 are
// equal, object members in order), or without `fields` the same payload bytes. The first of
// equal records passes and opens the window; the others within it are dropped, counted
// (tank_processor_dropped_records_total{reason="duplicate"}); the first after it passes and opens
// a new one (Telegraf's processors.dedup behaves the same way).
//
// The keys seen are kept as 128-bit hashes with the time of the record that passed (the state
// key is that time then the hash, so LMDB sees appends and deletes at the ends), at most
// `max_keys` (one more forgets the oldest, counted in tank_processor_evicted_keys_total), and
// forgotten once the newest time is `window` past theirs. They are committed with the stage's
// position (process::RecordStage): a kill -9 neither repeats nor skips a record.
//
// Times: the record's `time_field` when set, else its ingest time (committed with the record),
// so a replay decides the same way.

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>

#include <boost/unordered/unordered_flat_map.hpp>
#include <vector>

#include "process/event_time.hpp"
#include "process/record_key.hpp"
#include "process/record_stage.hpp"

namespace tank::plugins::dedup {

struct Settings {
  std::vector<std::string> fields;  // empty: the whole payload
  std::int64_t window_ns = 600'000'000'000;
  std::size_t max_keys = 100000;
  std::string time_field;  // empty: the ingest time
  process::TimeFormat time_format = process::TimeFormat::automatic;
};

class Handler final : public process::RecordHandler {
 public:
  // Throws std::invalid_argument for a malformed path (the configuration check refuses those).
  explicit Handler(Settings settings);

  bool needs_json(std::string_view) const override { return !field_paths_.empty() || time_path_.has_value(); }
  void restore(std::vector<std::pair<std::string, std::string>> entries) override;
  Decision process(const queue::RecordView& record, const boost::json::value* document,
                   process::StageOutput& out) override;
  void take_changes(std::vector<std::pair<std::string, std::string>>& puts, std::vector<std::string>& deletes) override;
  std::size_t pending_change_bytes() const override { return changes_.size() * 112; }
  std::uint64_t evictions() const override { return evicted_; }

  std::size_t keys() const { return seen_.size(); }

 private:
  void forget_before(std::int64_t newest);
  void forget_oldest();

  Settings settings_;
  std::vector<process::FieldPath> field_paths_;
  std::optional<process::FieldPath> time_path_;
  // key -> time it passed; open addressing (Boost 1.81): one probe in a flat array per record, not a
  // node per key (the node map was 14 % of the stage's time in cache misses).
  boost::unordered_flat_map<process::Key128, std::int64_t, process::Key128Hash> seen_;
  // Keys in the order they passed, with that time; an entry whose time is no longer seen_'s (the
  // key passed again, or was forgotten) is stale and skipped.
  std::deque<std::pair<process::Key128, std::int64_t>> order_;
  std::vector<std::pair<std::string, bool>> changes_;  // state keys put (true) or deleted, in order
  std::int64_t newest_ = INT64_MIN;
  std::uint64_t evicted_ = 0;
  std::string key_;  // scratch
};

}  // namespace tank::plugins::dedup
