#pragma once

// The stream engine of the socket inputs (Boost.Asio), shared by the tcp and unix plugins:
// newline-delimited records over TCP or a unix stream socket.
//
// Each connection reads into a 64 KiB buffer, frames lines (LineFramer), and commits what one read
// produced as one or more batches before it reads again. While the queue refuses records
// (overflow = "block"), or a commit is refused, a connection does not read: the kernel's receive
// buffer fills and TCP's flow control slows the sender. Reading resumes when the queue accepts
// records again.
//
// Oversize lines become dead letters (reason line_too_long). Across a reload the listening socket
// and the open connections are kept (input/handover.hpp).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "plugin/input.hpp"

namespace tank::input {

struct StreamSettings {
  std::string type;             // "tcp" or "unix" (metrics label)
  std::string listen;           // tcp: "host:port"
  std::filesystem::path path;   // unix: the socket file
  unsigned mode = 0660;         // unix: permissions of the socket file
  std::size_t max_line_bytes = 64 * 1024;
  std::size_t max_connections = 256;
  std::chrono::nanoseconds idle_timeout = std::chrono::minutes(5);  // 0: never
  unsigned threads = 2;
};

std::unique_ptr<plugin::Input> make_tcp_input(const StreamSettings& settings, const plugin::InputContext& context);
std::unique_ptr<plugin::Input> make_unix_stream_input(const StreamSettings& settings,
                                                      const plugin::InputContext& context);

}  // namespace tank::input
