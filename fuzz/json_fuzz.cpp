// JSON decoding of records: an inputs.http body split into records (inputs_http/json_body.hpp),
// then each record through the routes the engine builds from a configuration (engine/routes.hpp,
// process/route.hpp): decoding, a processors.validate check with a JSON Schema
// (fuzz/json/telemetry.schema.json) and an event time field, and the text format's UTF-8 check.
//
// Input: [flags] body...   flags bit 0: the body is declared NDJSON.
// Properties: a body is either refused with a reason or split into records; every record it
// yields decodes as one JSON document on a json route (the splitter and the decoder agree).

#include <map>
#include <memory>
#include <string>

#include "common/clock.hpp"
#include "config/loader.hpp"
#include "engine/agent_config.hpp"
#include "engine/routes.hpp"
#include "fuzz_support.hpp"
#include "inputs_http/json_body.hpp"
#include "metrics/registry.hpp"
#include "plugin/registry.hpp"
#include "targets.hpp"

// The fuzz/ directory, for the schema file: set by fuzz/CMakeLists.txt, or derived from the
// unit tests' TANK_SOURCE_DIR.
#if !defined(TANK_FUZZ_DIR) && defined(TANK_SOURCE_DIR)
#define TANK_FUZZ_DIR TANK_SOURCE_DIR "/fuzz"
#endif

namespace tank::fuzz {
namespace {

constexpr std::string_view kConfig = R"(
[agent]
id = "fuzz"
data_dir = "/nonexistent/tank-fuzz"

[[inputs.tcp]]
name = "checked"
listen = "127.0.0.1:0"
format = "json"

[[inputs.tcp]]
name = "plain"
listen = "127.0.0.1:0"
format = "json"

[[inputs.tcp]]
name = "text"
listen = "127.0.0.1:0"
format = "text"

[[processors.validate]]
name = "contract"
inputs = ["checked"]
schema = "${TANK_FUZZ_DIR}/json/telemetry.schema.json"
time_field = "ts"
max_record_bytes = "4KiB"
max_past = "100000d"
max_future = "100000d"
)";

// The routes of kConfig, built once.
struct Routes {
  plugin::Registry plugins;
  config::Schema schema;
  std::optional<config::Document> document;
  metrics::Registry metrics;
  ManualClock clock;
  std::map<std::string, std::shared_ptr<const process::Route>, std::less<>> routes;
  std::unique_ptr<process::Route::Session> checked, plain, text;

  Routes() {
    plugin::register_builtin(plugins);
    schema = engine::build_schema(plugins);
    config::LoadOptions options;
    options.environment = [](std::string_view name) -> std::optional<std::string> {
      if (name == "TANK_FUZZ_DIR") return std::string(TANK_FUZZ_DIR);
      return std::nullopt;
    };
    auto loaded = config::load_text(kConfig, "json_fuzz.toml", schema, options);
    if (!loaded.document) {
      for (const auto& d : loaded.diagnostics.sorted()) std::fprintf(stderr, "%s\n", d.to_string().c_str());
      require(false, "the fuzz target's configuration loads");
    }
    document = std::move(loaded.document);
    const engine::RoutePlan plan = engine::plan_routes(*document, plugins);
    routes = engine::build_routes(plan, engine::RouteServices{metrics, clock, "fuzz", "/nonexistent/tank-fuzz"});
    checked = routes.at("checked")->session();
    plain = routes.at("plain")->session();
    text = routes.at("text")->session();
  }
};

}  // namespace

int json_target(const std::uint8_t* data, std::size_t size) {
  static Routes r;
  Controls controls(data, size);
  const bool ndjson = (controls.byte() & 1) != 0;
  const std::string_view body = as_text(data, size);

  const input::JsonBody split = input::split_json_body(body, ndjson);
  require(split.error.empty() || split.payloads.empty(), "a refused body yields no records");
  plugin::Rejection rejection;
  for (std::string_view payload : split.payloads) {
    // As inputs.http stores them: known to be JSON, decoded again only for the checks.
    (void)r.checked->admit(payload, rejection, /*known_json=*/true);
    require(r.plain->admit(payload, rejection, /*known_json=*/false), "every record of a split body decodes");
  }
  // The body as one record of a stream input (tcp, file, mqtt): json and text routes.
  (void)r.checked->admit(body, rejection);
  (void)r.plain->admit(body, rejection);
  (void)r.text->admit(body, rejection);
  return 0;
}

}  // namespace tank::fuzz

TANK_FUZZ_TARGET(tank::fuzz::json_target)
