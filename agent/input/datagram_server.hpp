#pragma once

// The datagram engine of the socket inputs (Boost.Asio), shared by the udp and unix plugins: one
// record per datagram.
//
// A datagram cannot be held back: while the queue refuses records, datagrams are still read and
// counted as dropped (tank_input_dropped_records_total{reason="queue_full"}); datagrams the kernel
// dropped because the socket buffer was full are counted too (reason "socket_buffer_full", from
// SO_RXQ_OVFL).
//
// Oversize datagrams become dead letters (reason message_too_large). Across a reload the socket,
// with the datagrams waiting in its buffer, is kept (input/handover.hpp).

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "plugin/input.hpp"

namespace tank::input {

struct DatagramSettings {
  std::string type;             // "udp" or "unix"
  std::string listen;           // udp: "host:port"
  std::filesystem::path path;   // unix: the socket file
  unsigned mode = 0660;
  std::size_t max_message_bytes = 64 * 1024;
  std::size_t receive_buffer_bytes = 4 << 20;  // SO_RCVBUF (the kernel may grant less)
};

std::unique_ptr<plugin::Input> make_udp_input(const DatagramSettings& settings, const plugin::InputContext& context);
std::unique_ptr<plugin::Input> make_unix_datagram_input(const DatagramSettings& settings,
                                                        const plugin::InputContext& context);

}  // namespace tank::input
