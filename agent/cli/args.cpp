#include "cli/args.hpp"

#include <fmt/format.h>

#include "common/strings.hpp"

namespace tank::cli {

std::optional<std::string> ParsedArgs::value(const std::string& name) const {
  auto it = values.find(name);
  if (it == values.end()) return std::nullopt;
  return it->second;
}

ParsedArgs parse_args(std::span<const std::string> args, std::span<const OptionSpec> specs) {
  ParsedArgs out;
  auto find = [&](const std::string& name) -> const OptionSpec* {
    for (const auto& s : specs) {
      for (const auto& n : s.names) {
        if (n == name) return &s;
      }
    }
    return nullptr;
  };
  bool only_positional = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (only_positional || arg.size() < 2 || arg[0] != '-') {
      out.positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positional = true;
      continue;
    }
    std::string name = arg;
    std::optional<std::string> inline_value;
    if (auto eq = arg.find('='); eq != std::string::npos && arg.starts_with("--")) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
    }
    const OptionSpec* spec = find(name);
    if (spec == nullptr) {
      std::vector<std::string> known;
      for (const auto& s : specs) known.insert(known.end(), s.names.begin(), s.names.end());
      out.error = fmt::format("unknown option {}", name);
      if (auto suggestion = strings::closest(name, known)) out.error += fmt::format(" (did you mean {}?)", *suggestion);
      return out;
    }
    const std::string& canonical = spec->names.back();
    if (!spec->takes_value) {
      if (inline_value) {
        out.error = fmt::format("option {} takes no value", name);
        return out;
      }
      out.flags.insert(canonical);
      continue;
    }
    if (inline_value) {
      out.values[canonical] = *inline_value;
    } else if (i + 1 < args.size()) {
      out.values[canonical] = args[++i];
    } else {
      out.error = fmt::format("option {} needs a value", name);
      return out;
    }
  }
  return out;
}

}  // namespace tank::cli
