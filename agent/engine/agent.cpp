#include "engine/agent.hpp"

#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "common/build_info.hpp"
#include "common/fs.hpp"
#include "common/liveness.hpp"
#include "common/log.hpp"
#include "common/systemd_notify.hpp"
#include "common/units.hpp"
#include "engine/agent_config.hpp"
#include "engine/agent_identity.hpp"
#include <boost/json.hpp>
#include <prometheus/counter.h>

#include "engine/control.hpp"
#include "engine/dead_letter_ops.hpp"
#include "engine/pipeline.hpp"
#include "engine/run_state.hpp"
#include "input/handover.hpp"
#include "output/delivery.hpp"
#include "plugin/output.hpp"
#include "net/http_server.hpp"
#include "metrics/registry.hpp"
#include "queue/queue.hpp"
#include "queue/queue_config.hpp"
#include "queue/salvage.hpp"

namespace tank::engine {
namespace {

constexpr const char* kComponent = "agent";

net::HttpResponse serve(const metrics::Registry& registry, const std::atomic<Agent::Phase>& phase,
                        const ClockSync& clock, std::string_view method, std::string_view target) {
  if (method != "GET" && method != "HEAD") {
    return {405, "text/plain; charset=utf-8", "only GET is served here\n", {{"Allow", "GET, HEAD"}}};
  }
  if (target == "/metrics") {
    return {200, "text/plain; version=0.0.4; charset=utf-8", registry.serialize(), {}};
  }
  if (target == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n", {}};
  if (target == "/readyz") {
    switch (phase.load()) {
      case Agent::Phase::running:
        // Ingest works with an untrusted clock (records are marked): ready, and the detail says so.
        if (!clock.synchronized()) {
          return {200, "text/plain; charset=utf-8", fmt::format("ready\nclock: not synchronized ({})\n", clock.reason()),
                  {}};
        }
        return {200, "text/plain; charset=utf-8", "ready\n", {}};
      case Agent::Phase::starting: return {503, "text/plain; charset=utf-8", "starting\n", {}};
      case Agent::Phase::reloading: return {503, "text/plain; charset=utf-8", "reloading\n", {}};
      case Agent::Phase::stopping: return {503, "text/plain; charset=utf-8", "stopping\n", {}};
    }
  }
  return {404, "text/plain; charset=utf-8", "not found: tank serves /metrics, /healthz and /readyz\n", {}};
}

std::string describe_stalls(const std::vector<liveness::Stall>& stalls) {
  std::string out;
  for (const auto& s : stalls) {
    if (!out.empty()) out += ", ";
    out += fmt::format("\"{}\" ({} past its deadline)", s.name,
                       units::format_duration(std::chrono::duration_cast<std::chrono::milliseconds>(s.overdue)));
  }
  return out;
}

// Whether `option` has the same value (or is absent) in both.
bool same_value(const config::SectionValues& a, const config::SectionValues& b, std::string_view option) {
  const config::Value* x = a.find(option);
  const config::Value* y = b.find(option);
  if (x == nullptr || y == nullptr) return x == y;
  return x->data == y->data;
}

bool same_values(const config::SectionValues& a, const config::SectionValues& b) {
  return std::all_of(a.section().options.begin(), a.section().options.end(),
                     [&](const config::Option& o) { return same_value(a, b, o.name); });
}

// The settings a reload cannot change (the queue, the data directory, the agent's id that is in
// every idempotency key, the metrics listener): the names of those that differ.
std::vector<std::string> restart_only_changes(const config::Document& running, const config::Document& next) {
  std::vector<std::string> out;
  for (const char* section : {"queue", "dead_letter", "metrics"}) {
    if (!same_values(running.section(section), next.section(section))) out.push_back(fmt::format("[{}]", section));
  }
  for (const char* option : {"id", "data_dir"}) {
    if (!same_value(running.section("agent"), next.section("agent"), option)) {
      out.push_back(fmt::format("agent.{}", option));
    }
  }
  return out;
}

// The configuration in force after a reload: `next`, with the values a reload cannot apply (the
// queue, the dead-letter store, the metrics listener, the agent's id and data directory) kept from
// `running`, so that the next reload still names them as changed.
config::Document in_force_after_reload(const config::Document& running, config::Document next) {
  for (const char* section : {"queue", "dead_letter", "metrics"}) {
    next.sections.insert_or_assign(std::string(section), running.section(section));
  }
  config::SectionValues agent = running.section("agent");
  for (const char* option : {"log_level", "log_format", "stall_timeout", "clock"}) {
    if (const config::Value* v = next.section("agent").find(option)) agent.set(option, *v);
  }
  next.sections.insert_or_assign(std::string("agent"), std::move(agent));
  return next;
}

std::string monotonic_usec() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::to_string(static_cast<long long>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000);
}

}  // namespace

Agent::Watchdog Agent::Watchdog::from_environment() {
  Watchdog w;
  const char* usec = std::getenv("WATCHDOG_USEC");
  if (usec == nullptr || *usec == '\0') return w;
  if (const char* pid = std::getenv("WATCHDOG_PID"); pid != nullptr && *pid != '\0') {
    if (std::strtoll(pid, nullptr, 10) != ::getpid()) return w;
  }
  char* end = nullptr;
  const long long n = std::strtoll(usec, &end, 10);
  if (end == usec || *end != '\0' || n <= 0) {
    log::warn(kComponent, "WATCHDOG_USEC=\"{}\" is not a number of microseconds; the watchdog is not pinged", usec);
    return w;
  }
  w.interval = std::chrono::microseconds(n);
  return w;
}

Agent::Agent(const config::Document& document, const plugin::Registry& plugins, const Clock& clock)
    : plugins_(plugins),
      clock_(clock),
      running_(document),
      config_path_(document.source == kDefaultConfigName ? std::filesystem::path()
                                                         : std::filesystem::path(document.source)),
      settings_(agent_settings(document)),
      metrics_settings_(metrics_settings(document)),
      state_path_(run_state_path(settings_.data_dir)),
      stuck_(kComponent, log::Level::error) {}

Agent::~Agent() = default;

int Agent::run() {
  // Signals are handled by this thread alone (sigtimedwait below); block them before any thread
  // starts so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  if (!start()) return 1;

  const auto tick = watchdog_.enabled()
                        ? std::min<std::chrono::nanoseconds>(std::chrono::seconds(1), watchdog_.ping_every())
                        : std::chrono::nanoseconds(std::chrono::seconds(1));
  int exit_code = 0;
  for (;;) {
    const timespec wait{static_cast<time_t>(tick.count() / 1000000000), static_cast<long>(tick.count() % 1000000000)};
    int sig = sigtimedwait(&signals, nullptr, &wait);
    clock_sync_->check();
    check_liveness();
    if (sig < 0) {
      if (queue_->damaged()) {
        // LMDB reported damage: stop, and make the next start check every page (and move the
        // queue aside if it is damaged) instead of running on it.
        log::error(kComponent, "stopping: the queue is damaged; the next start checks it in full");
        state_.corruption_detected = true;
        exit_code = 1;
        break;
      }
      continue;
    }
    if (sig == SIGHUP) {
      if (!reload()) {
        exit_code = 1;
        break;
      }
      continue;
    }
    log::info(kComponent, "{} received: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    break;
  }
  return stop(exit_code);
}

bool Agent::start() {
  log::configure(settings_.log);
  liveness::set_stall_timeout(settings_.stall_timeout);
  clock_sync_ = std::make_unique<ClockSync>(settings_.clock_trust, clock_, clock_probe_from_environment());
  if (!claim_data_dir()) return false;
  const std::optional<VerificationChoice> verification = record_start();
  if (!verification) return false;
  register_agent_metrics();
  if (!open_queue(*verification)) return false;
  if (!start_metrics_endpoint()) return false;
  if (!start_first_pipeline()) return false;
  if (!start_control_socket()) return false;
  announce_running();
  return true;
}

// Creates and checks data_dir, takes its lock, and chooses the agent's id.
bool Agent::claim_data_dir() {
  if (std::string error = fs::prepare_writable_directory(settings_.data_dir, "data_dir"); !error.empty()) {
    log::error(kComponent, "{} (set agent.data_dir to a writable directory)", error);
    return false;
  }
  std::string lock_error;
  lock_ = fs::ExclusiveLock::acquire(settings_.data_dir / "tank.lock", &lock_error);
  if (!lock_) {
    log::error(kComponent, "{}", lock_error);
    return false;
  }
  // The id is in every idempotency key: kept in the data directory so that a renamed host keeps it.
  const AgentIdentity identity = resolve_agent_identity(settings_.data_dir, settings_.configured_id);
  for (const std::string& warning : identity.warnings) log::warn(kComponent, "{}", warning);
  for (const std::string& note : identity.notes) log::info(kComponent, "{}", note);
  agent_id_ = identity.id;
  return true;
}

// Reads how the previous run ended (which chooses how thoroughly the queue is checked) and writes
// run.json "starting".
std::optional<VerificationChoice> Agent::record_start() {
  std::string state_error;
  std::optional<RunState> previous = read_run_state(state_path_, &state_error);
  if (!state_error.empty()) log::warn(kComponent, "ignoring the run state: {}", state_error);
  state_.pid = ::getpid();
  state_.boot_id = fs::boot_id();
  state_.version = build::version;
  state_.agent_id = agent_id_;
  state_.started_ns = clock_.wall_ns();
  // Until this run stops cleanly it counts as one more run that did not.
  state_.unclean_exits = unclean_exits(previous);
  state_.corruption_detected = previous && previous->corruption_detected;
  VerificationChoice verification = choose_verification(previous, state_.boot_id);
  if (std::string error = write_run_state(state_path_, state_); !error.empty()) {
    log::error(kComponent, "{}", error);
    return std::nullopt;
  }
  return verification;
}

void Agent::register_agent_metrics() {
  process_metrics_ = metrics::make_process_collectable();
  build_metrics_ = metrics::make_build_info_collectable();
  registry_.add_collectable(process_metrics_);
  registry_.add_collectable(build_metrics_);
  // Operations: reloads by outcome, and the threads the watchdog finds stuck now.
  auto& reloads = prometheus::BuildCounter()
                      .Name("tank_reloads_total")
                      .Help("Configuration reloads (SIGHUP) by result: applied, refused (invalid or empty: the "
                            "running configuration goes on), undone (could not start: the previous one runs again)")
                      .Register(registry_.core());
  reloads_applied_ = &reloads.Add({{"result", "applied"}});
  reloads_refused_ = &reloads.Add({{"result", "refused"}});
  reloads_undone_ = &reloads.Add({{"result", "undone"}});
  stuck_metrics_ = std::make_shared<metrics::FunctionCollectable>([] {
    return std::vector<prometheus::MetricFamily>{metrics::gauge_family(
        "tank_threads_stuck",
        "Threads that have not come round their loop within agent.stall_timeout (the systemd watchdog is not "
        "pinged while this is above 0)",
        static_cast<double>(liveness::stalled().size()))};
  });
  registry_.add_collectable(stuck_metrics_);
  clock_metrics_ = std::make_shared<metrics::FunctionCollectable>([this] {
    return std::vector<prometheus::MetricFamily>{metrics::gauge_family(
        "tank_clock_synchronized",
        "1 while the wall clock is trusted (agent.clock), 0 while it is not: records committed meanwhile carry the "
        "attribute clock_unsynced and event-time stages hold them",
        clock_sync_->synchronized() ? 1.0 : 0.0)};
  });
  registry_.add_collectable(clock_metrics_);
}

bool Agent::open_queue(const VerificationChoice& verification) {
  queue::Options queue_options = queue::options_from(running_, settings_.data_dir / "queue");
  queue_options.verification = verification.depth;
  queue_options.consumers = Pipeline::consumers(running_, plugins_);
  // A full check of a large queue on slow storage can outlast systemd's start timeout.
  queue_options.on_verification_wait = [] { systemd::notify("EXTEND_TIMEOUT_USEC=30000000"); };
  if (verification.depth == queue::Verification::full) {
    log::warn(kComponent, "checking every page of the queue: {}", verification.reason);
  }
  try {
    queue_ = queue::Queue::open(queue_options, clock_, &registry_);
  } catch (const queue::OpenError& e) {
    log::error(kComponent, "{}", e.what());
    return false;
  }
  state_.corruption_detected = false;
  return true;
}

bool Agent::start_metrics_endpoint() {
  if (!metrics_settings_.enabled) return true;
  try {
    server_ = std::make_unique<net::HttpServer>(
        metrics_settings_.listen,
        [this](std::string_view method, std::string_view target) {
          return serve(registry_, phase_, *clock_sync_, method, target);
        });
    server_->start();
    state_.metrics_address = server_->local_address();
  } catch (const std::exception& e) {
    log::error(kComponent, "{} (set [metrics] listen)", e.what());
    return false;
  }
  return true;
}

// Its inputs start paused and are let go once everything started: a reload that fails half-way
// has not committed records of inputs it then takes back.
std::unique_ptr<Pipeline> Agent::start_pipeline(const config::Document& doc) {
  auto p = std::make_unique<Pipeline>(doc, plugins_, *pipeline_context_);
  // During a reload: the sockets the old inputs kept that no input of this pipeline wants are
  // closed before anything binds (input/handover.hpp).
  input::handover::close_unclaimed();
  p->set_paused(true);
  try {
    p->start();
  } catch (...) {
    p.reset();
    throw;
  }
  queue_->set_pressure_listener([raw = p.get()](bool paused) { raw->set_paused(paused); });
  p->set_paused(queue_->blocked());
  return p;
}

bool Agent::start_first_pipeline() {
  pipeline_context_.emplace(
      PipelineContext{*queue_, registry_, clock_, agent_id_, settings_.data_dir, clock_sync_.get()});
  try {
    pipeline_ = start_pipeline(running_);
  } catch (const plugin::StartError& e) {
    log::error(kComponent, "{}", e.what());
    abandon_start();
    return false;
  }
  return true;
}

// The control socket: `tank dlq replay|purge` ask the running agent, which alone writes its queue.
bool Agent::start_control_socket() {
  try {
    control_ = std::make_unique<ControlServer>(
        settings_.data_dir / kControlSocketName,
        [this](const boost::json::object& request) { return handle_control_request(request); });
    control_->start();
  } catch (const std::exception& e) {
    log::error(kComponent, "{}", e.what());
    abandon_start();
    return false;
  }
  return true;
}

// The pipeline or the control socket could not start: what started is stopped again (the pipeline,
// when it runs, then the metrics endpoint), the queue is closed and run.json says "stopped", so
// that the next start knows the queue was closed cleanly.
void Agent::abandon_start() {
  if (pipeline_) {
    pipeline_->stop();
    queue_->set_pressure_listener(nullptr);
  }
  if (server_) server_->stop();
  queue_->close();
  state_.state = "stopped";
  write_run_state(state_path_, state_);
}

boost::json::object Agent::handle_control_request(const boost::json::object& request) {
  const auto* command = request.if_contains("command");
  const std::string name = command != nullptr && command->is_string() ? std::string(command->as_string()) : "";
  if (name == "dlq.replay") {
    // The routes of the pipeline running now, copied: a reload may replace it meanwhile.
    std::map<std::string, std::shared_ptr<const process::Route>, std::less<>> routes;
    {
      std::lock_guard hold(pipeline_mutex_);
      if (!pipeline_) return boost::json::object{{"ok", false}, {"error", "tank is stopping"}};
      routes = pipeline_->routes();
    }
    ReplayOutcome outcome = replay_dead_letters(
        *queue_,
        [&routes](std::string_view input) -> std::shared_ptr<const process::Route> {
          auto it = routes.find(input);
          return it == routes.end() ? nullptr : it->second;
        },
        selection_from_json(request), clock_);
    log::info(kComponent, "dead-letter replay: {} replayed, {} failed again, {} kept{}", outcome.replayed,
              outcome.failed_again, outcome.kept, outcome.error.empty() ? "" : "; stopped: " + outcome.error);
    return to_json(outcome);
  }
  if (name == "queue.salvage") {
    const auto* dir = request.if_contains("dir");
    if (dir == nullptr || !dir->is_string()) return boost::json::object{{"ok", false}, {"error", "no \"dir\""}};
    queue::SalvageOptions options;
    const auto* dry = request.if_contains("dry_run");
    options.dry_run = dry != nullptr && dry->is_bool() && dry->as_bool();
    options.wait_when_full = std::chrono::minutes(5);  // the outputs make room meanwhile
    const std::filesystem::path damaged(std::string(dir->as_string()));
    queue::SalvageReport report = queue::salvage(damaged, *queue_, options);
    log::info(kComponent, "{}{}", options.dry_run ? "dry run: " : "", queue::describe(report, damaged));
    return queue::to_json(report);
  }
  if (name == "dlq.purge") {
    PurgeOutcome outcome = purge_dead_letters(*queue_, selection_from_json(request));
    log::info(kComponent, "dead-letter purge: {} entries deleted{}", outcome.purged,
              outcome.error.empty() ? "" : "; stopped: " + outcome.error);
    return to_json(outcome);
  }
  return boost::json::object{{"ok", false}, {"error", fmt::format("unknown command \"{}\"", name)}};
}

// run.json "running", READY=1, /readyz 200; then the watchdog's first check.
void Agent::announce_running() {
  phase_ = Phase::running;
  state_.state = "running";
  state_.inputs = pipeline_->listening();
  if (std::string error = write_run_state(state_path_, state_); !error.empty()) log::warn(kComponent, "{}", error);
  systemd::notify("READY=1\nSTATUS=running");
  log::info(kComponent, "tank {} running: agent id \"{}\", data_dir {}, {}", build::version, agent_id_,
            settings_.data_dir.string(),
            server_ ? fmt::format("metrics on http://{}/metrics", state_.metrics_address) : "metrics endpoint off");

  watchdog_ = Watchdog::from_environment();
  check_liveness();
}

void Agent::check_liveness() {
  const auto now = std::chrono::steady_clock::now();
  const std::vector<liveness::Stall> stalls = liveness::stalled(now);
  if (!stalls.empty()) {
    stuck_.occur(fmt::format("stuck: {} has not come round its loop within agent.stall_timeout ({}){}",
                             describe_stalls(stalls),
                             units::format_duration(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 liveness::stall_timeout())),
                             watchdog_.enabled() ? "; the systemd watchdog is no longer pinged, so systemd restarts tank"
                                                 : ""));
    return;
  }
  stuck_.end("every thread comes round its loop again");
  if (watchdog_.enabled() && now >= watchdog_.next) {
    systemd::notify("WATCHDOG=1");
    watchdog_.next = now + watchdog_.ping_every();
  }
}

std::string Agent::configuration_name() const {
  return config_path_.empty() ? std::string(kDefaultConfigName) : config_path_.string();
}

bool Agent::reload() {
  phase_ = Phase::reloading;
  systemd::notify("RELOADING=1\nSTATUS=reloading the configuration\nMONOTONIC_USEC=" + monotonic_usec());
  const std::string name = configuration_name();
  log::info(kComponent, "SIGHUP received: reading {} again", name);
  std::optional<config::Document> next = configuration_to_reload(name);
  if (!next) {
    back_to_running();
    return true;
  }
  const PipelineSwap swap = replace_pipeline(*next);
  if (swap == PipelineSwap::none_started) return false;
  const bool applied = swap == PipelineSwap::applied;
  if (applied) {
    running_ = std::move(*next);
    const AgentSettings now = agent_settings(running_);
    log::configure(now.log);
    liveness::set_stall_timeout(now.stall_timeout);
    clock_sync_->set_trust(now.clock_trust);
    clock_sync_->check();
  }
  reconcile_consumers(running_);
  state_.inputs = pipeline_->listening();
  if (std::string error = write_run_state(state_path_, state_); !error.empty()) log::warn(kComponent, "{}", error);
  if (applied) log::info(kComponent, "configuration reloaded from {}", name);
  (applied ? *reloads_applied_ : *reloads_undone_).Increment();
  back_to_running();
  return true;
}

// Reads the configuration file again. nullopt (logged, counted as refused) when it has errors or
// no inputs and no outputs; else the configuration to put in force, with the values a reload
// cannot apply named and kept from the running one.
std::optional<config::Document> Agent::configuration_to_reload(const std::string& name) {
  config::LoadResult result = load_configuration(config_path_, build_schema(plugins_));
  for (const auto& d : result.diagnostics.sorted()) {
    if (d.severity == config::Diagnostic::Severity::error) {
      log::error(kComponent, "{}", d.to_string());
    } else {
      log::warn(kComponent, "{}", d.to_string());
    }
  }
  if (!result.document) {
    const std::size_t n = result.diagnostics.error_count();
    log::error(kComponent, "the new configuration has {} error{}; it was not applied and the running one goes on "
                           "(fix {} and reload again)",
               n, n == 1 ? "" : "s", name);
    reloads_refused_->Increment();
    return std::nullopt;
  }
  std::size_t plugin_instances = 0;
  for (const auto& [path, instances] : result.document->plugins) {
    if (path.starts_with("inputs.") || path.starts_with("outputs.")) plugin_instances += instances.size();
  }
  if (plugin_instances == 0) {
    // An empty or truncated file (an editor saving in place, a failed copy) would otherwise stop
    // every input and make the queue forget every output's position.
    log::error(kComponent, "the new configuration has no inputs and no outputs (is {} empty or half written?); it "
                           "was not applied and the running one goes on",
               name);
    reloads_refused_->Increment();
    return std::nullopt;
  }
  for (const std::string& what : restart_only_changes(running_, *result.document)) {
    log::warn(kComponent, "{} changed: a reload cannot apply it (the running value is kept); restart tank to apply "
                          "it", what);
  }
  return in_force_after_reload(running_, std::move(*result.document));
}

// Stops the running pipeline and starts that of `next`; when it cannot start, that of the running
// configuration again.
Agent::PipelineSwap Agent::replace_pipeline(const config::Document& next) {
  PipelineSwap swap = PipelineSwap::applied;
  {
    std::lock_guard hold(pipeline_mutex_);
    // Socket inputs hand their sockets and open connections over to the new pipeline's inputs on
    // the same addresses (input/handover.hpp); what is not taken is closed with the window.
    input::handover::Window handover_window;
    // Inputs stop first; what they read is committed or left with its source. Sends in flight are
    // abandoned: their batches stay open in the queue and go again, with the same keys.
    queue_->set_pressure_listener(nullptr);
    pipeline_.reset();
    check_liveness();
    try {
      pipeline_ = start_pipeline(next);
    } catch (const std::exception& e) {
      log::error(kComponent, "the new configuration cannot start: {}; going back to the running one", e.what());
      swap = PipelineSwap::undone;
      check_liveness();
      try {
        pipeline_ = start_pipeline(running_);
      } catch (const std::exception& again) {
        log::error(kComponent, "the running configuration cannot start again either: {}; stopping", again.what());
        swap = PipelineSwap::none_started;
      }
    }
  }
  check_liveness();
  return swap;
}

// The queue's consumers are those of `doc`: a new one starts after the newest record, one that
// is gone is forgotten with its open batches (it would hold every record for ever).
void Agent::reconcile_consumers(const config::Document& doc) {
  std::set<std::string> wanted;
  for (auto& c : Pipeline::consumers(doc, plugins_)) wanted.insert(std::move(c));
  for (const std::string& c : wanted) queue_->add_consumer(c);
  for (const std::string& c : queue_->consumer_names()) {
    if (wanted.contains(c)) continue;
    std::vector<std::string> own_state;
    const std::string prefix = plugin::output_consumer_name("");
    if (c.starts_with(prefix)) own_state.push_back(output::open_batch_key(c.substr(prefix.size())));
    if (!queue_->remove_consumer(c, std::move(own_state))) {
      log::error(kComponent, "could not forget the position of \"{}\" (the queue refused the commit); the next "
                             "reload or start tries again",
                 c);
    }
  }
}

void Agent::back_to_running() {
  phase_ = Phase::running;
  systemd::notify("READY=1\nSTATUS=running");
}

int Agent::stop(int exit_code) {
  phase_ = Phase::stopping;
  systemd::notify("STOPPING=1\nSTATUS=stopping");
  state_.state = "stopping";
  write_run_state(state_path_, state_);
  control_->stop();
  // Inputs first: what they read is committed (or left with its source) before the queue closes.
  {
    std::lock_guard hold(pipeline_mutex_);
    if (pipeline_) pipeline_->stop();
  }
  queue_->set_pressure_listener(nullptr);
  try {
    queue_->close();
  } catch (const std::exception& e) {
    log::error(kComponent, "closing the queue failed: {}", e.what());
    return 1;
  }
  if (server_) server_->stop();
  state_.state = exit_code == 0 ? "stopped" : "failed";
  state_.unclean_exits = exit_code == 0 ? 0 : state_.unclean_exits;
  if (std::string error = write_run_state(state_path_, state_); !error.empty()) log::warn(kComponent, "{}", error);
  log::info(kComponent, "stopped");
  return exit_code;
}

int run_agent(const config::Document& document, const plugin::Registry& plugins, const Clock& clock) {
  Agent agent(document, plugins, clock);
  return agent.run();
}

}  // namespace tank::engine
