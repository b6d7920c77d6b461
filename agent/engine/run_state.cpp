#include "engine/run_state.hpp"

#include <boost/json.hpp>
#include <fmt/format.h>

#include "common/fs.hpp"

namespace tank::engine {

namespace json = boost::json;

std::filesystem::path run_state_path(const std::filesystem::path& data_dir) { return data_dir / "run.json"; }

std::optional<RunState> read_run_state(const std::filesystem::path& path, std::string* error) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  auto text = fs::read_file(path, error);
  if (!text) return std::nullopt;
  boost::system::error_code jec;
  json::value v = json::parse(*text, jec);
  if (jec || !v.is_object()) {
    if (error) *error = fmt::format("{} is not valid JSON", path.string());
    return std::nullopt;
  }
  const json::object& o = v.as_object();
  RunState s;
  auto str = [&](const char* key) -> std::string {
    auto* p = o.if_contains(key);
    return (p != nullptr && p->is_string()) ? std::string(p->as_string()) : std::string();
  };
  auto num = [&](const char* key) -> std::int64_t {
    auto* p = o.if_contains(key);
    if (p == nullptr) return 0;
    if (p->is_int64()) return p->as_int64();
    if (p->is_uint64()) return static_cast<std::int64_t>(p->as_uint64());
    return 0;
  };
  s.state = str("state");
  s.pid = static_cast<long>(num("pid"));
  s.boot_id = str("boot_id");
  s.version = str("version");
  s.agent_id = str("agent_id");
  s.metrics_address = str("metrics_address");
  if (auto* inputs = o.if_contains("inputs"); inputs != nullptr && inputs->is_object()) {
    for (const auto& [name, where] : inputs->as_object()) {
      if (where.is_string()) s.inputs.emplace_back(std::string(name), std::string(where.as_string()));
    }
  }
  s.started_ns = num("started_ns");
  s.unclean_exits = static_cast<int>(num("unclean_exits"));
  auto* c = o.if_contains("corruption_detected");
  s.corruption_detected = c != nullptr && c->is_bool() && c->as_bool();
  return s;
}

std::string write_run_state(const std::filesystem::path& path, const RunState& s) {
  json::object o;
  o["state"] = s.state;
  o["pid"] = s.pid;
  o["boot_id"] = s.boot_id;
  o["version"] = s.version;
  o["agent_id"] = s.agent_id;
  o["metrics_address"] = s.metrics_address;
  json::object inputs;
  for (const auto& [name, where] : s.inputs) inputs[name] = where;
  o["inputs"] = std::move(inputs);
  o["started_ns"] = s.started_ns;
  o["unclean_exits"] = s.unclean_exits;
  o["corruption_detected"] = s.corruption_detected;
  return fs::write_file_atomic(path, json::serialize(o) + "\n");
}

int unclean_exits(const std::optional<RunState>& previous) {
  if (!previous || previous->state == "stopped") return 0;
  return previous->unclean_exits + 1;
}

VerificationChoice choose_verification(const std::optional<RunState>& previous, const std::string& boot_id) {
  if (!previous) return {queue::Verification::quick, "first start in this data directory"};
  if (previous->corruption_detected) {
    return {queue::Verification::full, "the previous run found the queue damaged"};
  }
  if (previous->state == "stopped") return {queue::Verification::quick, "the previous run stopped cleanly"};
  if (!boot_id.empty() && !previous->boot_id.empty() && previous->boot_id != boot_id) {
    return {queue::Verification::full, "the previous run did not stop and the machine restarted since (power loss?)"};
  }
  if (int n = unclean_exits(previous); n >= 2) {
    return {queue::Verification::full, fmt::format("the last {} runs ended without stopping", n)};
  }
  return {queue::Verification::quick, "the previous process ended without stopping (crash or kill)"};
}

}  // namespace tank::engine
