#pragma once

// processors.throttle: at most `rate` records per `per` per group (the values of `group_by`, and
// the input), by processing time: a token bucket per group holding up to `rate` tokens (the
// burst), refilled at rate/per.
//
//   mode = "hold"  a record with no token waits in the queue (the stage holds at it and reads it
//                  again when a token is due): nothing is lost, the queue absorbs the excess
//                  under its bounds and overflow policy. It keeps the order, so the records
//                  behind it wait too, of every group and input the stage takes.
//   mode = "drop"  a record with no token is dropped, counted in
//                  tank_processor_dropped_records_total{reason="rate_limit"}.
//
// Rates follow the processing time (Clock::steady_ns), so the buckets are not saved: after a
// restart they start full, and records a kill -9 makes the stage read again are decided again.

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/clock.hpp"
#include "process/event_time.hpp"
#include "process/record_key.hpp"
#include "process/record_stage.hpp"

namespace tank::plugins::throttle {

struct Settings {
  std::int64_t rate = 1;
  std::int64_t per_ns = 1'000'000'000;
  std::vector<std::string> group_by;
  bool hold = true;  // else drop
  std::size_t max_groups = 100000;
};

class Handler final : public process::RecordHandler {
 public:
  // Throws std::invalid_argument for a malformed path (the configuration check refuses those).
  Handler(Settings settings, const Clock& clock);

  bool needs_json(std::string_view) const override { return !group_paths_.empty(); }
  void restore(std::vector<std::pair<std::string, std::string>>) override {}
  Decision process(const queue::RecordView& record, const boost::json::value* document,
                   process::StageOutput& out) override;
  std::int64_t hold_until() const override { return hold_until_; }
  void take_changes(std::vector<std::pair<std::string, std::string>>&, std::vector<std::string>&) override {}
  std::size_t pending_change_bytes() const override { return 0; }
  std::uint64_t evictions() const override { return evicted_; }

  std::size_t groups() const { return buckets_.size(); }

 private:
  struct Bucket {
    double tokens = 0;
    std::int64_t at_ns = 0;  // when `tokens` was right
  };
  void refill(Bucket& b, std::int64_t now) const;
  void make_room(std::int64_t now);

  Settings settings_;
  const Clock& clock_;
  std::vector<process::FieldPath> group_paths_;
  std::unordered_map<process::Key128, Bucket, process::Key128Hash> buckets_;
  double ns_per_token_ = 1e9;
  std::int64_t hold_until_ = 0;
  std::uint64_t evicted_ = 0;
  std::string key_;  // scratch
};

}  // namespace tank::plugins::throttle
