#include "metrics/http_server.hpp"

#include <atomic>
#include <optional>
#include <stdexcept>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "common/log.hpp"

namespace tank::metrics {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

std::string format_endpoint(const tcp::endpoint& ep) {
  if (ep.address().is_v6()) return fmt::format("[{}]:{}", ep.address().to_string(), ep.port());
  return fmt::format("{}:{}", ep.address().to_string(), ep.port());
}

}  // namespace

struct HttpServer::Impl {
  // Declared before `io`: sessions still queued in `io` decrement it when `io` is destroyed.
  std::atomic<std::size_t> connections{0};
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  asio::steady_timer retry_timer{io};
  log::Episode accept_episode{"http", log::Level::error};
  HttpHandler handler;
  HttpServerLimits limits;
  std::thread thread;
  std::string address;
  bool stopped = false;

  void accept();
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, HttpServer::Impl& server)
      : stream_(std::move(socket)), server_(server), born_(std::chrono::steady_clock::now()) {}
  ~Session() { --server_.connections; }

  void run() { read(); }

 private:
  void read() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_.limits.max_header_bytes));
    parser_->body_limit(64 * 1024);
    stream_.expires_after(server_.limits.idle_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::header_limit) {
      respond(HttpResponse{431, "text/plain; charset=utf-8", "request header too large\n", {}}, false);
      return;
    }
    if (ec == http::error::body_limit) {
      respond(HttpResponse{413, "text/plain; charset=utf-8", "request body too large\n", {}}, false);
      return;
    }
    if (ec) {
      // end_of_stream, timeout, reset, a malformed request: close quietly.
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
      return;
    }
    auto& req = parser_->get();
    std::string_view target(req.target().data(), req.target().size());
    if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
    HttpResponse response;
    try {
      response = server_.handler(std::string_view(req.method_string().data(), req.method_string().size()), target);
    } catch (const std::exception& e) {
      log::error("http", "handler for {} failed: {}", target, e.what());
      response = HttpResponse{500, "text/plain; charset=utf-8", "internal error\n", {}};
    }
    if (req.method() == http::verb::head) response.body.clear();
    // A connection may not be held forever by a client that keeps it alive.
    bool keep_alive = req.keep_alive() && std::chrono::steady_clock::now() - born_ < server_.limits.max_lifetime;
    respond(std::move(response), keep_alive);
  }

  void respond(HttpResponse response, bool keep_alive) {
    response_ = {};
    response_.version(11);
    response_.result(static_cast<http::status>(response.status));
    response_.set(http::field::server, "tank");
    response_.set(http::field::content_type, response.content_type);
    for (const auto& [name, value] : response.headers) response_.set(name, value);
    response_.body() = std::move(response.body);
    response_.keep_alive(keep_alive);
    response_.prepare_payload();
    http::async_write(stream_, response_, [self = shared_from_this(), keep_alive](beast::error_code ec, std::size_t) {
      if (ec || !keep_alive) {
        beast::error_code ignored;
        self->stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
        return;
      }
      self->read();
    });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> response_;
  HttpServer::Impl& server_;
  std::chrono::steady_clock::time_point born_;
};

}  // namespace

void HttpServer::Impl::accept() {
  acceptor.async_accept(asio::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
    if (ec) {
      // EMFILE and the like: accepting again at once would spin; wait a little.
      accept_episode.occur(fmt::format("accepting connections failed: {}; retrying", ec.message()));
      retry_timer.expires_after(std::chrono::milliseconds(100));
      retry_timer.async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec && acceptor.is_open()) accept();
      });
      return;
    }
    accept_episode.end("accepting connections again");
    if (connections.load() >= limits.max_connections) {
      beast::error_code ignored;
      socket.close(ignored);
    } else {
      ++connections;
      std::make_shared<Session>(std::move(socket), *this)->run();
    }
    accept();
  });
}

HttpServer::HttpServer(const ListenAddress& address, HttpHandler handler, HttpServerLimits limits)
    : impl_(std::make_unique<Impl>()) {
  impl_->handler = std::move(handler);
  impl_->limits = limits;
  std::string wanted = address.host.find(':') != std::string::npos
                           ? fmt::format("[{}]:{}", address.host, address.port)
                           : fmt::format("{}:{}", address.host, address.port);
  beast::error_code ec;
  auto ip = asio::ip::make_address(address.host, ec);
  if (ec) throw std::runtime_error(fmt::format("cannot listen on {}: {}", wanted, ec.message()));
  tcp::endpoint endpoint(ip, address.port);
  auto fail = [&](const beast::error_code& e) {
    std::string hint = e == asio::error::address_in_use ? " (another process uses it; pick another port)" : "";
    throw std::runtime_error(fmt::format("cannot listen on {}: {}{}", wanted, e.message(), hint));
  };
  impl_->acceptor.open(endpoint.protocol(), ec);
  if (ec) fail(ec);
  impl_->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  impl_->acceptor.bind(endpoint, ec);
  if (ec) fail(ec);
  impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) fail(ec);
  impl_->address = format_endpoint(impl_->acceptor.local_endpoint());
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  impl_->accept();
  impl_->thread = std::thread([this] { impl_->io.run(); });
}

void HttpServer::stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  // Close the acceptor on the I/O thread (it is not thread-safe), then stop: connections still
  // open are dropped when the io_context goes.
  if (impl_->thread.joinable()) {
    asio::post(impl_->io, [this] {
      beast::error_code ignored;
      impl_->acceptor.close(ignored);
      impl_->io.stop();
    });
    impl_->thread.join();
  } else {
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
  }
}

std::string HttpServer::local_address() const { return impl_->address; }

}  // namespace tank::metrics
