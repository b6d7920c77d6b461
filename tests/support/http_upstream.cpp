#include "support/http_upstream.hpp"

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <zlib.h>
#include <zstd.h>

#include <catch2/catch.hpp>

#include "support/helpers.hpp"

#include <atomic>
#include <condition_variable>
#include <optional>
#include <random>
#include <stdexcept>

namespace tank::test {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

std::shared_ptr<ssl::context> make_server_context(const HttpUpstream::Tls& tls) {
  auto c = std::make_shared<ssl::context>(ssl::context::tls_server);
  c->use_certificate_chain_file(tls.cert_file.string());
  c->use_private_key_file(tls.key_file.string(), ssl::context::pem);
  if (!tls.client_ca_file.empty()) {
    c->load_verify_file(tls.client_ca_file.string());
    c->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  }
  return c;
}

std::string peer_common_name(SSL* ssl) {
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) return {};
  char name[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, name, sizeof name);
  X509_free(cert);
  return name;
}

}  // namespace

std::string decompress_body(const std::string& encoding, const std::string& in) {
  if (encoding == "zstd") {
    std::string out;
    ZSTD_DCtx* ctx = ZSTD_createDCtx();
    ZSTD_inBuffer input{in.data(), in.size(), 0};
    std::string chunk(1 << 16, '\0');
    while (input.pos < input.size) {
      ZSTD_outBuffer output{chunk.data(), chunk.size(), 0};
      const std::size_t rc = ZSTD_decompressStream(ctx, &output, &input);
      if (ZSTD_isError(rc)) {
        ZSTD_freeDCtx(ctx);
        throw std::runtime_error("bad zstd body");
      }
      out.append(chunk.data(), output.pos);
    }
    ZSTD_freeDCtx(ctx);
    return out;
  }
  if (encoding == "gzip") {
    z_stream z{};
    inflateInit2(&z, 15 + 32);
    std::string out;
    std::string chunk(1 << 16, '\0');
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z.avail_in = static_cast<uInt>(in.size());
    int rc = Z_OK;
    while (rc != Z_STREAM_END) {
      z.next_out = reinterpret_cast<Bytef*>(chunk.data());
      z.avail_out = static_cast<uInt>(chunk.size());
      rc = inflate(&z, Z_NO_FLUSH);
      if (rc != Z_OK && rc != Z_STREAM_END) {
        inflateEnd(&z);
        throw std::runtime_error("bad gzip body");
      }
      out.append(chunk.data(), chunk.size() - z.avail_out);
    }
    inflateEnd(&z);
    return out;
  }
  return in;
}


std::string HttpUpstream::Received::header(const std::string& name) const {
  for (const auto& [k, v] : headers) {
    if (beast::iequals(k, name)) return v;
  }
  return {};
}

struct HttpUpstream::Impl {
  asio::io_context io;
  // On a port outside the ephemeral range, so that after down() no outgoing connection holds it.
  tcp::acceptor acceptor{io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(free_tcp_port()))};
  tcp::endpoint endpoint = acceptor.local_endpoint();
  std::thread accept_thread;
  mutable std::mutex mutex;
  std::condition_variable changed;  // `down` or `stopping` changed
  std::deque<Reply> script;
  std::vector<Received> received;
  // One per connection; finished ones are joined at the next accept, so a long run with many
  // reconnections holds neither threads nor descriptors.
  struct Connection {
    std::thread thread;
    std::shared_ptr<tcp::socket> socket;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Connection> connections;
  std::atomic<bool> stopping{false};
  bool down = false;
  bool listening = true;
  std::shared_ptr<ssl::context> tls;  // null: plain HTTP
  std::size_t failed_handshakes = 0;
  std::optional<HttpUpstream::Chaos> chaos;
  std::mt19937 random{1};

  void serve(std::shared_ptr<tcp::socket> socket) {
    std::shared_ptr<ssl::context> context;
    {
      std::lock_guard lock(mutex);
      context = tls;
    }
    if (!context) return exchange(*socket, *socket, "");
    ssl::stream<tcp::socket&> stream(*socket, *context);
    beast::error_code ec;
    stream.handshake(ssl::stream_base::server, ec);
    if (ec) {
      std::lock_guard lock(mutex);
      ++failed_handshakes;
      return;
    }
    exchange(stream, *socket, peer_common_name(stream.native_handle()));
  }

  template <class Stream>
  void exchange(Stream& stream, tcp::socket& raw, const std::string& client_subject) {
    auto* socket = &raw;
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(256 << 20);
      beast::error_code ec;
      http::read(stream, buffer, parser, ec);
      if (ec) return;
      auto& req = parser.get();
      const auto at = std::chrono::steady_clock::now();
      Reply reply;
      {
        std::lock_guard lock(mutex);
        if (!script.empty()) {
          reply = script.front();
          script.pop_front();
        } else if (chaos) {
          double x = std::uniform_real_distribution<double>(0, 1)(random);
          auto take = [&](double p) {
            x -= p;
            return x < 0;
          };
          if (take(chaos->status_503)) {
            reply.status = 503;
            reply.body = "overloaded";
          } else if (take(chaos->status_429)) {
            reply.status = 429;
            reply.retry_after = "0";
          } else if (take(chaos->reset)) {
            reply.reset = true;
          } else if (take(chaos->slow)) {
            reply.delay = chaos->slow_delay;
          } else if (take(chaos->status_400)) {
            reply.status = 400;
            reply.body = "refused by the chaos upstream";
          }
        }
      }
      if (reply.delay.count() > 0) std::this_thread::sleep_for(reply.delay);  // the upstream is slow
      Received r;
      r.at = at;
      r.key = std::string(req["Idempotency-Key"]);
      r.encoding = std::string(req[http::field::content_encoding]);
      for (const auto& f : req) r.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
      try {
        r.body = decompress_body(r.encoding, req.body());
      } catch (const std::exception& e) {
        r.body = std::string("UNREADABLE: ") + e.what();
      }
      r.client_subject = client_subject;
      r.answered = reply.reset || !reply.raw.empty() ? 0 : reply.status;
      {
        std::lock_guard lock(mutex);
        received.push_back(std::move(r));
      }
      if (!reply.raw.empty()) {
        asio::write(stream, asio::buffer(reply.raw), ec);
        socket->close(ec);
        return;
      }
      if (reply.reset) {
        socket->set_option(asio::socket_base::linger(true, 0), ec);  // RST, not FIN
        socket->close(ec);
        return;
      }
      http::response<http::string_body> res{static_cast<http::status>(reply.status), 11};
      res.set(http::field::content_type, "text/plain");
      if (!reply.retry_after.empty()) res.set(http::field::retry_after, reply.retry_after);
      res.body() = reply.body;
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      http::write(stream, res, ec);
      if (ec || !req.keep_alive()) return;
    }
  }
};

