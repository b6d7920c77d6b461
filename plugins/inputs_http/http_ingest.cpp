#include "http_ingest.hpp"

#include <array>
#include <atomic>
#include <functional>
#include <condition_variable>
#include <list>
#include <mutex>
#include <optional>
#include <limits>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <fmt/format.h>

#include "common/io_beat.hpp"
#include "common/log.hpp"
#include "input/batch.hpp"
#include "input/commit.hpp"
#include "input/input_metrics.hpp"
#include "http_ingest_request.hpp"
#include "json_body.hpp"
#include "net/listen_address.hpp"
#include "queue/queue.hpp"

namespace tank::input {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;

// How many refused records a reply lists (the rest are counted in "dead_lettered").
constexpr std::size_t kMaxRejectedShown = 10;
// The header of a 200 answer that says how many of the request's records were dropped by
// overflow = "drop_newest" (docs/inputs.md).
constexpr const char* kDroppedHeader = "Tank-Dropped-Records";

std::string describe(const tcp::endpoint& ep) {
  if (ep.address().is_v6()) return fmt::format("[{}]:{}", ep.address().to_string(), ep.port());
  return fmt::format("{}:{}", ep.address().to_string(), ep.port());
}

using ingest::json_error;

class HttpIngest;

class IngestSession : public std::enable_shared_from_this<IngestSession> {
 public:
  IngestSession(tcp::socket socket, HttpIngest& owner, std::string peer);
  ~IngestSession();
  void start() { read_header(); }
  auto executor() { return stream_.get_executor(); }
  void shut_down() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
  }

 private:
  void read_header();
  // What read() reads up to: the end of the header, or the end of the whole request.
  enum class Part { header, body };
  // Feeds the parser what the buffer holds and reads more from the socket while it needs more,
  // until `part` is parsed or reading fails; then calls after_header() or after_body(). Each read
  // from the socket may wait idle_timeout: a client that keeps sending, however slowly, is read
  // to the end; one that sends nothing for idle_timeout is closed (beast::error::timeout).
  void read(Part part);
  void read_done(Part part, beast::error_code ec);
  // Does what a step of the request (http_ingest_request.hpp) says.
  void act(ingest::Step step);
  void respond(http::status status, std::string body, bool keep_alive,
               std::vector<std::pair<http::field, std::string>> headers = {});
  // After an answer sent before the request's body was read: stop sending, read and discard
  // what the client still sends for a moment, then close. Closing at once would make the
  // kernel reset the connection, and the client could lose the answer.
  void linger_then_close();

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<ingest::RequestParser> parser_;
  http::response<http::string_body> response_;
  HttpIngest& owner_;
  std::string peer_;
  std::size_t dropped_header_ = 0;  // for the response being built
};

class HttpIngest final : public plugin::Input {
 public:
  HttpIngest(const HttpIngestSettings& settings, const plugin::InputContext& context)
      : settings_(settings),
        name_(context.name),
        queue_(context.queue),
        clock_(context.clock),
        metrics_(context.metrics, context.name, "http"),
        batch_limit_(input::batch_limit(context.queue)),
        route_(context.route),
        component_("input " + context.name),
        committer_(queue_, metrics_, clock_, component_, "answering 503"),
        refused_connections_(component_, log::Level::warn) {}

  ~HttpIngest() override { stop(); }

