#include "input/datagram_server.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <fmt/format.h>

#include "common/io_beat.hpp"
#include "common/log.hpp"
#include "common/units.hpp"
#include "input/batch.hpp"
#include "input/commit.hpp"
#include "input/handover.hpp"
#include "input/input_metrics.hpp"
#include "input/socket_common.hpp"
#include "queue/queue.hpp"

namespace tank::input {
namespace {

namespace asio = boost::asio;
using udp = asio::ip::udp;
using unix_datagram = asio::local::datagram_protocol;

template <class Protocol>
class DatagramInput final : public plugin::Input {
 public:
  using Endpoint = typename Protocol::endpoint;

  DatagramInput(const DatagramSettings& settings, const plugin::InputContext& context, Endpoint endpoint,
                std::string where)
      : settings_(settings),
        queue_side_(context, settings.type, "holding the data and retrying"),
        endpoint_(std::move(endpoint)),
        where_(std::move(where)),
        handover_key_(settings.type + " datagram " + where_),
        buffer_(settings.max_message_bytes + 1) {
    handover::claim(handover_key_);
  }

  ~DatagramInput() override { stop(); }

  void start() override {
    // The socket of this input before a reload, with the datagrams that came meanwhile.
    std::optional<handover::Parked> taken = handover::take(handover_key_);
    if (taken && !assign_parked(socket_, endpoint_.protocol(), *taken)) taken.reset();
    if (taken) kernel_drops_ = taken->kernel_drops;
    boost::system::error_code ec;
    if (!taken) {
      if constexpr (std::is_same_v<Protocol, unix_datagram>) {
        struct stat st {};
        if (::lstat(settings_.path.c_str(), &st) == 0) {
          if (!S_ISSOCK(st.st_mode)) {
            throw plugin::StartError(fmt::format("{} exists and is not a socket", settings_.path.string()));
          }
          std::filesystem::remove(settings_.path);
        }
      }
      socket_.open(endpoint_.protocol(), ec);
      if (!ec) socket_.bind(endpoint_, ec);
      if (ec) throw plugin::StartError(fmt::format("cannot listen on {}: {}", where_, ec.message()));
    }
    int size = static_cast<int>(std::min<std::size_t>(settings_.receive_buffer_bytes, INT32_MAX));
    ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    int one = 1;
    ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);
    socket_.non_blocking(true, ec);
    if constexpr (std::is_same_v<Protocol, unix_datagram>) {
      if (::chmod(settings_.path.c_str(), settings_.mode) != 0) {
        throw plugin::StartError(
            fmt::format("cannot set the permissions of {}: {}", settings_.path.string(), std::strerror(errno)));
      }
    } else {
      where_ = describe_endpoint(socket_.local_endpoint());
    }
    log::info(queue_side_.component, "listening on {}{}", where_, taken ? " (kept across the reload)" : "");
    // Started paused (the engine lets its inputs go once the whole pipeline started): datagrams
    // wait in the socket's buffer until then, rather than being read and dropped.
    if (!queue_side_.paused.load()) begin_reading();
    io_beat_.start();
    thread_ = std::thread([this] { io_.run(); });
    started_ = true;
  }

  // Stops reading. During a reload (handover::parking()) the socket, with the datagrams waiting
  // in its buffer, is handed over instead of closed.
  void stop() override {
    if (stopped_.exchange(true) || !thread_.joinable()) return;
    const bool park = handover::parking();
    int fd = -1;
    asio::post(io_, [this, park, &fd] {
      flush();
      io_beat_.stop();
      boost::system::error_code ignored;
      if (park) fd = socket_.release(ignored);
      if (fd < 0) socket_.close(ignored);
      io_.stop();
    });
    thread_.join();
    if (fd >= 0) {
      handover::park(handover_key_, {.fd = fd, .connections = {}, .kernel_drops = kernel_drops_});
      return;
    }
    if constexpr (std::is_same_v<Protocol, unix_datagram>) {
      std::error_code ec;
      std::filesystem::remove(settings_.path, ec);
    }
  }

  // Once reading, it goes on while paused: a datagram cannot be held back, so what comes while
  // the queue refuses records is read and counted as dropped.
  void set_paused(bool paused) override {
    queue_side_.set_paused(paused);
    if (started_.load() && !reading_.load()) asio::post(io_, [this] { begin_reading(); });
  }

  std::string listening_on() const override { return where_; }

 private:
  void begin_reading() {
    if (reading_.exchange(true)) return;
    wait();
  }

  void wait() {
    socket_.async_wait(asio::socket_base::wait_read, [this](const boost::system::error_code& ec) {
      if (ec) return;
      drain();
      wait();
    });
  }

