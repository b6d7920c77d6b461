#include "input/stream_server.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <list>
#include <mutex>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <fmt/format.h>

#include "common/backoff.hpp"
#include "common/io_beat.hpp"
#include "common/log.hpp"
#include "common/units.hpp"
#include "input/batch.hpp"
#include "input/commit.hpp"
#include "input/handover.hpp"
#include "input/input_metrics.hpp"
#include "input/line_framer.hpp"
#include "input/socket_common.hpp"
#include "queue/queue.hpp"

namespace tank::input {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using unix_stream = asio::local::stream_protocol;

// How long a stream connection waits before offering a batch again after a failed commit.
constexpr BackoffPolicy kRetryPolicy{std::chrono::milliseconds(100), std::chrono::seconds(5),
                                     BackoffPolicy::Jitter::none};

template <class Protocol>
class StreamInput;

// The connections a stream input's sessions hand over while it stops for a reload (each on its
// own strand).
struct ParkedConnections {
  std::mutex mutex;
  std::vector<handover::Connection> connections;
};

template <class Protocol>
class StreamSession : public std::enable_shared_from_this<StreamSession<Protocol>> {
 public:
  using Socket = typename Protocol::socket;

  // `framer`: where a connection taken over across a reload was inside its current line.
  StreamSession(Socket socket, StreamInput<Protocol>& owner, std::string peer, LineFramer::State framer = {})
      : socket_(std::move(socket)),
        idle_timer_(socket_.get_executor()),
        retry_timer_(socket_.get_executor()),
        owner_(owner),
        queue_side_(owner.queue_side()),
        buffer_(64 * 1024),
        framer_(owner.settings().max_line_bytes),
        peer_(std::move(peer)) {
    framer_.restore(std::move(framer));
    queue_side_.metrics.connection_opened();
  }

  ~StreamSession() {
    queue_side_.metrics.connection_closed();
    owner_.session_ended();
  }

  void start() {
    arm_idle_timer();
    read();
  }

  // Called on the session's executor when the queue accepts records again.
  void resume() {
    if (closed_ || !waiting_) return;
    waiting_ = false;
    drain();
  }

  // Called on the session's executor at stop: one last attempt to commit what was read, then
  // close. What the queue still refuses is counted as dropped (TCP gave it no acknowledgement).
  void shut_down() {
    if (closed_) return;
    if (framer_.pending_bytes() > 0 || framer_.in_oversize_line()) {
      read_ns_ = queue_side_.clock.wall_ns();
      framer_.finish([&](std::string_view line) { add_line(line); },
                     [&](std::string_view head, std::uint64_t length) { add_oversize(head, length); });
    }
    commit_last();
    close();
  }

  // Called on the session's executor when tank stops for a reload (input/handover.hpp): commits
  // the complete lines read so far, as shut_down() does, but keeps the connection open and hands
  // it over, with the part of a line read so far, to `out`. A connection its peer has closed
  // already is only shut down.
  void park(ParkedConnections& out) {
    if (closed_) return;
    if (end_after_drain_) {
      shut_down();
      return;
    }
    park_to_ = &out;
    if (reading_) {
      // The read in progress may have taken bytes from the kernel already: its handler frames
      // them, then parks (on_read).
      boost::system::error_code ignored;
      socket_.cancel(ignored);
      return;
    }
    finish_park();
  }

 private:
  void read() {
    if (closed_ || waiting_) return;
    if (queue_side_.paused.load()) {
      // Not reading lets the kernel's buffer fill: TCP's flow control slows the sender.
      waiting_ = true;
      return;
    }
    reading_ = true;
    socket_.async_read_some(asio::buffer(buffer_), [self = this->shared_from_this()](
                                                       const boost::system::error_code& ec, std::size_t n) {
      self->on_read(ec, n);
    });
  }

