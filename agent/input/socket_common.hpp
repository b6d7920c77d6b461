#pragma once

// What the stream engine (stream_server.cpp) and the datagram engine (datagram_server.cpp) of the
// socket inputs share: the input's side of the queue (queue_side.hpp), the hand-over of a parked
// socket, and how an address is written in logs. Internal to those two files.

#include <string>

#include <boost/asio/ip/address.hpp>
#include <fmt/format.h>

#include "common/log.hpp"
#include "input/handover.hpp"
#include "input/queue_side.hpp"
#include "net/listen_address.hpp"
#include "plugin/input.hpp"

namespace tank::input {

// "host:port", or "[host]:port" for IPv6 (a TCP or UDP endpoint).
template <class Endpoint>
std::string describe_endpoint(const Endpoint& ep) {
  if (ep.address().is_v6()) return fmt::format("[{}]:{}", ep.address().to_string(), ep.port());
  return fmt::format("{}:{}", ep.address().to_string(), ep.port());
}

// The endpoint of `listen` ("host:port") for a TCP or UDP socket; plugin::StartError if it is not one.
template <class Protocol>
typename Protocol::endpoint listen_endpoint(const std::string& listen) {
  std::string error;
  auto a = net::parse_listen_address(listen, &error);
  if (!a) throw plugin::StartError(error);
  return typename Protocol::endpoint(boost::asio::ip::make_address(a->host), a->port);
}

// Gives the descriptor parked in `parked` to `s` (an acceptor or a socket of `protocol`). When
// that fails, closes everything parked and returns false: the caller opens a socket of its own.
template <class Socket, class Protocol>
bool assign_parked(Socket& s, const Protocol& protocol, handover::Parked& parked) {
  boost::system::error_code ec;
  s.assign(protocol, parked.fd, ec);
  if (!ec) return true;
  handover::close_all(parked);
  return false;
}

}  // namespace tank::input
