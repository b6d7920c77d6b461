#include "net/http_server.hpp"

#include <algorithm>
#include <array>
#include <condition_variable>
#include <list>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "common/io_beat.hpp"
#include "common/log.hpp"

namespace tank::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

std::string format_endpoint(const tcp::endpoint& ep) {
  if (ep.address().is_v6()) return fmt::format("[{}]:{}", ep.address().to_string(), ep.port());
  return fmt::format("{}:{}", ep.address().to_string(), ep.port());
}

HttpStep answer(http::status status, std::string body, bool keep_alive) {
  HttpStep step;
  step.next = HttpStep::Next::answer;
  step.answer.status = status;
  step.answer.body = std::move(body);
  step.answer.keep_alive = keep_alive;
  return step;
}

// HttpServer's simple form (the metrics endpoint): the whole request is read, then `handler`
// answers it.
class FunctionHandler final : public RequestHandler {
 public:
  explicit FunctionHandler(HttpHandler handler) : handler_(std::move(handler)) {}

  HttpStep on_header(boost::system::error_code ec, const RequestParser&, std::string_view) override {
    if (ec) return refuse(ec);
    HttpStep step;
    step.next = HttpStep::Next::read_body;
    return step;
  }

  HttpStep on_body(boost::system::error_code ec, RequestParser& parser, std::string_view) override {
    if (ec) return refuse(ec);
    auto& req = parser.get();
    std::string_view target(req.target().data(), req.target().size());
    if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
    HttpResponse response;
    try {
      response = handler_(std::string_view(req.method_string().data(), req.method_string().size()), target);
    } catch (const std::exception& e) {
      log::error("http", "handler for {} failed: {}", target, e.what());
      response = HttpResponse{500, "text/plain; charset=utf-8", "internal error\n", {}};
    }
    if (req.method() == http::verb::head) response.body.clear();
    HttpStep step = answer(static_cast<http::status>(response.status), std::move(response.body), true);
    step.answer.content_type = std::move(response.content_type);
    step.answer.headers = std::move(response.headers);
    return step;
  }

  void on_accept_failed(boost::system::error_code ec) override {
    // EMFILE and the like: the server waits a little before accepting again.
    accept_episode_.occur(fmt::format("accepting connections failed: {}; retrying", ec.message()));
  }
  void on_connection_opened() override { accept_episode_.end("accepting connections again"); }

 private:
  static HttpStep refuse(boost::system::error_code ec) {
    if (ec == http::error::header_limit) {
      return answer(http::status::request_header_fields_too_large, "request header too large\n", false);
    }
    if (ec == http::error::body_limit) return answer(http::status::payload_too_large, "request body too large\n", false);
    // end_of_stream, timeout, reset, a malformed request: close quietly.
    return HttpStep{};
  }

  HttpHandler handler_;
  log::Episode accept_episode_{"http", log::Level::error};
};

class Connection;

}  // namespace

struct HttpServer::Impl {
  Impl(RequestHandler& h, HttpServerOptions o) : handler(h), options(std::move(o)) {}

  // Declared before `io`: connections still queued in `io` reach them when `io` is destroyed.
  RequestHandler& handler;
  std::unique_ptr<RequestHandler> owned_handler;
  HttpServerOptions options;
  std::mutex mutex;
  std::condition_variable ended;
  std::size_t active = 0;
  std::list<std::weak_ptr<Connection>> connections;
  // The concurrency hint is the number of threads that run it: with 1, Asio's scheduler would not
  // wake a second thread for handlers that are ready (one thread would serve every connection).
  asio::io_context io{static_cast<int>(std::max(1u, options.threads))};
  std::optional<liveness::IoBeat> beat;
  tcp::acceptor acceptor{asio::make_strand(io)};
  asio::steady_timer retry_timer{io};
  std::vector<std::thread> threads;
  std::string address;
  bool stopped = false;

  void accept();
  void connection_ended() {
    std::lock_guard lock(mutex);
    --active;
    ended.notify_all();
  }
};

