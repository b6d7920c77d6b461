// processors.aggregate: event-time windows over the records of its inputs, after the queue.
//
// A stage (plugin/processor.hpp): a queue consumer with its own thread. For each input it takes,
// one process::Aggregator (windows, watermark, functions; see agent/process/aggregator.hpp).
//
//   queue --read (raw records of its inputs)--> Aggregator::add --> closed windows
//     ^                                                                  |
//     +-- one commit: derived records + window state + consumer position + dead letters
//
// Exactly-once across kill -9: the window state and the consumer position are committed in the
// same LMDB transaction as the aggregates they produced. After a restart the state is restored
// as of the last commit and the records after the position are read again, in the same order,
// so the output is that of an uninterrupted run (only idle_timeout, which follows processing
// time, can close windows at a different point).

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>

#include <boost/json.hpp>

#include <fmt/format.h>

#include "common/backoff.hpp"
#include "common/failpoint.hpp"
#include "common/liveness.hpp"
#include "common/log.hpp"
#include "common/units.hpp"
#include "config/bind.hpp"
#include "plugin/registry.hpp"
#include "process/aggregator.hpp"
#include "process/event_time.hpp"
#include "process/json_schema.hpp"
#include "process/processor_metrics.hpp"
#include "queue/queue.hpp"
#include "queue/settlement.hpp"

