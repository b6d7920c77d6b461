#include "dedup.hpp"

#include <algorithm>
#include <charconv>
#include <unordered_map>
#include <cstring>
#include <stdexcept>

#include <boost/json.hpp>

#include <fmt/format.h>

namespace tank::plugins::dedup {
namespace {

// The state key of a remembered record: its time (16 hex digits that sort like the signed number)
// then its hash. Keys in time order make the stage's writes to LMDB an append at one end and
// deletes at the other, as the queue's own records are, instead of puts scattered over the
// B-tree (each dirtying a page of its own): measured 4x fewer CPU-s per record at 10 % passed.
std::string state_key(std::int64_t t, const process::Key128& key) {
  return fmt::format("{:016x}{}", static_cast<std::uint64_t>(t) ^ (1ULL << 63), process::to_hex(key));
}

}  // namespace
Handler::Handler(Settings settings) : settings_(std::move(settings)) {
  for (const auto& f : settings_.fields) field_paths_.push_back(process::FieldPath::parse_checked(f));
  if (!settings_.time_field.empty()) time_path_ = process::FieldPath::parse_checked(settings_.time_field);
}

process::RecordHandler::Decision Handler::process(const queue::RecordView& record, const boost::json::value* document,
                                                  process::StageOutput& out) {
  std::int64_t t = record.ingest_ns;
  if (time_path_) {
    std::string error;
    const std::optional<std::int64_t> parsed =
        process::field_time_ns(*document, *time_path_, settings_.time_format, &error);
    if (!parsed) {
      out.dead_letter("time_invalid", error);
      return Decision::done;
    }
    t = *parsed;
  }
  process::Key128 key;
  if (field_paths_.empty()) {  // the whole record, byte for byte
    key_.assign(record.input.data(), record.input.size());
    key_.push_back('\0');
    key_.append(record.payload.data(), record.payload.size());
    key = process::hash_key(key_);
  } else {
    key = process::fields_key(key_, record.input, field_paths_, document);
  }
  if (t > newest_) {
    newest_ = t;
    forget_before(newest_);
  }
  auto it = seen_.find(key);
  if (it != seen_.end()) {
    if (process::time_distance(t, it->second) < static_cast<std::uint64_t>(settings_.window_ns)) {
      out.drop("duplicate");
      return Decision::done;
    }
    changes_.emplace_back(state_key(it->second, key), false);
    it->second = t;
  } else {
    if (seen_.size() >= settings_.max_keys) forget_oldest();
    seen_.emplace(key, t);
  }
  order_.emplace_back(key, t);
  changes_.emplace_back(state_key(t, key), true);
  out.pass();
  return Decision::done;
}

void Handler::forget_before(std::int64_t newest) {
  while (!order_.empty()) {
    const auto& [key, t] = order_.front();
    auto it = seen_.find(key);
    if (it != seen_.end() && it->second == t) {
      if (process::time_distance(newest, t) < static_cast<std::uint64_t>(settings_.window_ns)) break;
      changes_.emplace_back(state_key(t, key), false);
      seen_.erase(it);
    }
    order_.pop_front();
  }
}

void Handler::forget_oldest() {
  while (!order_.empty()) {
    const auto [key, t] = order_.front();
    order_.pop_front();
    auto it = seen_.find(key);
    if (it != seen_.end() && it->second == t) {
      seen_.erase(it);
      changes_.emplace_back(state_key(t, key), false);
      ++evicted_;
      return;
    }
  }
}

void Handler::restore(std::vector<std::pair<std::string, std::string>> entries) {
  seen_.clear();
  order_.clear();
  changes_.clear();
  newest_ = INT64_MIN;
  std::vector<std::pair<std::int64_t, process::Key128>> sorted;
  for (const auto& [text, value] : entries) {
    process::Key128 key;
    std::uint64_t bits = 0;
    const auto [end, ec] =
        text.size() == 48 ? std::from_chars(text.data(), text.data() + 16, bits, 16) : std::from_chars_result{};
    if (text.size() != 48 || ec != std::errc() || end != text.data() + 16 ||
        !process::from_hex(std::string_view(text).substr(16), key)) {
      throw std::runtime_error(fmt::format("the entry \"{}\" is damaged", text));
    }
    sorted.emplace_back(static_cast<std::int64_t>(bits ^ (1ULL << 63)), key);
  }
  // Keys sort by time: `entries` come in that order already; sorted again in case.
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [t, key] : sorted) {
    auto [it, fresh] = seen_.emplace(key, t);
    if (!fresh) {  // the same record twice (cannot happen with this code's commits): keep the newest
      changes_.emplace_back(state_key(it->second, key), false);
      it->second = t;
    }
    order_.emplace_back(key, t);
    newest_ = std::max(newest_, t);
  }
  // Over the bound (it was lowered): the oldest go.
  while (seen_.size() > settings_.max_keys) forget_oldest();
}

void Handler::take_changes(std::vector<std::pair<std::string, std::string>>& puts, std::vector<std::string>& deletes) {
  // The last change of a key wins (a key written and forgotten within one commit is deleted).
  // In the order they were made (puts of rising times: appends).
  std::unordered_map<std::string_view, std::size_t> last;
  last.reserve(changes_.size());
  for (std::size_t i = 0; i < changes_.size(); ++i) last[changes_[i].first] = i;
  for (std::size_t i = 0; i < changes_.size(); ++i) {
    const auto& [key, put] = changes_[i];
    if (last[key] != i) continue;  // (the map's views point into changes_: copied, not moved)
    if (put) {
      puts.emplace_back(key, std::string());
    } else {
      deletes.push_back(key);
    }
  }
  changes_.clear();
}

}  // namespace tank::plugins::dedup