namespace {

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, HttpServer::Impl& server, std::string peer)
      : stream_(std::move(socket)), server_(server), peer_(std::move(peer)), born_(SteadyClock::now()) {
    server_.handler.on_connection_opened();
  }
  ~Connection() {
    server_.handler.on_connection_closed();
    server_.connection_ended();
  }

  void start() { read_header(); }
  auto executor() { return stream_.get_executor(); }
  void shut_down() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
  }

 private:
  // What read() reads up to: the end of the header, or the end of the whole request.
  enum class Part { header, body };

  void read_header() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_.options.max_header_bytes));
    parser_->body_limit(server_.options.max_body_bytes);
    request_started_ = SteadyClock::now();
    read(Part::header);
  }

  // Beast's async_read_header and async_read arm the timer once for the whole header or body: a
  // deadline, which a slow link can never meet. This is their loop (http::async_read_some's
  // parsing, reading and end-of-stream handling) with the timer armed again before every read.
  void read(Part part) {
    parser_->eager(part == Part::body);
    auto parsed = [&] { return part == Part::header ? parser_->is_header_done() : parser_->is_done(); };
    while (!parsed() && buffer_.size() > 0) {
      beast::error_code ec;
      const std::size_t used = parser_->put(buffer_.data(), ec);
      buffer_.consume(used);
      if (ec == http::error::need_more) break;
      if (ec) return read_done(part, ec);
      if (used == 0) break;
    }
    if (parsed()) return read_done(part, {});
    auto expiry = SteadyClock::now() + server_.options.idle_timeout;
    if (server_.options.request_timeout.count() > 0) {
      expiry = std::min(expiry, request_started_ + server_.options.request_timeout);
    }
    stream_.expires_at(std::chrono::time_point_cast<SteadyClock::duration>(expiry));
    auto space = buffer_.prepare(beast::read_size(buffer_, 65536));
    stream_.async_read_some(space, [self = shared_from_this(), part](beast::error_code ec, std::size_t n) {
      self->buffer_.commit(n);
      if (ec == asio::error::eof) {
        // Before any byte of a request, the end is the client's goodbye; in the middle of one,
        // put_eof() says it is a partial message.
        if (!self->parser_->got_some()) return self->read_done(part, http::error::end_of_stream);
        ec = {};
        self->parser_->put_eof(ec);
        return self->read_done(part, ec);
      }
      if (ec) return self->read_done(part, ec);
      self->read(part);
    });
  }

  void read_done(Part part, beast::error_code ec) {
    HttpStep step = part == Part::header ? server_.handler.on_header(ec, *parser_, peer_)
                                         : server_.handler.on_body(ec, *parser_, peer_);
    switch (step.next) {
      case HttpStep::Next::read_body:
        if (part == Part::header && beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
          continue_then_read_body();
        } else {
          read(Part::body);
        }
        return;
      case HttpStep::Next::answer:
        respond(std::move(step.answer));
        return;
      case HttpStep::Next::close:
        shut_down();
        return;
    }
  }

  void continue_then_read_body() {
    continue_ = {};
    continue_.version(11);
    continue_.result(http::status::continue_);
    stream_.expires_after(server_.options.idle_timeout);
    http::async_write(stream_, continue_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->shut_down();
      self->read(Part::body);
    });
  }

  void respond(HttpAnswer answer) {
    const auto& options = server_.options;
    // A connection may not be held forever by a client that keeps it alive.
    const bool keep_alive = answer.keep_alive && parser_->get().keep_alive() &&
                            (options.max_lifetime.count() == 0 || SteadyClock::now() - born_ < options.max_lifetime);
    response_ = {};
    response_.version(11);
    response_.result(answer.status);
    response_.set(http::field::server, "tank");
    response_.set(http::field::content_type, answer.content_type);
    for (const auto& [name, value] : answer.headers) response_.set(name, value);
    response_.body() = std::move(answer.body);
    response_.keep_alive(keep_alive);
    response_.prepare_payload();
    stream_.expires_after(options.idle_timeout);  // a client that reads nothing is closed too
    http::async_write(stream_, response_, [self = shared_from_this(), keep_alive](beast::error_code ec, std::size_t) {
      if (ec) return self->shut_down();
      if (!keep_alive) return self->linger_then_close();
      self->read_header();
    });
  }

  // Stops sending, reads and discards what the client still sends for `linger`, then closes.
  void linger_then_close() {
    const auto linger = server_.options.linger;
    if (linger.count() == 0) return shut_down();
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(linger);
    auto drain = std::make_shared<std::function<void(beast::error_code, std::size_t)>>();
    auto scratch = std::make_shared<std::array<char, 16384>>();
    auto total = std::make_shared<std::size_t>(0);
    *drain = [self = shared_from_this(), drain, scratch, total](beast::error_code ec, std::size_t n) {
      *total += n;
      if (ec || *total > (8u << 20)) {
        self->shut_down();
        *drain = nullptr;  // break the cycle
        return;
      }
      self->stream_.async_read_some(asio::buffer(*scratch), *drain);
    };
    stream_.async_read_some(asio::buffer(*scratch), *drain);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<RequestParser> parser_;
  http::response<http::empty_body> continue_;
  http::response<http::string_body> response_;
  HttpServer::Impl& server_;
  std::string peer_;
  SteadyClock::time_point born_;
  SteadyClock::time_point request_started_;
};

}  // namespace