namespace tank::plugins {
namespace {

const std::string_view kFunctions[] = {"count", "sum", "min", "max", "mean", "first", "last", "stddev"};
const std::string_view kLate[] = {"dead_letter", "pass"};
const std::string_view kOnUnsyncedClock[] = {"hold", "pass"};

struct Settings {
  process::AggregateSpec spec;
  std::optional<std::chrono::nanoseconds> hop;  // unset: spec.hop_ns = spec.window_ns (tumbling)
  std::chrono::nanoseconds idle_timeout{};
  bool late_pass = false;
  bool unsynced_pass = false;  // on_unsynced_clock
};
using S = Settings;

const config::Options<S> kOptions{
    config::duration("window", [](S& s, std::chrono::nanoseconds d) { s.spec.window_ns = d.count(); })
        .describe("The window length. Windows are aligned to the Unix epoch: a 10s window holds event times "
                  "[t, t+10s) for t a multiple of 10 s (of `hop` for hopping windows).")
        .min("1ms")
        .required(),
    config::duration("hop", [](S& s, std::chrono::nanoseconds d) { s.hop = d; })
        .describe("For hopping windows: a new window starts every `hop` (less than `window`), so each record is "
                  "in window/hop windows (at most 1000).")
        .min("1ms")
        .default_note("`window` (tumbling windows)"),
    config::string("time_field", [](S& s, const std::string& field) { s.spec.time_field = field; })
        .describe("The field holding the event time (`ts`, `a.b`, or a JSON pointer `/a/b`).")
        .required(),
    config::choice("time_format", process::kTimeFormatNames,
                   [](S& s, const std::string& format) {
                     s.spec.time_format = process::parse_time_format(format).value_or(process::TimeFormat::automatic);
                   })
        .default_value("auto")
        .describe("How time_field is written: \"unix\" (seconds), \"unix_ms\", \"unix_us\", \"unix_ns\", \"rfc3339\", "
                  "or \"auto\" (strings as RFC 3339; numbers by magnitude)."),
    config::string_list("group_by", [](S& s, const std::vector<std::string>& fields) { s.spec.group_by = fields; })
        .default_value("[]")
        .describe("Fields whose values form the group key (a missing field groups as null); each aggregate "
                  "carries them under the same names."),
    config::list_table("fields",
                       [](S& s, const config::ListTable& fields) {
                         for (const auto& [field, names] : fields) {
                           std::vector<process::AggFunction> functions;
                           for (const auto& n : names) functions.push_back(*process::parse_agg_function(n));
                           s.spec.fields.emplace_back(field, std::move(functions));
                         }
                       })
        .describe("The functions per field, e.g. { temp = [\"min\", \"max\", \"mean\"] }. An aggregate has "
                  "`<field>_<function>` for each; numeric functions skip values that are not numbers (counted in "
                  "tank_processor_ignored_values_total); stddev is the sample standard deviation; a function with "
                  "no value to work on gives null.")
        .choices(kFunctions)
        .required(),
    config::duration("allowed_lateness", [](S& s, std::chrono::nanoseconds d) { s.spec.allowed_lateness_ns = d.count(); })
        .default_value("0s")
        .describe("The watermark is the highest event time seen minus this; a window closes (and its aggregate "
                  "is emitted) once the watermark passes its end."),
    config::duration("idle_timeout", &S::idle_timeout)
        .default_value("1m")
        .describe("When no record of an input arrived for this long (processing time), its open windows are "
                  "closed and emitted.")
        .min("10ms"),
    config::choice("late", kLate, &S::late_pass, {false, true})
        .default_value("dead_letter")
        .describe("A record whose windows are all closed: \"dead_letter\" (reason `late`) or \"pass\" (passed on "
                  "to the outputs unaggregated, with the attribute late = true). Records with the attribute "
                  "historical = true (Sparkplug B store-and-forward data) always pass, marked late."),
    config::choice("on_unsynced_clock", kOnUnsyncedClock, &S::unsynced_pass, {false, true})
        .default_value("hold")
        .describe("A record committed while the system clock was not synchronized (attribute clock_unsynced; "
                  "agent.clock): \"hold\": it waits in the queue (the stage stops at it, tank_processor_holding = "
                  "1) until the clock is synchronized, then its times are corrected (ingest time from CLOCK_BOOTTIME; "
                  "an event time nearer the wrong clock's time than the real one is moved by the same amount) and it "
                  "is aggregated; a record of an earlier boot cannot be corrected and goes to the dead-letter store "
                  "(reason `time_untrusted`). \"pass\": passed on unaggregated at once, with the attribute "
                  "time_untrusted = true, never taken for late data."),
    config::integer("max_open_windows", [](S& s, std::int64_t n) { s.spec.max_cells = static_cast<std::size_t>(n); })
        .default_value(100000)
        .describe("The most (window, group) cells held at once, per input; a record that would open one more goes "
                  "to the dead-letter store with reason `window_limit`.")
        .min("1")
        .max("100000000"),
};

// Each record updates window / hop cells; this bounds what one record adds to a commit.
constexpr std::int64_t kMaxWindowsPerRecord = 1000;

void check(const config::SectionValues& v, config::Diagnostics& diagnostics) {
  if (v.has("hop") && v.has("window") && v.duration("hop") > v.duration("window")) {
    diagnostics.error(v.location_of("hop"), v.path() + ".hop",
                      fmt::format("hop ({}) must not be longer than window ({}): records would fall between windows",
                                  units::format_duration(v.duration("hop")), units::format_duration(v.duration("window"))));
  }
  if (v.has("hop") && v.has("window") && v.duration("hop").count() > 0 &&
      v.duration("window") / v.duration("hop") > kMaxWindowsPerRecord) {
    diagnostics.error(v.location_of("hop"), v.path() + ".hop",
                      fmt::format("window / hop is {}: each record would be in that many windows; at most {} are "
                                  "allowed (use a longer hop)",
                                  v.duration("window") / v.duration("hop"), kMaxWindowsPerRecord));
  }
  if (v.has("fields")) {
    const auto& fields = v.list_table("fields");
    if (fields.empty()) {
      diagnostics.error(v.location_of("fields"), v.path() + ".fields", "name at least one field and its functions");
    }
    std::set<std::string> names{"window_start", "window_end", "count"};
    if (v.has("group_by")) {
      for (const auto& g : v.strings("group_by")) {
        if (!names.insert(g).second) {
          diagnostics.error(v.location_of("group_by"), v.path() + ".group_by",
                            fmt::format("\"{}\" would collide with another key of the aggregate", g));
        }
      }
    }
    for (const auto& [field, functions] : fields) {
      if (functions.empty()) {
        diagnostics.error(v.location_of("fields"), v.path() + ".fields." + field,
                          "name at least one function: count, sum, min, max, mean, first, last or stddev");
      }
      for (const auto& f : functions) {
        if (!names.insert(field + "_" + f).second) {
          diagnostics.error(v.location_of("fields"), v.path() + ".fields." + field,
                            fmt::format("\"{}_{}\" would appear twice in the aggregate", field, f));
        }
      }
    }
  }
}

bool needs_json(const config::SectionValues&) { return true; }

const config::Section kSection{
    .path = "processors.aggregate",
    .summary = "Event-time windows (tumbling, or hopping with `hop`) over the records of its inputs, grouped by "
               "`group_by`, with count, sum, min, max, mean, first, last and stddev per field. Runs after the queue: "
               "the window state is committed with the records it absorbed, so a kill -9 and a restart give exactly "
               "the output of an uninterrupted run. Outputs receive the aggregates of these inputs instead of their "
               "records. Each aggregate is a JSON object: window_start, window_end (RFC 3339), count, the group_by "
               "fields, then `<field>_<function>`.",
    .options = kOptions.all(),
    .common = plugin::processor_common_options(),
    .repeated = true,
    .check = check,
};

// Commit when this much state and output is pending, or this long after the first change.
constexpr auto kCommitInterval = std::chrono::milliseconds(200);
constexpr auto kPollInterval = std::chrono::milliseconds(20);
// How often a stage holding a record looks at the clock again (the agent checks it every second).
constexpr auto kHoldPoll = std::chrono::milliseconds(250);

class AggregateStage final : public plugin::Stage {
 public:
  AggregateStage(Settings settings, const plugin::ProcessorContext& context)
      : settings_(std::move(settings)),
        name_(context.name),
        consumer_(plugin::stage_consumer_name(context.name)),
        inputs_(context.inputs),
        queue_(*context.queue),
        clock_(context.clock),
        metrics_(context.metrics, context.name, "aggregate"),
        component_("processor " + context.name),
        clock_sync_(context.clock_sync),
        failures_(component_, log::Level::error),
        holding_episode_(component_, log::Level::warn) {
    filter_.inputs = inputs_;
    filter_.levels = context.positions;
    if (filter_.levels.empty()) filter_.levels.assign(inputs_.size(), 0);
    for (unsigned position : filter_.levels) flags_.push_back(queue::derived_flags(position));
  }

