// Sockets kept across a reload (input/handover.hpp): the registry's rules, and the line framer's
// state, which a connection carries from the old input to the new one.

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "input/handover.hpp"
#include "input/line_framer.hpp"

using namespace tank::input;

namespace {

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

// A connected pair of sockets; the test owns `peer`, the registry gets `fd`.
struct Pair {
  int fd = -1, peer = -1;
  Pair() {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    fd = sv[0];
    peer = sv[1];
  }
  ~Pair() {
    ::close(peer);
    if (is_open(fd)) ::close(fd);
  }
};

// What a framer makes of `data` fed as `pieces`; "L:" lines, "O:" oversize (head/length).
std::vector<std::string> frame(const std::vector<std::string>& pieces, std::size_t max, bool hand_over) {
  std::vector<std::string> out;
  auto on_line = [&](std::string_view l) { out.push_back("L:" + std::string(l)); };
  auto on_oversize = [&](std::string_view head, std::uint64_t length) {
    out.push_back("O:" + std::string(head.substr(0, 8)) + "/" + std::to_string(length));
  };
  LineFramer framer(max);
  for (const auto& p : pieces) {
    if (hand_over) {
      // Each piece read by a new framer that goes on from the previous one's state.
      LineFramer next(max);
      next.restore(framer.take_state());
      next.feed(p, on_line, on_oversize);
      framer.restore(next.take_state());
    } else {
      framer.feed(p, on_line, on_oversize);
    }
  }
  framer.finish(on_line, on_oversize);
  return out;
}

}  // namespace

TEST_CASE("line framer: a state handed over at any byte gives the lines one framer gives", "[unit][handover]") {
  const std::string data = "{\"n\":1}\r\n\n{\"n\":2}\nthis line is far too long for the limit\r\nok\nxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\nend";
  const std::size_t max = 12;
  const auto whole = frame({data}, max, false);
  REQUIRE(whole.size() == 6);
  for (std::size_t a = 0; a <= data.size(); ++a) {
    for (std::size_t b = a; b <= data.size(); b += 7) {
      INFO("cut at " << a << " and " << b);
      CHECK(frame({data.substr(0, a), data.substr(a, b - a), data.substr(b)}, max, true) == whole);
    }
  }
}

TEST_CASE("handover: without a window nothing is parked and the sockets are closed", "[unit][handover]") {
  Pair listener, connection;
  REQUIRE_FALSE(handover::parking());
  handover::park("tcp stream 127.0.0.1:1", {.fd = listener.fd, .connections = {{connection.fd, "peer", {}}}, .kernel_drops = 0});
  CHECK_FALSE(is_open(listener.fd));
  CHECK_FALSE(is_open(connection.fd));
  CHECK_FALSE(handover::take("tcp stream 127.0.0.1:1").has_value());
}

TEST_CASE("handover: within a window a claimed key is taken over and an unclaimed one is closed", "[unit][handover]") {
  Pair kept, kept_connection, dropped, dropped_connection, leftover;
  {
    handover::Window window;
    REQUIRE(handover::parking());
    LineFramer::State partial;
    partial.partial = "{\"n\":";
    handover::park("tcp stream 127.0.0.1:1", {.fd = kept.fd, .connections = {{kept_connection.fd, "a", partial}}, .kernel_drops = 0});
    handover::park("unix stream /run/x.sock", {.fd = dropped.fd, .connections = {{dropped_connection.fd, "b", {}}}, .kernel_drops = 0});
    // A second park under the same key is refused: its sockets are closed, the first stay.
    Pair second;
    handover::park("tcp stream 127.0.0.1:1", {.fd = second.fd, .connections = {}, .kernel_drops = 0});
    CHECK_FALSE(is_open(second.fd));

    handover::claim("tcp stream 127.0.0.1:1");
    handover::close_unclaimed();
    CHECK_FALSE(is_open(dropped.fd));
    CHECK_FALSE(is_open(dropped_connection.fd));
    CHECK(is_open(kept.fd));
    CHECK_FALSE(handover::take("unix stream /run/x.sock").has_value());

    auto taken = handover::take("tcp stream 127.0.0.1:1");
    REQUIRE(taken.has_value());
    CHECK(taken->fd == kept.fd);
    REQUIRE(taken->connections.size() == 1);
    CHECK(taken->connections[0].fd == kept_connection.fd);
    CHECK(taken->connections[0].framer.partial == "{\"n\":");
    CHECK_FALSE(handover::take("tcp stream 127.0.0.1:1").has_value());  // taken once
    // The taker owns them now: still open.
    CHECK(is_open(kept.fd));
    CHECK(is_open(kept_connection.fd));

    // Parked and never taken: closed with the window.
    handover::park("udp datagram 127.0.0.1:2", {.fd = leftover.fd, .connections = {}, .kernel_drops = 7});
    CHECK(is_open(leftover.fd));
  }
  CHECK_FALSE(handover::parking());
  CHECK_FALSE(is_open(leftover.fd));
}
