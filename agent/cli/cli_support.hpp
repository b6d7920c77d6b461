#pragma once

// Helpers shared by the subcommands that look into a data directory.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include <memory>

#include "cli/args.hpp"
#include "common/fs.hpp"
#include "queue/queue.hpp"
#include "config/document.hpp"
#include "plugin/registry.hpp"

namespace tank::cli {

// The data directory named by --data-dir, or the agent.data_dir of -c FILE (or of the embedded
// default). Prints configuration errors and sets *exit_code (2) when the file is invalid.
std::optional<std::filesystem::path> resolve_data_dir(const ParsedArgs& args, const plugin::Registry& plugins,
                                                      int* exit_code, std::optional<config::Document>* document = nullptr);

// For a command that writes to the queue when no agent answers on its control socket: the queue
// of `data_dir`, opened as the agent opens it (the consumers of `document`), and the data
// directory's lock, held for as long as the command keeps the queue. Prints why on stderr (prefixed
// with `command`) and returns nullopt when the lock is held or the queue cannot be opened; the
// caller exits 1 then.
struct OfflineQueue {
  fs::ExclusiveLock lock;
  std::unique_ptr<queue::Queue> queue;
};
std::optional<OfflineQueue> open_queue_offline(const std::filesystem::path& data_dir, const config::Document& document,
                                               const plugin::Registry& plugins, std::string_view command);

bool valid_utf8(std::string_view s);
std::string base64(std::string_view s);

// A positive decimal number, or nullopt.
std::optional<std::uint64_t> parse_positive(std::string_view text);

// A point in time: RFC 3339 ("2026-11-21T10:00:00Z", fraction and offset allowed) or a duration
// back from `now_ns` ("1h"). nullopt with `error` set otherwise.
std::optional<std::int64_t> parse_time(std::string_view text, std::int64_t now_ns, std::string* error);

}  // namespace tank::cli
