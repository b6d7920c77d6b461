#include "engine/control.hpp"

#include <sys/stat.h>

#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <fmt/format.h>


namespace tank::engine {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using local = asio::local::stream_protocol;

constexpr std::size_t kMaxRequestBytes = 1 << 20;
constexpr auto kClientDeadline = std::chrono::seconds(10);  // to send a request

}  // namespace

struct ControlServer::Impl {
  std::filesystem::path path;
  Handler handler;
  asio::io_context io;
  local::acceptor acceptor{io};
  std::thread thread;
  bool stopped = false;

  void accept() {
    acceptor.async_accept([this](boost::system::error_code ec, local::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      if (!ec) serve(std::make_shared<local::socket>(std::move(socket)));
      accept();
    });
  }

  void serve(std::shared_ptr<local::socket> socket) {
    auto buffer = std::make_shared<asio::streambuf>(kMaxRequestBytes);
    auto timer = std::make_shared<asio::steady_timer>(io, kClientDeadline);
    timer->async_wait([socket](boost::system::error_code ec) {
      if (!ec) socket->close();
    });
    asio::async_read_until(*socket, *buffer, '\n', [this, socket, buffer, timer](boost::system::error_code ec, std::size_t n) {
      timer->cancel();
      if (ec) return;  // the client went away, sent too much or too slowly
      std::string line(asio::buffers_begin(buffer->data()), asio::buffers_begin(buffer->data()) + static_cast<long>(n));
      auto reply = std::make_shared<std::string>(json::serialize(handle(line)) + "\n");
      asio::async_write(*socket, asio::buffer(*reply), [socket, reply](boost::system::error_code, std::size_t) {
        boost::system::error_code ignored;
        socket->shutdown(local::socket::shutdown_both, ignored);
      });
    });
  }

  json::object handle(const std::string& line) {
    boost::system::error_code ec;
    json::value request = json::parse(line, ec);
    if (ec || !request.is_object()) {
      return json::object{{"ok", false}, {"error", "the request is not a JSON object"}};
    }
    try {
      return handler(request.as_object());
    } catch (const std::exception& e) {
      return json::object{{"ok", false}, {"error", e.what()}};
    }
  }
};

ControlServer::ControlServer(std::filesystem::path path, Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->path = std::move(path);
  impl_->handler = std::move(handler);
  std::error_code remove_ec;
  std::filesystem::remove(impl_->path, remove_ec);  // a socket left by a killed agent
  boost::system::error_code ec;
  local::endpoint endpoint(impl_->path.string());
  impl_->acceptor.open(endpoint.protocol(), ec);
  if (!ec) {
    // Created 0600 from the start: the umask applies to bind(), and a chmod after it would leave
    // a window in which others could connect.
    const mode_t old = ::umask(077);
    impl_->acceptor.bind(endpoint, ec);
    ::umask(old);
  }
  if (!ec) impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw std::runtime_error(fmt::format("cannot listen on the control socket {}: {} (check that the data directory "
                                         "is writable and its path shorter than 100 characters)",
                                         impl_->path.string(), ec.message()));
  }
}

ControlServer::~ControlServer() { stop(); }

void ControlServer::start() {
  impl_->accept();
  impl_->thread = std::thread([this] { impl_->io.run(); });
}

void ControlServer::stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  asio::post(impl_->io, [this] {
    boost::system::error_code ignored;
    impl_->acceptor.close(ignored);
  });
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  std::error_code ec;
  std::filesystem::remove(impl_->path, ec);
}

ControlReply control_request(const std::filesystem::path& path, const json::object& request,
                             std::chrono::milliseconds timeout) {
  ControlReply out;
  std::error_code exists_ec;
  if (!std::filesystem::exists(path, exists_ec)) return out;  // no_agent
  asio::io_context io;
  local::socket socket(io);
  boost::system::error_code ec;
  socket.connect(local::endpoint(path.string()), ec);
  if (ec == asio::error::connection_refused || ec == boost::system::errc::no_such_file_or_directory) return out;
  if (ec) {
    out.status = ControlStatus::failed;
    out.error = fmt::format("cannot connect to the agent at {}: {}", path.string(), ec.message());
    return out;
  }
  std::string text = json::serialize(request) + "\n";
  asio::streambuf buffer(kMaxRequestBytes * 16);
  bool timed_out = false;
  asio::steady_timer timer(io, timeout);
  timer.async_wait([&](boost::system::error_code wait_ec) {
    if (!wait_ec) {
      timed_out = true;
      socket.close();
    }
  });
  boost::system::error_code io_ec;
  std::size_t n = 0;
  asio::async_write(socket, asio::buffer(text), [&](boost::system::error_code wec, std::size_t) {
    if (wec) {
      io_ec = wec;
      timer.cancel();
      return;
    }
    asio::async_read_until(socket, buffer, '\n', [&](boost::system::error_code rec, std::size_t got) {
      io_ec = rec;
      n = got;
      timer.cancel();
    });
  });
  io.run();
  if (timed_out || io_ec) {
    out.status = ControlStatus::failed;
    out.error = timed_out ? fmt::format("the agent did not answer within {} s", timeout.count() / 1000)
                          : fmt::format("talking to the agent failed: {}", io_ec.message());
    return out;
  }
  std::string line(asio::buffers_begin(buffer.data()), asio::buffers_begin(buffer.data()) + static_cast<long>(n));
  json::value reply = json::parse(line, ec);
  if (ec || !reply.is_object()) {
    out.status = ControlStatus::failed;
    out.error = "the agent's reply is not a JSON object";
    return out;
  }
  out.status = ControlStatus::answered;
  out.reply = std::move(reply.as_object());
  return out;
}

}  // namespace tank::engine
