#pragma once

// A small HTTP/1.1 server (Boost.Beast) for tank's own endpoints: /metrics, /healthz,
// /readyz. One I/O thread; bounded in connections, header size and time.

#include <cstddef>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "metrics/listen_address.hpp"

namespace tank::metrics {

struct HttpResponse {
  unsigned status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// Called on the server's thread for each request; must not block for long. `target` is the
// request target without the query string.
using HttpHandler = std::function<HttpResponse(std::string_view method, std::string_view target)>;

struct HttpServerLimits {
  std::size_t max_connections = 32;            // further connections are closed at once
  std::size_t max_header_bytes = 8 * 1024;     // larger requests get 431
  std::chrono::seconds idle_timeout{10};       // a connection silent this long is closed
  std::chrono::seconds max_lifetime{300};      // a kept-alive connection is closed after this
};

class HttpServer {
 public:
  // Binds `address` (port 0: a free port). Throws std::runtime_error naming the address and the
  // reason, e.g. "cannot listen on 127.0.0.1:9464: Address already in use".
  HttpServer(const ListenAddress& address, HttpHandler handler, HttpServerLimits limits = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Starts serving on a thread of its own.
  void start();
  // Stops accepting, closes connections, joins the thread. Idempotent.
  void stop();
  // The bound address, e.g. "127.0.0.1:41234" or "[::1]:9464".
  std::string local_address() const;

  struct Impl;  // public so the connection handlers in the .cpp can reach it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tank::metrics
