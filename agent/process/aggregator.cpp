#include "process/aggregator.hpp"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <set>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "common/strings.hpp"
#include "process/aggregator_detail.hpp"

// aggregator_detail.hpp lists the pieces of aggregator.hpp's implementation.

namespace tank::process {
using namespace aggregator_detail;
namespace {

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

bool is_numeric_function(AggFunction f) {
  switch (f) {
    case AggFunction::sum:
    case AggFunction::min:
    case AggFunction::max:
    case AggFunction::mean:
    case AggFunction::stddev: return true;
    case AggFunction::count:
    case AggFunction::first:
    case AggFunction::last: return false;
  }
  return false;
}

std::string json_name(std::string_view name) {
  std::string out;
  strings::append_json_string(out, name);
  return out;
}

}  // namespace

namespace aggregator_detail {

std::int64_t saturating_sub(std::int64_t a, std::int64_t b) {
  std::int64_t out;
  if (__builtin_sub_overflow(a, b, &out)) return b > 0 ? kMin : kMax;
  return out;
}

}  // namespace aggregator_detail

std::optional<AggFunction> parse_agg_function(std::string_view text) {
  if (text == "count") return AggFunction::count;
  if (text == "sum") return AggFunction::sum;
  if (text == "min") return AggFunction::min;
  if (text == "max") return AggFunction::max;
  if (text == "mean") return AggFunction::mean;
  if (text == "first") return AggFunction::first;
  if (text == "last") return AggFunction::last;
  if (text == "stddev") return AggFunction::stddev;
  return std::nullopt;
}

std::string_view to_string(AggFunction function) {
  switch (function) {
    case AggFunction::count: return "count";
    case AggFunction::sum: return "sum";
    case AggFunction::min: return "min";
    case AggFunction::max: return "max";
    case AggFunction::mean: return "mean";
    case AggFunction::first: return "first";
    case AggFunction::last: return "last";
    case AggFunction::stddev: return "stddev";
  }
  return "?";
}

std::string_view to_string(AddOutcome outcome) {
  switch (outcome) {
    case AddOutcome::absorbed: return "absorbed";
    case AddOutcome::late: return "late";
    case AddOutcome::not_object: return "not_object";
    case AddOutcome::bad_time: return "bad_time";
    case AddOutcome::cell_limit: return "cell_limit";
  }
  return "?";
}

std::size_t Aggregator::KeyHash::operator()(std::string_view s) const noexcept {
  return std::hash<std::string_view>{}(s);
}

namespace {

FieldPath parse_path(std::string_view text, std::string_view what) {
  std::string error;
  auto path = FieldPath::parse(text, &error);
  if (!path) throw std::invalid_argument(fmt::format("{}: {}", what, error));
  return std::move(*path);
}

std::string make_fingerprint(const AggregateSpec& spec) {
  boost::json::object o;
  o["window_ns"] = spec.window_ns;
  o["hop_ns"] = spec.hop_ns;
  o["time_field"] = spec.time_field;
  o["time_format"] = to_string(spec.time_format);
  boost::json::array group;
  for (const auto& g : spec.group_by) group.emplace_back(g);
  o["group_by"] = std::move(group);
  boost::json::array fields;
  for (const auto& [name, functions] : spec.fields) {
    boost::json::array fns;
    for (AggFunction f : functions) fns.emplace_back(to_string(f));
    fields.emplace_back(boost::json::array{boost::json::value(name), std::move(fns)});
  }
  o["fields"] = std::move(fields);
  return boost::json::serialize(o);
}

}  // namespace

Aggregator::Aggregator(AggregateSpec spec)
    : spec_(std::move(spec)),
      time_path_(parse_path(spec_.time_field, "time_field")),
      max_event_time_(kMin),
      watermark_(kMin) {
  if (spec_.window_ns <= 0) throw std::invalid_argument("window must be longer than 0");
  if (spec_.hop_ns <= 0 || spec_.hop_ns > spec_.window_ns) {
    throw std::invalid_argument("hop must be longer than 0 and at most the window");
  }
  if (spec_.allowed_lateness_ns < 0) throw std::invalid_argument("allowed_lateness must not be negative");
  if (spec_.max_cells == 0) throw std::invalid_argument("max_cells must be at least 1");
  if (spec_.max_cells > std::numeric_limits<std::uint32_t>::max() - 1) {
    throw std::invalid_argument("max_cells must be below 2^32");
  }
  std::set<std::string_view> seen;
  for (const auto& g : spec_.group_by) {
    if (!seen.insert(g).second) throw std::invalid_argument(fmt::format("group_by lists \"{}\" twice", g));
    group_paths_.push_back(parse_path(g, fmt::format("group_by \"{}\"", g)));
    group_prefixes_.push_back("," + json_name(g) + ":");
  }
  seen.clear();
  for (const auto& [name, functions] : spec_.fields) {
    if (!seen.insert(name).second) throw std::invalid_argument(fmt::format("fields lists \"{}\" twice", name));
    if (functions.empty()) throw std::invalid_argument(fmt::format("field \"{}\" has no functions", name));
    FieldPlan plan{parse_path(name, fmt::format("field \"{}\"", name)), functions, {}, false, false, false};
    std::set<AggFunction> fns;
    for (AggFunction f : functions) {
      if (!fns.insert(f).second) {
        throw std::invalid_argument(fmt::format("field \"{}\" lists {} twice", name, to_string(f)));
      }
      plan.numeric = plan.numeric || is_numeric_function(f);
      plan.first = plan.first || f == AggFunction::first;
      plan.last = plan.last || f == AggFunction::last;
      plan.prefixes.push_back("," + json_name(fmt::format("{}_{}", name, to_string(f))) + ":");
    }
    plans_.push_back(std::move(plan));
  }
  fingerprint_ = make_fingerprint(spec_);
}

Aggregator::~Aggregator() = default;

void Aggregator::set_max_event_time(std::int64_t t) {
  if (t <= max_event_time_) return;
  max_event_time_ = t;
  meta_dirty_ = true;
  const std::int64_t w = saturating_sub(t, spec_.allowed_lateness_ns);
  if (w > watermark_) watermark_ = w;
}

AddOutcome Aggregator::add(const boost::json::value& record, std::string* detail, const TimeRebase* rebase) {
  if (!record.is_object()) {
    if (detail != nullptr) {
      *detail = fmt::format("the record is not a JSON object but {}",
                            record.is_array() ? "an array" : record.is_string() ? "a string" : "a scalar");
    }
    return AddOutcome::not_object;
  }
  const boost::json::value* time_value = time_path_.find(record);
  if (time_value == nullptr) {
    if (detail != nullptr) *detail = fmt::format("no time field \"{}\"", spec_.time_field);
    return AddOutcome::bad_time;
  }
  const auto t_opt = event_time_ns(*time_value, spec_.time_format, detail, spec_.time_field);
  if (!t_opt) return AddOutcome::bad_time;
  const std::int64_t t = rebase != nullptr ? rebase->apply(*t_opt) : *t_opt;

  // Its windows: starts s, multiples of hop with t - window < s <= t. Times whose windows do not
  // fit in int64 (within a window of the ends of the range) are refused instead of wrapping.
  const std::int64_t hop = spec_.hop_ns;
  const std::int64_t window = spec_.window_ns;
  std::int64_t first_start = 0;
  std::int64_t last = 0;
  std::int64_t before = 0;
  std::int64_t last_end = 0;
  if (__builtin_sub_overflow(t, window, &before) || __builtin_mul_overflow(floor_div(before, hop) + 1, hop, &first_start) ||
      __builtin_mul_overflow(floor_div(t, hop), hop, &last) || __builtin_add_overflow(last, window, &last_end)) {
    if (detail != nullptr) {
      *detail = fmt::format("\"{}\" is {}: its windows do not fit the representable time range", spec_.time_field,
                            format_rfc3339_ns(t));
    }
    return AddOutcome::bad_time;
  }

  set_max_event_time(t);

  // Open windows: end = s + window > watermark.
  std::int64_t s = first_start;
  if (watermark_ != kMin) {
    while (s <= last && s + window <= watermark_) s += hop;
  }
  if (s > last) {
    if (detail != nullptr) {
      *detail = fmt::format("event time {} is late: its windows closed at watermark {}", format_rfc3339_ns(t),
                            format_rfc3339_ns(watermark_));
    }
    return AddOutcome::late;
  }

  key_.assign(kStartBytes, '\0');
  for (const FieldPath& g : group_paths_) put_group_value(key_, g.find(record));

  starts_.clear();
  found_.clear();
  std::size_t missing = 0;
  for (std::int64_t start = s; start <= last; start += hop) {
    write_start(key_.data(), start);
    auto it = index_.find(std::string_view(key_));
    starts_.push_back(start);
    if (it == index_.end()) {
      found_.push_back(std::numeric_limits<std::uint32_t>::max());
      ++missing;
    } else {
      found_.push_back(it->second);
    }
    if (start > kMax - hop) break;
  }
  if (missing > 0 && index_.size() + missing > spec_.max_cells) {
    if (detail != nullptr) {
      *detail = fmt::format("needs {} new window cell{} but max_cells ({}) are held", missing, missing == 1 ? "" : "s",
                            spec_.max_cells);
    }
    return AddOutcome::cell_limit;
  }

  // The fields, looked up once for all windows.
  inputs_.resize(plans_.size());
  for (std::size_t i = 0; i < plans_.size(); ++i) {
    FieldInput& in = inputs_[i];
    const boost::json::value* v = plans_[i].path.find(record);
    in.value = v != nullptr && !v->is_null() ? v : nullptr;
    in.is_number = false;
    if (in.value == nullptr) continue;
    switch (v->kind()) {
      case boost::json::kind::int64: in.number = static_cast<double>(v->get_int64()); in.is_number = true; break;
      case boost::json::kind::uint64: in.number = static_cast<double>(v->get_uint64()); in.is_number = true; break;
      case boost::json::kind::double_: in.number = v->get_double(); in.is_number = true; break;
      default:
        if (plans_[i].numeric) ++ignored_values_;
        break;
    }
  }

  for (std::size_t w = 0; w < starts_.size(); ++w) {
    std::uint32_t slot = found_[w];
    if (slot == std::numeric_limits<std::uint32_t>::max()) {
      write_start(key_.data(), starts_[w]);
      slot = new_cell(key_, starts_[w]);
    }
    Cell& cell = cells_[slot];
    ++cell.count;
    for (std::size_t i = 0; i < plans_.size(); ++i) {
      const FieldInput& in = inputs_[i];
      if (in.value == nullptr) continue;
      const FieldPlan& plan = plans_[i];
      FieldState& f = cell.fields[i];
      ++f.present;
      if (plan.numeric && in.is_number) {
        const double x = in.number;
        ++f.numeric;
        f.sum += x;
        if (f.numeric == 1) {
          f.min = f.max = x;
        } else {
          f.min = std::min(f.min, x);
          f.max = std::max(f.max, x);
        }
        const double delta = x - f.mean;
        f.mean += delta / static_cast<double>(f.numeric);
        f.m2 += delta * (x - f.mean);
      }
      if (plan.first && (f.present == 1 || t < f.first_t)) {
        f.first_t = t;
        f.first.assign(*in.value);
      }
      if (plan.last && (f.present == 1 || t >= f.last_t)) {
        f.last_t = t;
        f.last.assign(*in.value);
      }
    }
    if (!cell.dirty) {
      cell.dirty = true;
      dirty_.emplace_back(slot, cell.generation);
    }
  }
  return AddOutcome::absorbed;
}

std::uint32_t Aggregator::new_cell(std::string_view key, std::int64_t start) {
  std::uint32_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slot = static_cast<std::uint32_t>(cells_.size());
    cells_.emplace_back();
    cells_.back().fields.resize(plans_.size());
  }
  auto [it, inserted] = index_.emplace(std::string(key), slot);
  (void)inserted;
  Cell& cell = cells_[slot];
  cell.key = &it->first;
  cell.start = start;
  cell.count = 0;
  cell.live = true;
  cell.dirty = false;
  cell.stored = false;
  windows_[start].push_back(slot);
  return slot;
}

