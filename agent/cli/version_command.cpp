// tank version: what this binary is.

#include <iostream>

#include <boost/version.hpp>
#include <fmt/format.h>

#include "cli/args.hpp"
#include "cli/commands.hpp"
#include "common/build_info.hpp"
#include "queue/queue.hpp"

namespace tank::cli {

int version_command(std::span<const std::string> argv, const plugin::Registry& plugins) {
  static const OptionSpec kOptions[] = {{{"-h", "--help"}, false}};
  ParsedArgs args = parse_args(argv, kOptions);
  if (args.has("--help")) {
    std::cout << "Usage: tank version\n\nPrints the version, the git commit, the build type, the plugins compiled\n"
                 "in and the versions of the libraries built into this binary.\n";
    return kExitOk;
  }
  if (!args.error.empty() || !args.positional.empty()) {
    std::cerr << "tank version: " << (args.error.empty() ? "unexpected argument " + args.positional[0] : args.error)
              << "\nUsage: tank version\n";
    return kExitUsage;
  }
  std::cout << fmt::format("tank {}\n", build::version);
  std::cout << fmt::format("commit:     {}\n", build::git_commit);
  std::cout << fmt::format("build type: {}\n", build::build_type);
  for (plugin::Kind kind : {plugin::Kind::input, plugin::Kind::processor, plugin::Kind::output}) {
    std::string names;
    for (const auto& d : plugins.all()) {
      if (d.kind != kind) continue;
      if (!names.empty()) names += ", ";
      names += d.name;
    }
    std::cout << fmt::format("{:<11} {}\n", std::string(plugin::kind_section(kind)) + ":",
                             names.empty() ? "(none)" : names);
  }
  std::cout << fmt::format("libraries:  LMDB {}, Boost {}.{}.{}\n", queue::lmdb_version(), BOOST_VERSION / 100000,
                           BOOST_VERSION / 100 % 1000, BOOST_VERSION % 100);
  return kExitOk;
}

}  // namespace tank::cli
