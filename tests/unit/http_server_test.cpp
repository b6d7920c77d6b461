#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "net/http_server.hpp"
#include "metrics/registry.hpp"
#include "support/helpers.hpp"
#include "support/input_helpers.hpp"

using namespace tank;

namespace {

net::HttpServer make_server(net::HttpServerOptions options = {}) {
  return net::HttpServer(
      net::ListenAddress{"127.0.0.1", 0},
      [](std::string_view method, std::string_view target) {
        if (target == "/boom") throw std::runtime_error("boom");
        return net::HttpResponse{200, "text/plain", std::string(method) + " " + std::string(target), {}};
      },
      options);
}

// Sends raw bytes and returns everything the server answers before closing.
std::string raw_exchange(const std::string& address, const std::string& request) {
  auto colon = address.rfind(':');
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  inet_pton(AF_INET, address.substr(0, colon).c_str(), &a.sin_addr);
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  (void)!::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return out;
}

}  // namespace

TEST_CASE("the HTTP server answers requests on a port the kernel picked", "[http]") {
  auto server = make_server();
  server.start();
  std::string address = server.local_address();
  CHECK(address.rfind("127.0.0.1:", 0) == 0);
  auto r = test::http_get(address, "/metrics?x=1");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == "GET /metrics");
  auto boom = test::http_get(address, "/boom");
  REQUIRE(boom);
  CHECK(boom->status == 500);
  // Two requests on one kept-alive connection.
  std::string both = raw_exchange(address, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  CHECK(both.find("GET /a") != std::string::npos);
  CHECK(both.find("GET /b") != std::string::npos);
  // HEAD: the headers without the body.
  std::string head = raw_exchange(address, "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  CHECK(head.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(head.find("GET") == std::string::npos);
  CHECK(head.substr(head.find("\r\n\r\n") + 4).empty());
  server.stop();
  CHECK_FALSE(test::http_get(address, "/metrics"));
}

TEST_CASE("the HTTP server refuses oversized headers and garbage without harm", "[http]") {
  auto server = make_server();
  server.start();
  std::string address = server.local_address();
  std::string huge = "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n";
  CHECK(raw_exchange(address, huge).rfind("HTTP/1.1 431", 0) == 0);
  CHECK(raw_exchange(address, "\x01\x02 garbage\r\n\r\n").empty());
  auto r = test::http_get(address, "/still-up");
  REQUIRE(r);
  CHECK(r->status == 200);
}

TEST_CASE("a port in use is a clear error", "[http]") {
  auto first = make_server();
  std::string address = first.local_address();
  auto port = static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
  try {
    net::HttpServer second(net::ListenAddress{"127.0.0.1", port}, [](std::string_view, std::string_view) {
      return net::HttpResponse{};
    });
    FAIL("expected an error");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()) == "cannot listen on " + address +
                                       ": Address already in use (another process uses it; pick another port)");
  }
}

namespace {

// A RequestHandler like inputs.http's: it decides on the header (a wrong path is answered
// without reading the body), then reads the body and echoes its size and the peer.
class EchoHandler final : public net::RequestHandler {
 public:
  net::HttpStep on_header(boost::system::error_code ec, const net::RequestParser& parser, std::string_view) override {
    net::HttpStep step;
    if (ec) {
      if (ec == boost::beast::http::error::body_limit) {
        step.next = net::HttpStep::Next::answer;
        step.answer.status = boost::beast::http::status::payload_too_large;
        step.answer.keep_alive = false;
      }
      return step;
    }
    if (parser.get().target() != "/in") {
      step.next = net::HttpStep::Next::answer;
      step.answer.status = boost::beast::http::status::not_found;
      step.answer.body = "not here\n";
      step.answer.keep_alive = false;
      return step;
    }
    step.next = net::HttpStep::Next::read_body;
    return step;
  }
  net::HttpStep on_body(boost::system::error_code ec, net::RequestParser& parser, std::string_view peer) override {
    net::HttpStep step;
    if (ec) return step;
    step.next = net::HttpStep::Next::answer;
    step.answer.body = std::to_string(parser.get().body().size()) + " bytes from " + std::string(peer);
    step.answer.headers.emplace_back("X-Test", "1");
    return step;
  }
  void on_connection_opened() override { ++opened; }
  void on_connection_closed() override { ++closed; }
  void on_refused(std::size_t) override { ++refused; }

