#include "queue/queue.hpp"
#include "queue/queue_impl.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include <fmt/format.h>

namespace tank::queue {

std::string_view to_string(Mode mode) { return mode == Mode::disk ? "disk" : "memory"; }
std::string_view to_string(Fsync fsync) {
  switch (fsync) {
    case Fsync::always: return "always";
    case Fsync::interval: return "interval";
    case Fsync::never: return "never";
  }
  return "?";
}
std::string_view to_string(Overflow overflow) {
  switch (overflow) {
    case Overflow::block: return "block";
    case Overflow::drop_oldest: return "drop_oldest";
    case Overflow::drop_newest: return "drop_newest";
  }
  return "?";
}
std::string_view to_string(CommitStatus status) {
  switch (status) {
    case CommitStatus::committed: return "committed";
    case CommitStatus::full: return "full";
    case CommitStatus::dropped: return "dropped";
    case CommitStatus::too_large: return "too_large";
    case CommitStatus::failed: return "failed";
  }
  return "?";
}

std::string lmdb_version() { return fmt::format("{}.{}.{}", MDB_VERSION_MAJOR, MDB_VERSION_MINOR, MDB_VERSION_PATCH); }

namespace {

// Whether two input names are equal, compared inline 8 bytes at a time: names are short and a
// read compares every record's, where std::string_view's == called libc's memcmp each time (4 %
// of tank in the e2e benchmark, docs/BENCHMARKS.md, issue 23).
bool same_name(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  std::size_t i = 0;
  for (; i + 8 <= a.size(); i += 8) {
    std::uint64_t x, y;
    std::memcpy(&x, a.data() + i, 8);
    std::memcpy(&y, b.data() + i, 8);
    if (x != y) return false;
  }
  for (; i < a.size(); ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

bool listed(const std::vector<std::string>& names, std::string_view name) {
  return std::any_of(names.begin(), names.end(), [name](const std::string& n) { return same_name(n, name); });
}

}  // namespace

bool RouteFilter::accepts(std::string_view encoded) const {
  const std::string_view input = peek_input(encoded);
  const std::uint8_t flags = peek_flags(encoded);
  if (!levels.empty()) {
    for (std::size_t k = 0; k < inputs.size() && k < levels.size(); ++k) {
      if (same_name(inputs[k], input)) return chain_level(flags) == levels[k];
    }
    return false;
  }
  const bool derived = (flags & kRecordDerived) != 0;
  if (origin == Origin::raw && derived) return false;
  if (origin == Origin::derived && !derived) return false;
  if (!inputs.empty() && !listed(inputs, input)) return false;
  if (!derived && listed(derived_only, input)) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Sizing

std::uint64_t Queue::max_commit_for(std::uint64_t max_disk_bytes) {
  return std::clamp<std::uint64_t>(max_disk_bytes / 64, 64 << 10, 4 << 20);
}

std::uint64_t Queue::margin_for(std::uint64_t max_disk_bytes) {
  // Copy-on-write pages of the transaction being written, pages freed by the previous one (LMDB
  // reuses a freed page only two transactions later), the free list itself, and slack for a
  // short reader in another process.
  return 4 * max_commit_for(max_disk_bytes) + max_disk_bytes / 128 + (1 << 20);
}

// ---------------------------------------------------------------------------------------------
// Queue's members: each hands the call to Impl (queue_impl.hpp)

void Queue::close() { impl_->close(); }
CommitResult Queue::commit(const WriteBatch& batch) { return impl_->commit(batch); }
CommitResult Queue::append(const EncodedRecords& records) { return impl_->append(records); }
CommitResult Queue::ack(const std::string& consumer, std::uint64_t seq) { return impl_->ack(consumer, seq); }
ReadBatch Queue::read(std::uint64_t after, const ReadLimits& limits, const RouteFilter* filter) const {
  ReadBatch out;
  impl_->read(after, limits, filter, out);
  return out;
}
void Queue::read(std::uint64_t after, const ReadLimits& limits, const RouteFilter* filter, ReadBatch& into) const {
  impl_->read(after, limits, filter, into);
}
std::optional<std::uint64_t> Queue::position(const std::string& consumer) const { return impl_->position(consumer); }
void Queue::add_consumer(const std::string& name) { impl_->add_consumer(name); }
bool Queue::remove_consumer(const std::string& name, std::vector<std::string> state_deletes) {
  return impl_->remove_consumer(name, std::move(state_deletes));
}
std::vector<std::string> Queue::consumer_names() const { return impl_->consumer_names(); }
std::optional<std::string> Queue::state(std::string_view key) const { return impl_->state(key); }
std::vector<std::pair<std::string, std::string>> Queue::state_with_prefix(std::string_view prefix) const {
  return impl_->state_with_prefix(prefix);
}
std::vector<StoredDeadLetter> Queue::dead_letters(const DeadLetterQuery& query) const {
  return impl_->dead_letters(query);
}
std::optional<StoredDeadLetter> Queue::dead_letter(std::uint64_t id) const { return impl_->dead_letter(id); }
DeadLetterStats Queue::dead_letter_stats() const { return impl_->dead_letter_stats(); }
Stats Queue::stats() const { return impl_->stats(); }
std::uint64_t Queue::oldest_seq() const { return impl_->oldest_seq(); }
std::vector<std::uint64_t> Queue::disk_bytes_after(std::span<const std::uint64_t> positions) const {
  return impl_->disk_bytes_after(positions);
}
bool Queue::blocked() const { return impl_->blocked(); }
void Queue::set_pressure_listener(std::function<void(bool)> listener) {
  impl_->set_pressure_listener(std::move(listener));
}
bool Queue::damaged() const { return impl_->damaged(); }
void Queue::sync() { impl_->sync(); }
std::uint64_t Queue::max_commit_bytes() const { return impl_->max_commit_bytes(); }
std::uint64_t Queue::disk_margin_bytes() const { return impl_->disk_margin_bytes(); }
std::uint64_t Queue::file_limit_bytes() const { return impl_->file_limit_bytes(); }
const Options& Queue::options() const { return impl_->options(); }
std::uint64_t Queue::id() const { return impl_->id(); }

}  // namespace tank::queue
