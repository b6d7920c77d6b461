#pragma once

// An HTTP/1.1 client for one server (Boost.Beast over Boost.Asio, OpenSSL for https://), used
// from one thread at a time: outputs.http's senders each own one.
//
// What it promises:
//   - One connection, kept alive and reused while the server keeps it open; it is opened on the
//     first exchange() and again after any failure or a "Connection: close" answer.
//   - Connecting (resolving, TCP to the server or the proxy, a proxy's CONNECT, the TLS handshake)
//     is bounded by connect_timeout; writing a request and reading its answer by response_timeout.
//   - https:// verifies the server's certificate and name as common/tls.hpp says.
//   - Through a proxy (an http:// URI), https:// is tunnelled with CONNECT and http:// requests
//     are sent in absolute form (RFC 9112, section 3.2.2), the way curl and Go do; the proxy
//     URI's user and password (percent-decoded) go as Proxy-Authorization: Basic.
//   - No TLS close_notify is sent when a connection is closed: an exchange is only done once its
//     answer has been read, so nothing is lost by it, and a dead peer cannot hold a close up.
//
// How it fails: exchange() never throws but std::bad_alloc; every failure closes the connection
// and comes back as an ExchangeResult saying what was being done and why, e.g. "connecting to
// 10.0.0.7:443: Connection refused", "reading the answer of example.com: timed out", "the proxy
// 10.0.0.1:3128 refused to CONNECT to example.com:443: 407 Proxy Authentication Required (...)",
// or the TLS handshake explained by tls::explain_handshake_failure. Nothing is retried here:
// whether and when to try again is the caller's policy.

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "common/tls.hpp"
#include "net/uri.hpp"

namespace tank::net {

struct HttpClientSettings {
  Uri server;                 // http:// or https:// (net::parse_uri)
  std::optional<Uri> proxy;   // an http:// proxy; nullopt: connect directly
  std::chrono::nanoseconds connect_timeout{std::chrono::seconds(5)};
  std::chrono::nanoseconds response_timeout{std::chrono::seconds(30)};
  tls::ClientSettings tls;    // for an https:// server
};

// host:port, an IPv6 address in brackets, without the port when it is the scheme's default and
// `omit_default_port` (the Host header's form).
std::string host_port(const Uri& uri, bool omit_default_port);

class HttpClient {
 public:
  using Request = boost::beast::http::request<boost::beast::http::string_body>;
  using ResponseParser = boost::beast::http::response_parser<boost::beast::http::string_body>;

  struct ExchangeResult {
    enum class Outcome {
      answered,     // the whole answer is in the parser (any status)
      failed,       // no answer: `error` says what was being done and why
      interrupted,  // interrupt() was called: the connection is closed
    };
    Outcome outcome;
    std::string error;
  };

  explicit HttpClient(HttpClientSettings settings);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Loads the TLS client context for an https:// server (nothing for http://). Throws
  // std::runtime_error naming the file that could not be loaded and why (tls::make_client_context).
  void start();

  // A request to the server with `method`: its target (absolute form through a proxy for
  // http://), Host, User-Agent and Proxy-Authorization are set; the caller adds its headers and
  // its body (and calls prepare_payload()).
  Request make_request(boost::beast::http::verb method) const;

  // Sends `request` and reads its answer into `response` (whose limits the caller sets; a longer
  // answer is a failure), connecting first when no connection is open. Blocks the calling thread
  // for at most longest_exchange(). The connection is closed after a failure, or when the answer
  // does not keep it alive.
  ExchangeResult exchange(const Request& request, ResponseParser& response);

  // Makes a running exchange() return `interrupted` as soon as it can, and every later one at
  // once. Safe from any thread.
  void interrupt();

  // Closes the connection, if one is open. Not while exchange() runs.
  void close();

  // The longest exchange() may block: connecting (to each of up to 3 resolved addresses, a
  // proxy's CONNECT, the TLS handshake) and the answer.
  std::chrono::nanoseconds longest_exchange() const;

  // The Host header's value.
  const std::string& host_header() const { return host_header_; }

 private:
  struct Connection;

  HttpClientSettings settings_;
  std::string host_header_;
  std::unique_ptr<Connection> connection_;
  std::atomic<bool> interrupted_{false};
};

}  // namespace tank::net
