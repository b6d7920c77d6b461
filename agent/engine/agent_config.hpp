#pragma once

// The [agent] and [metrics] sections, the schema of a whole configuration file, and the
// embedded default configuration (config/default.toml).

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/clock_sync.hpp"
#include "common/log.hpp"
#include "config/document.hpp"
#include "config/loader.hpp"
#include "config/schema.hpp"
#include "net/listen_address.hpp"
#include "plugin/registry.hpp"

namespace tank::engine {

const config::Section& agent_section();
const config::Section& metrics_section();

// Whether `id` is a valid agent id or plugin instance name: 1 to 64 letters, digits, '.', '_', '-'.
bool valid_id(std::string_view id);
// Whether `c` may appear in an id: a letter, a digit, '.', '_' or '-'.
bool is_id_char(char c);

// Core sections first ([agent], [queue], [metrics]), then every plugin in `plugins`, and the
// cross-section checks (input names, record limits, routes, the queue's map in the address space). The
// schema does not refer to `plugins`.
config::Schema build_schema(const plugin::Registry& plugins);

// The text of config/default.toml, compiled into the binary.
std::string_view default_config_text();
inline constexpr std::string_view kDefaultConfigName = "<embedded default>";

// Loads `path`, or the embedded default when `path` is empty.
config::LoadResult load_configuration(const std::filesystem::path& path, const config::Schema& schema,
                                      const config::LoadOptions& options = {});

struct AgentSettings {
  // agent.id as configured, "" when unset: then data_dir/agent-id or the host name gives the id,
  // chosen at start (engine/agent_identity.hpp).
  std::string configured_id;
  std::filesystem::path data_dir;
  log::Config log;
  std::chrono::nanoseconds stall_timeout{std::chrono::seconds(20)};
  ClockTrust clock_trust = ClockTrust::automatic;  // agent.clock
};
AgentSettings agent_settings(const config::Document& document);

struct MetricsSettings {
  bool enabled = true;
  net::ListenAddress listen;
};
MetricsSettings metrics_settings(const config::Document& document);

}  // namespace tank::engine