  ~AggregateStage() override { stop(); }

  void start() override {
    if (!queue_.position(consumer_)) queue_.add_consumer(consumer_);
    restore();
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
    std::uint8_t flags = queue::kRecordDerived;  // of what it derives from this input
    std::string prefix;  // state keys: "aggregate/<processor>/<input>/"
    std::unique_ptr<process::Aggregator> aggregator;
    std::chrono::steady_clock::time_point last_record;
    std::uint64_t ignored_reported = 0;
  };

  // Pending, not yet committed. The window state is not copied here as it changes: the
  // aggregators keep track of their changed cells and hand them out at the commit, so a cell
  // updated many times between two commits is encoded and written once, and one opened and
  // closed between two commits never reaches LMDB.
  struct Pending {
    queue::WriteBatch batch;
    std::size_t bytes = 0;
    std::uint64_t position = 0;
    std::uint64_t emitted = 0;
    std::chrono::steady_clock::time_point since{};
    bool empty() const {
      return batch.records.empty() && batch.dead_letters.empty() && batch.state_deletes.empty() && position == 0;
    }
  };

  // Closed cells are taken from an aggregator this many at a time, with a commit in between
  // when the pending output reaches the budget: a window of a large fleet closes over several
  // commits, each with the state and position it belongs to (the aggregator's bounded drain
  // keeps that exact across kill -9; see Aggregator::close_ready).
  static constexpr std::size_t kEmitChunk = 1024;

  // What `pending` will add to the commit: its records and dead letters, and the aggregators'
  // changed cells (each at most state_change_bytes_, the largest seen so far).
  std::size_t estimate(const Pending& pending) const {
    std::size_t changes = 0;
    for (const Route& r : routes_) changes += r.aggregator->pending_changes();
    return pending.bytes + changes * state_change_bytes_;
  }

