#include "input/batch.hpp"

#include <fmt/format.h>

#include "common/units.hpp"

namespace tank::input {

std::string record_too_large_detail(std::size_t record_bytes, std::size_t payload_bytes, std::size_t limit) {
  return fmt::format("a record of {} bytes (a payload of {} bytes with its input name, attributes and header) exceeds "
                     "the largest commit of the queue, {} (queue.max_disk_bytes / 64, at most 4 MiB); raise "
                     "max_disk_bytes, or lower the input's size limit so that it refuses such input itself",
                     record_bytes, payload_bytes, units::format_size(limit));
}

bool PendingBatch::add(std::string_view payload, std::int64_t ingest_ns,
                       std::span<const queue::Attribute> attributes, bool known_json) {
  if (clock_sync_ != nullptr && !clock_sync_->synchronized()) {
    // Its time stamps cannot be trusted: say so, with what corrects them once the clock is
    // (ClockSync::real_time_of). Only here, so a synchronised clock costs one atomic load.
    stamp_ = clock_sync_->stamp();
    marked_.assign(attributes.begin(), attributes.end());
    marked_.push_back({kUnsyncedAttribute, stamp_});
    attributes = marked_;
  }
  const std::size_t bytes = queue::encoded_record_bytes(input_, payload.size(), attributes);
  if (bytes > limit_) {
    // It could never be committed: offering it again and again would wedge the input.
    dead_letter("record_too_large", record_too_large_detail(bytes, payload.size(), limit_), payload, payload.size(),
                ingest_ns, attributes);
    return false;
  }
  if (session_ && !session_->admit(payload, rejection_, known_json)) {
    dead_letter(rejection_.reason, std::move(rejection_.detail), payload, payload.size(), ingest_ns, attributes);
    return false;
  }
  batch_.records.add(input_, ingest_ns, payload, attributes);
  payload_bytes_ += payload.size();
  return true;
}

void PendingBatch::dead_letter(std::string_view reason, std::string detail, std::string_view original,
                               std::uint64_t original_size, std::int64_t time_ns,
                               std::span<const queue::Attribute> attributes) {
  queue::DeadLetter d = queue::DeadLetter::make(input_, reason, std::move(detail), original, time_ns);
  d.original_size = std::max<std::uint64_t>(original_size, d.original.size());
  if (!attributes.empty()) d.attributes = queue::encode_attributes(attributes);
  if (d.detail.size() > kMaxDetailBytes) d.detail.resize(kMaxDetailBytes);
  const std::size_t room = dead_letter_limit();
  const std::size_t left = room > used() ? room - used() : 0;
  queue::shrink_to_fit(d, left >= 4096 ? left : room);
  dead_letter_bytes_ += queue::commit_bytes(d);
  batch_.dead_letters.push_back(std::move(d));
}

void PendingBatch::replace(queue::WriteBatch rest) {
  batch_ = std::move(rest);
  payload_bytes_ = 0;
  for (std::size_t i = 0; i < batch_.records.size(); ++i) {
    if (auto r = queue::decode_record(0, batch_.records.encoded(i))) payload_bytes_ += r->payload.size();
  }
  dead_letter_bytes_ = 0;
  for (const queue::DeadLetter& d : batch_.dead_letters) dead_letter_bytes_ += queue::commit_bytes(d);
}

}  // namespace tank::input