  void on_read(const boost::system::error_code& ec, std::size_t n) {
    reading_ = false;
    if (closed_) return;
    if (ec) {
      if (ec == asio::error::operation_aborted) {
        if (park_to_ != nullptr) finish_park();
        return;
      }
      if (ec != asio::error::eof && ec != asio::error::connection_reset) {
        queue_side_.metrics.error("read_error");
        log::debug(queue_side_.component, "reading from {} failed: {}", peer_, ec.message());
      }
      // The connection ended: its last line need not end in a newline.
      read_ns_ = queue_side_.clock.wall_ns();
      framer_.finish([&](std::string_view line) { add_line(line); },
                     [&](std::string_view head, std::uint64_t length) { add_oversize(head, length); });
      if (park_to_ != nullptr) {
        shut_down();  // ended while tank stops for a reload: nothing to hand over
        return;
      }
      end_after_drain_ = true;
      push_current();
      drain();
      return;
    }
    arm_idle_timer();
    read_ns_ = queue_side_.clock.wall_ns();
    framer_.feed(std::string_view(buffer_.data(), n), [&](std::string_view line) { add_line(line); },
                 [&](std::string_view head, std::uint64_t length) { add_oversize(head, length); });
    if (park_to_ != nullptr) {
      finish_park();
      return;
    }
    push_current();
    drain();
  }

  // The second half of park(), once no read is in progress: commits the complete lines read, and
  // hands the still open connection and the part of a line read so far over.
  void finish_park() {
    commit_last();
    closed_ = true;
    idle_timer_.cancel();
    retry_timer_.cancel();
    boost::system::error_code ec;
    const int fd = socket_.release(ec);
    if (ec) {
      log::warn(queue_side_.component, "cannot keep the connection from {} open across the reload: {}", peer_,
                ec.message());
      socket_.close(ec);
      return;
    }
    std::lock_guard hold(park_to_->mutex);
    park_to_->connections.push_back({fd, peer_, framer_.take_state()});
  }

  // At stop: commits what was read and framed. What the queue still refuses is counted as dropped
  // (TCP gave it no acknowledgement).
  void commit_last() {
    push_current();
    std::uint64_t lost = 0;
    while (!ready_.empty()) {
      if (!queue_side_.committer.commit(ready_.front()).acknowledge()) {
        for (const PendingBatch& b : ready_) lost += b.records();
        ready_.clear();
        break;
      }
      ready_.pop_front();
    }
    if (lost > 0) {
      queue_side_.metrics.dropped("shutdown", lost);
      log::warn(queue_side_.component,
                "{} records read from {} could not be committed at shutdown (the queue refused them)", lost, peer_);
    }
  }

  void add_line(std::string_view line) {
    queue::Attribute attrs[] = {{"peer", peer_}};
    if (!current_.fits(line.size(), peer_.size() + 10)) push_current();
    current_.add(line, read_ns_, attrs);
  }

  void add_oversize(std::string_view head, std::uint64_t length) {
    if (!current_.fits_dead_letter(head.size())) push_current();
    current_.dead_letter("line_too_long",
                         fmt::format("a line of {} bytes from {} exceeds max_line_bytes = {}", length, peer_,
                                     units::format_size(owner_.settings().max_line_bytes)),
                         head, length, read_ns_);
    queue_side_.metrics.error("line_too_long");
  }

  void push_current() {
    if (current_.empty()) return;
    ready_.push_back(std::move(current_));
    current_ = queue_side_.batch();
  }

  // Commits the batches read so far, in order; then reads again (or closes after the end).
  void drain() {
    while (!ready_.empty()) {
      switch (queue_side_.committer.commit(ready_.front()).settlement) {
        case Settlement::stored:
        case Settlement::dropped:
          ready_.pop_front();
          retry_.reset();
          continue;
        case Settlement::held:
          waiting_ = true;  // resume() continues when the queue accepts records again
          if (!queue_side_.paused.load()) {
            // The queue refused without announcing a pause (another policy or a race): retry soon.
            schedule_retry();
          }
          return;
        case Settlement::failed:
          schedule_retry();
          return;
      }
    }
    if (end_after_drain_) {
      close();
      return;
    }
    read();
  }

