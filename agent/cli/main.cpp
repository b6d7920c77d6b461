// The tank binary: dispatches to a subcommand.

#include <csignal>
#include <iostream>
#include <vector>

#include <fmt/format.h>

#include "cli/commands.hpp"
#include "common/strings.hpp"

namespace tank::cli {
namespace {

const char* kUsage =
    "Usage: tank <command> [options]\n\n"
    "Commands:\n"
    "  run [-c FILE]          run the agent (without -c: the embedded default configuration)\n"
    "  check [-c FILE]        validate a configuration and list every problem\n"
    "  queue stats|peek|verify  look into the write-ahead queue (also while tank runs)\n"
    "  dlq list|show          look into the dead-letter store (also while tank runs)\n"
    "  version                version, commit, build type, plugins\n"
    "  reference              print the configuration reference (Markdown)\n"
    "  help                   this text\n\n"
    "`tank <command> --help` describes each. Exit codes: 0 ok, 1 runtime failure,\n"
    "2 usage or configuration error.\n";

}  // namespace

int main(int argc, char** argv) {
  // Writes to a closed socket or pipe report EPIPE; they must not kill the agent.
  std::signal(SIGPIPE, SIG_IGN);

  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::cerr << kUsage;
    return kExitUsage;
  }
  const std::string command = args.front();
  std::span<const std::string> rest(args.data() + 1, args.size() - 1);

  plugin::Registry plugins;
  plugin::register_builtin(plugins);

  try {
    if (command == "run") return run_command(rest, plugins);
    if (command == "check") return check_command(rest, plugins);
    if (command == "queue") return queue_command(rest, plugins);
    if (command == "dlq") return dlq_command(rest, plugins);
    if (command == "version" || command == "--version") return version_command(rest, plugins);
    if (command == "reference") return reference_command(rest, plugins);
    if (command == "help" || command == "--help" || command == "-h") {
      std::cout << kUsage;
      return kExitOk;
    }
  } catch (const std::exception& e) {
    std::cerr << "tank " << command << ": " << e.what() << "\n";
    return kExitFailure;
  }
  std::vector<std::string> known{"run", "check", "queue", "dlq", "version", "reference", "help"};
  auto suggestion = strings::closest(command, known);
  std::cerr << fmt::format("tank: unknown command \"{}\"{}\n\n", command,
                           suggestion ? fmt::format(" (did you mean \"{}\"?)", *suggestion) : "")
            << kUsage;
  return kExitUsage;
}

}  // namespace tank::cli

int main(int argc, char** argv) { return tank::cli::main(argc, argv); }
