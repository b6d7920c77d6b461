#include "process/record_stage.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <boost/json.hpp>

#include <fmt/format.h>

#include "common/backoff.hpp"
#include "common/failpoint.hpp"
#include "common/liveness.hpp"
#include "common/log.hpp"
#include "plugin/registry.hpp"
#include "process/json_schema.hpp"
#include "process/processor_metrics.hpp"
#include "queue/queue.hpp"
#include "queue/settlement.hpp"

namespace tank::process {
namespace {

// Commit at least this often while records flow, and poll this often when the queue is empty.
constexpr auto kCommitInterval = std::chrono::milliseconds(200);
constexpr auto kPollInterval = std::chrono::milliseconds(20);

class Stage final : public plugin::Stage, private StageOutput {
 public:
  Stage(RecordStageSettings settings, const plugin::ProcessorContext& context)
      : type_(std::move(settings.type)),
        handler_(std::move(settings.handler)),
        name_(context.name),
        consumer_(plugin::stage_consumer_name(context.name)),
        prefix_(record_stage_prefix(type_, context.name)),
        queue_(*context.queue),
        clock_(context.clock),
        metrics_(context.metrics, context.name, type_),
        component_("processor " + context.name),
        failures_(component_, log::Level::error) {
    filter_.inputs = context.inputs;
    filter_.levels = context.positions;
    if (filter_.levels.size() != filter_.inputs.size()) filter_.levels.assign(filter_.inputs.size(), 0);
    for (std::size_t k = 0; k < filter_.inputs.size(); ++k) {
      routes_.push_back(Route{filter_.inputs[k], filter_.levels[k], handler_->needs_json(filter_.inputs[k])});
    }
  }

  ~Stage() override { stop(); }

  void start() override {
    if (!queue_.position(consumer_)) queue_.add_consumer(consumer_);
    std::vector<std::pair<std::string, std::string>> entries;
    for (auto& [key, value] : queue_.state_with_prefix(prefix_)) {
      entries.emplace_back(key.substr(prefix_.size()), std::move(value));
    }
    try {
      handler_->restore(std::move(entries));
    } catch (const std::exception& e) {
      throw plugin::StartError(fmt::format("the saved state of processor \"{}\" ({}) cannot be read ({}); remove "
                                           "the processor's state with `tank queue` tools or move the data directory "
                                           "aside",
                                           name_, type_, e.what()));
    }
    position_ = queue_.position(consumer_).value_or(0);
    abandoned_ = false;
    stopping_ = false;
    thread_ = std::thread([this] { run(); });
  }

  void stop() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  struct Route {
    std::string input;
    unsigned position = 0;
    bool needs_json = false;
  };

  const Route* route_of(std::string_view input) const {
    for (const Route& r : routes_) {
      if (r.input == input) return &r;
    }
    return nullptr;
  }

  bool stopping() {
    std::lock_guard lock(mutex_);
    return stopping_;
  }