HttpUpstream::HttpUpstream(const Tls& tls) : HttpUpstream() { set_tls(tls); }

void HttpUpstream::set_tls(const Tls& tls) {
  auto context = make_server_context(tls);
  std::lock_guard lock(impl_->mutex);
  impl_->tls = std::move(context);
}

std::size_t HttpUpstream::failed_handshakes() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->failed_handshakes;
}

HttpUpstream::HttpUpstream() : impl_(std::make_unique<Impl>()) {
  impl_->accept_thread = std::thread([this] {
    auto& im = *impl_;
    for (;;) {
      auto socket = std::make_shared<tcp::socket>(im.io);
      beast::error_code ec;
      im.acceptor.accept(*socket, ec);
      if (im.stopping) return;
      std::unique_lock lock(im.mutex);
      if (im.down) {
        // Down: no listener (connections are refused) until up() or the end.
        socket->close(ec);
        im.acceptor.close(ec);
        im.listening = false;
        im.changed.notify_all();
        im.changed.wait(lock, [&] { return !im.down || im.stopping; });
        if (im.stopping) return;
        im.acceptor.open(im.endpoint.protocol());
        im.acceptor.set_option(asio::socket_base::reuse_address(true));
        im.acceptor.bind(im.endpoint);
        im.acceptor.listen();
        im.listening = true;
        im.changed.notify_all();
        continue;
      }
      if (ec) return;
      for (auto it = im.connections.begin(); it != im.connections.end();) {
        if (*it->done) {
          it->thread.join();
          it = im.connections.erase(it);
        } else {
          ++it;
        }
      }
      auto done = std::make_shared<std::atomic<bool>>(false);
      im.connections.push_back({std::thread([this, socket, done] {
                                  impl_->serve(socket);
                                  beast::error_code ignored;
                                  socket->close(ignored);
                                  *done = true;
                                }),
                                socket, done});
    }
  });
}

HttpUpstream::~HttpUpstream() {
  beast::error_code ec;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->changed.notify_all();
  {
    // Wake the blocking accept() with a connection of our own; it then sees `stopping`.
    tcp::socket poke(impl_->io);
    poke.connect(impl_->endpoint, ec);
    impl_->accept_thread.join();
  }
  impl_->acceptor.close(ec);
  reset_connections();
  std::vector<Impl::Connection> connections;
  {
    std::lock_guard lock(impl_->mutex);
    connections.swap(impl_->connections);
  }
  for (auto& c : connections) c.thread.join();
}

void HttpUpstream::reset_connections() {
  std::lock_guard lock(impl_->mutex);
  beast::error_code ec;
  for (auto& c : impl_->connections) {
    if (!*c.done) c.socket->shutdown(tcp::socket::shutdown_both, ec);  // wakes its thread's read
  }
}

void HttpUpstream::down() {
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->down) return;
    impl_->down = true;
  }
  beast::error_code ec;
  tcp::socket poke(impl_->io);  // wakes accept(), which then closes the listener
  poke.connect(impl_->endpoint, ec);
  {
    std::unique_lock lock(impl_->mutex);
    REQUIRE(impl_->changed.wait_for(lock, std::chrono::seconds(10), [&] { return !impl_->listening; }));
  }
  reset_connections();
}

void HttpUpstream::up() {
  std::unique_lock lock(impl_->mutex);
  impl_->down = false;
  impl_->changed.notify_all();
  REQUIRE(impl_->changed.wait_for(lock, std::chrono::seconds(10), [&] { return impl_->listening; }));
}

std::string HttpUpstream::url(const std::string& path) const {
  std::lock_guard lock(impl_->mutex);
  return fmt::format("{}://127.0.0.1:{}{}", impl_->tls ? "https" : "http", impl_->endpoint.port(), path);
}

void HttpUpstream::chaos(const Chaos& chaos) {
  std::lock_guard lock(impl_->mutex);
  impl_->chaos = chaos;
  impl_->random.seed(chaos.seed);
}

void HttpUpstream::script(std::vector<Reply> replies) {
  std::lock_guard lock(impl_->mutex);
  impl_->script.assign(replies.begin(), replies.end());
}

std::vector<HttpUpstream::Received> HttpUpstream::received() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->received;
}

}  // namespace tank::test
