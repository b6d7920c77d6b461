#pragma once

// data_dir/agent-id: the agent's id (agent.id), kept in the data directory so that it does not
// change with the host name. The id is in every idempotency key (output/batch.hpp): a batch sent
// before a restart and retried after it must carry the same key, even when the host was renamed
// in between.
//
// The id of a start, by what the configuration and the data directory hold:
//
//   agent.id   data_dir/agent-id   id used          data_dir/agent-id afterwards
//   unset      absent              the host name    the host name
//   unset      X                   X                X
//   Y          absent or Y         Y                Y
//   Y          X (not Y)           Y (a warning)    Y
//   any        not an id           agent.id, else   that id
//                                  the host name
//                                  (a warning)
//
// Only `tank run` reads and writes the file (after taking the data directory's lock); `tank
// check` and the other commands leave the data directory alone.

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace tank::engine {

inline constexpr std::string_view kAgentIdFileName = "agent-id";

std::filesystem::path agent_id_path(const std::filesystem::path& data_dir);

// The host name as an agent id: characters an id may not hold become '-', at most 64 of them;
// "tank" when `host_name` is empty.
std::string id_from_host_name(std::string_view host_name);

// gethostname(), or "" when it fails.
std::string system_host_name();

struct AgentIdentity {
  std::string id;
  // What changed or went wrong, one sentence each, for the log: the id changed (agent.id differs
  // from the stored one), the stored file was unreadable or not an id, it could not be written.
  std::vector<std::string> warnings;
  // What was decided, for the log at info level (the id first stored, a stored id that is not
  // the host name any more).
  std::vector<std::string> notes;
};

// Chooses the id of this start in `data_dir` (which exists and is writable: the caller checked)
// from `configured` (agent.id; "" when unset), the stored data_dir/agent-id and, when neither
// gives one, `host_name()` (injected so that tests can rename the host). Stores the id chosen
// when the file does not already hold it (atomically: temporary file, fsync, rename, fsync of the
// directory). Never fails and never throws for what it finds on disk: an unreadable or damaged
// file, or one that cannot be written, is a warning and the id is still returned (the host name
// or agent.id).
AgentIdentity resolve_agent_identity(const std::filesystem::path& data_dir, std::string_view configured,
                                     const std::function<std::string()>& host_name = system_host_name);

}  // namespace tank::engine
