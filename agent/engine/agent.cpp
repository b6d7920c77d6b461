#include "engine/agent.hpp"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "common/build_info.hpp"
#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/systemd_notify.hpp"
#include "common/units.hpp"
#include "engine/agent_config.hpp"
#include <boost/json.hpp>

#include "engine/control.hpp"
#include "engine/dead_letter_ops.hpp"
#include "engine/pipeline.hpp"
#include "engine/run_state.hpp"
#include "metrics/http_server.hpp"
#include "metrics/registry.hpp"
#include "queue/queue.hpp"
#include "queue/queue_config.hpp"

namespace tank::engine {
namespace {

constexpr const char* kComponent = "agent";

enum class Phase { starting, running, stopping };

metrics::HttpResponse serve(const metrics::Registry& registry, const std::atomic<Phase>& phase,
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
      case Phase::stopping: return {503, "text/plain; charset=utf-8", "stopping\n", {}};
    }
  }
  return {404, "text/plain; charset=utf-8", "not found: tank serves /metrics, /healthz and /readyz\n", {}};
}

}  // namespace

int run_agent(const config::Document& document, const plugin::Registry& plugins, const Clock& clock) {
  (void)plugins;
  const AgentSettings agent = agent_settings(document);
  const MetricsSettings metrics_cfg = metrics_settings(document);
  log::configure(agent.log);

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

  const std::filesystem::path state_path = run_state_path(agent.data_dir);
  std::string state_error;
  std::optional<RunState> previous = read_run_state(state_path, &state_error);
  if (!state_error.empty()) log::warn(kComponent, "ignoring the run state: {}", state_error);
  RunState state;
  state.pid = ::getpid();
  state.boot_id = fs::boot_id();
  state.version = build::version;
  state.agent_id = agent.id;
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
  std::unique_ptr<metrics::HttpServer> server;
  if (metrics_cfg.enabled) {
    try {
      server = std::make_unique<metrics::HttpServer>(
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

  PipelineContext pipeline_context{*queue, registry, clock, agent.id, agent.data_dir};
  std::unique_ptr<Pipeline> pipeline;
  try {
    pipeline = std::make_unique<Pipeline>(document, plugins, pipeline_context);
    queue->set_pressure_listener([p = pipeline.get()](bool paused) { p->set_paused(paused); });
    if (queue->blocked()) pipeline->set_paused(true);
    pipeline->start();
  } catch (const plugin::StartError& e) {
    log::error(kComponent, "{}", e.what());
    queue->set_pressure_listener(nullptr);
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
            ReplayOutcome outcome = replay_dead_letters(
                *queue, [&](std::string_view input) { return pipeline->route(input); }, selection_from_json(request),
                clock);
            log::info(kComponent, "dead-letter replay: {} replayed, {} failed again, {} kept{}", outcome.replayed,
                      outcome.failed_again, outcome.kept, outcome.error.empty() ? "" : "; stopped: " + outcome.error);
            return to_json(outcome);
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

  phase = Phase::running;
  state.state = "running";
  state.inputs = pipeline->listening();
  if (std::string error = write_run_state(state_path, state); !error.empty()) log::warn(kComponent, "{}", error);
  systemd::notify("READY=1");
  log::info(kComponent, "tank {} running: agent id \"{}\", data_dir {}, {}", build::version, agent.id,
            agent.data_dir.string(),
            server ? fmt::format("metrics on http://{}/metrics", state.metrics_address) : "metrics endpoint off");

  int exit_code = 0;
  for (;;) {
    const timespec tick{1, 0};
    int sig = sigtimedwait(&signals, nullptr, &tick);
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
      log::warn(kComponent, "SIGHUP received: reloading the configuration is not supported yet; restart tank to "
                            "apply a new one");
      continue;
    }
    log::info(kComponent, "{} received: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    break;
  }

  phase = Phase::stopping;
  systemd::notify("STOPPING=1");
  state.state = "stopping";
  write_run_state(state_path, state);
  control->stop();
  // Inputs first: what they read is committed (or left with its source) before the queue closes.
  pipeline->stop();
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
