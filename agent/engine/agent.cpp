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

enum class Phase { starting, running, reloading, stopping };

net::HttpResponse serve(const metrics::Registry& registry, const std::atomic<Phase>& phase,
                        std::string_view method, std::string_view target) {
  if (method != "GET" && method != "HEAD") {
    return {405, "text/plain; charset=utf-8", "only GET is served here\n", {{"Allow", "GET, HEAD"}}};
  }
  if (target == "/metrics") {
    return {200, "text/plain; version=0.0.4; charset=utf-8", registry.serialize(), {}};
  }
  if (target == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n", {}};
  if (target == "/readyz") {
    switch (phase.load()) {
      case Phase::running: return {200, "text/plain; charset=utf-8", "ready\n", {}};
      case Phase::starting: return {503, "text/plain; charset=utf-8", "starting\n", {}};
      case Phase::reloading: return {503, "text/plain; charset=utf-8", "reloading\n", {}};
      case Phase::stopping: return {503, "text/plain; charset=utf-8", "stopping\n", {}};
    }
  }
  return {404, "text/plain; charset=utf-8", "not found: tank serves /metrics, /healthz and /readyz\n", {}};
}

// systemd's watchdog (sd_watchdog_enabled(3)): WATCHDOG_USEC, for this process when WATCHDOG_PID
// is unset or names it. Pinged at half the interval, and only while no thread is stuck.
struct Watchdog {
  std::chrono::microseconds interval{0};  // 0: no watchdog
  std::chrono::steady_clock::time_point next{};

  static Watchdog from_environment() {
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
  bool enabled() const { return interval.count() > 0; }
  std::chrono::nanoseconds ping_every() const { return interval / 2; }
};

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
  for (const char* option : {"log_level", "log_format", "stall_timeout"}) {
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

int run_agent(const config::Document& document, const plugin::Registry& plugins, const Clock& clock) {
  const AgentSettings agent = agent_settings(document);
  const MetricsSettings metrics_cfg = metrics_settings(document);
  log::configure(agent.log);
  liveness::set_stall_timeout(agent.stall_timeout);

  // Signals are handled by this thread alone (sigwait below); block them before any thread
  // starts so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  if (std::string error = fs::prepare_writable_directory(agent.data_dir, "data_dir"); !error.empty()) {
    log::error(kComponent, "{} (set agent.data_dir to a writable directory)", error);
    return 1;
  }
  std::string lock_error;
  auto lock = fs::ExclusiveLock::acquire(agent.data_dir / "tank.lock", &lock_error);
  if (!lock) {
    log::error(kComponent, "{}", lock_error);
    return 1;
  }
  // The id is in every idempotency key: kept in the data directory so that a renamed host keeps it.
  const AgentIdentity identity = resolve_agent_identity(agent.data_dir, agent.configured_id);
  for (const std::string& warning : identity.warnings) log::warn(kComponent, "{}", warning);
  for (const std::string& note : identity.notes) log::info(kComponent, "{}", note);
  const std::string& agent_id = identity.id;

  const std::filesystem::path state_path = run_state_path(agent.data_dir);
  std::string state_error;
  std::optional<RunState> previous = read_run_state(state_path, &state_error);
  if (!state_error.empty()) log::warn(kComponent, "ignoring the run state: {}", state_error);
  RunState state;
  state.pid = ::getpid();
  state.boot_id = fs::boot_id();
  state.version = build::version;
  state.agent_id = agent_id;
  state.started_ns = clock.wall_ns();
  // Until this run stops cleanly it counts as one more run that did not.
  state.unclean_exits = unclean_exits(previous);
  state.corruption_detected = previous && previous->corruption_detected;
  VerificationChoice verification = choose_verification(previous, state.boot_id);
  if (std::string error = write_run_state(state_path, state); !error.empty()) {
    log::error(kComponent, "{}", error);
    return 1;
  }

  metrics::Registry registry;
  auto process_metrics = metrics::make_process_collectable();
  auto build_metrics = metrics::make_build_info_collectable();
  registry.add_collectable(process_metrics);
  registry.add_collectable(build_metrics);
  // Operations: reloads by outcome, and the threads the watchdog finds stuck now.
  auto& reloads = prometheus::BuildCounter()
                      .Name("tank_reloads_total")
                      .Help("Configuration reloads (SIGHUP) by result: applied, refused (invalid or empty: the "
                            "running configuration goes on), undone (could not start: the previous one runs again)")
                      .Register(registry.core());
  prometheus::Counter& reloads_applied = reloads.Add({{"result", "applied"}});
  prometheus::Counter& reloads_refused = reloads.Add({{"result", "refused"}});
  prometheus::Counter& reloads_undone = reloads.Add({{"result", "undone"}});
  auto stuck_metrics = std::make_shared<metrics::FunctionCollectable>([] {
    return std::vector<prometheus::MetricFamily>{metrics::gauge_family(
        "tank_threads_stuck",
        "Threads that have not come round their loop within agent.stall_timeout (the systemd watchdog is not "
        "pinged while this is above 0)",
        static_cast<double>(liveness::stalled().size()))};
  });
  registry.add_collectable(stuck_metrics);

  queue::Options queue_options = queue::options_from(document, agent.data_dir / "queue");
  queue_options.verification = verification.depth;
  queue_options.consumers = Pipeline::consumers(document, plugins);
  // A full check of a large queue on slow storage can outlast systemd's start timeout.
  queue_options.on_verification_wait = [] { systemd::notify("EXTEND_TIMEOUT_USEC=30000000"); };
  if (verification.depth == queue::Verification::full) {
    log::warn(kComponent, "checking every page of the queue: {}", verification.reason);
  }
  std::unique_ptr<queue::Queue> queue;
  try {
    queue = queue::Queue::open(queue_options, clock, &registry);
  } catch (const queue::OpenError& e) {
    log::error(kComponent, "{}", e.what());
    return 1;
  }
  state.corruption_detected = false;

  std::atomic<Phase> phase{Phase::starting};
  std::unique_ptr<net::HttpServer> server;
  if (metrics_cfg.enabled) {
    try {
      server = std::make_unique<net::HttpServer>(
          metrics_cfg.listen,
          [&registry, &phase](std::string_view method, std::string_view target) {
            return serve(registry, phase, method, target);
          });
      server->start();
      state.metrics_address = server->local_address();
    } catch (const std::exception& e) {
      log::error(kComponent, "{} (set [metrics] listen)", e.what());
      return 1;
    }
  }

  PipelineContext pipeline_context{*queue, registry, clock, agent_id, agent.data_dir};
  // The pipeline is replaced by a reload; the control socket's thread reads it meanwhile.
  std::mutex pipeline_mutex;
  std::unique_ptr<Pipeline> pipeline;
  // Builds and starts the pipeline of `doc`, relaying the queue's pressure to it. Throws
  // plugin::StartError (nothing of it left running) when a plugin refuses to start.
  // Its inputs start paused and are let go once everything started: a reload that fails half-way
  // has not committed records of inputs it then takes back.
  auto start_pipeline = [&](const config::Document& doc) {
    auto p = std::make_unique<Pipeline>(doc, plugins, pipeline_context);
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
    queue->set_pressure_listener([raw = p.get()](bool paused) { raw->set_paused(paused); });
    p->set_paused(queue->blocked());
    return p;
  };
  try {
    pipeline = start_pipeline(document);
  } catch (const plugin::StartError& e) {
    log::error(kComponent, "{}", e.what());
    pipeline.reset();
    if (server) server->stop();
    queue->close();
    state.state = "stopped";
    write_run_state(state_path, state);
    return 1;
  }

  // The control socket: `tank dlq replay|purge` ask the running agent, which alone writes its queue.
  std::unique_ptr<ControlServer> control;
  try {
    control = std::make_unique<ControlServer>(
        agent.data_dir / kControlSocketName, [&](const boost::json::object& request) -> boost::json::object {
          const auto* command = request.if_contains("command");
          const std::string name = command != nullptr && command->is_string() ? std::string(command->as_string()) : "";
          if (name == "dlq.replay") {
            // The routes of the pipeline running now, copied: a reload may replace it meanwhile.
            std::map<std::string, std::shared_ptr<const process::Route>, std::less<>> routes;
            {
              std::lock_guard hold(pipeline_mutex);
              if (!pipeline) return boost::json::object{{"ok", false}, {"error", "tank is stopping"}};
              routes = pipeline->routes();
            }
            ReplayOutcome outcome = replay_dead_letters(
                *queue,
                [&routes](std::string_view input) -> std::shared_ptr<const process::Route> {
                  auto it = routes.find(input);
                  return it == routes.end() ? nullptr : it->second;
                },
                selection_from_json(request), clock);
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
            queue::SalvageReport report = queue::salvage(damaged, *queue, options);
            log::info(kComponent, "{}{}", options.dry_run ? "dry run: " : "", queue::describe(report, damaged));
            return queue::to_json(report);
          }
          if (name == "dlq.purge") {
            PurgeOutcome outcome = purge_dead_letters(*queue, selection_from_json(request));
            log::info(kComponent, "dead-letter purge: {} entries deleted{}", outcome.purged,
                      outcome.error.empty() ? "" : "; stopped: " + outcome.error);
            return to_json(outcome);
          }
          return boost::json::object{{"ok", false}, {"error", fmt::format("unknown command \"{}\"", name)}};
        });
    control->start();
  } catch (const std::exception& e) {
    log::error(kComponent, "{}", e.what());
    pipeline->stop();
    queue->set_pressure_listener(nullptr);
    if (server) server->stop();
    queue->close();
    state.state = "stopped";
    write_run_state(state_path, state);
    return 1;
  }

  // The configuration running now (a reload replaces it) and where it came from.
  config::Document running = document;
  const std::filesystem::path config_path =
      document.source == kDefaultConfigName ? std::filesystem::path() : std::filesystem::path(document.source);

  phase = Phase::running;
  state.state = "running";
  state.inputs = pipeline->listening();
  if (std::string error = write_run_state(state_path, state); !error.empty()) log::warn(kComponent, "{}", error);
  systemd::notify("READY=1\nSTATUS=running");
  log::info(kComponent, "tank {} running: agent id \"{}\", data_dir {}, {}", build::version, agent_id,
            agent.data_dir.string(),
            server ? fmt::format("metrics on http://{}/metrics", state.metrics_address) : "metrics endpoint off");

  Watchdog watchdog = Watchdog::from_environment();
  log::Episode stuck(kComponent, log::Level::error);
  const auto tick = watchdog.enabled()
                        ? std::min<std::chrono::nanoseconds>(std::chrono::seconds(1), watchdog.ping_every())
                        : std::chrono::nanoseconds(std::chrono::seconds(1));
  auto check_liveness = [&] {
    const auto now = std::chrono::steady_clock::now();
    const std::vector<liveness::Stall> stalls = liveness::stalled(now);
    if (!stalls.empty()) {
      stuck.occur(fmt::format("stuck: {} has not come round its loop within agent.stall_timeout ({}){}",
                              describe_stalls(stalls),
                              units::format_duration(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  liveness::stall_timeout())),
                              watchdog.enabled() ? "; the systemd watchdog is no longer pinged, so systemd restarts tank"
                                                 : ""));
      return;
    }
    stuck.end("every thread comes round its loop again");
    if (watchdog.enabled() && now >= watchdog.next) {
      systemd::notify("WATCHDOG=1");
      watchdog.next = now + watchdog.ping_every();
    }
  };
  check_liveness();

  // The queue's consumers are those of `doc`: a new one starts after the newest record, one that
  // is gone is forgotten with its open batches (it would hold every record for ever).
  auto reconcile_consumers = [&](const config::Document& doc) {
    std::set<std::string> wanted;
    for (auto& c : Pipeline::consumers(doc, plugins)) wanted.insert(std::move(c));
    for (const std::string& c : wanted) queue->add_consumer(c);
    for (const std::string& c : queue->consumer_names()) {
      if (wanted.contains(c)) continue;
      std::vector<std::string> own_state;
      const std::string prefix = plugin::output_consumer_name("");
      if (c.starts_with(prefix)) own_state.push_back(output::open_batch_key(c.substr(prefix.size())));
      if (!queue->remove_consumer(c, std::move(own_state))) {
        log::error(kComponent, "could not forget the position of \"{}\" (the queue refused the commit); the next "
                               "reload or start tries again",
                   c);
      }
    }
  };

  // SIGHUP: read the configuration again; apply it when valid (the pipeline restarts on the same
  // queue), keep the running one otherwise. Returns false when neither could be started.
  auto reload = [&]() -> bool {
    phase = Phase::reloading;
    systemd::notify("RELOADING=1\nSTATUS=reloading the configuration\nMONOTONIC_USEC=" + monotonic_usec());
    const std::string name = config_path.empty() ? std::string(kDefaultConfigName) : config_path.string();
    log::info(kComponent, "SIGHUP received: reading {} again", name);
    config::LoadResult result = load_configuration(config_path, build_schema(plugins));
    for (const auto& d : result.diagnostics.sorted()) {
      if (d.severity == config::Diagnostic::Severity::error) {
        log::error(kComponent, "{}", d.to_string());
      } else {
        log::warn(kComponent, "{}", d.to_string());
      }
    }
    auto back_to_running = [&] {
      phase = Phase::running;
      systemd::notify("READY=1\nSTATUS=running");
    };
    if (!result.document) {
      const std::size_t n = result.diagnostics.error_count();
      log::error(kComponent, "the new configuration has {} error{}; it was not applied and the running one goes on "
                             "(fix {} and reload again)",
                 n, n == 1 ? "" : "s", name);
      reloads_refused.Increment();
      back_to_running();
      return true;
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
      reloads_refused.Increment();
      back_to_running();
      return true;
    }
    for (const std::string& what : restart_only_changes(running, *result.document)) {
      log::warn(kComponent, "{} changed: a reload cannot apply it (the running value is kept); restart tank to apply "
                            "it", what);
    }
    config::Document next = in_force_after_reload(running, std::move(*result.document));

    bool ok = true;
    bool applied = true;
    {
      std::lock_guard hold(pipeline_mutex);
      // Socket inputs hand their sockets and open connections over to the new pipeline's inputs on
      // the same addresses (input/handover.hpp); what is not taken is closed with the window.
      input::handover::Window handover_window;
      // Inputs stop first; what they read is committed or left with its source. Sends in flight are
      // abandoned: their batches stay open in the queue and go again, with the same keys.
      queue->set_pressure_listener(nullptr);
      pipeline.reset();
      check_liveness();
      try {
        pipeline = start_pipeline(next);
      } catch (const std::exception& e) {
        log::error(kComponent, "the new configuration cannot start: {}; going back to the running one", e.what());
        applied = false;
        check_liveness();
        try {
          pipeline = start_pipeline(running);
        } catch (const std::exception& again) {
          log::error(kComponent, "the running configuration cannot start again either: {}; stopping", again.what());
          ok = false;
        }
      }
    }
    check_liveness();
    if (!ok) return false;
    if (applied) {
      running = std::move(next);
      const AgentSettings now = agent_settings(running);
      log::configure(now.log);
      liveness::set_stall_timeout(now.stall_timeout);
    }
    reconcile_consumers(running);
    state.inputs = pipeline->listening();
    if (std::string error = write_run_state(state_path, state); !error.empty()) log::warn(kComponent, "{}", error);
    if (applied) log::info(kComponent, "configuration reloaded from {}", name);
    (applied ? reloads_applied : reloads_undone).Increment();
    back_to_running();
    return true;
  };

  int exit_code = 0;
  for (;;) {
    const timespec wait{static_cast<time_t>(tick.count() / 1000000000), static_cast<long>(tick.count() % 1000000000)};
    int sig = sigtimedwait(&signals, nullptr, &wait);
    check_liveness();
    if (sig < 0) {
      if (queue->damaged()) {
        // LMDB reported damage: stop, and make the next start check every page (and move the
        // queue aside if it is damaged) instead of running on it.
        log::error(kComponent, "stopping: the queue is damaged; the next start checks it in full");
        state.corruption_detected = true;
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

  phase = Phase::stopping;
  systemd::notify("STOPPING=1\nSTATUS=stopping");
  state.state = "stopping";
  write_run_state(state_path, state);
  control->stop();
  // Inputs first: what they read is committed (or left with its source) before the queue closes.
  {
    std::lock_guard hold(pipeline_mutex);
    if (pipeline) pipeline->stop();
  }
  queue->set_pressure_listener(nullptr);
  try {
    queue->close();
  } catch (const std::exception& e) {
    log::error(kComponent, "closing the queue failed: {}", e.what());
    return 1;
  }
  if (server) server->stop();
  state.state = exit_code == 0 ? "stopped" : "failed";
  state.unclean_exits = exit_code == 0 ? 0 : state.unclean_exits;
  if (std::string error = write_run_state(state_path, state); !error.empty()) log::warn(kComponent, "{}", error);
  log::info(kComponent, "stopped");
  return exit_code;
}

}  // namespace tank::engine
