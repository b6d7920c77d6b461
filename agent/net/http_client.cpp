#include "net/http_client.hpp"

#include <exception>
#include <stdexcept>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <fmt/format.h>

#include "common/strings.hpp"

namespace tank::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

// Failures of one attempt, with what was being done.
struct AttemptError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Proxy-Authorization: Basic's user-id:password, percent-decoded from the proxy's URI; empty when
// the URI has none.
std::string proxy_credentials(const Uri& proxy) {
  if (proxy.user.empty() && proxy.password.empty()) return {};
  return proxy.password.empty() ? proxy.user : proxy.user + ":" + proxy.password;
}

}  // namespace

std::string host_port(const Uri& u, bool omit_default_port) {
  const bool default_port = u.port == (u.tls ? "443" : "80");
  const std::string host = u.host.find(':') != std::string::npos ? "[" + u.host + "]" : u.host;
  return omit_default_port && default_port ? host : fmt::format("{}:{}", host, u.port);
}

struct HttpClient::Connection {
  explicit Connection(const HttpClientSettings& s) : settings(s) {}

  bool connected() const {
    return plain ? plain->socket().is_open() : secure && secure->next_layer().socket().is_open();
  }

  awaitable<ExchangeResult> exchange(const Request& request, ResponseParser& response, const std::string& host_header) {
    const Uri& url = settings.server;
    std::string doing;
    bool fresh = false;
    try {
      if (!connected()) {
        co_await connect(doing);
        fresh = true;
      }
      doing = fmt::format("sending to {}", host_header);
      buffer.clear();
      if (secure) {
        co_await write_and_read(*secure, request, response, host_header, doing);
      } else {
        co_await write_and_read(*plain, request, response, host_header, doing);
      }
      if (!response.get().keep_alive()) close();
      co_return ExchangeResult{ExchangeResult::Outcome::answered, {}};
    } catch (const AttemptError& e) {
      close();
      co_return ExchangeResult{ExchangeResult::Outcome::failed, e.what()};
    } catch (const boost::system::system_error& e) {
      close();
      std::string hint;
      // TLS 1.3: the client's handshake is over before the server has checked the client's
      // certificate; a refusal arrives as an alert (or a closed connection) at the first read.
      if (fresh && url.tls && e.code() != beast::error::timeout &&
          (e.code().category() == asio::error::get_ssl_category() || e.code() == asio::error::eof ||
           e.code() == asio::ssl::error::stream_truncated || e.code() == asio::error::connection_reset)) {
        hint = settings.tls.cert_file.empty()
                   ? " (does the server require a client certificate? set tls_cert_file and tls_key_file)"
                   : " (does the server trust the CA that signed tls_cert_file?)";
      }
      co_return ExchangeResult{ExchangeResult::Outcome::failed,
                               e.code() == beast::error::timeout
                                   ? fmt::format("{}: timed out", doing)
                                   : fmt::format("{}: {}{}", doing, e.code().message(), hint)};
    }
  }

  template <class Stream>
  awaitable<void> write_and_read(Stream& stream, const Request& request, ResponseParser& response,
                                 const std::string& host_header, std::string& doing) {
    beast::get_lowest_layer(stream).expires_after(settings.response_timeout);
    co_await http::async_write(stream, request, use_awaitable);
    doing = fmt::format("reading the answer of {}", host_header);
    co_await http::async_read(stream, buffer, response, use_awaitable);
  }