  void schedule_retry() {
    waiting_ = true;
    retry_timer_.expires_after(retry_.next());
    retry_timer_.async_wait([self = this->shared_from_this()](const boost::system::error_code& ec) {
      if (ec || self->closed_) return;
      self->waiting_ = false;
      self->drain();
    });
  }

  void arm_idle_timer() {
    auto timeout = owner_.settings().idle_timeout;
    if (timeout.count() <= 0) return;
    idle_timer_.expires_after(timeout);
    idle_timer_.async_wait([self = this->shared_from_this()](const boost::system::error_code& ec) {
      if (ec || self->closed_) return;
      if (self->waiting_) {
        // Quiet because tank stopped reading, not because the peer went away.
        self->arm_idle_timer();
        return;
      }
      log::debug(self->queue_side_.component, "closing the idle connection from {}", self->peer_);
      self->queue_side_.metrics.error("idle_timeout");
      self->shut_down();
    });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ignored;
    idle_timer_.cancel();
    retry_timer_.cancel();
    socket_.shutdown(Socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

  Socket socket_;
  asio::steady_timer idle_timer_;
  asio::steady_timer retry_timer_;
  StreamInput<Protocol>& owner_;
  QueueSide& queue_side_;
  std::vector<char> buffer_;
  LineFramer framer_;
  std::string peer_;
  // When the data being framed was read: the time of every record framed from it (one clock read
  // per read, not one per line: 2-3 % of tank's CPU with short lines).
  std::uint64_t read_ns_ = 0;
  PendingBatch current_ = queue_side_.batch();
  std::deque<PendingBatch> ready_;
  bool waiting_ = false;
  bool reading_ = false;  // an async_read_some is in progress
  bool closed_ = false;
  bool end_after_drain_ = false;
  Backoff retry_{kRetryPolicy};
  // Set by park(): where the connection goes once the read in progress has ended.
  ParkedConnections* park_to_ = nullptr;
};

template <class Protocol>
class StreamInput final : public plugin::Input {
 public:
  using Endpoint = typename Protocol::endpoint;
  using Session = StreamSession<Protocol>;

  StreamInput(const StreamSettings& settings, const plugin::InputContext& context, Endpoint endpoint,
              std::string where)
      : settings_(settings),
        queue_side_(context, settings.type, "holding the data and retrying"),
        endpoint_(std::move(endpoint)),
        where_(std::move(where)),
        handover_key_(settings.type + " stream " + where_) {
    handover::claim(handover_key_);
  }

  ~StreamInput() override {
    stop();
    // The strands refer to io_'s strand service: they go while io_ is still there.
    std::lock_guard lock(mutex_);
    sessions_.clear();
  }

  const StreamSettings& settings() const { return settings_; }
  QueueSide& queue_side() { return queue_side_; }

  void start() override {
    // The listening socket of this input before a reload: connections that came meanwhile wait in
    // its backlog.
    std::optional<handover::Parked> taken = handover::take(handover_key_);
    if (taken && !assign_parked(acceptor_, endpoint_.protocol(), *taken)) taken.reset();
    boost::system::error_code ec;
    if (!taken) {
      prepare_endpoint();
      acceptor_.open(endpoint_.protocol(), ec);
      if (!ec) {
        if constexpr (std::is_same_v<Protocol, tcp>) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
        acceptor_.bind(endpoint_, ec);
      }
      if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
      if (ec) {
        throw plugin::StartError(fmt::format("cannot listen on {}: {}", where_, ec.message()));
      }
    }
    if constexpr (std::is_same_v<Protocol, unix_stream>) {
      if (::chmod(settings_.path.c_str(), settings_.mode) != 0) {
        throw plugin::StartError(
            fmt::format("cannot set the permissions of {}: {}", settings_.path.string(), std::strerror(errno)));
      }
    } else {
      where_ = describe_endpoint(acceptor_.local_endpoint());
    }
    if (taken) {
      log::info(queue_side_.component, "listening on {} (kept across the reload, with {} open connection{})", where_,
                taken->connections.size(), taken->connections.size() == 1 ? "" : "s");
      for (auto& c : taken->connections) adopt(std::move(c));
    } else {
      log::info(queue_side_.component, "listening on {}", where_);
    }
    accept();
    io_beat_.start();
    for (unsigned i = 0; i < std::max(1u, settings_.threads); ++i) {
      threads_.emplace_back([this] { io_.run(); });
    }
  }

  // Stops accepting and reading. During a reload (handover::parking()) the listening socket and
  // the open connections are handed over instead of closed; otherwise each connection commits
  // what it read and is closed.
  void stop() override {
    if (stopped_.exchange(true) || threads_.empty()) return;
    const bool park = handover::parking();
    std::promise<int> listener;
    std::future<int> listener_fd = listener.get_future();
    asio::post(acceptor_.get_executor(), [this, park, &listener] {
      boost::system::error_code ignored;
      int fd = -1;
      if (park) fd = acceptor_.release(ignored);
      if (fd < 0) acceptor_.close(ignored);
      listener.set_value(fd);
    });
    ParkedConnections parked;
    for (auto& session : live_sessions()) {
      asio::post(session.second, [s = session.first, park, &parked] {
        if (park) {
          s->park(parked);
        } else {
          s->shut_down();
        }
      });
    }
    {
      std::unique_lock lock(mutex_);
      ended_.wait_for(lock, std::chrono::seconds(10), [this] { return active_ == 0; });
    }
    listener_fd.wait_for(std::chrono::seconds(10));
    io_.stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
    io_beat_.stop();
    // Read after the join: had the acceptor's handler not run, the acceptor still owns its socket.
    const int fd = listener_fd.wait_for(std::chrono::seconds(0)) == std::future_status::ready ? listener_fd.get() : -1;
    handover::Parked sockets{.fd = fd, .connections = std::move(parked.connections), .kernel_drops = 0};
    if (fd >= 0) {
      log::info(queue_side_.component, "keeping {} and {} open connection{} for the new configuration", where_,
                sockets.connections.size(), sockets.connections.size() == 1 ? "" : "s");
      handover::park(handover_key_, std::move(sockets));
      return;
    }
    handover::close_all(sockets);
    if constexpr (std::is_same_v<Protocol, unix_stream>) {
      std::error_code ec;
      std::filesystem::remove(settings_.path, ec);
    }
  }

  void set_paused(bool paused) override {
    queue_side_.set_paused(paused);
    if (paused) return;
    for (auto& session : live_sessions()) {
      asio::post(session.second, [s = session.first] { s->resume(); });
    }
  }

  std::string listening_on() const override { return where_; }

  void session_ended() {
    std::lock_guard lock(mutex_);
    --active_;
    ended_.notify_all();
  }

 private:
  using Executor = asio::strand<asio::io_context::executor_type>;

  std::vector<std::pair<std::shared_ptr<Session>, Executor>> live_sessions() {
    std::vector<std::pair<std::shared_ptr<Session>, Executor>> out;
    std::lock_guard lock(mutex_);
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if (auto s = it->first.lock()) {
        out.emplace_back(std::move(s), it->second);
        ++it;
      } else {
        it = sessions_.erase(it);
      }
    }
    return out;
  }

  void prepare_endpoint() {
    if constexpr (std::is_same_v<Protocol, unix_stream>) {
      struct stat st {};
      if (::lstat(settings_.path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
          throw plugin::StartError(fmt::format("{} exists and is not a socket", settings_.path.string()));
        }
        // A socket file left by an earlier run: remove it unless something still listens on it.
        unix_stream::socket probe(io_);
        boost::system::error_code ec;
        probe.connect(unix_stream::endpoint(settings_.path.string()), ec);
        if (!ec) throw plugin::StartError(fmt::format("{} is in use by another process", settings_.path.string()));
        std::filesystem::remove(settings_.path);
      }
    }
  }

  // A connection handed over across the reload: it goes on where the previous input left it.
  void adopt(handover::Connection c) {
    auto strand = asio::make_strand(io_);
    typename Protocol::socket socket(strand);
    boost::system::error_code ec;
    socket.assign(endpoint_.protocol(), c.fd, ec);
    if (ec) {
      ::close(c.fd);
      log::warn(queue_side_.component, "cannot take over the connection from {}: {}", c.peer, ec.message());
      return;
    }
    {
      std::lock_guard lock(mutex_);
      ++active_;
    }
    auto session = std::make_shared<Session>(std::move(socket), *this, std::move(c.peer), std::move(c.framer));
    {
      std::lock_guard lock(mutex_);
      sessions_.emplace_back(session, strand);
    }
    session->start();
  }

  void accept() {
    auto strand = asio::make_strand(io_);
    acceptor_.async_accept(strand, [this, strand](const boost::system::error_code& ec, typename Protocol::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
      if (ec) {
        queue_side_.metrics.error("accept_failed");
        refused_connections_.occur(fmt::format("accepting a connection failed: {}", ec.message()));
        retry_timer_.expires_after(std::chrono::milliseconds(100));
        retry_timer_.async_wait([this](const boost::system::error_code& wait_ec) {
          if (!wait_ec && acceptor_.is_open()) accept();
        });
        return;
      }
      std::string peer = peer_of(socket);
      bool admitted = false;
      {
        std::lock_guard lock(mutex_);
        if (active_ < settings_.max_connections) {
          ++active_;
          admitted = true;
        }
      }
      if (!admitted) {
        queue_side_.metrics.error("too_many_connections");
        refused_connections_.occur(fmt::format("refusing connections beyond max_connections = {} (the latest "
                                               "from {})",
                                               settings_.max_connections, peer));
        boost::system::error_code ignored;
        socket.close(ignored);
      } else {
        refused_connections_.end("accepting connections again");
        auto session = std::make_shared<Session>(std::move(socket), *this, std::move(peer));
        {
          std::lock_guard lock(mutex_);
          sessions_.emplace_back(session, strand);
        }
        session->start();
      }
      accept();
    });
  }

  static std::string peer_of(typename Protocol::socket& socket) {
    if constexpr (std::is_same_v<Protocol, tcp>) {
      boost::system::error_code ec;
      auto ep = socket.remote_endpoint(ec);
      return ec ? std::string("unknown") : describe_endpoint(ep);
    } else {
      ucred cred{};
      socklen_t len = sizeof cred;
      if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        return fmt::format("pid={} uid={}", cred.pid, cred.uid);
      }
      return "unix";
    }
  }

