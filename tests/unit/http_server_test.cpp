#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics/http_server.hpp"
#include "metrics/registry.hpp"
#include "support/helpers.hpp"

using namespace tank;

namespace {

metrics::HttpServer make_server(metrics::HttpServerLimits limits = {}) {
  return metrics::HttpServer(
      metrics::ListenAddress{"127.0.0.1", 0},
      [](std::string_view method, std::string_view target) {
        if (target == "/boom") throw std::runtime_error("boom");
        return metrics::HttpResponse{200, "text/plain", std::string(method) + " " + std::string(target), {}};
      },
      limits);
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
    metrics::HttpServer second(metrics::ListenAddress{"127.0.0.1", port}, [](std::string_view, std::string_view) {
      return metrics::HttpResponse{};
    });
    FAIL("expected an error");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()) == "cannot listen on " + address +
                                       ": Address already in use (another process uses it; pick another port)");
  }
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