  // TCP to the server or the proxy; CONNECT through the proxy for https://; the TLS handshake.
  awaitable<void> connect(std::string& doing) {
    close();
    const Uri& url = settings.server;
    const std::optional<Uri>& proxy = settings.proxy;
    const Uri& first_hop = proxy ? *proxy : url;
    const std::string first_hop_name = host_port(first_hop, false);
    doing = fmt::format("resolving {}", first_hop.host);
    tcp::resolver resolver(io);
    auto endpoints = co_await resolver.async_resolve(first_hop.host, first_hop.port, use_awaitable);
    doing = proxy ? fmt::format("connecting to the proxy {}", first_hop_name)
                  : fmt::format("connecting to {}", first_hop_name);
    beast::tcp_stream stream(io);
    stream.expires_after(settings.connect_timeout);
    co_await stream.async_connect(endpoints, use_awaitable);
    if (proxy && url.tls) {
      doing = fmt::format("asking the proxy {} to CONNECT to {}", first_hop_name, host_port(url, false));
      http::request<http::empty_body> connect_request{http::verb::connect, host_port(url, false), 11};
      connect_request.set(http::field::host, host_port(url, false));
      connect_request.set(http::field::user_agent, "tank");
      if (const std::string credentials = proxy_credentials(*proxy); !credentials.empty()) {
        connect_request.set(http::field::proxy_authorization, "Basic " + strings::base64(credentials));
      }
      co_await http::async_write(stream, connect_request, use_awaitable);
      http::response_parser<http::empty_body> answer;
      answer.skip(true);  // a 2xx answer to CONNECT has no body: the tunnel follows
      beast::flat_buffer connect_buffer;
      co_await http::async_read_header(stream, connect_buffer, answer, use_awaitable);
      const unsigned status = answer.get().result_int();
      if (status / 100 != 2) {
        throw AttemptError(fmt::format("the proxy {} refused to CONNECT to {}: {} {}{}", first_hop_name,
                                       host_port(url, false), status, strings::printable(answer.get().reason(), 128),
                                       status == 407 ? " (it wants credentials: write them in the proxy URL, "
                                                       "http://user:password@host:port)"
                                                     : ""));
      }
    }
    if (!url.tls) {
      plain.emplace(std::move(stream));
      co_return;
    }
    secure.emplace(std::move(stream), *tls_context);
    if (auto error = tls::prepare_client(secure->native_handle(), url.host, settings.tls.verify); !error.empty()) {
      throw AttemptError(error);
    }
    doing = fmt::format("in the TLS handshake with {}", host_port(url, false));
    try {
      co_await secure->async_handshake(asio::ssl::stream_base::client, use_awaitable);
    } catch (const boost::system::system_error& e) {
      if (e.code() == beast::error::timeout) throw;
      throw AttemptError(tls::explain_handshake_failure(secure->native_handle(), e.code(), settings.tls, url.host,
                                                        url.port, "server"));
    }
  }

  // Closes the connection without a TLS close_notify (see the header).
  void close() {
    beast::error_code ec;
    if (plain) {
      plain->socket().shutdown(tcp::socket::shutdown_both, ec);
      plain->close();
      plain.reset();
    }
    if (secure) {
      secure->next_layer().socket().shutdown(tcp::socket::shutdown_both, ec);
      secure->next_layer().close();
      secure.reset();
    }
  }

  const HttpClientSettings& settings;
  asio::io_context io;
  std::optional<asio::ssl::context> tls_context;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  beast::flat_buffer buffer;
};

HttpClient::HttpClient(HttpClientSettings settings)
    : settings_(std::move(settings)),
      host_header_(host_port(settings_.server, true)),
      connection_(std::make_unique<Connection>(settings_)) {}

HttpClient::~HttpClient() = default;

void HttpClient::start() {
  if (settings_.server.tls) connection_->tls_context.emplace(tls::make_client_context(settings_.tls));
}

HttpClient::Request HttpClient::make_request(http::verb method) const {
  const Uri& url = settings_.server;
  Request request;
  request.method(method);
  // Through a proxy, plain HTTP goes in absolute form (RFC 9112, section 3.2.2).
  request.target(settings_.proxy && !url.tls ? fmt::format("http://{}{}", host_header_, url.target) : url.target);
  request.version(11);
  request.set(http::field::host, host_header_);
  request.set(http::field::user_agent, "tank");
  if (settings_.proxy && !url.tls) {
    if (const std::string credentials = proxy_credentials(*settings_.proxy); !credentials.empty()) {
      request.set(http::field::proxy_authorization, "Basic " + strings::base64(credentials));
    }
  }
  return request;
}

HttpClient::ExchangeResult HttpClient::exchange(const Request& request, ResponseParser& response) {
  Connection& c = *connection_;
  c.io.restart();
  // After restart(): an interrupt() from here on stops the run below.
  if (interrupted_) return {ExchangeResult::Outcome::interrupted, "stopping"};
  std::optional<ExchangeResult> result;
  asio::co_spawn(c.io, c.exchange(request, response, host_header_),
                 [&](std::exception_ptr failure, ExchangeResult r) {
                   if (failure) {
                     try {
                       std::rethrow_exception(failure);
                     } catch (const std::exception& e) {
                       r = {ExchangeResult::Outcome::failed, e.what()};
                     }
                   }
                   result = std::move(r);
                 });
  c.io.run();
  if (!result) {
    c.close();
    return {ExchangeResult::Outcome::interrupted, "stopping"};
  }
  return *result;
}

void HttpClient::interrupt() {
  interrupted_ = true;
  connection_->io.stop();
}

void HttpClient::close() { connection_->close(); }

std::chrono::nanoseconds HttpClient::longest_exchange() const {
  return 3 * settings_.connect_timeout + 2 * settings_.response_timeout;
}

}  // namespace tank::net
