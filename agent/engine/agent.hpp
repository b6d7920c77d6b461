#pragma once

// `tank run`: brings the agent up from a validated configuration, serves until SIGTERM or
// SIGINT, and takes it down in order.
//
// Start-up order: logging, data directory (created, checked writable, locked against a second
// tank), run state (how the previous run ended decides how thoroughly the queue is checked),
// queue, metrics endpoint, pipeline, control socket, then READY (run.json "running", sd_notify
// READY=1, /readyz 200). Shut-down runs the other way and ends with run.json "stopped", which
// tells the next start that the queue was closed cleanly.
//
// Agent holds the running agent; run_agent() is `tank run`: Agent::run(), which blocks the
// signals and calls start(), reload() on SIGHUP and stop() on SIGTERM or SIGINT. A test drives
// start(), reload() and stop() itself, in-process and without signals.

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/json/object.hpp>

#include "common/clock.hpp"
#include "common/clock_sync.hpp"
#include "common/fs.hpp"
#include "common/log.hpp"
#include "config/document.hpp"
#include "engine/agent_config.hpp"
#include "engine/pipeline.hpp"
#include "engine/run_state.hpp"
#include "metrics/registry.hpp"
#include "plugin/registry.hpp"

namespace prometheus {
class Counter;
}
namespace tank::net {
class HttpServer;
}

namespace tank::engine {

class ControlServer;

class Agent {
 public:
  // What /readyz answers: 200 only while running.
  enum class Phase { starting, running, reloading, stopping };

  // Nothing is opened yet. `document` is a validated configuration; its source is the file a
  // reload reads again (the embedded default when it is kDefaultConfigName). `plugins` and `clock`
  // must outlive the agent.
  Agent(const config::Document& document, const plugin::Registry& plugins, const Clock& clock);
  // Does not stop a running agent (as run_agent's locals did not when an exception left it): what
  // is running is destroyed in the reverse order of start-up, and run.json is left as it was.
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // `tank run`: blocks SIGINT, SIGTERM and SIGHUP in the calling thread (and so in every thread
  // started after), start(), then waits for a signal: SIGHUP reload(), SIGTERM or SIGINT stop().
  // Also stops (exit 1) when the queue reports damage or a reload leaves nothing running. Returns
  // the process exit code: 0 after a clean stop, 1 when something outside the configuration failed
  // (the data directory, the lock, the queue, the listener). Call from the main thread before any
  // other thread exists.
  int run();

  // Start-up, in the order above, ending with READY. Returns false (each failure logged) when
  // something outside the configuration failed; what was opened is closed again, and the agent is
  // not to be used further (the exit code is 1).
  bool start();

  // The SIGHUP path: reads the configuration file again; applies it when valid (the pipeline
  // restarts on the same queue), keeps the running one otherwise: refused (errors, or no inputs
  // and no outputs) or undone (it could not start: the running configuration starts again).
  // Values a reload cannot apply (queue, dead_letter, metrics, agent.id, agent.data_dir) are named
  // and kept. /readyz answers 503 meanwhile. Returns false when neither configuration could be
  // started: then stop() with exit code 1. Only after a start() that returned true.
  bool reload();

  // Shut-down: STOPPING, close the control socket, stop the pipeline (inputs first), close the
  // queue, stop the metrics endpoint, run.json "stopped" (or "failed" when `exit_code` is not 0).
  // Returns the process exit code: `exit_code`, or 1 when the queue could not be closed. Once,
  // after a start() that returned true.
  int stop(int exit_code = 0);

  // What the agent shows of itself (also for tests).
  Phase phase() const { return phase_.load(); }
  // The configuration in force (a reload that is applied replaces it).
  const config::Document& configuration() const { return running_; }
  // The metrics endpoint's bound address, "" when it is off or not started.
  const std::string& metrics_address() const { return state_.metrics_address; }
  // Where each listening input listens (input name -> address or path).
  const std::vector<std::pair<std::string, std::string>>& listening() const { return state_.inputs; }

