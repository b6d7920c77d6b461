// The TOML configuration loader (config/loader.hpp) with the schema of every compiled-in plugin
// (engine::build_schema), as `tank check` runs it: syntax, sections and options, sizes and
// durations, ${VAR} substitution, *_file secrets, each plugin's own checks and the cross-section
// route checks; then, for a configuration that loads, the route plan and its --explain text
// and the agent's and the metrics' settings.
//
// Input: the configuration text.
// Properties: a configuration is either loaded or refused with at least one error, and every
// diagnostic says what is wrong.
//
// The loader reads the files a configuration names (secrets, schemas). So that the fuzzer does
// not read devices (/dev/kmsg blocks, a disk is large), /proc, /sys or /run, inputs that could
// name such a path are skipped: those holding "/dev", "/proc", "/sys" or "/run", or a TOML escape
// that could spell one (\u, \U, a line-ending backslash).

#include <string>

#include "config/loader.hpp"
#include "engine/agent_config.hpp"
#include "engine/routes.hpp"
#include "fuzz_support.hpp"
#include "plugin/registry.hpp"
#include "targets.hpp"

namespace tank::fuzz {
namespace {

struct Loader {
  plugin::Registry plugins;
  config::Schema schema;
  config::LoadOptions options;

  Loader() {
    plugin::register_builtin(plugins);
    schema = engine::build_schema(plugins);
    options.environment = [](std::string_view name) -> std::optional<std::string> {
      if (name == "HOST") return std::string("gw-0042");
      if (name == "PORT") return std::string("9464");
      if (name == "EMPTY") return std::string();
      return std::nullopt;
    };
    options.base_dir = "/nonexistent/tank-fuzz";
  }
};

bool may_name_a_device(std::string_view text) {
  for (std::string_view word : {"/dev", "/proc", "/sys", "/run", "\\u", "\\U", "\\\n", "\\\r", "\\ ", "\\\t"}) {
    if (text.find(word) != std::string_view::npos) return true;
  }
  return false;
}

}  // namespace

int config_target(const std::uint8_t* data, std::size_t size) {
  static Loader loader;
  const std::string_view text = as_text(data, size);
  if (may_name_a_device(text)) return -1;  // not added to the corpus
  const config::LoadResult result = config::load_text(text, "fuzz.toml", loader.schema, loader.options);
  for (const auto& d : result.diagnostics.sorted()) {
    require(!d.message.empty(), "a diagnostic says what is wrong");
  }
  if (!result.document) {
    require(result.diagnostics.error_count() > 0, "a refused configuration has an error");
    return 0;
  }
  require(result.diagnostics.error_count() == 0, "a loaded configuration has no error");
  const engine::RoutePlan plan = engine::plan_routes(*result.document, loader.plugins);
  (void)plan.explain();
  (void)plan.consumers();
  (void)engine::agent_settings(*result.document);
  (void)engine::metrics_settings(*result.document);
  return 0;
}

}  // namespace tank::fuzz

TANK_FUZZ_TARGET(tank::fuzz::config_target)