  void restore() {
    routes_.clear();
    for (const std::string& input : inputs_) {
      Route r;
      r.input = input;
      r.flags = flags_[routes_.size()];
      r.prefix = fmt::format("aggregate/{}/{}/", name_, input);
      r.aggregator = std::make_unique<process::Aggregator>(settings_.spec);
      r.last_record = std::chrono::steady_clock::now();
      std::vector<std::pair<std::string, std::string>> entries;
      for (auto& [key, value] : queue_.state_with_prefix(r.prefix)) {
        entries.emplace_back(key.substr(r.prefix.size()), std::move(value));
      }
      if (!entries.empty()) {
        try {
          r.aggregator->restore(entries);
        } catch (const process::SpecMismatch& e) {
          // The windows or functions changed: the old state cannot continue. Its open windows are
          // dropped (said here, once); records already absorbed into them are not re-read.
          log::warn(component_, "the aggregation settings changed since the last run; {} open cell(s) of input \"{}\" "
                                "from the old settings are discarded ({})",
                    entries.size(), input, e.what());
          r.aggregator = std::make_unique<process::Aggregator>(settings_.spec);
          for (const auto& [key, value] : entries) discard_.push_back(r.prefix + key);
        } catch (const std::exception& e) {
          throw plugin::StartError(fmt::format("the saved window state of input \"{}\" cannot be read ({}); delete "
                                               "the queue's state or move the data directory aside",
                                               input, e.what()));
        }
      }
      metrics_.set_windows_open(r.aggregator->open_cells());
      routes_.push_back(std::move(r));
    }
    position_ = queue_.position(consumer_).value_or(0);
    acknowledged_ = position_;
  }

  Route* route_of(std::string_view input) {
    for (Route& r : routes_) {
      if (r.input == input) return &r;
    }
    return nullptr;
  }

  void run() {
    liveness::Beat beat(component_);
    liveness::ThreadBeat this_thread(beat);
    Pending pending;
    // The state of other settings is deleted first, in a commit of its own: the new state may
    // use the same keys.
    if (!discard_.empty()) {
      for (std::string& key : discard_) pending.batch.state_deletes.push_back(std::move(key));
      discard_.clear();
      commit(pending);
    }
    // A restored watermark may have passed cells a bounded drain had not taken yet.
    for (Route& r : routes_) drain(pending, r, false);
    std::string detail;
    for (;;) {
      liveness::alive();
      {
        std::lock_guard lock(mutex_);
        if (stopping_) break;
      }
      queue::ReadBatch batch;
      try {
        // While holding, only the held record is read again, to see whether it can go on.
        batch = queue_.read(position_, queue::ReadLimits{holding_episode_.active() ? 1u : 1024u, 1 << 20}, &filter_);
      } catch (const std::exception& e) {
        failures_.occur(fmt::format("reading the queue failed: {}", e.what()));
        wait(std::chrono::milliseconds(500));
        continue;
      }
      bool held = false;
      for (const queue::RecordView& record : batch.records()) {
        Route* r = route_of(record.input);
        if (r == nullptr) {  // not one of ours (the filter keeps them out)
          metrics_.in();
          continue;
        }
        const process::TimeRebase* rebase = nullptr;
        const std::optional<std::string_view> stamp =
            clock_sync_ != nullptr ? record.attribute(kUnsyncedAttribute) : std::nullopt;
        Untrusted untrusted = Untrusted::no;
        if (stamp) {
          untrusted = examine(record, *stamp);
          if (untrusted == Untrusted::hold) {
            // Stop before it: what came before is committed as usual, and it is read again (with
            // the records after it) once the clock is synchronized. It stays in the queue, under
            // the queue's bounds, and a restart meanwhile reads it again from here.
            hold(record);
            position_ = record.seq - 1;
            held = true;
            break;
          }
          if (untrusted == Untrusted::rebase) rebase = &rebase_;
        }
        metrics_.in();
        r->last_record = std::chrono::steady_clock::now();
        if (pending.since == std::chrono::steady_clock::time_point{}) pending.since = r->last_record;
        // Any commit from here on (in drain() or done_with()) happens after this record was
        // absorbed or dead-lettered, so it acknowledges the record with the state that holds it.
        pending.position = record.seq;
        process::DecodeError error;
        const boost::json::value* doc = decoder_.decode(record.payload, &error);
        if (doc == nullptr) {
          dead_letter(pending, record, "decode_error", fmt::format("not JSON: {} at byte {}", error.message, error.offset));
          done_with(pending);
          continue;
        }
        if (untrusted == Untrusted::pass) {
          pass_untrusted(pending, record, *r);
          done_with(pending);
          continue;
        }
        if (untrusted == Untrusted::other_boot) {
          dead_letter(pending, record, "time_untrusted",
                      fmt::format("its time was stamped before the system clock was synchronized, in another boot "
                                  "({}={}); it cannot be corrected",
                                  kUnsyncedAttribute, *stamp));
          done_with(pending);
          continue;
        }
        detail.clear();
        switch (r->aggregator->add(*doc, &detail, rebase)) {
          case process::AddOutcome::absorbed:
            break;
          case process::AddOutcome::late:
            metrics_.late();
            // Historical data (a Sparkplug edge node's store-and-forward replay: the attribute
            // historical = true) is old by nature, never dropped as late: it passes, marked.
            if (const bool historical = record.attribute("historical") == std::optional<std::string_view>("true");
                settings_.late_pass || historical) {
              const queue::Attribute plain[] = {{"processor", name_}, {"late", "true"}};
              const queue::Attribute marked[] = {{"processor", name_}, {"late", "true"}, {"historical", "true"}};
              const std::span<const queue::Attribute> attrs = historical ? std::span<const queue::Attribute>(marked)
                                                                         : std::span<const queue::Attribute>(plain);
              pending.batch.records.add(record.input, clock_.wall_ns(), record.payload, attrs, r->flags);
              pending.bytes += record.payload.size() + 64;
              metrics_.out();
            } else {
              dead_letter(pending, record, "late",
                          fmt::format("every window of this record closed already (watermark {}){}",
                                      process::format_rfc3339_ns(r->aggregator->watermark()),
                                      detail.empty() ? "" : ": " + detail));
            }
            break;
          case process::AddOutcome::not_object:
            dead_letter(pending, record, "not_an_object", detail.empty() ? "the record is not a JSON object" : detail);
            break;
          case process::AddOutcome::bad_time:
            dead_letter(pending, record, "time_invalid", detail);
            break;
          case process::AddOutcome::cell_limit:
            dead_letter(pending, record, "window_limit", detail);
            break;
        }
        drain(pending, *r, false);
        done_with(pending);
      }
      if (held) {
        // Acknowledges what came before it (once: a hold must not commit again and again).
        if (position_ > acknowledged_ && position_ > pending.position) pending.position = position_;
      } else {
        end_hold();
        if (batch.scanned_to() > 0) {
          position_ = batch.scanned_to();
          pending.position = position_;
        }
      }
      close_idle(pending);
      // What was read goes into one commit when it is due: at the commit interval, when the queue
      // has nothing more to read, or when it reaches the budget (done_with() checks that after
      // each record, too).
      const bool due = (!pending.empty() || estimate(pending) > pending.bytes) &&
                       (estimate(pending) >= budget_ || batch.empty() ||
                        std::chrono::steady_clock::now() - pending.since >= kCommitInterval);
      if (due) commit(pending);
      if (batch.empty()) wait(kPollInterval);
      if (held) wait(kHoldPoll);
    }
    // A clean stop commits what was read.
    commit(pending, /*stopping=*/true);
  }