 private:
  // systemd's watchdog (sd_watchdog_enabled(3)): WATCHDOG_USEC, for this process when WATCHDOG_PID
  // is unset or names it. Pinged at half the interval, and only while no thread is stuck.
  struct Watchdog {
    std::chrono::microseconds interval{0};  // 0: no watchdog
    std::chrono::steady_clock::time_point next{};

    static Watchdog from_environment();
    bool enabled() const { return interval.count() > 0; }
    std::chrono::nanoseconds ping_every() const { return interval / 2; }
  };
  // How a reload's pipeline swap ended.
  enum class PipelineSwap {
    applied,       // the new configuration runs
    undone,        // it could not start; the running one runs again
    none_started,  // neither could start: nothing runs
  };

  // Start-up steps, in order; each logs its failure and returns false.
  bool claim_data_dir();
  std::optional<VerificationChoice> record_start();
  void register_agent_metrics();
  bool open_queue(const VerificationChoice& verification);
  bool start_metrics_endpoint();
  bool start_first_pipeline();
  bool start_control_socket();
  void announce_running();
  void abandon_start();

  // Builds and starts the pipeline of `doc`, relaying the queue's pressure to it. Throws
  // plugin::StartError (nothing of it left running) when a plugin refuses to start.
  std::unique_ptr<Pipeline> start_pipeline(const config::Document& doc);
  // A request on the control socket (runs on the control server's thread).
  boost::json::object handle_control_request(const boost::json::object& request);
  // Logs the threads that are stuck, else pings systemd's watchdog when it is due.
  void check_liveness();

  // Reload steps.
  std::string configuration_name() const;
  std::optional<config::Document> configuration_to_reload(const std::string& name);
  PipelineSwap replace_pipeline(const config::Document& next);
  void reconcile_consumers(const config::Document& doc);
  void back_to_running();

  // Declared in the order of start-up, so that they are destroyed the other way round.
  const plugin::Registry& plugins_;
  const Clock& clock_;
  // The configuration running now (a reload replaces it) and where it came from ("" for the
  // embedded default).
  config::Document running_;
  const std::filesystem::path config_path_;
  const AgentSettings settings_;
  const MetricsSettings metrics_settings_;
  std::optional<fs::ExclusiveLock> lock_;
  std::string agent_id_;
  const std::filesystem::path state_path_;
  RunState state_;

  metrics::Registry registry_;
  std::shared_ptr<prometheus::Collectable> process_metrics_;
  std::shared_ptr<prometheus::Collectable> build_metrics_;
  prometheus::Counter* reloads_applied_ = nullptr;
  prometheus::Counter* reloads_refused_ = nullptr;
  prometheus::Counter* reloads_undone_ = nullptr;
  std::shared_ptr<prometheus::Collectable> stuck_metrics_;
  // Whether the wall clock is trusted: checked every tick of run()'s loop; inputs mark records,
  // stages hold them, /readyz and tank_clock_synchronized say it.
  std::unique_ptr<ClockSync> clock_sync_;
  std::shared_ptr<prometheus::Collectable> clock_metrics_;

  std::unique_ptr<queue::Queue> queue_;
  std::atomic<Phase> phase_{Phase::starting};
  std::unique_ptr<net::HttpServer> server_;
  std::optional<PipelineContext> pipeline_context_;
  // The pipeline is replaced by a reload; the control socket's thread reads it meanwhile.
  std::mutex pipeline_mutex_;
  std::unique_ptr<Pipeline> pipeline_;
  std::unique_ptr<ControlServer> control_;

  Watchdog watchdog_;
  log::Episode stuck_;
};

// `tank run`: Agent(document, plugins, clock).run().
int run_agent(const config::Document& document, const plugin::Registry& plugins, const Clock& clock);

}  // namespace tank::engine
