#include "dedup.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <boost/json.hpp>

#include <fmt/format.h>

namespace tank::plugins::dedup {
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
  key_.assign(record.input.data(), record.input.size());
  key_.push_back('\0');
  if (field_paths_.empty()) {
    key_.append(record.payload.data(), record.payload.size());
  } else {
    for (const auto& p : field_paths_) process::append_value_key(key_, p.find(*document));
  }
  const process::Key128 key = process::hash_key(key_);
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
    it->second = t;
  } else {
    if (seen_.size() >= settings_.max_keys) forget_oldest();
    seen_.emplace(key, t);
  }
  order_.emplace_back(key, t);
  dirty_.insert(key);
  out.pass();
  return Decision::done;
}

void Handler::forget_before(std::int64_t newest) {
  while (!order_.empty()) {
    const auto& [key, t] = order_.front();
    auto it = seen_.find(key);
    if (it != seen_.end() && it->second == t) {
      if (process::time_distance(newest, t) < static_cast<std::uint64_t>(settings_.window_ns)) break;
      seen_.erase(it);
      dirty_.insert(key);
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
      dirty_.insert(key);
      ++evicted_;
      return;
    }
  }
}

void Handler::restore(std::vector<std::pair<std::string, std::string>> entries) {
  seen_.clear();
  order_.clear();
  dirty_.clear();
  newest_ = INT64_MIN;
  std::vector<std::pair<std::int64_t, process::Key128>> sorted;
  for (const auto& [hex, value] : entries) {
    process::Key128 key;
    std::int64_t t = 0;
    if (!process::from_hex(hex, key) || value.size() != sizeof t) {
      throw std::runtime_error(fmt::format("the entry {} is damaged", hex));
    }
    std::memcpy(&t, value.data(), sizeof t);
    sorted.emplace_back(t, key);
  }
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [t, key] : sorted) {
    seen_.emplace(key, t);
    order_.emplace_back(key, t);
    newest_ = std::max(newest_, t);
  }
  // Over the bound (it was lowered): the oldest go.
  while (seen_.size() > settings_.max_keys) forget_oldest();
}

void Handler::take_changes(std::vector<std::pair<std::string, std::string>>& puts, std::vector<std::string>& deletes) {
  for (const auto& key : dirty_) {
    auto it = seen_.find(key);
    if (it == seen_.end()) {
      deletes.push_back(process::to_hex(key));
    } else {
      std::string value(sizeof it->second, '\0');
      std::memcpy(value.data(), &it->second, sizeof it->second);
      puts.emplace_back(process::to_hex(key), std::move(value));
    }
  }
  dirty_.clear();
}

}  // namespace tank::plugins::dedup
