// engine::Agent driven in-process, without signals: start(), reload() with the configuration
// file changed on disk, stop(). The data path is real (a file input, the queue, outputs.file);
// the metrics endpoint listens on port 0. The same sequence under signals, in the real binary:
// tests/integration/operations_test.cpp.

#include <catch2/catch.hpp>

#include <fmt/format.h>

#include <filesystem>
#include <map>
#include <regex>
#include <string>

#include "common/clock.hpp"
#include "engine/agent.hpp"
#include "engine/agent_config.hpp"
#include "engine/run_state.hpp"
#include "plugin/registry.hpp"
#include "support/helpers.hpp"

using namespace tank;
using namespace tank::test;

namespace {

// A configuration in a temporary directory (file input "logs" reading in.log), and the agent
// built from it. The file can be changed and reloaded.
struct AgentRig {
  AgentRig() {
    plugin::register_builtin(plugins);
    write_file(dir / "in.log", "");
  }
  // A test that ended early leaves its agent running: stopped here, in order.
  ~AgentRig() {
    if (agent && (agent->phase() == engine::Agent::Phase::running || agent->phase() == engine::Agent::Phase::reloading)) {
      agent->stop();
    }
  }

  // Replaces the configuration at once: [agent], [queue], [metrics] and the file input, then `rest`.
  void write_config(const std::string& rest) const {
    const std::string text = fmt::format(
        "[agent]\nid = \"unit\"\ndata_dir = \"{}\"\n\n"
        "[queue]\nmax_disk_bytes = \"64MiB\"\nfsync = \"never\"\n\n"
        "[metrics]\nlisten = \"127.0.0.1:0\"\n\n"
        "[[inputs.file]]\nname = \"logs\"\npaths = [\"{}\"]\nformat = \"json\"\nread_from = \"beginning\"\n"
        "poll_interval = \"20ms\"\n\n{}",
        (dir / "data").string(), (dir / "in.log").string(), rest);
    write_file(dir / "tank.toml.new", text);
    std::filesystem::rename(dir / "tank.toml.new", config_path());
  }

  std::filesystem::path config_path() const { return dir / "tank.toml"; }

  // The agent of the configuration written last (not started).
  engine::Agent& make_agent() {
    config::LoadResult loaded = engine::load_configuration(config_path(), engine::build_schema(plugins));
    std::string diagnostics;
    for (const auto& d : loaded.diagnostics.all()) diagnostics += d.to_string() + "\n";
    INFO(diagnostics);
    REQUIRE(loaded.document);
    agent = std::make_unique<engine::Agent>(*loaded.document, plugins, system_clock());
    return *agent;
  }

  // The agent of the file input and `rest`, started.
  engine::Agent& start(const std::string& rest) {
    write_config(rest);
    engine::Agent& started = make_agent();
    REQUIRE(started.start());
    return started;
  }

  // Lines {"n":first} .. {"n":first+count-1} appended to in.log.
  void append_numbers(int first, int count) const {
    std::string text;
    for (int i = first; i < first + count; ++i) text += fmt::format("{{\"n\":{}}}\n", i);
    append_file(dir / "in.log", text);
  }

  double metric(const std::string& sample) const {
    const auto reply = http_get(agent->metrics_address(), "/metrics");
    if (!reply || reply->status != 200) return -1;
    return metric_value(reply->body, sample).value_or(-1);
  }

  int readyz() const {
    const auto reply = http_get(agent->metrics_address(), "/readyz");
    return reply ? reply->status : -1;
  }

  TempDir dir;
  plugin::Registry plugins;
  std::unique_ptr<engine::Agent> agent;
};

std::string file_output(const TempDir& dir, const std::string& name) {
  return fmt::format("[[outputs.file]]\nname = \"{}\"\ndirectory = \"{}\"\ncompression = \"none\"\n"
                     "batch_max_records = 20\nlinger = \"10ms\"\n\n",
                     name, (dir / name).string());
}

// How often each "n" arrived in the files an outputs.file wrote to `directory`.
std::map<int, int> arrived(const std::filesystem::path& directory) {
  static const std::regex number(R"re("n":(\d+))re");
  std::map<int, int> counts;
  std::error_code ec;
  for (const auto& file : std::filesystem::directory_iterator(directory, ec)) {
    const std::string text = read_file(file.path());
    for (std::sregex_iterator it(text.begin(), text.end(), number), end; it != end; ++it) ++counts[std::stoi((*it)[1])];
  }
  return counts;
}

bool exactly_once(const std::map<int, int>& counts, int first, int last) {
  if (counts.size() != static_cast<std::size_t>(last - first + 1)) return false;
  for (int n = first; n <= last; ++n) {
    auto it = counts.find(n);
    if (it == counts.end() || it->second != 1) return false;
  }
  return true;
}

std::string tcp_input(const std::string& name, const std::string& address) {
  return fmt::format("[[inputs.tcp]]\nname = \"{}\"\nlisten = \"{}\"\nformat = \"json\"\n\n", name, address);
}

std::size_t instances(const config::Document& document, const std::string& plugin_path) {
  auto it = document.plugins.find(plugin_path);
  return it == document.plugins.end() ? 0 : it->second.size();
}

std::string run_state(const TempDir& dir) {
  auto state = engine::read_run_state(engine::run_state_path(dir / "data"), nullptr);
  return state ? state->state : "";
}

}  // namespace

