#include "http_ingest_request.hpp"

#include <boost/asio/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <fmt/format.h>
#include <openssl/crypto.h>

#include "common/units.hpp"

namespace tank::input::ingest {
namespace {

Step reply(http::status status, std::string body, bool keep_alive, std::string error,
           std::vector<std::pair<http::field, std::string>> headers = {}) {
  Step s;
  s.next = Step::Next::reply;
  s.status = status;
  s.body = std::move(body);
  s.keep_alive = keep_alive;
  s.error = std::move(error);
  s.headers = std::move(headers);
  return s;
}

Step close(std::string error) {
  Step s;
  s.next = Step::Next::close;
  s.error = std::move(error);
  return s;
}

Step body_too_large(const HttpIngestSettings& settings) {
  return reply(http::status::payload_too_large,
               json_error(fmt::format("the body is larger than max_body_bytes = {}",
                                      units::format_size(settings.max_body_bytes))),
               false, "body_too_large");
}

}  // namespace

std::string json_error(std::string_view message, std::size_t accepted) {
  std::string out = "{\"error\":\"";
  for (char c : message) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out.push_back(c);
  }
  out += '"';
  if (accepted > 0) out += fmt::format(",\"accepted\":{}", accepted);
  return out + "}\n";
}

net::HttpServerOptions server_options(const HttpIngestSettings& settings) {
  net::HttpServerOptions options;
  options.threads = settings.threads;
  options.max_connections = settings.max_connections;
  options.max_header_bytes = kMaxHeaderBytes;
  options.max_body_bytes = settings.max_body_bytes;
  options.idle_timeout = settings.idle_timeout;
  options.request_timeout = std::chrono::nanoseconds(0);
  options.max_lifetime = std::chrono::nanoseconds(0);
  options.linger = std::chrono::seconds(2);
  options.stop_grace = std::chrono::seconds(10);
  return options;
}

Step after_header(boost::system::error_code ec, const RequestParser& parser, const HttpIngestSettings& settings,
                  bool paused) {
  namespace beast = boost::beast;
  // Beast refuses a Content-Length over the limit as soon as the header is complete.
  if (ec == http::error::body_limit) return body_too_large(settings);
  if (ec == http::error::header_limit) {
    return reply(http::status::request_header_fields_too_large, json_error("request header too large"), false,
                 "header_too_large");
  }
  if (ec) {
    const bool counted = ec != http::error::end_of_stream && ec != beast::error::timeout &&
                         ec != boost::asio::error::operation_aborted;
    return close(counted ? "bad_request" : "");
  }
  const auto& req = parser.get();
  std::string_view target(req.target().data(), req.target().size());
  if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  // Whatever the answer, a body we do not read means the connection cannot be reused.
  const bool has_body = req.has_content_length() || req.chunked();
  if (target != settings.path) {
    return reply(http::status::not_found, json_error(fmt::format("records are accepted at {}", settings.path)),
                 !has_body && req.keep_alive(), "not_found");
  }
  if (req.method() != http::verb::post) {
    return reply(http::status::method_not_allowed, json_error("use POST"), !has_body && req.keep_alive(),
                 "method_not_allowed", {{http::field::allow, "POST"}});
  }
  const std::string& token = settings.auth_token;
  if (!token.empty()) {
    auto it = req.find(http::field::authorization);
    std::string expected = "Bearer " + token;
    std::string_view given =
        it == req.end() ? std::string_view() : std::string_view(it->value().data(), it->value().size());
    bool ok = given.size() == expected.size() && CRYPTO_memcmp(given.data(), expected.data(), given.size()) == 0;
    if (!ok) {
      return reply(http::status::unauthorized, json_error("a valid Authorization: Bearer token is required"), false,
                   "unauthorized", {{http::field::www_authenticate, "Bearer"}});
    }
  }
  if (paused) {
    return reply(http::status::service_unavailable, json_error("the queue is full; retry later"), false,
                 "queue_full", {{http::field::retry_after, std::to_string(settings.retry_after.count())}});
  }
  if (auto length = parser.content_length(); length && *length > settings.max_body_bytes) {
    return reply(http::status::payload_too_large,
                 json_error(fmt::format("the body has {} bytes, more than max_body_bytes = {}", *length,
                                        units::format_size(settings.max_body_bytes))),
                 false, "body_too_large");
  }
  Step s;
  s.next = Step::Next::read_body;
  return s;
}

Step after_body(boost::system::error_code ec, const RequestParser& parser, const HttpIngestSettings& settings) {
  if (ec == http::error::body_limit) return body_too_large(settings);
  if (ec) return close("bad_request");
  const auto& req = parser.get();
  std::string_view content_type;
  if (auto it = req.find(http::field::content_type); it != req.end()) {
    content_type = std::string_view(it->value().data(), it->value().size());
  }
  const bool ndjson = content_type.find("ndjson") != std::string_view::npos ||
                      content_type.find("jsonlines") != std::string_view::npos ||
                      content_type.find("json-seq") != std::string_view::npos;
  Step s;
  s.decoded = split_json_body(req.body(), ndjson);
  if (!s.decoded.error.empty()) {
    return reply(http::status::bad_request, json_error(s.decoded.error), req.keep_alive(), "bad_request");
  }
  s.next = Step::Next::store;
  s.keep_alive = req.keep_alive();
  return s;
}

}  // namespace tank::input::ingest