  // Reads every datagram waiting, in batches.
  void drain() {
    for (int n = 0; n < 100000; ++n) {
      sockaddr_storage from{};
      iovec iov{buffer_.data(), buffer_.size()};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(std::uint32_t))];
      msghdr msg{};
      msg.msg_name = &from;
      msg.msg_namelen = sizeof from;
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      ssize_t got = ::recvmsg(socket_.native_handle(), &msg, MSG_DONTWAIT);
      if (got < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          queue_side_.metrics.error("read_error");
          log::debug(queue_side_.component, "receiving failed: {}", std::strerror(errno));
        }
        break;
      }
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
          std::uint32_t drops = 0;
          std::memcpy(&drops, CMSG_DATA(c), sizeof drops);
          if (drops > kernel_drops_) queue_side_.metrics.dropped("socket_buffer_full", drops - kernel_drops_);
          kernel_drops_ = drops;
        }
      }
      std::string peer = peer_of(from, msg.msg_namelen);
      std::string_view payload(buffer_.data(), static_cast<std::size_t>(got));
      bool truncated = (msg.msg_flags & MSG_TRUNC) != 0 || payload.size() > settings_.max_message_bytes;
      if (truncated) {
        if (!batch_.fits_dead_letter(payload.size())) flush();
        batch_.dead_letter("message_too_large",
                           fmt::format("a datagram from {} of more than max_message_bytes = {}", peer,
                                       units::format_size(settings_.max_message_bytes)),
                           payload.substr(0, settings_.max_message_bytes), payload.size(), queue_side_.clock.wall_ns());
        queue_side_.metrics.error("message_too_large");
        continue;
      }
      if (payload.empty()) continue;
      queue::Attribute attrs[] = {{"peer", peer}};
      if (!batch_.fits(payload.size(), peer.size() + 10)) flush();
      batch_.add(payload, queue_side_.clock.wall_ns(), attrs);
      if (batch_.full()) flush();
    }
    flush();
  }

  // Commits the batch. A datagram cannot be held back: records the queue refuses are counted as
  // dropped and the batch moves on.
  void flush() {
    if (batch_.empty()) return;
    if (queue_side_.paused.load()) {
      drop_records("queue_full");
      return;
    }
    switch (queue_side_.committer.commit(batch_).settlement) {
      case Settlement::stored:
      case Settlement::dropped:
        return;
      case Settlement::held:
        drop_records("queue_full");
        return;
      case Settlement::failed:
        drop_records("commit_failed");
        return;
    }
  }

  void drop_records(std::string_view reason) {
    input::drop_records(queue_side_.queue, queue_side_.metrics, queue_side_.component, batch_, reason);
  }

  static std::string peer_of(const sockaddr_storage& from, socklen_t len) {
    char host[INET6_ADDRSTRLEN] = {};
    if (from.ss_family == AF_INET) {
      const auto* a = reinterpret_cast<const sockaddr_in*>(&from);
      ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
      return fmt::format("{}:{}", host, ntohs(a->sin_port));
    }
    if (from.ss_family == AF_INET6) {
      const auto* a = reinterpret_cast<const sockaddr_in6*>(&from);
      ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
      return fmt::format("[{}]:{}", host, ntohs(a->sin6_port));
    }
    if (from.ss_family == AF_UNIX && len > offsetof(sockaddr_un, sun_path)) {
      const auto* a = reinterpret_cast<const sockaddr_un*>(&from);
      std::size_t n = len - offsetof(sockaddr_un, sun_path);
      std::string path(a->sun_path, strnlen(a->sun_path, n));
      return path.empty() ? std::string("unix") : path;
    }
    return "unix";
  }

  DatagramSettings settings_;
  QueueSide queue_side_;
  asio::io_context io_;
  liveness::IoBeat io_beat_{io_, queue_side_.component};
  typename Protocol::socket socket_{io_};
  Endpoint endpoint_;
  std::string where_;
  std::string handover_key_;  // the kind and the configured address (input/handover.hpp)
  std::vector<char> buffer_;
  PendingBatch batch_ = queue_side_.batch();
  std::uint32_t kernel_drops_ = 0;
  std::atomic<bool> started_{false};
  std::atomic<bool> reading_{false};  // waiting for datagrams (from start if not paused, else the next set_paused)
  std::atomic<bool> stopped_{false};
  std::thread thread_;
};

}  // namespace

std::unique_ptr<plugin::Input> make_udp_input(const DatagramSettings& settings, const plugin::InputContext& context) {
  return std::make_unique<DatagramInput<udp>>(settings, context, listen_endpoint<udp>(settings.listen),
                                              settings.listen);
}

std::unique_ptr<plugin::Input> make_unix_datagram_input(const DatagramSettings& settings,
                                                        const plugin::InputContext& context) {
  return std::make_unique<DatagramInput<unix_datagram>>(
      settings, context, unix_datagram::endpoint(settings.path.string()), settings.path.string());
}

}  // namespace tank::input
