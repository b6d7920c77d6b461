#include "http_ingest.hpp"

#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "common/log.hpp"
#include "input/queue_side.hpp"
#include "http_ingest_request.hpp"
#include "json_body.hpp"
#include "net/http_server.hpp"
#include "net/listen_address.hpp"
#include "queue/queue.hpp"

namespace tank::input {
namespace {

namespace json = boost::json;

// How many refused records a reply lists (the rest are counted in "dead_lettered").
constexpr std::size_t kMaxRejectedShown = 10;
// The header of a 200 answer that says how many of the request's records were dropped by
// overflow = "drop_newest" (docs/inputs.md).
constexpr const char* kDroppedHeader = "Tank-Dropped-Records";

using ingest::json_error;

// inputs.http: the meaning of each request (ingest::after_header / after_body) and the storing
// of its records; the connections, reading and answering are net::HttpServer's.
class HttpIngest final : public plugin::Input, private net::RequestHandler {
 public:
  HttpIngest(const HttpIngestSettings& settings, const plugin::InputContext& context)
      : settings_(settings),
        side_(context, "http", "answering 503"),
        refused_connections_(side_.component, log::Level::warn) {}

  ~HttpIngest() override { stop(); }

  void start() override {
    std::string error;
    auto address = net::parse_listen_address(settings_.listen, &error);
    if (!address) throw plugin::StartError(error);
    net::HttpServerOptions options = ingest::server_options(settings_);
    options.beat = side_.component;
    try {
      server_.emplace(*address, static_cast<net::RequestHandler&>(*this), std::move(options));
    } catch (const std::runtime_error& e) {
      throw plugin::StartError(e.what());
    }
    where_ = server_->local_address();
    log::info(side_.component, "listening on http://{}{}", where_, settings_.path);
    server_->start();
  }

  // A request being handled finishes its commit and answer (for up to 10 s); idle connections
  // are closed.
  void stop() override {
    if (server_) server_->stop();
  }

  void set_paused(bool paused) override { side_.set_paused(paused); }

  std::string listening_on() const override { return where_; }

 private:
  // The outcome of storing one request's records.
  struct Stored {
    net::http::status status = net::http::status::ok;
    std::string body;
    std::size_t accepted = 0;  // records stored
    std::size_t dropped = 0;   // records dropped by overflow = "drop_newest"
  };

  net::HttpStep on_header(boost::system::error_code ec, const net::RequestParser& parser,
                          std::string_view) override {
    return act(ingest::after_header(ec, parser, settings_, side_.paused.load()), {});
  }

  net::HttpStep on_body(boost::system::error_code ec, net::RequestParser& parser, std::string_view peer) override {
    return act(ingest::after_body(ec, parser, settings_), peer);
  }

  void on_connection_opened() override {
    refused_connections_.end("accepting connections again");
    side_.metrics.connection_opened();
  }
  void on_connection_closed() override { side_.metrics.connection_closed(); }
  void on_refused(std::size_t max_connections) override {
    side_.metrics.error("too_many_connections");
    refused_connections_.occur(fmt::format("refusing connections beyond max_connections = {}", max_connections));
  }
  void on_accept_failed(boost::system::error_code ec) override {
    side_.metrics.error("accept_failed");
    refused_connections_.occur(fmt::format("accepting a connection failed: {}", ec.message()));
  }

  // Does what a step of the request (http_ingest_request.hpp) says.
  net::HttpStep act(ingest::Step step, std::string_view peer) {
    if (!step.error.empty()) side_.metrics.error(step.error);
    net::HttpStep out;
    switch (step.next) {
      case ingest::Step::Next::read_body:
        out.next = net::HttpStep::Next::read_body;
        return out;
      case ingest::Step::Next::close:
        out.next = net::HttpStep::Next::close;
        return out;
      case ingest::Step::Next::store: {
        Stored stored = store(step.decoded, std::string(peer));
        step.status = stored.status;
        step.body = std::move(stored.body);
        if (stored.status == net::http::status::service_unavailable) {
          step.headers.emplace_back(net::http::field::retry_after, std::to_string(settings_.retry_after.count()));
        }
        if (stored.dropped > 0) {
          // Records of this request dropped by overflow = "drop_newest" (also in the body's "dropped").
          out.answer.headers.emplace_back(kDroppedHeader, std::to_string(stored.dropped));
        }
        break;
      }
      case ingest::Step::Next::reply:
        break;
    }
    out.next = net::HttpStep::Next::answer;
    out.answer.status = step.status;
    out.answer.content_type = "application/json";
    out.answer.body = std::move(step.body);
    out.answer.keep_alive = step.keep_alive;
    for (auto& [field, value] : step.headers) {
      out.answer.headers.emplace_back(std::string(net::http::to_string(field)), std::move(value));
    }
    return out;
  }

  Stored store(const JsonBody& decoded, const std::string& peer) {
    // No limit on the number of records: a body that fits one commit (max_commit_bytes, 1/64 of
    // the queue's bound, 64 KiB to 4 MiB) is stored in one transaction, all or nothing.
    PendingBatch batch(side_.name, side_.batch_limit, std::numeric_limits<std::size_t>::max(), side_.route.get(),
                       side_.clock_sync);
    queue::Attribute attrs[] = {{"peer", peer}};
    std::size_t accepted = 0;
    std::size_t dropped = 0;
    std::size_t dead_lettered = 0;
    json::array rejected;  // the first few refused records, for the producer
    auto commit = [&]() -> std::optional<Stored> {
      const Outcome o = side_.committer.commit(batch);
      accepted += o.stored_records;
      dropped += o.dropped_records;
      dead_lettered += o.dead_letters;
      switch (o.settlement) {
        case Settlement::stored:
        case Settlement::dropped:
          return std::nullopt;
        case Settlement::held:
          side_.metrics.error("queue_full");
          return Stored{net::http::status::service_unavailable,
                        json_error("the queue is full; retry later", accepted), accepted, dropped};
        case Settlement::failed:
          return Stored{net::http::status::service_unavailable, json_error("storing failed; retry later", accepted),
                        accepted, dropped};
      }
      return std::nullopt;
    };
    const std::int64_t received = side_.clock.wall_ns();  // one arrival time for the whole body
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
    return Stored{net::http::status::ok, json::serialize(reply) + "\n", accepted, dropped};
  }

  HttpIngestSettings settings_;
  QueueSide side_;
  log::Episode refused_connections_;
  std::string where_;
  std::optional<net::HttpServer> server_;  // last: stopped and destroyed first
};

}  // namespace

std::unique_ptr<plugin::Input> make_http_ingest_input(const HttpIngestSettings& settings,
                                                      const plugin::InputContext& context) {
  return std::make_unique<HttpIngest>(settings, context);
}

}  // namespace tank::input