  // `record` is fully processed (pending.position is its seq). Commits when the pending output
  // reached the budget.
  void done_with(Pending& pending) {
    if (estimate(pending) >= budget_) commit(pending);
  }

  // Emits the cells `r` has ready (all: every cell, after idle_timeout) in chunks, committing in
  // between when the budget is reached. Returns how many cells it emitted.
  std::size_t drain(Pending& pending, Route& r, bool all) {
    std::size_t n = 0;
    for (;;) {
      liveness::alive();
      emitted_.clear();
      const bool done = all ? r.aggregator->close_all(&emitted_, kEmitChunk)
                            : r.aggregator->close_ready(&emitted_, kEmitChunk);
      n += emitted_.size();
      emit(pending, r, emitted_);
      if (done || abandoned_) return n;
      if (estimate(pending) >= budget_) {
        commit(pending);
        failpoint::hit("aggregate.drain_commit");  // some cells of a closed window still held
      }
    }
  }

  // What to do with a record committed while the clock was not synchronised (it carries
  // kUnsyncedAttribute = `stamp`): on_unsynced_clock = "pass" passes it; a stamp of another boot
  // cannot be corrected; while the clock is still not synchronised it is held; else its times are
  // corrected by rebase_ (set here).
  enum class Untrusted { no, pass, other_boot, hold, rebase };
  Untrusted examine(const queue::RecordView& record, std::string_view stamp) {
    if (settings_.unsynced_pass) return Untrusted::pass;
    const std::optional<std::int64_t> real = clock_sync_->real_time_of(stamp);
    if (!real) return Untrusted::other_boot;
    if (!clock_sync_->synchronized()) return Untrusted::hold;
    rebase_ = process::TimeRebase{record.ingest_ns, *real};
    return Untrusted::rebase;
  }

