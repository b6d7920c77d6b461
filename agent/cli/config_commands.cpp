// tank run, tank check, tank reference: the commands that read a configuration.

#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>

#include <fmt/format.h>

#include "cli/args.hpp"
#include "cli/commands.hpp"
#include "common/clock.hpp"
#include "config/reference.hpp"
#include "engine/agent.hpp"
#include "engine/agent_config.hpp"
#include "engine/routes.hpp"

namespace tank::cli {
namespace {

const OptionSpec kConfigOptions[] = {
    {{"-c", "--config"}, true},
    {{"-h", "--help"}, false},
};

void print_diagnostics(const config::Diagnostics& diagnostics) {
  for (const auto& d : diagnostics.sorted()) std::cerr << d.to_string() << "\n";
}

// Loads -c FILE (or the embedded default). Prints every problem; returns nullopt on errors.
std::optional<config::Document> load(const ParsedArgs& args, const plugin::Registry& plugins) {
  config::Schema schema = engine::build_schema(plugins);
  std::filesystem::path path = args.value("--config").value_or("");
  // An empty file is valid TOML, and every setting has a default: tank would run with no input
  // and no output. Nobody writes that on purpose; a file written without a sync just before a
  // power cut comes back empty (ext4's delayed allocation; tests/vm found it), so does a failed
  // copy. Refused, saying so (a reload refuses a file with no inputs and no outputs as well).
  if (!path.empty()) {
    std::ifstream in(path, std::ios::binary);
    std::string text;
    if (in) text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in && text.find_first_not_of(" \t\r\n") == std::string::npos) {
      std::cerr << fmt::format("{}: the file is empty (a power cut just after it was written, or a failed copy?); "
                               "nothing was started. Restore the configuration, or run without -c for the "
                               "embedded default (tank check --print-default shows it)\n",
                               path.string());
      return std::nullopt;
    }
  }
  config::LoadResult result = engine::load_configuration(path, schema);
  print_diagnostics(result.diagnostics);
  std::string name = path.empty() ? std::string(engine::kDefaultConfigName) : path.string();
  if (!result.document) {
    std::size_t n = result.diagnostics.error_count();
    std::cerr << fmt::format("{}: {} error{}; nothing was started\n", name, n, n == 1 ? "" : "s");
    return std::nullopt;
  }
  return std::move(result.document);
}

}  // namespace

int run_command(std::span<const std::string> argv, const plugin::Registry& plugins) {
  ParsedArgs args = parse_args(argv, kConfigOptions);
  if (args.has("--help")) {
    std::cout << "Usage: tank run [-c FILE]\n\n"
                 "Runs the agent until SIGTERM or SIGINT. Without -c it runs the embedded default\n"
                 "configuration (print it with `tank check --print-default`).\n\n"
                 "  -c, --config FILE   the TOML configuration file\n"
                 "  -h, --help          this help\n\n"
                 "Exit codes: 0 stopped cleanly, 1 runtime failure, 2 usage or configuration error.\n";
    return kExitOk;
  }
  if (!args.error.empty() || !args.positional.empty()) {
    std::cerr << "tank run: " << (args.error.empty() ? "unexpected argument " + args.positional[0] : args.error)
              << "\nUsage: tank run [-c FILE]\n";
    return kExitUsage;
  }
  auto document = load(args, plugins);
  if (!document) return kExitUsage;
  return engine::run_agent(*document, plugins, system_clock());
}

int check_command(std::span<const std::string> argv, const plugin::Registry& plugins) {
  static const OptionSpec kCheckOptions[] = {
      {{"-c", "--config"}, true},
      {{"--print-default"}, false},
      {{"--explain"}, false},
      {{"-h", "--help"}, false},
  };
  ParsedArgs args = parse_args(argv, kCheckOptions);
  if (args.has("--help")) {
    std::cout << "Usage: tank check [-c FILE] [--explain] [--print-default]\n\n"
                 "Validates a configuration without starting anything and lists every problem,\n"
                 "each as file:line:column: key: what was expected. Without -c it checks the\n"
                 "embedded default configuration.\n\n"
                 "  -c, --config FILE   the TOML configuration file\n"
                 "  --explain           also show the pipeline of each input: decoding, which\n"
                 "                      processors it flows through, and where records go\n"
                 "  --print-default     print the embedded default configuration and exit\n"
                 "  -h, --help          this help\n\n"
                 "Exit codes: 0 valid (warnings may be printed), 2 invalid or usage error.\n";
    return kExitOk;
  }
  if (!args.error.empty() || !args.positional.empty()) {
    std::cerr << "tank check: " << (args.error.empty() ? "unexpected argument " + args.positional[0] : args.error)
              << "\nUsage: tank check [-c FILE] [--explain] [--print-default]\n";
    return kExitUsage;
  }
  if (args.has("--print-default")) {
    std::cout << engine::default_config_text();
    return kExitOk;
  }
  auto document = load(args, plugins);
  if (!document) return kExitUsage;
  std::cout << fmt::format("{}: configuration OK\n", document->source);
  if (args.has("--explain")) std::cout << "\n" << engine::plan_routes(*document, plugins).explain();
  return kExitOk;
}

int reference_command(std::span<const std::string> argv, const plugin::Registry& plugins) {
  static const OptionSpec kOptions[] = {{{"-h", "--help"}, false}};
  ParsedArgs args = parse_args(argv, kOptions);
  if (args.has("--help")) {
    std::cout << "Usage: tank reference\n\nPrints the configuration reference (docs/configuration.md) in Markdown,\n"
                 "generated from the option declarations compiled into this binary.\n";
    return kExitOk;
  }
  if (!args.error.empty() || !args.positional.empty()) {
    std::cerr << "tank reference: " << (args.error.empty() ? "unexpected argument " + args.positional[0] : args.error)
              << "\nUsage: tank reference\n";
    return kExitUsage;
  }
  std::cout << config::render_reference(engine::build_schema(plugins));
  return kExitOk;
}

}  // namespace tank::cli
