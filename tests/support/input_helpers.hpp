#pragma once

// Helpers for tests that run input plugins in-process: a queue, the plugin built from TOML
// through the registry (so its option declaration is exercised), and socket clients.

#include <map>
#include <memory>
#include <optional>

#include <boost/json.hpp>
#include <string>
#include <vector>

#include "engine/agent_config.hpp"
#include "metrics/registry.hpp"
#include "plugin/input.hpp"
#include "plugin/registry.hpp"
#include "queue/queue.hpp"
#include "support/queue_helpers.hpp"

namespace tank::test {

// A queue plus one input built from `toml` (which holds one [[inputs.X]] table). The queue
// lives in options.dir when it is set (to reopen it, as after a restart), else in a directory
// of the rig's own.
struct InputRig {
  InputRig(const std::string& toml, queue::Options options);
  ~InputRig();

  // Relays the queue's pressure to the input, as the engine does.
  void connect_pressure();

  TempDir dir;
  ManualClock clock;
  metrics::Registry registry;
  plugin::Registry plugins;
  std::unique_ptr<queue::Queue> queue;
  std::unique_ptr<plugin::Input> input;
};

// Default queue options for input tests: 64 MiB, fsync never, one consumer "out".
queue::Options input_queue_options(const std::filesystem::path& dir);

// host:port -> connected TCP socket fd (or -1).
int tcp_connect(const std::string& address);
int unix_connect(const std::string& path);
// Sends everything (blocking); false on error.
bool send_all(int fd, std::string_view data);
void udp_send(const std::string& address, std::string_view datagram);
void unix_datagram_send(const std::string& path, std::string_view datagram);
// Waits until the peer closes (recv returns 0 or an error) or the deadline passes.
bool wait_closed(int fd, std::chrono::milliseconds deadline);
// Everything the peer sends until it closes; nullopt when it has not closed at the deadline.
std::optional<std::string> receive_until_closed(int fd, std::chrono::milliseconds deadline);

// Every record's payload in the queue, oldest first.
std::vector<std::string> all_payloads(const queue::Queue& q);

// A record as stored, read with the queue opened read-only (also while tank runs).
struct StoredRecord {
  std::uint64_t seq = 0;
  std::string input;
  std::string payload;
  bool derived = false;
  std::map<std::string, std::string> attributes;
  unsigned level = 0;  // queue::chain_level: 0 as the input committed it, k: by the k-th stage
};
std::vector<StoredRecord> records_in(const std::filesystem::path& queue_dir);

// `tank dlq list --json` of a data directory: one JSON object per entry (empty on failure).
std::vector<boost::json::object> dead_letters_in(const std::filesystem::path& data_dir);

// The JSON objects an outputs.file (compression = "none") wrote into `dir`, file by file in name
// order; a line that is not a whole JSON object yet (being written) is left out.
std::vector<boost::json::object> json_records_in(const std::filesystem::path& dir);

}  // namespace tank::test