  void hold(const queue::RecordView& record) {
    if (holding_episode_.occur(fmt::format("holding at record {} of input \"{}\" and those after it: it was "
                                           "committed while the system clock was not synchronized (on_unsynced_clock "
                                           "= \"hold\"); they are aggregated once it is",
                                           record.seq, record.input))) {
      metrics_.set_holding(true);
    }
  }

  void end_hold() {
    if (holding_episode_.end("the system clock is synchronized: the held records are aggregated, their times "
                             "corrected")) {
      metrics_.set_holding(false);
    }
  }

  // on_unsynced_clock = "pass": on to the outputs unaggregated, marked, keeping clock_unsynced.
  void pass_untrusted(Pending& pending, const queue::RecordView& record, const Route& r) {
    attrs_.clear();
    record.for_each_attribute([&](std::string_view key, std::string_view value) {
      if (key == kUnsyncedAttribute) attrs_.push_back({key, value});
    });
    attrs_.push_back({"processor", name_});
    attrs_.push_back({"time_untrusted", "true"});
    pending.batch.records.add(record.input, clock_.wall_ns(), record.payload, attrs_, r.flags);
    pending.bytes += record.payload.size() + record.attributes.size() + 64;
    metrics_.out();
  }

  void dead_letter(Pending& pending, const queue::RecordView& record, std::string_view reason, std::string detail) {
    queue::DeadLetter d = queue::DeadLetter::make(record.input, reason, fmt::format("processor \"{}\": {}", name_, detail),
                                                  record.payload, clock_.wall_ns());
    d.attributes = std::string(record.attributes);
    pending.bytes += d.original.size() + d.detail.size() + d.attributes.size() + 600;
    pending.batch.dead_letters.push_back(std::move(d));
    metrics_.dead_lettered(reason);
  }

  void emit(Pending& pending, Route& r, const std::vector<process::Emitted>& emitted) {
    if (emitted.empty()) return;
    const queue::Attribute attrs[] = {{"processor", name_}};
    const std::int64_t now = clock_.wall_ns();
    for (const process::Emitted& e : emitted) {
      pending.batch.records.add(r.input, now, e.json, attrs, r.flags);
      pending.bytes += e.json.size() + 64;
    }
    pending.emitted += emitted.size();
  }

  void close_idle(Pending& pending) {
    const auto now = std::chrono::steady_clock::now();
    for (Route& r : routes_) {
      if (r.aggregator->open_cells() == 0 || now - r.last_record < settings_.idle_timeout) continue;
      if (pending.since == std::chrono::steady_clock::time_point{}) pending.since = now;
      const std::size_t n = drain(pending, r, true);
      log::debug(component_, "input \"{}\" idle for {}: closed {} window cell(s)", r.input,
                 units::format_duration(settings_.idle_timeout), n);
    }
  }

  // Moves the aggregators' changed state into the batch (each key at most once per call).
  void collect_state(Pending& pending) {
    puts_.clear();
    deletes_.clear();
    queue::WriteBatch& w = pending.batch;
    for (Route& r : routes_) {
      puts_.clear();
      deletes_.clear();
      r.aggregator->take_changes(&puts_, &deletes_);
      for (auto& [key, value] : puts_) {
        state_change_bytes_ = std::max(state_change_bytes_, r.prefix.size() + key.size() + value.size() + 64);
        w.state_puts.emplace_back(r.prefix + key, std::move(value));
      }
      for (auto& key : deletes_) w.state_deletes.push_back(r.prefix + key);
      const std::uint64_t ignored = r.aggregator->ignored_values();
      if (ignored > r.ignored_reported) {
        metrics_.ignored_values(ignored - r.ignored_reported);
        r.ignored_reported = ignored;
      }
    }
  }

