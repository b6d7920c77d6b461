#pragma once

// Helpers shared by the subcommands that look into a data directory.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "cli/args.hpp"
#include "config/document.hpp"
#include "plugin/registry.hpp"

namespace tank::cli {

// The data directory named by --data-dir, or the agent.data_dir of -c FILE (or of the embedded
// default). Prints configuration errors and sets *exit_code (2) when the file is invalid.
std::optional<std::filesystem::path> resolve_data_dir(const ParsedArgs& args, const plugin::Registry& plugins,
                                                      int* exit_code, std::optional<config::Document>* document = nullptr);

bool valid_utf8(std::string_view s);
std::string base64(std::string_view s);

// A positive decimal number, or nullopt.
std::optional<std::uint64_t> parse_positive(std::string_view text);

// A point in time: RFC 3339 ("2026-11-21T10:00:00Z", fraction and offset allowed) or a duration
// back from `now_ns` ("1h"). nullopt with `error` set otherwise.
std::optional<std::int64_t> parse_time(std::string_view text, std::int64_t now_ns, std::string* error);

}  // namespace tank::cli
