// The recording run and the exploration of states with their checks (explorer.hpp).

#include "powerloss/explorer.hpp"

#include <signal.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <fmt/format.h>

#include "engine/run_state.hpp"
#include "queue/recovery_point.hpp"
#include "support/http_upstream.hpp"

namespace tank::powerloss {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr const char* kDataFile = "queue/data.mdb";
const std::string kRecoveryFile = std::string("queue/") + queue::kRecoveryPointFile;
// Entries of operations that returned shortly before the kill may be missing from the log (the
// entry is appended after the call); cuts are drawn from before this margin.
constexpr std::int64_t kTailMarginNs = 1'000'000'000;
constexpr std::int64_t kWindowSlackNs = 100'000'000;
// A queue whose record count does not move for this long is stuck (it drains in well under a second).
constexpr std::chrono::seconds kStall{5};

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t steady_ns(std::chrono::steady_clock::time_point t) {
  // libstdc++'s steady_clock is CLOCK_MONOTONIC: the recorder's and tank's clock.
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

std::string fresh_boot_id() {
  std::random_device entropy;
  std::uint64_t a = (static_cast<std::uint64_t>(entropy()) << 32) ^ entropy();
  std::uint64_t b = (static_cast<std::uint64_t>(entropy()) << 32) ^ entropy();
  return fmt::format("{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}", a >> 32, (a >> 16) & 0xffff, a & 0xfff,
                     0x8000 | (b >> 48 & 0x3fff), b & 0xffffffffffffull);
}

std::map<std::string, std::string> merged(std::map<std::string, std::string> a, const std::map<std::string, std::string>& b) {
  for (const auto& [k, v] : b) a[k] = v;
  return a;
}

// Waits until run.json names `tank` running; nullopt when it ended or the deadline passed.
std::optional<engine::RunState> wait_running(test::Process& tank, const fs::path& data_dir, std::chrono::milliseconds deadline) {
  std::optional<engine::RunState> state;
  test::wait_until(
      [&] {
        if (!tank.running()) return true;
        std::string error;
        auto s = engine::read_run_state(engine::run_state_path(data_dir), &error);
        if (s && s->state == "running" && s->pid == tank.pid()) state = std::move(s);
        return state.has_value();
      },
      deadline);
  return state;
}

std::string tail(const std::string& text, std::size_t bytes = 1500) {
  return text.size() <= bytes ? text : "..." + text.substr(text.size() - bytes);
}

// The ids in an NDJSON body; lines that are not exactly a generator's record go to `foreign`.
std::vector<std::uint64_t> ids_of(const std::string& body, std::uint64_t sent, std::vector<std::string>& foreign) {
  std::vector<std::uint64_t> ids;
  std::size_t at = 0;
  while (at < body.size()) {
    std::size_t end = body.find('\n', at);
    if (end == std::string::npos) end = body.size();
    const std::string_view line(body.data() + at, end - at);
    at = end + 1;
    if (line.empty()) continue;
    std::uint64_t id = 0;
    const auto key = line.find("\"id\":");
    bool ok = key != std::string_view::npos;
    if (ok) {
      std::size_t p = key + 5;
      ok = p < line.size() && line[p] >= '0' && line[p] <= '9';
      for (; p < line.size() && line[p] >= '0' && line[p] <= '9'; ++p) id = id * 10 + static_cast<std::uint64_t>(line[p] - '0');
    }
    if (ok && id < sent && line == record_line(id)) {
      ids.push_back(id);
    } else if (foreign.size() < 5) {
      foreign.emplace_back(line.substr(0, 200));
    }
  }
  return ids;
}

std::optional<queue::RecoveryPoint> newest_slot(const std::string& bytes) {
  std::optional<queue::RecoveryPoint> best;
  for (std::size_t slot = 0; slot < 2; ++slot) {
    if (bytes.size() < (slot + 1) * queue::kRecoveryPointSlotBytes) break;
    auto p = queue::decode_recovery_slot(std::string_view(bytes).substr(slot * queue::kRecoveryPointSlotBytes,
                                                                       queue::kRecoveryPointSlotBytes));
    if (p && (!best || p->generation > best->generation)) best = std::move(p);
  }
  return best;
}

}  // namespace

std::string record_line(std::uint64_t id) {
  return fmt::format(R"({{"id":{},"pad":"{}"}})", id, std::string(48 + id % 17, static_cast<char>('a' + id % 26)));
}

// ---- Recording ----

std::string Recording::config(const fs::path& data_dir, const std::string& upstream_url) const {
  return fmt::format(
      "[agent]\nid = \"powerloss\"\ndata_dir = \"{}\"\nlog_format = \"text\"\n\n"
      "[metrics]\nlisten = \"127.0.0.1:0\"\n\n"
      "[queue]\nmode = \"{}\"\nmax_disk_bytes = \"16MiB\"\nmax_memory_bytes = \"2MiB\"\nfsync = \"{}\"\n{}\n"
      "[dead_letter]\nmax_bytes = \"1MiB\"\n\n"
      "[[inputs.http]]\nname = \"ingest\"\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = \"128KiB\"\n\n"
      "[[outputs.http]]\nname = \"upstream\"\nurl = \"{}\"\nbatch_max_records = 500\nlinger = \"20ms\"\n"
      "retry_initial = \"20ms\"\nretry_max = \"200ms\"\nbreaker_failures = 5\nbreaker_cooldown = \"100ms\"\n"
      "connect_timeout = \"1s\"\nresponse_timeout = \"3s\"\n",
      data_dir.string(), options_.mode, options_.fsync,
      options_.fsync == "interval" ? fmt::format("fsync_interval = \"{}ms\"\n", options_.fsync_interval.count()) : "",
      upstream_url);
}

Recording::Recording(RecordOptions options) : options_(std::move(options)), log_(dir_ / "ops.log") {
  const fs::path data = dir_ / "data";
  fs::create_directories(data);  // empty: every file is created within the recording
  test::HttpUpstream upstream;
  const fs::path config_path = dir_ / "tank.toml";
  test::write_file(config_path, config(data, upstream.url()));
  const auto env = merged(merged(options_.env, options_.recorder_env), {{"LD_PRELOAD", TANK_POWERLOSS_RECORDER},
                                                                      {"TANK_RECORD_DIR", data.string()},
                                                                      {"TANK_RECORD_LOG", log_.string()}});
  test::Process tank({test::tank_binary(), "run", "-c", config_path.string()}, env);
  const auto state = wait_running(tank, data, 30s);
  if (!state) throw std::runtime_error("the recorded tank did not reach running:\n" + tank.err());
  const std::string address = state->inputs.empty() ? "" : state->inputs.front().second;

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> next_id{0};
  std::mutex bodies_mutex;
  constexpr unsigned kGenerators = 2;
  auto generate = [&] {
    const auto period = std::chrono::nanoseconds(1'000'000'000ll * kGenerators / static_cast<long long>(options_.bodies_per_second));
    auto next = std::chrono::steady_clock::now();
    while (!stop) {
      const auto n = static_cast<std::uint32_t>(options_.records_per_body);
      const std::uint64_t first = next_id.fetch_add(n);
      std::string body;
      for (std::uint64_t id = first; id < first + n; ++id) body += record_line(id) + "\n";
      auto r = test::http_request(address, "POST", "/", body, {{"Content-Type", "application/x-ndjson"}});
      const std::int64_t acked = r && r->status == 200 ? now_ns() : 0;
      {
        std::lock_guard lock(bodies_mutex);
        bodies_.push_back({first, n, acked});
      }
      next += period;
      const auto now = std::chrono::steady_clock::now();
      if (now > next + 1s) next = now;  // fell behind (tank answered 503 or slowly): no burst
      std::this_thread::sleep_until(next);  // the generator's pace, not synchronisation
    }
  };
  std::vector<std::thread> generators;
  for (unsigned i = 0; i < kGenerators; ++i) generators.emplace_back(generate);

  // The upstream's script over the run: a backlog builds up while it is down, drains when it is
  // back, and drains unevenly while it answers 503 or slowly. These are the scenario's phases,
  // not waits for a condition.
  const auto start = std::chrono::steady_clock::now();
  auto at = [&](double share) {
    return start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(options_.duration * share);
  };
  std::this_thread::sleep_until(at(0.2));
  upstream.down();
  std::this_thread::sleep_until(at(0.45));
  upstream.up();
  std::this_thread::sleep_until(at(0.65));
  upstream.chaos({.seed = 7, .status_503 = 0.4, .slow = 0.1, .slow_delay = 100ms});
  std::this_thread::sleep_until(at(0.8));
  upstream.chaos({});
  std::this_thread::sleep_until(at(1.0));
  killed_ns_ = now_ns();
  tank.signal(SIGKILL);
  const auto code = tank.wait(30s);
  stop = true;
  for (auto& g : generators) g.join();
  tank_log_ = tank.err();
  if (code != 128 + SIGKILL) {
    throw std::runtime_error(fmt::format("the recorded tank ended with {} before the kill:\n{}", code.value_or(-1), tail(tank_log_)));
  }
  // Everything tank saw answered was recorded by the upstream before it answered.
  for (const auto& r : upstream.received()) {
    deliveries_.push_back({steady_ns(r.at), r.answered == 200, r.key, r.body});
  }
  trace_ = std::make_unique<Trace>(Trace::load(log_));
}

std::string Recording::describe() const {
  std::size_t acked = 0, syncs = 0;
  for (const auto& b : bodies_) acked += b.acked_ns > 0 ? b.records : 0;
  for (const auto& op : trace_->ops()) syncs += op.kind == Op::Kind::sync || (op.kind == Op::Kind::write && op.dsync);
  // The backlog over time: records acknowledged minus records delivered (first deliveries).
  std::vector<std::pair<std::int64_t, std::int64_t>> events;
  for (const auto& b : bodies_) {
    if (b.acked_ns > 0) events.emplace_back(b.acked_ns, b.records);
  }
  std::set<std::uint64_t> seen;
  std::vector<std::string> ignored;
  std::uint64_t sent = 0;
  for (const auto& b : bodies_) sent = std::max<std::uint64_t>(sent, b.first_id + b.records);
  for (const auto& d : deliveries_) {
    if (!d.ok) continue;
    std::int64_t fresh = 0;
    for (auto id : ids_of(d.body, sent, ignored)) fresh += seen.insert(id).second;
    events.emplace_back(d.at_ns, -fresh);
  }
  std::sort(events.begin(), events.end());
  std::int64_t backlog = 0, peak = 0;
  for (const auto& [at, change] : events) peak = std::max(peak, backlog += change);
  return fmt::format("fsync {}: {} records acknowledged in {} bodies, {} delivered before the kill, backlog up to {} records; "
                     "{} operations recorded ({} syncs or O_DSYNC writes) by {} processes, log {:.1f} MiB",
                     options_.fsync, acked, bodies_.size(), seen.size(), peak, trace_->ops().size(), syncs, trace_->processes(),
                     static_cast<double>(fs::file_size(log_)) / (1 << 20));
}

// ---- Exploration ----

namespace {

struct StateResult {
  Recipe recipe;
  std::set<std::string> kinds;
  std::vector<std::string> findings;
  std::uint64_t required = 0, lost = 0;
  std::int64_t window_ns = -1;
  std::string log;
};

// What every state of one recording is checked against.
class Checker {
 public:
  Checker(const Recording& recording, const ExploreOptions& options)
      : recording_(recording), model_(recording.trace(), options.names) {
    const auto& ops = recording.trace().ops();
    std::int64_t data_created = INT64_MAX;
    for (std::size_t i = 0; i < ops.size(); ++i) {
      const Op& op = ops[i];
      if (op.kind == Op::Kind::create && op.path == kRecoveryFile) recovery_point_ = true;
      if (op.kind == Op::Kind::create && op.path == kDataFile) data_created = std::min(data_created, op.end_ns);
      const bool names_synced = (op.kind == Op::Kind::sync && op.dir && op.path == "queue") || op.kind == Op::Kind::sync_all;
      if (names_synced && op.start_ns >= data_created) data_name_synced_ = true;
      if (op.kind == Op::Kind::sync && !op.dir && op.path == kDataFile) {
        data_syncs_.push_back(i);
        data_flush_ns_ = std::max(data_flush_ns_, op.end_ns - op.start_ns);
      }
      if (op.kind == Op::Kind::sync && op.path == kRecoveryFile) point_flush_ns_ = std::max(point_flush_ns_, op.end_ns - op.start_ns);
    }
    for (const auto& b : recording.bodies()) sent_ = std::max<std::uint64_t>(sent_, b.first_id + b.records);
    std::vector<std::string> ignored;
    for (const auto& d : recording.deliveries()) {
      delivered_before_.push_back(d.ok ? ids_of(d.body, sent_, ignored) : std::vector<std::uint64_t>{});
      keys_.emplace(d.key, d.body);
    }
  }

  const CrashModel& model() const { return model_; }
  bool recovery_point() const { return recovery_point_; }
  bool data_name_synced() const { return data_name_synced_; }
  std::int64_t window_bound_ns() const {
    return std::chrono::nanoseconds(recording_.options().fsync_interval).count() + 2 * (data_flush_ns_ + point_flush_ns_) +
           kWindowSlackNs;
  }

  // Records acknowledged before this instant must survive a cut at `cut` (INT64_MIN: none).
  std::int64_t anchor(std::size_t cut) const {
    const std::int64_t t = model_.instant(cut);
    // In memory mode the records a crash finds in RAM are lost (acknowledged or not): only the
    // queue's opening, its drain and the absence of repeats and foreign bytes are promised.
    if (recording_.options().mode == "memory") return INT64_MIN;
    if (recording_.options().fsync == "always") return t;
    if (recovery_point_) {
      auto bytes = model_.durable_content(cut, kRecoveryFile);
      auto point = bytes ? newest_slot(*bytes) : std::nullopt;
      return point ? point->pinned_mono_ns : INT64_MIN;
    }
    // Until tank writes recovery points: the start of the last completed flush of data.mdb.
    auto it = std::upper_bound(data_syncs_.begin(), data_syncs_.end(), cut);
    return it == data_syncs_.begin() ? INT64_MIN : recording_.trace().ops()[*std::prev(it)].start_ns;
  }

  StateResult run(const Recipe& recipe, std::mutex& port_mutex) const;

 private:
  const Recording& recording_;
  CrashModel model_;
  bool recovery_point_ = false;
  bool data_name_synced_ = false;
  std::vector<std::size_t> data_syncs_;
  std::int64_t data_flush_ns_ = 0, point_flush_ns_ = 0;
  std::uint64_t sent_ = 0;
  std::vector<std::vector<std::uint64_t>> delivered_before_;  // per recording delivery (ok ones)
  std::multimap<std::string, std::string> keys_;              // idempotency key -> body, recording
};

StateResult Checker::run(const Recipe& recipe, std::mutex& port_mutex) const {
  StateResult result;
  result.recipe = recipe;
  const std::int64_t t = model_.instant(recipe.cut);
  const std::int64_t anchor_ns = anchor(recipe.cut);
  const DiskState state = model_.build(recipe);

  test::TempDir dir;
  const fs::path data = dir / "data";
  fs::create_directories(data);
  state.materialise(data);
  std::unique_ptr<test::HttpUpstream> upstream;
  {
    std::lock_guard lock(port_mutex);  // free_tcp_port() is not thread-safe
    upstream = std::make_unique<test::HttpUpstream>();
  }
  test::write_file(dir / "tank.toml", recording_.config(data, upstream->url()));
  test::Process tank({test::tank_binary(), "run", "-c", (dir / "tank.toml").string()},
                     merged(recording_.options().env, {{"TANK_BOOT_ID", fresh_boot_id()}}));
  auto finding = [&](const std::string& kind, std::string text) {
    result.kinds.insert(kind);
    result.findings.push_back(kind + ": " + std::move(text));
  };
  if (auto running = wait_running(tank, data, 30s); !running) {
    finding("no-start", fmt::format("tank did not reach running (exit {})", tank.wait(0ms).value_or(-1)));
  } else {
    // Drained: tank_queue_records 0. A count that stops moving for kStall is a stuck queue.
    double records = -1;
    auto last_change = std::chrono::steady_clock::now();
    const bool drained = test::wait_until(
        [&] {
          auto m = test::http_get(running->metrics_address, "/metrics");
          if (!m || m->status != 200) return false;
          const double now = test::metric_value(m->body, "tank_queue_records").value_or(-1);
          if (now != records) last_change = std::chrono::steady_clock::now();
          records = now;
          return records == 0 || std::chrono::steady_clock::now() - last_change > kStall;
        },
        30s) && records == 0;
    if (!drained) {
      finding("not-drained", fmt::format("tank_queue_records stayed at {} for {} s", records, kStall.count()));
    }
    tank.signal(SIGTERM);
    const auto code = tank.wait(30s);
    if (code != 0) finding("exit", fmt::format("SIGTERM: exit {}", code ? std::to_string(*code) : "none within 30 s"));
  }
  result.log = tank.err();
  if (result.kinds.contains("no-start") || result.kinds.contains("not-drained") || result.kinds.contains("exit")) {
    result.findings.push_back("tank's log: " + tail(result.log, 800));
  }
  bool moved = result.log.find("moved it to") != std::string::npos;
  for (const auto& entry : fs::directory_iterator(data)) moved |= entry.path().filename().string().starts_with("queue.damaged-");
  if (moved) finding("moved-aside", "the queue was moved aside");

  // What reached an upstream: before the cut (the recording's), after the restart (this one's).
  std::vector<char> delivered(sent_, 0);
  const auto& before = recording_.deliveries();
  for (std::size_t i = 0; i < before.size(); ++i) {
    if (before[i].at_ns >= t) continue;
    for (auto id : delivered_before_[i]) delivered[id] = 1;
  }
  std::vector<std::uint32_t> after(sent_, 0);
  std::vector<std::string> foreign;
  std::size_t conflicts = 0;
  for (const auto& r : upstream->received()) {
    const auto [lo, hi] = keys_.equal_range(r.key);
    for (auto it = lo; it != hi; ++it) conflicts += it->second != r.body;
    if (r.answered != 200) continue;
    for (auto id : ids_of(r.body, sent_, foreign)) {
      ++after[id];
      delivered[id] = 1;
    }
  }
  if (!foreign.empty()) finding("foreign", "delivered lines that no generator sent, e.g. " + foreign.front());
  if (conflicts > 0) finding("key-conflict", fmt::format("{} batches came with a known idempotency key and another body", conflicts));
  std::size_t repeated = 0;
  std::uint64_t first_repeated = 0;
  for (std::uint64_t id = 0; id < sent_; ++id) {
    if (after[id] > 1 && repeated++ == 0) first_repeated = id;
  }
  if (repeated > 0) finding("duplicate", fmt::format("{} records delivered more than once after the restart, e.g. id {}", repeated, first_repeated));

  std::string missing;
  for (const auto& b : recording_.bodies()) {
    if (b.acked_ns == 0 || b.acked_ns >= anchor_ns) continue;
    for (std::uint64_t id = b.first_id; id < b.first_id + b.records; ++id) {
      ++result.required;
      if (delivered[id]) continue;
      if (result.lost++ < 3) missing += fmt::format(" {} (acknowledged {} ms before the cut)", id, (t - b.acked_ns) / 1'000'000);
    }
  }
  if (result.lost > 0) {
    finding("lost", fmt::format("{} of {} required records never delivered, e.g.{}", result.lost, result.required, missing));
    if (!state.files.contains(kDataFile)) {
      finding("lost-data.mdb-name", "the state has no queue/data.mdb: its name was never made durable (no fsync of queue/)");
    } else if (!moved) {
      finding("lost-silently", "tank kept the queue and reported nothing, yet records are missing");
    }
  }
  if (recording_.options().fsync != "always" && anchor_ns != INT64_MIN) {
    result.window_ns = t - anchor_ns;
    // fsync = "never" has no time bound: it flushes when the pinned pages would take room.
    if (recovery_point_ && recording_.options().fsync == "interval" && result.window_ns > window_bound_ns()) {
      finding("window", fmt::format("the recovery point in force was pinned {} ms before the cut (bound {} ms)",
                                    result.window_ns / 1'000'000, window_bound_ns() / 1'000'000));
    }
  }
  return result;
}

}  // namespace

std::string Summary::line() const {
  std::string kinds;
  for (const auto& [kind, n] : violations) kinds += fmt::format("{}{} {}", kinds.empty() ? "" : ", ", kind, n);
  std::string window = "-";
  if (max_window_ns >= 0) {
    window = recovery_point
                 ? fmt::format("{} ms (bound {} ms)", max_window_ns / 1'000'000, window_bound_ns / 1'000'000)
                 : fmt::format("{} ms since the last fdatasync of data.mdb (no recovery point written)", max_window_ns / 1'000'000);
  }
  return fmt::format("powerloss {}: {} states, {} failed ({:.0f} s); violations: {}; records required {}, lost {}; max loss window {}",
                     mode, states, failed_states, seconds, kinds.empty() ? "none" : kinds, required, lost, window);
}

Summary explore(const Recording& recording, const ExploreOptions& options) {
  const auto began = std::chrono::steady_clock::now();
  const Checker checker(recording, options);
  const auto& ops = recording.trace().ops();

  // Cuts: any recorded operation but the last second's, data.mdb's writes and syncs favoured.
  std::vector<std::size_t> cuts;
  std::vector<double> weights;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].end_ns > recording.killed_ns() - kTailMarginNs) break;
    const bool data_io = ops[i].path == kDataFile && (ops[i].kind == Op::Kind::write || ops[i].kind == Op::Kind::sync);
    cuts.push_back(i);
    weights.push_back(data_io ? 4 : 1);
  }
  if (cuts.empty()) throw std::runtime_error("the recording is too short: no operation returned a second before the kill");
  std::mt19937_64 random(options.seed);
  std::discrete_distribution<std::size_t> pick(weights.begin(), weights.end());
  std::vector<Recipe> recipes;
  for (std::size_t s = 0; s < options.states; ++s) {
    Recipe r;
    r.cut = cuts[pick(random)];
    if (random() % 3 == 0) {
      r.model = Recipe::Model::prefix;
      r.prefix = random() % (checker.model().pending(r.cut) + 1);
    } else {
      r.model = Recipe::Model::pages;
      r.seed = random();
    }
    recipes.push_back(r);
  }

  std::vector<StateResult> results(recipes.size());
  std::atomic<std::size_t> next{0}, done{0}, failed{0};
  std::mutex port_mutex, out_mutex;
  auto worker = [&] {
    for (std::size_t i; (i = next++) < recipes.size();) {
      StateResult& r = results[i];
      try {
        r = checker.run(recipes[i], port_mutex);
      } catch (const std::exception& e) {
        r.recipe = recipes[i];
        r.kinds.insert("harness");
        r.findings.push_back(std::string("harness: ") + e.what());
      }
      if (!r.kinds.empty()) ++failed;
      if (const auto d = ++done; options.progress && d % 50 == 0) {
        std::lock_guard lock(out_mutex);
        std::cout << fmt::format("  powerloss {}: {}/{} states, {} failed", options.label.empty() ? recording.options().fsync : options.label,
                                 d, recipes.size(), failed.load())
                  << std::endl;
      }
    }
  };
  std::vector<std::thread> workers;
  for (unsigned w = 0; w < std::max(1u, options.parallel); ++w) workers.emplace_back(worker);
  for (auto& w : workers) w.join();

  Summary s;
  s.mode = options.label.empty() ? recording.options().fsync : options.label;
  s.states = results.size();
  s.recovery_point = checker.recovery_point();
  s.data_name_synced = checker.data_name_synced();
  s.window_bound_ns = checker.window_bound_ns();
  // The states shown and kept: the first of each kind of violation, then the next failing ones.
  std::vector<std::size_t> shown;
  std::set<std::string> kinds_shown;
  for (std::size_t i = 0; i < results.size(); ++i) {
    const StateResult& r = results[i];
    s.required += r.required;
    s.lost += r.lost;
    s.max_window_ns = std::max(s.max_window_ns, r.window_ns);
    if (r.kinds.empty()) continue;
    ++s.failed_states;
    s.failures.push_back(r.kinds);
    bool fresh = false;
    for (const auto& k : r.kinds) {
      ++s.violations[k];
      fresh |= kinds_shown.insert(k).second;
    }
    if (fresh) shown.push_back(i);
  }
  for (std::size_t i = 0; i < results.size() && shown.size() < options.keep_max; ++i) {
    if (!results[i].kinds.empty() && std::find(shown.begin(), shown.end(), i) == shown.end()) shown.push_back(i);
  }
  if (!shown.empty() && !options.keep_dir.empty()) {
    // The recording too, so that a recipe can be built again (Trace::load, CrashModel::build).
    fs::create_directories(options.keep_dir);
    fs::copy_file(recording.log_path(), options.keep_dir / fmt::format("{}-seed{}-ops.log", s.mode, options.seed),
                  fs::copy_options::overwrite_existing);
  }
  for (std::size_t i : shown) {
    StateResult& r = results[i];
    if (!options.keep_dir.empty()) {
      // Built again from its recipe: the state as the power cut left it, before tank ran on it.
      const fs::path where = options.keep_dir / fmt::format("{}-seed{}-state{}", s.mode, options.seed, i);
      fs::remove_all(where);
      fs::create_directories(where / "data");
      checker.model().build(r.recipe).materialise(where / "data");
      // Start it again with: TANK_BOOT_ID=$(cat /proc/sys/kernel/random/uuid) tank run -c tank.toml
      test::write_file(where / "tank.toml", recording.config(where / "data", "http://127.0.0.1:9/ingest"));
      std::ofstream(where / "recipe.txt") << checker.model().describe(r.recipe) << "\n\n"
                                          << fmt::format("{}\n", fmt::join(r.findings, "\n")) << "\ntank's log:\n" << r.log;
      r.findings.push_back("kept in " + where.string());
    }
    s.examples.push_back(fmt::format("seed {} state {}: {}\n    {}", options.seed, i, checker.model().describe(r.recipe),
                                     fmt::join(r.findings, "\n    ")));
  }
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  return s;
}

}  // namespace tank::powerloss