  // Commits `pending` with the aggregators' changes and the position, retrying while the queue
  // is full or failing. Gives up only when stopping; then nothing more is committed in this run
  // (abandoned_), because the aggregators' changes it took are not in LMDB: the next start
  // resumes from the last commit.
  void commit(Pending& pending, bool stopping = false) {
    if (abandoned_) return;
    queue::WriteBatch& w = pending.batch;
    collect_state(pending);
    if (pending.empty() && w.state_puts.empty()) return;
    if (pending.position > 0) w.acks.emplace_back(consumer_, pending.position);
    Backoff retry(BackoffPolicy{std::chrono::milliseconds(100), std::chrono::seconds(2), BackoffPolicy::Jitter::none});
    for (;;) {
      const queue::CommitResult r = queue_.commit(w);
      const queue::Settlement settled = queue::settlement_of(r.status);
      if (queue::acknowledges(settled)) {
        if (settled == queue::Settlement::dropped) {
          log::warn(component_, "{} aggregate(s) dropped by overflow = \"drop_newest\" (counted in "
                                "tank_queue_dropped_records_total)", w.records.size());
        } else {
          metrics_.out(pending.emitted);
        }
        failures_.end("committing works again");
        if (pending.position > acknowledged_) acknowledged_ = pending.position;
        failpoint::hit("aggregate.commit");
        break;
      }
      // full: the queue refuses records until outputs drain it; failed: I/O. Either way the
      // batch is kept as it is (the state must go with the position it belongs to) and retried.
      failures_.occur(fmt::format("committing {} aggregate(s) and the window state failed ({}{}); retrying{}",
                                  w.records.size(), queue::to_string(r.status), r.error.empty() ? "" : ": " + r.error,
                                  r.status == queue::CommitStatus::too_large
                                      ? " (what one record changes does not fit one commit: raise [queue] "
                                        "max_disk_bytes, or give each record fewer windows with a longer hop)"
                                      : ""));
      if (stopping || !wait(std::chrono::duration_cast<std::chrono::milliseconds>(retry.next()))) {
        log::warn(component_, "stopping with uncommitted aggregation progress; it is redone at the next start");
        abandoned_ = true;
        break;
      }
    }
    std::size_t open = 0;
    for (const Route& r : routes_) open += r.aggregator->open_cells();
    metrics_.set_windows_open(open);
    pending = Pending{};
  }

  // Waits up to `d`; false when stopping.
  bool wait(std::chrono::milliseconds d) {
    liveness::Waiting waiting;
    std::unique_lock lock(mutex_);
    wake_.wait_for(lock, d, [this] { return stopping_; });
    return !stopping_;
  }

  Settings settings_;
  std::string name_;
  std::string consumer_;
  std::vector<std::string> inputs_;
  queue::Queue& queue_;
  const Clock& clock_;
  process::ProcessorMetrics metrics_;
  std::string component_;
  const ClockSync* clock_sync_;
  log::Episode failures_;
  log::Episode holding_episode_;  // a record held until the clock is synchronized
  process::TimeRebase rebase_;    // examine()'s result
  std::vector<queue::Attribute> attrs_;  // pass_untrusted's scratch
  queue::RouteFilter filter_;
  process::JsonDecoder decoder_;
  std::vector<Route> routes_;
  std::vector<std::string> discard_;
  std::vector<std::pair<std::string, std::string>> puts_;  // collect_state's scratch
  std::vector<std::string> deletes_;
  std::vector<process::Emitted> emitted_;  // drain's scratch
  std::vector<std::uint8_t> flags_;         // the flags of what it derives, per input (chain position)
  // Commit when this much is pending: a quarter of the largest commit, so that what one record
  // adds after the check (its state changes, a chunk of aggregates, a dead letter) still fits.
  std::size_t budget_ = static_cast<std::size_t>(queue_.max_commit_bytes()) / 4;
  std::size_t state_change_bytes_ = 256;
  bool abandoned_ = false;
  std::uint64_t position_ = 0;
  std::uint64_t acknowledged_ = 0;  // the position the last commit stored

  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

std::unique_ptr<plugin::Stage> create(const config::SectionValues& v, const plugin::ProcessorContext& context) {
  Settings s = kOptions.read(v);
  s.spec.hop_ns = s.hop ? s.hop->count() : s.spec.window_ns;
  return std::make_unique<AggregateStage>(std::move(s), context);
}

}  // namespace

void register_processors_aggregate(plugin::Registry& registry) {
  registry.add({.kind = plugin::Kind::processor,
                .name = "aggregate",
                .section = &kSection,
                .summary = "event-time windows with count, sum, min, max, mean, first, last, stddev",
                .create_stage = create,
                .needs_json = needs_json});
}

}  // namespace tank::plugins
