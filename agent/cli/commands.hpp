#pragma once

// The subcommands of the tank binary. Each takes the arguments after its name and returns the
// process exit code: 0 ok, 1 runtime failure, 2 usage or configuration error.

#include <span>
#include <string>

#include "plugin/registry.hpp"

namespace tank::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

int run_command(std::span<const std::string> args, const plugin::Registry& plugins);
int check_command(std::span<const std::string> args, const plugin::Registry& plugins);
int version_command(std::span<const std::string> args, const plugin::Registry& plugins);
int queue_command(std::span<const std::string> args, const plugin::Registry& plugins);
int dlq_command(std::span<const std::string> args, const plugin::Registry& plugins);
int reference_command(std::span<const std::string> args, const plugin::Registry& plugins);

// The whole program: dispatches argv[1] to a subcommand.
int main(int argc, char** argv);

}  // namespace tank::cli