void HttpServer::Impl::accept() {
  acceptor.async_accept(asio::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
    if (ec) {
      // EMFILE and the like: accepting again at once would spin; wait a little.
      handler.on_accept_failed(ec);
      retry_timer.expires_after(std::chrono::milliseconds(100));
      retry_timer.async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec && acceptor.is_open()) accept();
      });
      return;
    }
    bool admitted = false;
    {
      std::lock_guard lock(mutex);
      if (active < options.max_connections) {
        ++active;
        admitted = true;
      }
    }
    if (!admitted) {
      handler.on_refused(options.max_connections);
      beast::error_code ignored;
      socket.close(ignored);
    } else {
      beast::error_code peer_ec;
      const auto remote = socket.remote_endpoint(peer_ec);
      auto connection = std::make_shared<Connection>(std::move(socket), *this,
                                                     peer_ec ? std::string("unknown") : format_endpoint(remote));
      {
        std::lock_guard lock(mutex);
        connections.remove_if([](const std::weak_ptr<Connection>& w) { return w.expired(); });
        connections.push_back(connection);
      }
      connection->start();
    }
    accept();
  });
}

HttpServer::HttpServer(const ListenAddress& address, RequestHandler& handler, HttpServerOptions options)
    : impl_(std::make_unique<Impl>(handler, std::move(options))) {
  listen(address);
}

HttpServer::HttpServer(const ListenAddress& address, HttpHandler handler, HttpServerOptions options) {
  auto owned = std::make_unique<FunctionHandler>(std::move(handler));
  impl_ = std::make_unique<Impl>(*owned, std::move(options));
  impl_->owned_handler = std::move(owned);
  listen(address);
}

void HttpServer::listen(const ListenAddress& address) {
  if (!impl_->options.beat.empty()) impl_->beat.emplace(impl_->io, impl_->options.beat);
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
  if (impl_->beat) impl_->beat->start();
  for (unsigned i = 0; i < std::max(1u, impl_->options.threads); ++i) {
    impl_->threads.emplace_back([this] { impl_->io.run(); });
  }
}

void HttpServer::stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  // Close the acceptor on its strand (it is not thread-safe).
  if (impl_->threads.empty()) {
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
    return;
  }
  asio::post(impl_->acceptor.get_executor(), [this] {
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
  });
  // A request being handled finishes and is answered; idle connections are closed.
  std::vector<std::shared_ptr<Connection>> live;
  {
    std::lock_guard lock(impl_->mutex);
    for (auto& w : impl_->connections) {
      if (auto c = w.lock()) live.push_back(std::move(c));
    }
  }
  for (auto& c : live) asio::post(c->executor(), [c] { c->shut_down(); });
  live.clear();
  {
    std::unique_lock lock(impl_->mutex);
    impl_->ended.wait_for(lock, impl_->options.stop_grace, [this] { return impl_->active == 0; });
  }
  impl_->io.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
  // The close posted above may not have run before io.stop(); no thread runs the context now.
  beast::error_code ignored;
  impl_->acceptor.close(ignored);
  if (impl_->beat) impl_->beat->stop();
}

std::string HttpServer::local_address() const { return impl_->address; }

}  // namespace tank::net
