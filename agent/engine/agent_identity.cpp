#include "engine/agent_identity.hpp"

#include <unistd.h>

#include <optional>

#include <fmt/format.h>

#include "common/fs.hpp"
#include "engine/agent_config.hpp"

namespace tank::engine {
namespace {

// More than any id with the spaces and newlines an editor may add.
constexpr std::size_t kMaxFileBytes = 4096;

std::string_view trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n";
  const auto first = s.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(kSpace) - first + 1);
}

// What a damaged file holds, quoted for a log line: at most 64 characters, others as '?'.
std::string excerpt(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 64)) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  if (text.size() > 64) out += "...";
  return out;
}

}  // namespace

std::filesystem::path agent_id_path(const std::filesystem::path& data_dir) { return data_dir / kAgentIdFileName; }

std::string id_from_host_name(std::string_view host_name) {
  if (host_name.empty()) return "tank";
  std::string out;
  for (char c : host_name.substr(0, 64)) out.push_back(is_id_char(c) ? c : '-');
  return out;
}

std::string system_host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return {};
  return buf;
}

AgentIdentity resolve_agent_identity(const std::filesystem::path& data_dir, std::string_view configured,
                                     const std::function<std::string()>& host_name) {
  const std::filesystem::path path = agent_id_path(data_dir);
  AgentIdentity out;

  // What the file holds: an id, nothing (no file), or a problem with it.
  std::optional<std::string> stored;
  std::string problem;
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    std::string error;
    if (auto text = fs::read_file(path, &error, kMaxFileBytes)) {
      const std::string_view id = trim(*text);
      if (valid_id(id)) {
        stored = std::string(id);
      } else {
        problem = fmt::format("{} does not hold an agent id (it holds \"{}\"; expected 1 to 64 letters, digits, '.', "
                              "'_' or '-')",
                              path.string(), excerpt(*text));
      }
    } else {
      problem = error;
    }
  } else if (ec) {
    problem = fmt::format("cannot look for {}: {}", path.string(), ec.message());
  }

  if (!configured.empty()) {
    out.id = std::string(configured);
    if (stored && *stored != out.id) {
      out.warnings.push_back(fmt::format("agent.id changed from \"{}\" to \"{}\"; idempotency keys of batches sent "
                                         "before now differ (an upstream cannot tell a batch retried now from a new "
                                         "one)",
                                         *stored, out.id));
    } else if (!problem.empty()) {
      out.warnings.push_back(
          fmt::format("{}; using agent.id \"{}\" and storing it there in its place", problem, out.id));
    } else if (!stored) {
      out.notes.push_back(fmt::format("agent id \"{}\" (agent.id) stored in {}", out.id, path.string()));
    }
  } else if (stored) {
    out.id = *stored;
    if (const std::string host = id_from_host_name(host_name()); host != out.id) {
      out.notes.push_back(fmt::format("agent id \"{}\" from {}, not the host name \"{}\": the id stays when the host "
                                      "is renamed (set agent.id to change it)",
                                      out.id, path.string(), host));
    }
  } else {
    out.id = id_from_host_name(host_name());
    if (!problem.empty()) {
      out.warnings.push_back(fmt::format("{}; using the host name \"{}\" as the agent id and storing it there in its "
                                         "place (idempotency keys of batches sent before may differ: set agent.id to "
                                         "the previous id to keep them)",
                                         problem, out.id));
    } else {
      out.notes.push_back(fmt::format("agent id \"{}\" (the host name) stored in {}: it stays this agent's id when the "
                                      "host is renamed (set agent.id to choose another)",
                                      out.id, path.string()));
    }
  }

  if (stored != out.id) {
    if (std::string error = fs::write_file_atomic(path, out.id + "\n"); !error.empty()) {
      out.warnings.push_back(fmt::format("cannot store the agent id: {}; \"{}\" is used now, but the next start "
                                         "chooses the id again (agent.id, else the host name)",
                                         error, out.id));
    }
  }
  return out;
}

}  // namespace tank::engine
