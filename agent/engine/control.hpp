#pragma once

// The agent's control socket: how `tank dlq replay|purge` (and later `tank status`) reach the
// running agent, which alone may write to its queue.
//
// A unix stream socket at <data_dir>/control.sock, mode 0600 (the data directory's owner only).
// One request per connection: the client writes one JSON object and a newline, the agent
// answers with one JSON object and a newline and closes. Requests are handled one at a time.
//   request  {"command": "dlq.replay", ...}     reply  {"ok": true, ...} or {"ok": false, "error": "..."}

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <boost/json/object.hpp>

namespace tank::engine {

inline constexpr const char* kControlSocketName = "control.sock";

class ControlServer {
 public:
  // Runs on the server's thread; may take seconds (a long replay). Exceptions become
  // {"ok": false, "error": what()}.
  using Handler = std::function<boost::json::object(const boost::json::object& request)>;

  // Binds `path` (a stale socket file left by a killed agent is replaced; the caller holds the
  // data directory's lock). Throws std::runtime_error naming the path and the reason.
  ControlServer(std::filesystem::path path, Handler handler);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  void start();
  // Stops serving and removes the socket file. Idempotent.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

enum class ControlStatus {
  answered,    // the agent replied
  no_agent,    // nothing listens at `path` (no socket file, or connection refused)
  failed,      // connected, but the exchange failed (timeout, malformed reply): see error
};

struct ControlReply {
  ControlStatus status = ControlStatus::no_agent;
  boost::json::object reply;
  std::string error;
};

// Sends `request` to the agent listening at `path` and waits up to `timeout` for its reply.
ControlReply control_request(const std::filesystem::path& path, const boost::json::object& request,
                             std::chrono::milliseconds timeout = std::chrono::minutes(10));

}  // namespace tank::engine
