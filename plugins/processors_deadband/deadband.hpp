#pragma once

// processors.deadband: report by exception. Per group (the values of `group_by`, and the input),
// a record is passed on when one of its watched fields moved out of the deadband around the
// value last passed on, when a non-numeric field changed, appeared or went away, for the first
// record of a group, and when `max_interval` passed since the group's last record passed on (a
// heartbeat, decided when a record arrives: nothing is sent for a group that sends nothing).
// Every other record is dropped, counted (tank_processor_dropped_records_total{reason="deadband"}).
//
// A record is passed on whole (all its fields, as it was), so a consumer always sees complete
// records; the values it carried become the group's reference.
//
// Times: the record's `time_field` when set, else its ingest time (committed with the record),
// so the decisions depend only on the records and the state: the stage's state is committed with
// its position (process::RecordStage), and a kill -9 neither repeats nor skips a record.

#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/clock.hpp"
#include "process/event_time.hpp"
#include "process/record_key.hpp"
#include "process/record_stage.hpp"

namespace tank::plugins::deadband {

struct Settings {
  std::vector<std::string> group_by;
  std::vector<std::string> fields;  // paths; ["*"]: every top-level field but group_by and time_field
  std::optional<double> absolute;   // a numeric change larger than this passes the record
  std::optional<double> percent;    // ... or larger than this % of the reference's magnitude
  std::int64_t max_interval_ns = 0;  // 0: no heartbeat
  std::string time_field;            // empty: the ingest time
  process::TimeFormat time_format = process::TimeFormat::automatic;
  std::size_t max_groups = 100000;
};

// One watched value: a number, another JSON value (its canonical bytes), or missing.
struct Value {
  enum class Kind : std::uint8_t { missing = 0, number = 1, other = 2 };
  Kind kind = Kind::missing;
  double number = 0;
  std::string bytes;
  std::string name;  // the field, in "*" mode only
};

class Handler final : public process::RecordHandler {
 public:
  // Throws std::invalid_argument for a malformed path (the configuration check refuses those).
  explicit Handler(Settings settings);

  bool needs_json(std::string_view) const override { return true; }
  void restore(std::vector<std::pair<std::string, std::string>> entries) override;
  Decision process(const queue::RecordView& record, const boost::json::value* document,
                   process::StageOutput& out) override;
  void take_changes(std::vector<std::pair<std::string, std::string>>& puts, std::vector<std::string>& deletes) override;
  std::size_t pending_change_bytes() const override { return dirty_.size() * state_bytes_; }

  std::uint64_t evictions() const override { return evicted_; }
  std::size_t groups() const { return groups_.size(); }

  // Whether `now` is out of the deadband around `reference` (exposed for tests).
  bool moved(const Value& reference, const Value& now) const;

 private:
  struct Group {
    std::int64_t last_ns = 0;
    std::vector<Value> values;
    std::list<process::Key128>::iterator lru;
  };

  void read_values(const boost::json::value& doc, std::vector<Value>& out) const;
  bool changed(const Group& g, const std::vector<Value>& now) const;
  std::string encode(const Group& g) const;
  static bool decode(std::string_view bytes, Group& g);

  Settings settings_;
  bool all_fields_ = false;
  std::vector<process::FieldPath> group_paths_;
  std::vector<process::FieldPath> field_paths_;
  std::optional<process::FieldPath> time_path_;
  std::unordered_map<process::Key128, Group, process::Key128Hash> groups_;
  std::list<process::Key128> lru_;  // least recently passed on first
  std::unordered_set<process::Key128, process::Key128Hash> dirty_;
  std::vector<process::Key128> evicted_keys_;
  std::uint64_t evicted_ = 0;
  std::size_t state_bytes_ = 64;
  std::string key_;             // scratch
  std::vector<Value> current_;  // scratch
};

}  // namespace tank::plugins::deadband