  std::atomic<int> opened{0};
  std::atomic<int> closed{0};
  std::atomic<int> refused{0};
};

}  // namespace

TEST_CASE("the HTTP server lets a handler answer on the header, read the body, and sends 100 Continue", "[http]") {
  EchoHandler handler;
  net::HttpServer server(net::ListenAddress{"127.0.0.1", 0}, handler,
                         {.threads = 2, .max_connections = 4, .max_body_bytes = 1000, .linger = std::chrono::seconds(1)});
  server.start();
  const std::string address = server.local_address();
  // The body is read and the handler sees the peer.
  std::string ok = raw_exchange(address, "POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
  CHECK(ok.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(ok.find("X-Test: 1") != std::string::npos);
  CHECK(ok.find("5 bytes from 127.0.0.1:") != std::string::npos);
  // Answered on its header: the body is never read, the answer arrives all the same.
  std::string other = raw_exchange(address, "POST /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
  CHECK(other.rfind("HTTP/1.1 404", 0) == 0);
  CHECK(other.find("not here") != std::string::npos);
  // A Content-Length over max_body_bytes: refused on the header.
  CHECK(raw_exchange(address, "POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n").rfind("HTTP/1.1 413", 0) == 0);
  // Expect: 100-continue: "100 Continue" before the body is read, then the answer.
  std::string expect = raw_exchange(
      address, "POST /in HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc");
  CHECK(expect.rfind("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200", 0) == 0);
  CHECK(expect.find("3 bytes from") != std::string::npos);
  std::string no_continue = raw_exchange(
      address, "POST /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
  CHECK(no_continue.rfind("HTTP/1.1 404", 0) == 0);
  server.stop();
  CHECK(handler.opened == 5);
  CHECK(handler.closed == 5);
}

TEST_CASE("the HTTP server bounds silence, whole requests and connections", "[http]") {
  EchoHandler handler;
  net::HttpServer server(net::ListenAddress{"127.0.0.1", 0}, handler,
                         {.max_connections = 1,
                          .idle_timeout = std::chrono::milliseconds(300),
                          .request_timeout = std::chrono::seconds(0)});
  server.start();
  const std::string address = server.local_address();
  // A body that trickles in, each piece within idle_timeout, is read to the end; meanwhile a
  // second connection is closed at once (max_connections = 1).
  int fd = test::tcp_connect(address);
  REQUIRE(fd >= 0);
  REQUIRE(test::send_all(fd, "POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"));
  REQUIRE(test::wait_until([&] { return handler.opened == 1; }));
  int second = test::tcp_connect(address);
  char byte;
  CHECK(::recv(second, &byte, 1, 0) <= 0);
  ::close(second);
  for (char c : std::string("abcd")) {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    REQUIRE(test::send_all(fd, std::string_view(&c, 1)));
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  CHECK(out.find("4 bytes from") != std::string::npos);
  CHECK(handler.refused >= 1);
  // Silence longer than idle_timeout: closed without an answer.
  REQUIRE(test::wait_until([&] { return handler.closed == handler.opened; }));
  const auto started = std::chrono::steady_clock::now();
  CHECK(raw_exchange(address, "POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab").empty());
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(5));
}

TEST_CASE("the registry serves counters, collectables and process metrics", "[metrics]") {
  metrics::Registry registry;
  auto process = metrics::make_process_collectable();
  auto build = metrics::make_build_info_collectable();
  registry.add_collectable(process);
  registry.add_collectable(build);
  {
    auto temporary = std::make_shared<metrics::FunctionCollectable>(
        [] { return std::vector<prometheus::MetricFamily>{metrics::gauge_family("tank_test_gauge", "test", 7)}; });
    registry.add_collectable(temporary);
    CHECK(test::metric_value(registry.serialize(), "tank_test_gauge") == 7);
  }
  std::string text = registry.serialize();
  CHECK_FALSE(test::metric_value(text, "tank_test_gauge"));  // gone with its owner
  CHECK(test::metric_value(text, "process_resident_memory_bytes").value_or(0) > 0);
  CHECK(test::metric_value(text, "process_open_fds").value_or(0) > 0);
  CHECK(text.find("tank_build_info{") != std::string::npos);
}