TEST_CASE("agent: start, a reload that adds an output and changes nothing else, then stop, all in-process",
          "[agent][reload]") {
  AgentRig rig;
  engine::Agent& agent = rig.start(file_output(rig.dir, "archive"));
  CHECK(agent.phase() == engine::Agent::Phase::running);
  CHECK(run_state(rig.dir) == "running");
  REQUIRE_FALSE(agent.metrics_address().empty());
  CHECK(rig.readyz() == 200);
  rig.append_numbers(0, 100);
  CHECK(wait_until([&] { return exactly_once(arrived(rig.dir / "archive"), 0, 99); }));

  // A second output: the reload applies it, on the same queue.
  rig.write_config(file_output(rig.dir, "archive") + file_output(rig.dir, "copy"));
  REQUIRE(agent.reload());
  CHECK(agent.phase() == engine::Agent::Phase::running);
  CHECK(rig.readyz() == 200);
  CHECK(instances(agent.configuration(), "outputs.file") == 2);
  CHECK(rig.metric(R"(tank_reloads_total{result="applied"})") == 1);
  CHECK(rig.metric(R"(tank_reloads_total{result="refused"})") == 0);
  CHECK(rig.metric(R"(tank_reloads_total{result="undone"})") == 0);

  // The input goes on where it was (nothing read twice); the new output starts after the newest record.
  rig.append_numbers(100, 100);
  CHECK(wait_until([&] { return exactly_once(arrived(rig.dir / "archive"), 0, 199); }));
  CHECK(wait_until([&] { return exactly_once(arrived(rig.dir / "copy"), 100, 199); }));

  CHECK(agent.stop() == 0);
  CHECK(run_state(rig.dir) == "stopped");
  CHECK(exactly_once(arrived(rig.dir / "archive"), 0, 199));
}

TEST_CASE("agent: a reload of an invalid or empty configuration is refused and the running pipeline goes on unchanged",
          "[agent][reload]") {
  AgentRig rig;
  engine::Agent& agent = rig.start(file_output(rig.dir, "archive"));

  // Invalid: a new output with an unknown option.
  rig.write_config(file_output(rig.dir, "archive") + file_output(rig.dir, "copy") + "no_such_option = 1\n");
  REQUIRE(agent.reload());
  CHECK(agent.phase() == engine::Agent::Phase::running);
  CHECK(rig.metric(R"(tank_reloads_total{result="refused"})") == 1);
  CHECK(instances(agent.configuration(), "outputs.file") == 1);

  // Empty (a file half written): refused too, rather than stopping every input and output.
  write_file(rig.config_path(), "");
  REQUIRE(agent.reload());
  CHECK(agent.phase() == engine::Agent::Phase::running);
  CHECK(rig.readyz() == 200);
  CHECK(rig.metric(R"(tank_reloads_total{result="refused"})") == 2);
  CHECK(rig.metric(R"(tank_reloads_total{result="applied"})") == 0);
  CHECK(instances(agent.configuration(), "outputs.file") == 1);
  CHECK(instances(agent.configuration(), "inputs.file") == 1);

  // The running pipeline still reads and delivers; the refused output never ran.
  rig.append_numbers(0, 100);
  CHECK(wait_until([&] { return exactly_once(arrived(rig.dir / "archive"), 0, 99); }));
  CHECK(arrived(rig.dir / "copy").empty());
  CHECK(agent.stop() == 0);
  CHECK(run_state(rig.dir) == "stopped");
}

TEST_CASE("agent: a reload whose configuration cannot start is undone and the running one starts again",
          "[agent][reload]") {
  AgentRig rig;
  engine::Agent& agent = rig.start(file_output(rig.dir, "archive"));
  // The new configuration's input cannot listen: the agent's own metrics endpoint holds the address.
  rig.write_config(file_output(rig.dir, "archive") + file_output(rig.dir, "copy") +
                   tcp_input("plant", agent.metrics_address()));
  REQUIRE(agent.reload());
  CHECK(agent.phase() == engine::Agent::Phase::running);
  CHECK(rig.metric(R"(tank_reloads_total{result="undone"})") == 1);
  CHECK(rig.metric(R"(tank_reloads_total{result="applied"})") == 0);
  CHECK(instances(agent.configuration(), "outputs.file") == 1);
  CHECK(agent.listening().empty());

  rig.append_numbers(0, 100);
  CHECK(wait_until([&] { return exactly_once(arrived(rig.dir / "archive"), 0, 99); }));
  CHECK(arrived(rig.dir / "copy").empty());
  CHECK(agent.stop() == 0);
}

TEST_CASE("agent: a start whose pipeline cannot start fails, with the queue closed and run.json \"stopped\"",
          "[agent]") {
  AgentRig running;
  engine::Agent& holder = running.start(file_output(running.dir, "archive"));
  AgentRig rig;
  // Its input cannot listen: the other agent's metrics endpoint holds the address.
  rig.write_config(file_output(rig.dir, "archive") + tcp_input("plant", holder.metrics_address()));
  engine::Agent& agent = rig.make_agent();
  CHECK_FALSE(agent.start());
  CHECK(agent.phase() == engine::Agent::Phase::starting);
  CHECK(run_state(rig.dir) == "stopped");
  CHECK(holder.stop() == 0);
  // The lock is released and the queue was closed cleanly: the next start on the data directory runs.
  rig.agent.reset();
  CHECK(rig.start(file_output(rig.dir, "archive")).stop() == 0);
}
