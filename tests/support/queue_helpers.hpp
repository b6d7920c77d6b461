#pragma once

// Helpers for tests that drive the queue directly.

#include <string>
#include <vector>

#include "common/clock.hpp"
#include "metrics/registry.hpp"
#include "queue/queue.hpp"
#include "support/helpers.hpp"

namespace tank::test {

// Options for a small queue in `dir`: disk mode, fsync never (fast), block, one consumer "out".
inline queue::Options small_queue(const std::filesystem::path& dir, std::uint64_t max_disk = 1 << 20) {
  queue::Options o;
  o.dir = dir;
  o.max_disk_bytes = max_disk;
  o.max_memory_bytes = 256 << 10;
  o.dead_letter_max_bytes = 256 << 10;
  o.fsync = queue::Fsync::never;
  o.consumers = {"out"};
  return o;
}

// A batch of records from `input` with the given payloads, stamped by `clock`.
inline queue::EncodedRecords batch_of(const std::vector<std::string>& payloads, const Clock& clock,
                                   const std::string& input = "in") {
  queue::EncodedRecords b;
  for (const auto& p : payloads) b.add(input, clock.wall_ns(), p);
  return b;
}

// `n` payloads "<prefix><i>" padded to `size` bytes.
inline std::vector<std::string> payloads(std::size_t n, const std::string& prefix = "r", std::size_t size = 0) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < n; ++i) {
    std::string p = prefix + std::to_string(i);
    if (p.size() < size) p.append(size - p.size(), '.');
    out.push_back(std::move(p));
  }
  return out;
}

inline std::vector<std::string> payloads_of(const queue::ReadBatch& b) {
  std::vector<std::string> out;
  for (const auto& r : b.records()) out.emplace_back(r.payload);
  return out;
}

inline std::vector<std::uint64_t> seqs_of(const queue::ReadBatch& b) {
  std::vector<std::uint64_t> out;
  for (const auto& r : b.records()) out.push_back(r.seq);
  return out;
}

// Every record in the queue, oldest first.
inline std::vector<std::pair<std::uint64_t, std::string>> everything(const queue::Queue& q) {
  std::vector<std::pair<std::uint64_t, std::string>> out;
  std::uint64_t after = 0;
  for (;;) {
    queue::ReadLimits limits;
    limits.max_records = 10000;
    limits.max_bytes = 64 << 20;
    auto b = q.read(after, limits);
    if (b.empty()) break;
    for (const auto& r : b.records()) out.emplace_back(r.seq, std::string(r.payload));
    after = b.scanned_to();
  }
  return out;
}

inline double counter(const metrics::Registry& registry, const std::string& sample) {
  return metric_value(registry.serialize(), sample).value_or(-1);
}

}  // namespace tank::test
