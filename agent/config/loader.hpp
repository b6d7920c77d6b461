#pragma once

// Loads a TOML configuration file (toml++) and validates it against the schema.
//
// Every problem is collected, not just the first: unknown sections and keys (with a "did you
// mean"), wrong types, values out of bounds, bad sizes and durations, unknown choices,
// missing required options, unreadable *_file secrets, unset ${VAR}s. A TOML syntax error stops
// parsing, so it is reported alone. Each diagnostic carries file:line:column and the key path.

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "common/units.hpp"
#include "config/document.hpp"
#include "config/schema.hpp"

namespace tank::config {

using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;

// The process environment.
EnvLookup process_environment();

struct LoadOptions {
  EnvLookup environment = process_environment();
  // Relative `*_file` paths are resolved against this directory (the config file's directory
  // by default for files, the working directory for text).
  std::optional<std::filesystem::path> base_dir;
};

struct LoadResult {
  std::optional<Document> document;  // set when there are no errors
  Diagnostics diagnostics;           // errors and warnings, also when `document` is set
};

LoadResult load_file(const std::filesystem::path& path, const Schema& schema, const LoadOptions& options = {});
LoadResult load_text(std::string_view text, std::string source_name, const Schema& schema,
                     const LoadOptions& options = {});

// Replaces ${NAME} with the variable's value and ${NAME:-fallback} with its value, or
// `fallback` when it is unset or empty. "$${" is a literal "${". NAME is letters, digits and
// underscores, not starting with a digit. An unset variable without a fallback is an error.
// The error quotes the part of `text` that is wrong, unless `secret` (the value of a secret
// option): then it quotes nothing of `text` but the name of an unset variable (a reference
// written as ${NAME} is configuration, not part of the secret).
units::Parsed<std::string> substitute_environment(std::string_view text, const EnvLookup& environment,
                                                  bool secret = false);

}  // namespace tank::config
