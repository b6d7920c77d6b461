#pragma once

// Sockets kept open across a reload (SIGHUP).
//
// A reload replaces the whole pipeline. If the socket inputs closed their sockets for it, what
// senders had written and tank had not read yet would be lost: the bytes in each TCP or unix
// stream connection's kernel buffers (and the connection itself: the sender gets a reset), the
// connections waiting in the listen backlog, the datagrams in a UDP socket's buffer. So while the
// engine replaces its pipeline it holds a Window open. A socket input stopped meanwhile parks its
// sockets here instead of closing them (a stream connection with the part of a line it had read),
// and the new pipeline's input of the same kind on the same configured address takes them over:
// to the senders a reload is a pause, and nothing they wrote is lost.
//
// The engine, during a reload:
//   Window window;                 // parking() is true from here
//   old pipeline stopped           // its socket inputs park(key, ...)
//   new pipeline constructed       // its socket inputs claim(key)
//   close_unclaimed();             // what no new input claimed is closed (its address is free)
//   new pipeline started           // the inputs take(key) and go on with those sockets
//   ~Window                        // anything still parked is closed
//
// Every function may be called from any thread.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "input/line_framer.hpp"

namespace tank::input::handover {

// One open connection of a stream input.
struct Connection {
  int fd = -1;
  std::string peer;          // as the input named it in records and logs
  LineFramer::State framer;  // the line being read when it was parked
};

// What one socket input hands over.
struct Parked {
  int fd = -1;                          // the listening socket (streams) or the datagram socket
  std::vector<Connection> connections;  // streams: the open connections
  std::uint32_t kernel_drops = 0;       // datagrams: the socket's SO_RXQ_OVFL count so far
};

// Opens the handover window; its destruction closes every socket still parked and ends it.
// One at a time (the engine reloads from one thread).
class Window {
 public:
  Window();
  ~Window();
  Window(const Window&) = delete;
  Window& operator=(const Window&) = delete;
};

// True while a Window exists: a socket input being stopped parks its sockets.
bool parking();

// Parks `sockets` under `key` (the input's kind and configured address, e.g. "tcp 127.0.0.1:5170").
// Without a window, or when something is parked under `key` already, closes them instead.
void park(const std::string& key, Parked sockets);

// A new input will want what is parked under `key` (see close_unclaimed). No effect without a window.
void claim(const std::string& key);

// Closes what is parked under keys nobody claimed since the last call, so that their addresses
// are free for whatever the new configuration binds there; forgets the claims.
void close_unclaimed();

// What is parked under `key`, if anything; the caller owns the descriptors from then on.
std::optional<Parked> take(const std::string& key);

// Closes every descriptor of `sockets` (what a taker does with sockets it cannot use).
void close_all(Parked& sockets);

}  // namespace tank::input::handover
