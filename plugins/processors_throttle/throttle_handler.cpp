#include "throttle.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <boost/json.hpp>

#include <fmt/format.h>

namespace tank::plugins::throttle {

Handler::Handler(Settings settings, const Clock& clock) : settings_(std::move(settings)), clock_(clock) {
  for (const auto& g : settings_.group_by) group_paths_.push_back(process::FieldPath::parse_checked(g));
  ns_per_token_ = static_cast<double>(settings_.per_ns) / static_cast<double>(settings_.rate);
}

void Handler::refill(Bucket& b, std::int64_t now) const {
  if (now <= b.at_ns) return;
  const double capacity = static_cast<double>(settings_.rate);
  b.tokens = std::min(capacity, b.tokens + static_cast<double>(now - b.at_ns) / ns_per_token_);
  b.at_ns = now;
}

// Forgets the groups whose buckets are full again (they are as good as new); when every group is
// busy, one of them (counted: its next record finds a full bucket).
void Handler::make_room(std::int64_t now) {
  const double capacity = static_cast<double>(settings_.rate);
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    refill(it->second, now);
    it = it->second.tokens >= capacity ? buckets_.erase(it) : std::next(it);
  }
  if (buckets_.size() >= settings_.max_groups) {
    buckets_.erase(buckets_.begin());
    ++evicted_;
  }
}

process::RecordHandler::Decision Handler::process(const queue::RecordView& record, const boost::json::value* document,
                                                  process::StageOutput& out) {
  const std::int64_t now = clock_.steady_ns();
  const process::Key128 key = process::fields_key(key_, record.input, group_paths_, document);
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    if (buckets_.size() >= settings_.max_groups) make_room(now);
    it = buckets_.emplace(key, Bucket{static_cast<double>(settings_.rate), now}).first;
  }
  Bucket& b = it->second;
  refill(b, now);
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    out.pass();
    return Decision::done;
  }
  if (settings_.hold) {
    hold_until_ = now + static_cast<std::int64_t>(std::ceil((1.0 - b.tokens) * ns_per_token_));
    return Decision::hold;
  }
  out.drop("rate_limit");
  return Decision::done;
}

}  // namespace tank::plugins::throttle