void Aggregator::release_cell(std::uint32_t slot) {
  Cell& cell = cells_[slot];
  if (cell.stored) {
    std::string stored_key;
    stored_key.reserve(cell.key->size() + 1);
    stored_key.push_back(kCellPrefix);
    stored_key += *cell.key;
    removed_.push_back(std::move(stored_key));
  }
  index_.erase(index_.find(std::string_view(*cell.key)));
  cell.key = nullptr;
  cell.live = false;
  cell.dirty = false;
  cell.stored = false;
  ++cell.generation;
  for (FieldState& f : cell.fields) f.reset();
  free_slots_.push_back(slot);
}

void Aggregator::write_output(const Cell& cell, std::string& out) const {
  out.clear();
  out += "{\"window_start\":\"";
  append_rfc3339_ns(out, cell.start);
  out += "\",\"window_end\":\"";
  append_rfc3339_ns(out, cell.start + spec_.window_ns);
  out += "\",\"count\":";
  fmt::format_to(std::back_inserter(out), "{}", cell.count);
  std::string_view group = std::string_view(*cell.key).substr(kStartBytes);
  for (const std::string& prefix : group_prefixes_) {
    out += prefix;
    take_group_value(group, out);  // checked when the key was made or restored
  }
  for (std::size_t i = 0; i < plans_.size(); ++i) {
    const FieldPlan& plan = plans_[i];
    const FieldState& f = cell.fields[i];
    for (std::size_t j = 0; j < plan.functions.size(); ++j) {
      out += plan.prefixes[j];
      const bool any = f.numeric > 0;
      switch (plan.functions[j]) {
        case AggFunction::count: fmt::format_to(std::back_inserter(out), "{}", f.present); break;
        case AggFunction::sum: append_number_or_null(out, any, f.sum); break;
        case AggFunction::min: append_number_or_null(out, any, f.min); break;
        case AggFunction::max: append_number_or_null(out, any, f.max); break;
        case AggFunction::mean: append_number_or_null(out, any, f.sum / static_cast<double>(f.numeric)); break;
        case AggFunction::stddev:
          append_number_or_null(out, f.numeric >= 2,
                                std::sqrt(f.m2 / static_cast<double>(f.numeric >= 2 ? f.numeric - 1 : 1)));
          break;
        case AggFunction::first:
          if (f.present > 0) f.first.write_json(out); else out += "null";
          break;
        case AggFunction::last:
          if (f.present > 0) f.last.write_json(out); else out += "null";
          break;
      }
    }
  }
  out.push_back('}');
}