  StreamSettings settings_;
  QueueSide queue_side_;
  log::Episode refused_connections_{queue_side_.component, log::Level::warn};
  std::mutex mutex_;
  std::condition_variable ended_;
  std::size_t active_ = 0;
  std::list<std::pair<std::weak_ptr<Session>, Executor>> sessions_;
  std::atomic<bool> stopped_{false};
  // Declared after what sessions use: the io_context (and the sessions it holds) goes first.
  asio::io_context io_;
  liveness::IoBeat io_beat_{io_, queue_side_.component};
  typename Protocol::acceptor acceptor_{asio::make_strand(io_)};
  asio::steady_timer retry_timer_{io_};
  Endpoint endpoint_;
  std::string where_;
  std::string handover_key_;  // the kind and the configured address (input/handover.hpp)
  std::vector<std::thread> threads_;
};

}  // namespace

std::unique_ptr<plugin::Input> make_tcp_input(const StreamSettings& settings, const plugin::InputContext& context) {
  return std::make_unique<StreamInput<tcp>>(settings, context, listen_endpoint<tcp>(settings.listen), settings.listen);
}

std::unique_ptr<plugin::Input> make_unix_stream_input(const StreamSettings& settings,
                                                      const plugin::InputContext& context) {
  return std::make_unique<StreamInput<unix_stream>>(settings, context, unix_stream::endpoint(settings.path.string()),
                                                    settings.path.string());
}

}  // namespace tank::input
