#include "deadband.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include <boost/json.hpp>

#include <fmt/format.h>

namespace tank::plugins::deadband {
namespace {

// State value layout (little-endian), version 1:
//   u8 version  i64 last_ns  u16 count  { u16 name length, name, u8 kind, (f64 | u32 length, bytes) }
constexpr std::uint8_t kStateVersion = 1;

template <class T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

template <class T>
bool get(std::string_view& in, T& v) {
  if (in.size() < sizeof(T)) return false;
  std::memcpy(&v, in.data(), sizeof(T));
  in.remove_prefix(sizeof(T));
  return true;
}


void read_value(const boost::json::value* v, Value& out) {
  out.bytes.clear();
  if (v == nullptr) {
    out.kind = Value::Kind::missing;
  } else if (v->is_number()) {
    out.kind = Value::Kind::number;
    out.number = v->to_number<double>();
  } else {
    out.kind = Value::Kind::other;
    process::append_value_key(out.bytes, v);
  }
}

}  // namespace

Handler::Handler(Settings settings) : settings_(std::move(settings)) {
  all_fields_ = settings_.fields.size() == 1 && settings_.fields[0] == "*";
  for (const auto& g : settings_.group_by) group_paths_.push_back(process::FieldPath::parse_checked(g));
  if (!all_fields_) {
    for (const auto& f : settings_.fields) field_paths_.push_back(process::FieldPath::parse_checked(f));
  }
  if (!settings_.time_field.empty()) time_path_ = process::FieldPath::parse_checked(settings_.time_field);
}

void Handler::read_values(const boost::json::value& doc, std::vector<Value>& out) const {
  if (!all_fields_) {
    out.resize(field_paths_.size());
    for (std::size_t k = 0; k < field_paths_.size(); ++k) read_value(field_paths_[k].find(doc), out[k]);
    return;
  }
  // "*": the top-level members but group_by and time_field, by name.
  std::size_t n = 0;
  if (const auto* object = doc.if_object()) {
    for (const auto& member : *object) {
      const std::string_view key = member.key();
      if (std::find(settings_.group_by.begin(), settings_.group_by.end(), key) != settings_.group_by.end()) continue;
      if (key == settings_.time_field) continue;
      if (out.size() <= n) out.emplace_back();
      out[n].name.assign(key.data(), key.size());
      read_value(&member.value(), out[n]);
      ++n;
    }
  }
  out.resize(n);
  std::sort(out.begin(), out.end(), [](const Value& a, const Value& b) { return a.name < b.name; });
}

bool Handler::moved(const Value& reference, const Value& now) const {
  if (reference.kind != now.kind) return true;
  switch (now.kind) {
    case Value::Kind::missing: return false;
    case Value::Kind::other: return reference.bytes != now.bytes;
    case Value::Kind::number: break;
  }
  const double a = reference.number;
  const double b = now.number;
  if (!std::isfinite(a) || !std::isfinite(b)) return !(a == b);  // infinities (numbers too large for a double)
  const double delta = std::fabs(b - a);
  if (!settings_.absolute && !settings_.percent) return delta != 0;
  if (settings_.absolute && delta > *settings_.absolute) return true;
  if (settings_.percent && delta > *settings_.percent / 100.0 * std::fabs(a)) return true;
  return false;
}

bool Handler::changed(const Group& g, const std::vector<Value>& now) const {
  if (!all_fields_) {
    for (std::size_t k = 0; k < now.size(); ++k) {
      if (moved(g.values[k], now[k])) return true;
    }
    return false;
  }
  // Both sorted by name: a field on one side only is a change.
  if (g.values.size() != now.size()) return true;
  for (std::size_t k = 0; k < now.size(); ++k) {
    if (g.values[k].name != now[k].name || moved(g.values[k], now[k])) return true;
  }
  return false;
}

process::RecordHandler::Decision Handler::process(const queue::RecordView& record, const boost::json::value* document,
                                                  process::StageOutput& out) {
  const boost::json::value& doc = *document;
  if (!doc.is_object()) {
    out.dead_letter("not_an_object", "the record is not a JSON object");
    return Decision::done;
  }
  std::int64_t t = record.ingest_ns;
  if (time_path_) {
    std::string error;
    const std::optional<std::int64_t> parsed =
        process::field_time_ns(doc, *time_path_, settings_.time_format, &error);
    if (!parsed) {
      out.dead_letter("time_invalid", error);
      return Decision::done;
    }
    t = *parsed;
  }
  const process::Key128 key = process::fields_key(key_, record.input, group_paths_, &doc);
  read_values(doc, current_);

  auto it = groups_.find(key);
  if (it != groups_.end()) {
    Group& g = it->second;
    const bool heartbeat = settings_.max_interval_ns > 0 && process::time_distance(t, g.last_ns) >=
                                                                static_cast<std::uint64_t>(settings_.max_interval_ns);
    if (!heartbeat && !changed(g, current_)) {
      out.drop("deadband");
      return Decision::done;
    }
    g.last_ns = t;
    g.values.swap(current_);
    lru_.splice(lru_.end(), lru_, g.lru);
  } else {
    if (groups_.size() >= settings_.max_groups) {
      // The group passed on longest ago is forgotten: its next record passes as a first one.
      const process::Key128 oldest = lru_.front();
      lru_.pop_front();
      groups_.erase(oldest);
      dirty_.erase(oldest);
      evicted_keys_.push_back(oldest);
      ++evicted_;
    }
    Group g;
    g.last_ns = t;
    g.values.swap(current_);
    lru_.push_back(key);
    g.lru = std::prev(lru_.end());
    groups_.emplace(key, std::move(g));
  }
  dirty_.insert(key);
  out.pass();
  return Decision::done;
}

std::string Handler::encode(const Group& g) const {
  std::string out;
  put<std::uint8_t>(out, kStateVersion);
  put<std::int64_t>(out, g.last_ns);
  put<std::uint16_t>(out, static_cast<std::uint16_t>(std::min<std::size_t>(g.values.size(), 0xFFFF)));
  for (std::size_t k = 0; k < g.values.size() && k < 0xFFFF; ++k) {
    const Value& v = g.values[k];
    // Fixed fields are saved under their paths, so that a restart with other fields starts afresh.
    const std::string& name = all_fields_ ? v.name : settings_.fields[k];
    put<std::uint16_t>(out, static_cast<std::uint16_t>(std::min<std::size_t>(name.size(), 0xFFFF)));
    out.append(name.data(), std::min<std::size_t>(name.size(), 0xFFFF));
    put<std::uint8_t>(out, static_cast<std::uint8_t>(v.kind));
    if (v.kind == Value::Kind::number) put<double>(out, v.number);
    if (v.kind == Value::Kind::other) {
      put<std::uint32_t>(out, static_cast<std::uint32_t>(v.bytes.size()));
      out += v.bytes;
    }
  }
  return out;
}

bool Handler::decode(std::string_view in, Group& g) {
  std::uint8_t version = 0;
  std::uint16_t count = 0;
  if (!get(in, version) || version != kStateVersion || !get(in, g.last_ns) || !get(in, count)) return false;
  g.values.resize(count);
  for (Value& v : g.values) {
    std::uint16_t name_bytes = 0;
    std::uint8_t kind = 0;
    if (!get(in, name_bytes) || in.size() < name_bytes) return false;
    v.name.assign(in.data(), name_bytes);
    in.remove_prefix(name_bytes);
    if (!get(in, kind) || kind > 2) return false;
    v.kind = static_cast<Value::Kind>(kind);
    if (v.kind == Value::Kind::number && !get(in, v.number)) return false;
    if (v.kind == Value::Kind::other) {
      std::uint32_t n = 0;
      if (!get(in, n) || in.size() < n) return false;
      v.bytes.assign(in.data(), n);
      in.remove_prefix(n);
    }
  }
  return in.empty();
}

void Handler::restore(std::vector<std::pair<std::string, std::string>> entries) {
  groups_.clear();
  lru_.clear();
  std::vector<std::pair<std::int64_t, process::Key128>> order;
  for (const auto& [hex, value] : entries) {
    process::Key128 key;
    Group g;
    if (!process::from_hex(hex, key) || !decode(value, g)) {
      throw std::runtime_error(fmt::format("the state of group {} is damaged", hex));
    }
    // A group saved with other fields watched (the settings changed) no longer lines up: it
    // starts afresh (its next record passes).
    bool lines_up = all_fields_ || g.values.size() == settings_.fields.size();
    for (std::size_t k = 0; lines_up && !all_fields_ && k < g.values.size(); ++k) {
      lines_up = g.values[k].name == settings_.fields[k];
      g.values[k].name.clear();
    }
    if (!lines_up) {
      evicted_keys_.push_back(key);
      continue;
    }
    order.emplace_back(g.last_ns, key);
    groups_.emplace(key, std::move(g));
  }
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [ns, key] : order) {
    lru_.push_back(key);
    groups_[key].lru = std::prev(lru_.end());
  }
  // Over the bound (it was lowered): the oldest go.
  while (groups_.size() > settings_.max_groups) {
    groups_.erase(lru_.front());
    evicted_keys_.push_back(lru_.front());
    lru_.pop_front();
  }
}

void Handler::take_changes(std::vector<std::pair<std::string, std::string>>& puts, std::vector<std::string>& deletes) {
  for (const auto& key : evicted_keys_) deletes.push_back(process::to_hex(key));
  evicted_keys_.clear();
  for (const auto& key : dirty_) {
    auto it = groups_.find(key);
    if (it == groups_.end()) continue;
    std::string value = encode(it->second);
    state_bytes_ = std::max(state_bytes_, value.size() + 64);
    puts.emplace_back(process::to_hex(key), std::move(value));
  }
  dirty_.clear();
}

}  // namespace tank::plugins::deadband