  void start() override {
    std::string error;
    auto a = net::parse_listen_address(settings_.listen, &error);
    if (!a) throw plugin::StartError(error);
    beast::error_code ec;
    tcp::endpoint endpoint(asio::ip::make_address(a->host, ec), a->port);
    if (!ec) acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) throw plugin::StartError(fmt::format("cannot listen on {}: {}", settings_.listen, ec.message()));
    where_ = describe(acceptor_.local_endpoint());
    log::info(component_, "listening on http://{}{}", where_, settings_.path);
    accept();
    io_beat_.start();
    for (unsigned i = 0; i < std::max(1u, settings_.threads); ++i) threads_.emplace_back([this] { io_.run(); });
  }

  void stop() override {
    if (stopped_.exchange(true) || threads_.empty()) return;
    asio::post(acceptor_.get_executor(), [this] {
      beast::error_code ignored;
      acceptor_.close(ignored);
    });
    // A request being handled finishes its commit and answer; idle connections are closed.
    std::vector<std::shared_ptr<IngestSession>> live;
    {
      std::lock_guard lock(mutex_);
      for (auto& w : sessions_) {
        if (auto s = w.lock()) live.push_back(std::move(s));
      }
    }
    for (auto& s : live) asio::post(s->executor(), [s] { s->shut_down(); });
    live.clear();
    {
      std::unique_lock lock(mutex_);
      ended_.wait_for(lock, std::chrono::seconds(10), [this] { return active_ == 0; });
    }
    io_.stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
    io_beat_.stop();
  }

  void set_paused(bool paused) override {
    paused_ = paused;
    metrics_.set_paused(paused);
  }

  std::string listening_on() const override { return where_; }

  const HttpIngestSettings& settings() const { return settings_; }
  bool paused() const { return paused_.load(); }
  InputMetrics& metrics() { return metrics_; }
  const std::string& component() const { return component_; }

  void session_ended() {
    std::lock_guard lock(mutex_);
    --active_;
    ended_.notify_all();
  }

  // The outcome of storing one request's records.
  struct Stored {
    http::status status = http::status::ok;
    std::string body;
    std::size_t accepted = 0;  // records stored
    std::size_t dropped = 0;   // records dropped by overflow = "drop_newest"
  };

  Stored store(const JsonBody& decoded, const std::string& peer) {
    // No limit on the number of records: a body that fits one commit (max_commit_bytes, 1/64 of
    // the queue's bound, 64 KiB to 4 MiB) is stored in one transaction, all or nothing.
    PendingBatch batch(name_, batch_limit_, std::numeric_limits<std::size_t>::max(), route_.get());
    queue::Attribute attrs[] = {{"peer", peer}};
    std::size_t accepted = 0;
    std::size_t dropped = 0;
    std::size_t dead_lettered = 0;
    json::array rejected;  // the first few refused records, for the producer
    auto commit = [&]() -> std::optional<Stored> {
      const Outcome o = committer_.commit(batch);
      accepted += o.stored_records;
      dropped += o.dropped_records;
      dead_lettered += o.dead_letters;
      switch (o.settlement) {
        case Settlement::stored:
        case Settlement::dropped:
          return std::nullopt;
        case Settlement::held:
          metrics_.error("queue_full");
          return Stored{http::status::service_unavailable, json_error("the queue is full; retry later", accepted),
                        accepted, dropped};
        case Settlement::failed:
          return Stored{http::status::service_unavailable, json_error("storing failed; retry later", accepted),
                        accepted, dropped};
      }
      return std::nullopt;
    };
    const std::int64_t received = clock_.wall_ns();  // one arrival time for the whole body
    std::size_t index = 0;
    for (std::string_view payload : decoded.payloads) {
      if (!batch.fits(payload.size(), peer.size() + 10)) {
        if (auto failed = commit()) return *failed;
      }
      if (!batch.add(payload, received, attrs, /*known_json=*/true) && rejected.size() < kMaxRejectedShown) {
        const queue::DeadLetter& d = batch.write_batch().dead_letters.back();
        rejected.push_back(json::object{{"index", index}, {"reason", d.reason}, {"detail", d.detail}});
      }
      ++index;
    }
    if (auto failed = commit()) return *failed;
    json::object reply{{"accepted", accepted}};
    if (dropped > 0) {
      // The producer is told: its records were taken off the wire but not stored.
      reply["dropped"] = dropped;
      reply["dropped_reason"] = "the queue is full and drops new records (overflow = \"drop_newest\")";
    }
    if (dead_lettered > 0) {
      reply["dead_lettered"] = dead_lettered;
      reply["rejected"] = std::move(rejected);
    }
    return Stored{http::status::ok, json::serialize(reply) + "\n", accepted, dropped};
  }

 private:
  void accept() {
    acceptor_.async_accept(asio::make_strand(io_), [this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
      if (ec) {
        metrics_.error("accept_failed");
        refused_connections_.occur(fmt::format("accepting a connection failed: {}", ec.message()));
        retry_timer_.expires_after(std::chrono::milliseconds(100));
        retry_timer_.async_wait([this](beast::error_code wait_ec) {
          if (!wait_ec && acceptor_.is_open()) accept();
        });
        return;
      }
      beast::error_code peer_ec;
      auto remote = socket.remote_endpoint(peer_ec);
      std::string peer = peer_ec ? std::string("unknown") : describe(remote);
      bool admitted = false;
      {
        std::lock_guard lock(mutex_);
        if (active_ < settings_.max_connections) {
          ++active_;
          admitted = true;
        }
      }
      if (!admitted) {
        metrics_.error("too_many_connections");
        refused_connections_.occur(
            fmt::format("refusing connections beyond max_connections = {}", settings_.max_connections));
        beast::error_code ignored;
        socket.close(ignored);
      } else {
        refused_connections_.end("accepting connections again");
        auto session = std::make_shared<IngestSession>(std::move(socket), *this, std::move(peer));
        {
          std::lock_guard lock(mutex_);
          sessions_.remove_if([](const std::weak_ptr<IngestSession>& w) { return w.expired(); });
          sessions_.push_back(session);
        }
        session->start();
      }
      accept();
    });
  }

  HttpIngestSettings settings_;
  std::string name_;
  queue::Queue& queue_;
  const Clock& clock_;
  InputMetrics metrics_;
  std::size_t batch_limit_;
  std::shared_ptr<const process::Route> route_;
  std::string component_;
  Committer committer_;
  log::Episode refused_connections_;
  std::atomic<bool> paused_{false};
  std::atomic<bool> stopped_{false};
  std::mutex mutex_;
  std::condition_variable ended_;
  std::size_t active_ = 0;
  std::list<std::weak_ptr<IngestSession>> sessions_;
  asio::io_context io_;
  liveness::IoBeat io_beat_{io_, component_};
  tcp::acceptor acceptor_{asio::make_strand(io_)};
  asio::steady_timer retry_timer_{io_};
  std::string where_;
  std::vector<std::thread> threads_;
};

