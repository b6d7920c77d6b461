#pragma once

// tank's HTTP/1.1 server (Boost.Beast over Boost.Asio): the listener, the connections and the
// reading and writing of requests and answers, for every endpoint tank serves. What each request
// means is the caller's: a RequestHandler decides, after the header and after the body, what
// happens next. The metrics endpoint (/metrics, /healthz, /readyz) uses the simpler form, one
// function from method and target to an answer (HttpHandler).
//
// What it promises:
//   - It listens on one address (port 0: one the kernel picks) from the constructor on, and
//     serves from start() on, with `threads` I/O threads; each connection runs on a strand of
//     its own, so a handler is never called twice at once for one connection.
//   - Connections beyond max_connections are closed at once (RequestHandler::on_refused).
//     Accepting that fails (EMFILE...) is retried every 100 ms (on_accept_failed).
//   - Bounds: a header over max_header_bytes or a body over max_body_bytes ends the reading of
//     the request with http::error::header_limit / body_limit (a Content-Length over the limit
//     as soon as the header is read); the handler answers them (431 and 413 for HttpHandler).
//     Every read and every write may wait idle_timeout (the longest silence: a client that keeps
//     sending, however slowly, is read to the end); with request_timeout, the whole request must
//     also have arrived within it. A connection older than max_lifetime is not kept alive.
//   - A request that asks for "Expect: 100-continue" gets "100 Continue" when the handler wants
//     its body, and never otherwise.
//   - An answer that ends the connection is followed by `linger`: the server stops sending, reads
//     and discards what the client still sends (at most 8 MiB) for that long, then closes.
//     Closing at once could make the kernel reset the connection and the client lose the answer
//     to a request whose body was not read. linger = 0: closed at once.
//
// How it fails: the constructor throws std::runtime_error naming the address and the reason
// ("cannot listen on 127.0.0.1:9464: Address already in use (another process uses it; pick
// another port)"). Nothing else throws: a broken request, a timeout, a reset or a failed write
// ends that connection only; an exception thrown by an HttpHandler is answered 500 and logged.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/system/error_code.hpp>

#include "net/listen_address.hpp"

namespace tank::net {

namespace http = boost::beast::http;

using RequestParser = http::request_parser<http::string_body>;

struct HttpServerOptions {
  unsigned threads = 1;                                 // I/O threads
  std::size_t max_connections = 32;                     // further connections are closed at once
  std::size_t max_header_bytes = 8 * 1024;              // http::error::header_limit beyond
  std::uint64_t max_body_bytes = 64 * 1024;             // http::error::body_limit beyond
  std::chrono::nanoseconds idle_timeout{std::chrono::seconds(10)};     // the longest silence
  std::chrono::nanoseconds request_timeout{std::chrono::seconds(10)};  // a whole request; 0: no bound
  std::chrono::nanoseconds max_lifetime{std::chrono::seconds(300)};    // no keep-alive after; 0: no bound
  std::chrono::nanoseconds linger{0};                   // after an answer that closes (see above)
  std::chrono::nanoseconds stop_grace{std::chrono::seconds(10)};  // stop() waits for answers in progress
  std::string beat{};  // a liveness beat for the I/O threads (common/io_beat.hpp) by this name; "": none
};

// An answer. keep_alive is what the handler wants; the connection is only kept when the request
// allows it too and the connection is younger than max_lifetime.
struct HttpAnswer {
  http::status status = http::status::ok;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  bool keep_alive = true;
};

// What the server does after a handler's call.
struct HttpStep {
  enum class Next {
    read_body,  // (after the header only) read the body, then call on_body()
    answer,     // send `answer`
    close,      // close the connection without an answer
  };
  Next next = Next::close;
  HttpAnswer answer;
};

// The meaning of requests, for HttpServer. Called on the connection's strand, on one of the
// server's I/O threads: a call that blocks (a queue commit) holds that thread.
class RequestHandler {
 public:
  virtual ~RequestHandler() = default;

  // After reading the header ended with `ec`: empty, header_limit, body_limit (a Content-Length
  // over max_body_bytes), end_of_stream (the client closed between requests), beast's timeout,
  // or a malformed request. `peer` is "10.0.0.5:41234" or "[::1]:41234".
  virtual HttpStep on_header(boost::system::error_code ec, const RequestParser& parser, std::string_view peer) = 0;
  // After reading the body ended with `ec`. The parser's body may be moved from.
  virtual HttpStep on_body(boost::system::error_code ec, RequestParser& parser, std::string_view peer) = 0;

  // A connection was admitted / has ended (counting, metrics; an episode of refusals or of
  // failures to accept is over when the next connection is admitted). Any thread of the server.
  virtual void on_connection_opened() {}
  virtual void on_connection_closed() {}
  // A connection was closed at once: max_connections are open.
  virtual void on_refused(std::size_t /*max_connections*/) {}
  // Accepting failed with `ec` (EMFILE...): the server tries again in 100 ms.
  virtual void on_accept_failed(boost::system::error_code /*ec*/) {}
};

// The simple form: an answer from the method and the target (without its query string). HEAD is
// answered without a body. Must not block for long.
struct HttpResponse {
  unsigned status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};
using HttpHandler = std::function<HttpResponse(std::string_view method, std::string_view target)>;

class HttpServer {
 public:
  // Binds `address` and serves `handler`'s requests, which must outlive the server.
  HttpServer(const ListenAddress& address, RequestHandler& handler, HttpServerOptions options = {});
  // Binds `address` and answers each request with `handler` (431 and 413 over the limits, 500
  // when it throws; accepting failures are logged once per episode under "http").
  HttpServer(const ListenAddress& address, HttpHandler handler, HttpServerOptions options = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Starts serving on the server's threads.
  void start();
  // Stops accepting, closes idle connections, lets requests being handled finish and answer for
  // up to stop_grace, then drops what is left and joins the threads. Idempotent.
  void stop();
  // The bound address, e.g. "127.0.0.1:41234" or "[::1]:9464".
  std::string local_address() const;

  struct Impl;  // public so the connections in the .cpp can reach it

 private:
  void listen(const ListenAddress& address);

  std::unique_ptr<Impl> impl_;
};

}  // namespace tank::net