  void run() {
    liveness::Beat beat(component_);
    liveness::ThreadBeat this_thread(beat);
    std::string detail;
    while (!stopping()) {
      liveness::alive();
      queue::ReadBatch batch;
      try {
        batch = queue_.read(position_, queue::ReadLimits{1024, 1 << 20}, &filter_);
      } catch (const std::exception& e) {
        failures_.occur(fmt::format("reading the queue failed: {}", e.what()));
        wait_for(std::chrono::milliseconds(500));
        continue;
      }
      std::int64_t hold_until = 0;
      for (const queue::RecordView& record : batch.records()) {
        const Route* route = route_of(record.input);
        if (route == nullptr) continue;  // the filter keeps them out
        if (since_ == std::chrono::steady_clock::time_point{}) since_ = std::chrono::steady_clock::now();
        current_ = &record;
        flags_ = queue::derived_flags(route->position);
        calls_ = 0;
        const boost::json::value* doc = nullptr;
        if (route->needs_json) {
          DecodeError error;
          doc = decoder_.decode(record.payload, &error);
          if (doc == nullptr) {
            metrics_.in();
            dead_letter("decode_error", fmt::format("not JSON: {} at byte {}", error.message, error.offset));
            consumed(record.seq);
            continue;
          }
        }
        if (handler_->process(record, doc, *this) == RecordHandler::Decision::hold) {
          hold_until = std::max<std::int64_t>(handler_->hold_until(), clock_.steady_ns() + 1'000'000);
          break;
        }
        metrics_.in();
        if (calls_ == 0) drop("no_output");
        consumed(record.seq);
      }
      current_ = nullptr;
      if (hold_until != 0) {
        // Everything before the held record is committed; it is read again when due.
        if (!holding_) {
          holding_ = true;
          metrics_.set_holding(true);
        }
        commit();
        const std::int64_t wait_ns = std::max<std::int64_t>(hold_until - clock_.steady_ns(), 0);
        wait_for(std::chrono::milliseconds(std::clamp<std::int64_t>(wait_ns / 1'000'000, 1, 1000)));
        continue;
      }
      if (holding_) {
        holding_ = false;
        metrics_.set_holding(false);
      }
      if (batch.scanned_to() > position_) {
        position_ = batch.scanned_to();
        pending_position_ = position_;
      }
      const bool has_pending = !empty() || handler_->pending_change_bytes() > 0;
      const bool due = has_pending && (estimate() >= budget_ || batch.empty() ||
                                       std::chrono::steady_clock::now() - since_ >= kCommitInterval);
      if (due) commit();
      if (batch.empty()) wait_for(kPollInterval);
    }
    commit(/*stopping=*/true);
  }

  // The current record is done: the next commit acknowledges it.
  void consumed(std::uint64_t seq) {
    pending_position_ = seq;
    position_ = seq;
    if (estimate() >= budget_) commit();
  }

  std::size_t estimate() const { return bytes_ + handler_->pending_change_bytes(); }

  bool empty() const {
    return batch_.records.empty() && batch_.dead_letters.empty() && pending_position_ == 0;
  }

  // StageOutput, for the current record.
  void pass() override {
    ++calls_;
    batch_.records.add_with_attributes(current_->input, current_->ingest_ns, current_->payload, current_->attributes,
                                       flags_ | queue::kRecordKeepsFormat);
    bytes_ += current_->encoded_bytes + 32;
    ++emitted_;
  }

  void emit(std::string_view json, std::span<const queue::Attribute> attributes) override {
    ++calls_;
    batch_.records.add(current_->input, current_->ingest_ns, json, attributes, flags_);
    bytes_ += json.size() + current_->input.size() + 64;
    for (const auto& a : attributes) bytes_ += a.key.size() + a.value.size() + 6;
    ++emitted_;
  }

  void drop(std::string_view reason) override {
    ++calls_;
    // Counted at the commit (a metric update per record would cost more than the decision).
    for (auto& [r, n] : drops_) {
      if (r.data() == reason.data() || r == reason) {
        ++n;
        return;
      }
    }
    drops_.emplace_back(reason, 1);
  }

  void dead_letter(std::string_view reason, std::string detail) override {
    ++calls_;
    queue::DeadLetter d = queue::DeadLetter::make(current_->input, reason,
                                                  fmt::format("processor \"{}\": {}", name_, detail),
                                                  current_->payload, clock_.wall_ns());
    d.attributes = std::string(current_->attributes);
    bytes_ += d.original.size() + d.detail.size() + d.attributes.size() + 600;
    batch_.dead_letters.push_back(std::move(d));
    metrics_.dead_lettered(reason);
  }

