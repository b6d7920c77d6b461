#pragma once

// A small command-line parser: options with values ("-c FILE", "--config FILE",
// "--config=FILE"), flags ("--json"), and positional arguments, each option known in advance,
// so a typo is an error with a suggestion, never silently ignored.

#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace tank::cli {

struct OptionSpec {
  std::vector<std::string> names;  // {"-c", "--config"}; the last one is the canonical name
  bool takes_value = false;
};

struct ParsedArgs {
  std::map<std::string, std::string> values;  // canonical name -> value
  std::set<std::string> flags;                 // canonical names
  std::vector<std::string> positional;
  std::string error;                           // set when parsing failed

  bool has(const std::string& name) const { return flags.contains(name) || values.contains(name); }
  std::optional<std::string> value(const std::string& name) const;
};

ParsedArgs parse_args(std::span<const std::string> args, std::span<const OptionSpec> specs);

}  // namespace tank::cli
