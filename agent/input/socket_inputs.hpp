#pragma once

// Socket inputs on Boost.Asio, shared by the tcp, udp and unix plugins.
//
// Stream sockets (TCP, unix stream): newline-delimited records. Each connection reads into a
// 64 KiB buffer, frames lines (LineFramer), and commits what one read produced as one or more
// batches before it reads again. While the queue refuses records (overflow = "block"), or a
// commit is refused, a connection does not read: the kernel's receive buffer fills and TCP's
// flow control slows the sender. Reading resumes when the queue accepts records again.
//
// Datagram sockets (UDP, unix datagram): one record per datagram. A datagram cannot be held
// back: while the queue refuses records, datagrams are still read and counted as dropped
// (tank_input_dropped_records_total{reason="queue_full"}); datagrams the kernel dropped because
// the socket buffer was full are counted too (reason "socket_buffer_full", from SO_RXQ_OVFL).
//
// Oversize lines and datagrams become dead letters (reason line_too_long / message_too_large).

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

struct DatagramSettings {
  std::string type;             // "udp" or "unix"
  std::string listen;           // udp: "host:port"
  std::filesystem::path path;   // unix: the socket file
  unsigned mode = 0660;
  std::size_t max_message_bytes = 64 * 1024;
  std::size_t receive_buffer_bytes = 4 << 20;  // SO_RCVBUF (the kernel may grant less)
};

std::unique_ptr<plugin::Input> make_tcp_input(const StreamSettings& settings, const plugin::InputContext& context);
std::unique_ptr<plugin::Input> make_unix_stream_input(const StreamSettings& settings,
                                                      const plugin::InputContext& context);
std::unique_ptr<plugin::Input> make_udp_input(const DatagramSettings& settings, const plugin::InputContext& context);
std::unique_ptr<plugin::Input> make_unix_datagram_input(const DatagramSettings& settings,
                                                        const plugin::InputContext& context);

}  // namespace tank::input