  // Commits what is pending with the handler's state changes and the position, retrying while the
  // queue is full or failing. Gives up only when stopping; then nothing more is committed in this
  // run (the changes it took from the handler are not in LMDB: the next start resumes from the
  // last commit).
  void commit(bool stopping = false) {
    if (abandoned_) return;
    puts_.clear();
    deletes_.clear();
    handler_->take_changes(puts_, deletes_);
    if (const std::uint64_t e = handler_->evictions(); e > evictions_reported_) {
      metrics_.evicted(e - evictions_reported_);
      evictions_reported_ = e;
    }
    for (auto& [reason, n] : drops_) {
      metrics_.dropped(reason, n);
      n = 0;
    }
    for (auto& [key, value] : puts_) batch_.state_puts.emplace_back(prefix_ + key, std::move(value));
    for (auto& key : deletes_) batch_.state_deletes.push_back(prefix_ + key);
    if (empty() && batch_.state_puts.empty() && batch_.state_deletes.empty()) return;
    if (pending_position_ > 0) batch_.acks.emplace_back(consumer_, pending_position_);
    Backoff retry(BackoffPolicy{std::chrono::milliseconds(100), std::chrono::seconds(2), BackoffPolicy::Jitter::none});
    for (;;) {
      const queue::CommitResult r = queue_.commit(batch_);
      const queue::Settlement settled = queue::settlement_of(r.status);
      if (queue::acknowledges(settled)) {
        if (settled == queue::Settlement::dropped) {
          log::warn(component_, "{} record(s) dropped by overflow = \"drop_newest\" (counted in "
                                "tank_queue_dropped_records_total)", batch_.records.size());
        } else {
          metrics_.out(emitted_);
        }
        failures_.end("committing works again");
        failpoint::hit("record_stage.commit");
        break;
      }
      // full: the queue refuses records until outputs drain it; failed: I/O. The batch is kept
      // as it is (the state must go with the position it belongs to) and retried.
      failures_.occur(fmt::format("committing {} record(s) and the processor's state failed ({}{}); retrying",
                                  batch_.records.size(), queue::to_string(r.status),
                                  r.error.empty() ? "" : ": " + r.error));
      if (stopping || !wait_for(std::chrono::duration_cast<std::chrono::milliseconds>(retry.next()))) {
        log::warn(component_, "stopping with uncommitted progress; it is redone at the next start");
        abandoned_ = true;
        break;
      }
    }
    batch_ = queue::WriteBatch{};
    bytes_ = 0;
    emitted_ = 0;
    pending_position_ = 0;
    since_ = {};
  }

  // Waits up to `d`; false when stopping.
  bool wait_for(std::chrono::milliseconds d) {
    liveness::Waiting waiting;
    std::unique_lock lock(mutex_);
    wake_.wait_for(lock, d, [this] { return stopping_; });
    return !stopping_;
  }

  std::string type_;
  std::unique_ptr<RecordHandler> handler_;
  std::string name_;
  std::string consumer_;
  std::string prefix_;
  queue::Queue& queue_;
  const Clock& clock_;
  ProcessorMetrics metrics_;
  std::string component_;
  log::Episode failures_;
  queue::RouteFilter filter_;
  std::vector<Route> routes_;
  JsonDecoder decoder_;

  // The record being processed, and what its calls go to.
  const queue::RecordView* current_ = nullptr;
  std::uint8_t flags_ = queue::kRecordDerived;
  unsigned calls_ = 0;

  // Pending, not yet committed.
  queue::WriteBatch batch_;
  std::size_t bytes_ = 0;
  std::uint64_t emitted_ = 0;
  std::uint64_t pending_position_ = 0;  // 0: no record consumed since the last commit
  std::chrono::steady_clock::time_point since_{};
  std::vector<std::pair<std::string, std::string>> puts_;
  std::vector<std::string> deletes_;
  std::vector<std::pair<std::string_view, std::uint64_t>> drops_;  // by reason, since the last commit
  // Commit when this much is pending: a quarter of the largest commit, so that what one record
  // adds after the check still fits.
  std::size_t budget_ = static_cast<std::size_t>(queue_.max_commit_bytes()) / 4;

  std::uint64_t position_ = 0;
  std::uint64_t evictions_reported_ = 0;
  bool holding_ = false;
  bool abandoned_ = false;

  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace

std::string record_stage_prefix(std::string_view type, std::string_view name) {
  return fmt::format("{}/{}/", type, name);
}

std::unique_ptr<plugin::Stage> make_record_stage(RecordStageSettings settings, const plugin::ProcessorContext& context) {
  return std::make_unique<Stage>(std::move(settings), context);
}

}  // namespace tank::process
