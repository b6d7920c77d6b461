#include "input/commit.hpp"

#include <fmt/format.h>

namespace tank::input {

std::vector<queue::WriteBatch> split_for_commit(const queue::WriteBatch& batch, std::size_t limit,
                                                const std::string& input, std::int64_t now_ns) {
  std::vector<queue::WriteBatch> parts(1);
  std::size_t used = 0;
  auto room_for = [&](std::size_t bytes) {
    if (used + bytes > limit && (!parts.back().records.empty() || !parts.back().dead_letters.empty())) {
      parts.emplace_back();
      used = 0;
    }
    used += bytes;
  };
  auto add_letter = [&](queue::DeadLetter d) {
    queue::shrink_to_fit(d, limit);
    room_for(queue::commit_bytes(d));
    parts.back().dead_letters.push_back(std::move(d));
  };
  for (std::size_t i = 0; i < batch.records.size(); ++i) {
    const std::string_view encoded = batch.records.encoded(i);
    if (encoded.size() <= limit) {
      room_for(encoded.size());
      parts.back().records.add_encoded(encoded);
      continue;
    }
    // Not from PendingBatch::add (which dead-letters such a record itself): kept for a batch built
    // otherwise, so that it cannot be refused for ever.
    auto r = queue::decode_record(0, encoded);
    queue::DeadLetter d = queue::DeadLetter::make(
        input, "record_too_large", record_too_large_detail(encoded.size(), r ? r->payload.size() : 0, limit),
        r ? r->payload : std::string_view(), r ? r->ingest_ns : now_ns);
    if (r) d.attributes = std::string(r->attributes);
    add_letter(std::move(d));
  }
  for (const queue::DeadLetter& d : batch.dead_letters) add_letter(d);
  std::size_t state = 0;
  for (const auto& [k, v] : batch.state_puts) state += k.size() + v.size();
  room_for(state);
  queue::WriteBatch& last = parts.back();
  last.state_puts = batch.state_puts;
  last.state_deletes = batch.state_deletes;
  last.acks = batch.acks;
  last.dead_letter_deletes = batch.dead_letter_deletes;
  return parts;
}

Committer::Committer(queue::Queue& queue, InputMetrics& metrics, const Clock& clock, std::string component,
                     std::string on_failure)
    : queue_(queue),
      metrics_(metrics),
      clock_(clock),
      component_(std::move(component)),
      on_failure_(std::move(on_failure)),
      failures_(component_, log::Level::error) {}

Outcome Committer::commit(PendingBatch& batch) {
  if (batch.empty()) return {};
  const queue::CommitResult r = queue_.commit(batch.write_batch());
  if (r.status == queue::CommitStatus::too_large) return commit_in_parts(batch, r.error);
  return settle(batch, r);
}

Outcome Committer::settle(PendingBatch& batch, const queue::CommitResult& r) {
  Outcome out;
  out.settlement = settlement_of(r.status);
  switch (out.settlement) {
    case Settlement::stored:
    case Settlement::dropped:
      if (out.settlement == Settlement::stored) {
        metrics_.committed(batch.records(), batch.payload_bytes());
        out.stored_records = batch.records();
      } else {
        metrics_.dropped("overflow_drop_newest", batch.records());
        out.dropped_records = batch.records();
      }
      out.dead_letters = batch.dead_letters();
      failures_.end("committing to the queue works again");
      batch.clear();
      break;
    case Settlement::held:
      out.error = r.error;
      break;
    case Settlement::failed:
      out.error = r.error;
      failures_.occur(fmt::format("committing to the queue failed ({}); {}", r.error, on_failure_));
      metrics_.error("commit_failed");
      break;
  }
  return out;
}

Outcome Committer::commit_in_parts(PendingBatch& batch, const std::string& why) {
  // Rare (a record of nearly one commit with the input's state, say) and harmless: each part is
  // stored in order, the state with the last, so nothing is acknowledged before it is stored.
  log::debug(component_, "a batch of {} records and {} dead letters is larger than one commit ({}); committing it in "
             "parts", batch.records(), batch.dead_letters(), why);
  std::vector<queue::WriteBatch> parts =
      split_for_commit(batch.write_batch(), batch.limit(), batch.input(), clock_.wall_ns());
  Outcome total;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    PendingBatch part(batch.input(), batch.limit());
    part.replace(std::move(parts[i]));
    const queue::CommitResult r = queue_.commit(part.write_batch());
    // A part the queue still refuses as too large cannot be made smaller: it is a bug, said as
    // a failure (and retried) rather than dropped.
    Outcome o = settle(part, r);
    total.stored_records += o.stored_records;
    total.dropped_records += o.dropped_records;
    total.dead_letters += o.dead_letters;
    if (o.settlement == Settlement::dropped) total.settlement = Settlement::dropped;
    if (!acknowledges(o.settlement)) {
      total.settlement = o.settlement;
      total.error = o.error;
      // What is left: this part and the ones after it, as one batch again.
      queue::WriteBatch rest = part.write_batch();
      for (std::size_t j = i + 1; j < parts.size(); ++j) {
        for (std::size_t k = 0; k < parts[j].records.size(); ++k) rest.records.add_encoded(parts[j].records.encoded(k));
        for (auto& d : parts[j].dead_letters) rest.dead_letters.push_back(std::move(d));
        rest.state_puts = std::move(parts[j].state_puts);
        rest.state_deletes = std::move(parts[j].state_deletes);
        rest.acks = std::move(parts[j].acks);
        rest.dead_letter_deletes = std::move(parts[j].dead_letter_deletes);
      }
      batch.replace(std::move(rest));
      return total;
    }
  }
  batch.clear();
  return total;
}

void drop_records(queue::Queue& queue, InputMetrics& metrics, std::string_view component, PendingBatch& batch,
                  std::string_view reason) {
  metrics.dropped(reason, batch.records());
  queue::WriteBatch letters;
  letters.dead_letters = std::move(batch.write_batch().dead_letters);
  batch.clear();
  if (letters.dead_letters.empty()) return;
  const auto r = queue.commit(letters);
  if (!r.ok()) {
    metrics.dropped(reason, letters.dead_letters.size());
    log::warn(component, "{} dead letters could not be stored either ({}): dropped", letters.dead_letters.size(),
              r.error);
  }
}

}  // namespace tank::input