// Emits the first `limit` cells of `window` in group key order (the rest stay, still sorted);
// erases the window once it is empty. Returns how many it emitted.
std::size_t Aggregator::emit_window(std::map<std::int64_t, std::vector<std::uint32_t>>::iterator window,
                                    std::vector<Emitted>* out, std::size_t limit) {
  std::vector<std::uint32_t>& slots = window->second;
  std::sort(slots.begin(), slots.end(),
            [this](std::uint32_t a, std::uint32_t b) { return *cells_[a].key < *cells_[b].key; });
  const std::size_t n = std::min(limit, slots.size());
  for (std::size_t i = 0; i < n; ++i) {
    const Cell& cell = cells_[slots[i]];
    Emitted e;
    write_output(cell, e.json);
    e.window_start_ns = cell.start;
    e.window_end_ns = cell.start + spec_.window_ns;
    e.count = cell.count;
    out->push_back(std::move(e));
    release_cell(slots[i]);
  }
  slots.erase(slots.begin(), slots.begin() + static_cast<std::ptrdiff_t>(n));
  if (slots.empty()) windows_.erase(window);
  return n;
}

bool Aggregator::close_ready(std::vector<Emitted>* out, std::size_t limit) {
  while (!windows_.empty() && windows_.begin()->first + spec_.window_ns <= watermark_) {
    if (limit == 0) return false;
    limit -= emit_window(windows_.begin(), out, limit);
  }
  return true;
}

bool Aggregator::close_all(std::vector<Emitted>* out, std::size_t limit) {
  while (!windows_.empty()) {
    if (limit == 0) return false;
    const std::int64_t end = windows_.begin()->first + spec_.window_ns;
    if (end > watermark_) {
      watermark_ = end;
      meta_dirty_ = true;
    }
    limit -= emit_window(windows_.begin(), out, limit);
  }
  return true;
}

}  // namespace tank::process
