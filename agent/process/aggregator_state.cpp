// Persistence (see "Persistence" in aggregator.hpp): take_changes() and restore(), the stored
// cell and meta values. Part of aggregator.hpp's implementation (aggregator_detail.hpp lists the
// pieces).

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "process/aggregator_detail.hpp"

namespace tank::process {
using namespace aggregator_detail;
namespace {

constexpr std::uint8_t kFormatVersion = 1;
constexpr std::string_view kMetaKey = "meta";

}  // namespace

std::string Aggregator::encode_cell(const Cell& cell) const {
  std::string out;
  out.reserve(16 + plans_.size() * 64);
  Writer w(out);
  w.u8(kFormatVersion);
  w.u64(cell.count);
  w.u16(static_cast<std::uint16_t>(plans_.size()));
  for (std::size_t i = 0; i < plans_.size(); ++i) {
    const FieldPlan& plan = plans_[i];
    const FieldState& f = cell.fields[i];
    w.u8(plan.flags());
    w.u64(f.present);
    if (plan.numeric) {
      w.u64(f.numeric);
      w.f64(f.sum);
      w.f64(f.min);
      w.f64(f.max);
      w.f64(f.mean);
      w.f64(f.m2);
    }
    if (plan.first) {
      w.i64(f.first_t);
      f.first.encode(w);
    }
    if (plan.last) {
      w.i64(f.last_t);
      f.last.encode(w);
    }
  }
  return out;
}

void Aggregator::take_changes(std::vector<std::pair<std::string, std::string>>* puts,
                              std::vector<std::string>* deletes) {
  for (const auto& [slot, generation] : dirty_) {
    Cell& cell = cells_[slot];
    if (!cell.live || cell.generation != generation || !cell.dirty) continue;
    cell.dirty = false;
    cell.stored = true;
    std::string key;
    key.reserve(cell.key->size() + 1);
    key.push_back(kCellPrefix);
    key += *cell.key;
    puts->emplace_back(std::move(key), encode_cell(cell));
  }
  dirty_.clear();
  for (std::string& key : removed_) deletes->push_back(std::move(key));
  removed_.clear();
  if (meta_dirty_) {
    std::string value;
    Writer w(value);
    w.u8(kFormatVersion);
    w.i64(max_event_time_);
    w.i64(watermark_);
    w.bytes(fingerprint_);
    puts->emplace_back(std::string(kMetaKey), std::move(value));
    meta_dirty_ = false;
  }
}

void Aggregator::restore(const std::vector<std::pair<std::string, std::string>>& entries) {
  // Built aside, then swapped in: a throw leaves the current state as it was.
  std::int64_t max_event_time = kMin;
  std::int64_t watermark = kMin;
  bool have_meta = false;
  for (const auto& [key, value] : entries) {
    if (key != kMetaKey) continue;
    if (have_meta) Reader(value, key).fail("appears twice");
    have_meta = true;
    Reader r(value, key);
    const std::uint8_t version = r.u8();
    if (version != kFormatVersion) {
      r.fail(fmt::format("format version {} is not {} (written by another tank version)", version, kFormatVersion));
    }
    max_event_time = r.i64();
    watermark = r.i64();
    const std::string_view stored = r.bytes();
    r.finish();
    if (stored != fingerprint_) {
      throw SpecMismatch(fmt::format(
          "the stored aggregation state was written for another configuration: stored {}, now {}", stored,
          fingerprint_));
    }
  }

  CellIndex index;
  std::vector<Cell> cells;
  std::map<std::int64_t, std::vector<std::uint32_t>> windows;
  for (const auto& [key, value] : entries) {
    if (key == kMetaKey) continue;
    Reader r(value, key);
    if (key.empty() || key[0] != kCellPrefix) r.fail("is not an aggregation state key");
    if (!have_meta) r.fail("is a window cell, but there is no \"meta\" entry");
    std::string_view cell_key = std::string_view(key).substr(1);
    if (cell_key.size() < kStartBytes) r.fail("is too short for a window cell key");
    const std::int64_t start = read_start(cell_key.data());
    if (start % spec_.hop_ns != 0 || start > kMax - spec_.window_ns) {
      r.fail(fmt::format("window start {} is not a window of this configuration", start));
    }
    std::string_view group = cell_key.substr(kStartBytes);
    std::string scratch;
    for (std::size_t g = 0; g < group_paths_.size(); ++g) {
      if (const char* problem = take_group_value(group, scratch, true)) r.fail(problem);
    }
    if (!group.empty()) r.fail("has more group values than group_by");

    Cell cell;
    cell.start = start;
    cell.live = true;
    cell.stored = true;
    cell.fields.resize(plans_.size());
    const std::uint8_t version = r.u8();
    if (version != kFormatVersion) r.fail(fmt::format("format version {} is not {}", version, kFormatVersion));
    cell.count = r.u64();
    if (cell.count == 0) r.fail("a window cell with no records");
    if (r.u16() != plans_.size()) r.fail("the number of fields does not match the configuration");
    for (std::size_t i = 0; i < plans_.size(); ++i) {
      const FieldPlan& plan = plans_[i];
      FieldState& f = cell.fields[i];
      if (r.u8() != plan.flags()) r.fail("the functions of a field do not match the configuration");
      f.present = r.u64();
      if (f.present > cell.count) r.fail("a field has more values than the cell has records");
      if (plan.numeric) {
        f.numeric = r.u64();
        if (f.numeric > f.present) r.fail("a field has more numbers than values");
        f.sum = r.f64();
        f.min = r.f64();
        f.max = r.f64();
        f.mean = r.f64();
        f.m2 = r.f64();
      }
      if (plan.first) {
        f.first_t = r.i64();
        f.first.decode(r);
      }
      if (plan.last) {
        f.last_t = r.i64();
        f.last.decode(r);
      }
    }
    r.finish();
    const auto slot = static_cast<std::uint32_t>(cells.size());
    auto [it, inserted] = index.emplace(std::string(cell_key), slot);
    if (!inserted) r.fail("appears twice");
    cell.key = &it->first;
    cells.push_back(std::move(cell));
    windows[start].push_back(slot);
  }

  // allowed_lateness may have changed since the state was written; the watermark never goes back.
  const std::int64_t derived = max_event_time == kMin ? kMin : saturating_sub(max_event_time, spec_.allowed_lateness_ns);
  const bool raised = derived > watermark;

  index_.swap(index);
  cells_.swap(cells);
  windows_.swap(windows);
  free_slots_.clear();
  dirty_.clear();
  removed_.clear();
  max_event_time_ = max_event_time;
  watermark_ = std::max(watermark, derived);
  meta_dirty_ = !have_meta || raised;
}

}  // namespace tank::process