IngestSession::IngestSession(tcp::socket socket, HttpIngest& owner, std::string peer)
    : stream_(std::move(socket)), owner_(owner), peer_(std::move(peer)) {
  owner_.metrics().connection_opened();
}

IngestSession::~IngestSession() {
  owner_.metrics().connection_closed();
  owner_.session_ended();
}

void IngestSession::read_header() {
  parser_.emplace();
  ingest::limit_request(*parser_, owner_.settings());
  read(Part::header);
}

// Beast's async_read_header and async_read arm the timer once for the whole header or body: a
// deadline, which a slow link can never meet. This is their loop (http::async_read_some's
// parsing, reading and end-of-stream handling) with the timer armed again before every read.
void IngestSession::read(Part part) {
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
  stream_.expires_after(owner_.settings().idle_timeout);
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

void IngestSession::read_done(Part part, beast::error_code ec) {
  const HttpIngestSettings& settings = owner_.settings();
  if (part == Part::header) {
    act(ingest::after_header(ec, *parser_, settings, owner_.paused()));
  } else {
    act(ingest::after_body(ec, *parser_, settings));
  }
}

void IngestSession::act(ingest::Step step) {
  if (!step.error.empty()) owner_.metrics().error(step.error);
  switch (step.next) {
    case ingest::Step::Next::read_body:
      read(Part::body);
      return;
    case ingest::Step::Next::store: {
      auto stored = owner_.store(step.decoded, peer_);
      std::vector<std::pair<http::field, std::string>> headers;
      if (stored.status == http::status::service_unavailable) {
        headers.emplace_back(http::field::retry_after, std::to_string(owner_.settings().retry_after.count()));
      }
      dropped_header_ = stored.dropped;
      respond(stored.status, std::move(stored.body), step.keep_alive, std::move(headers));
      return;
    }
    case ingest::Step::Next::reply:
      respond(step.status, std::move(step.body), step.keep_alive, std::move(step.headers));
      return;
    case ingest::Step::Next::close:
      shut_down();
      return;
  }
}

void IngestSession::respond(http::status status, std::string body, bool keep_alive,
                            std::vector<std::pair<http::field, std::string>> headers) {
  response_ = {};
  response_.version(11);
  response_.result(status);
  response_.set(http::field::server, "tank");
  response_.set(http::field::content_type, "application/json");
  for (auto& [field, value] : headers) response_.set(field, value);
  if (dropped_header_ > 0) {
    // Records of this request dropped by overflow = "drop_newest" (also in the body's "dropped").
    response_.set(kDroppedHeader, std::to_string(dropped_header_));
    dropped_header_ = 0;
  }
  response_.body() = std::move(body);
  response_.keep_alive(keep_alive);
  response_.prepare_payload();
  stream_.expires_after(owner_.settings().idle_timeout);  // a client that reads nothing is closed too
  http::async_write(stream_, response_, [self = shared_from_this(), keep_alive](beast::error_code ec, std::size_t) {
    if (ec) {
      self->shut_down();
      return;
    }
    if (!keep_alive) {
      self->linger_then_close();
      return;
    }
    self->read_header();
  });
}

void IngestSession::linger_then_close() {
  beast::error_code ignored;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  stream_.expires_after(std::chrono::seconds(2));
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

}  // namespace

std::unique_ptr<plugin::Input> make_http_ingest_input(const HttpIngestSettings& settings,
                                                      const plugin::InputContext& context) {
  return std::make_unique<HttpIngest>(settings, context);
}

}  // namespace tank::input
