// outputs.http: each batch is one POST to `url` (Boost.Beast over Boost.Asio), with keep-alive,
// Content-Type, Content-Encoding, Idempotency-Key and the configured headers. The delivery engine
// (output/delivery.hpp) retries and dead-letters; this plugin classifies the answer:
//
//   2xx                                   delivered
//   408, 429, 5xx, 3xx (not followed),    retry (Retry-After honoured: seconds or an HTTP date)
//   timeouts, connection errors
//   any other 4xx                         rejected: the batch goes to the dead-letter store with
//                                         the status and the start of the body
//
// Not yet: https:// (TLS) and proxies; `tank check` says so for an https URL.

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <ctime>
#include <mutex>
#include <optional>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "common/strings.hpp"
#include "common/units.hpp"
#include "plugin/registry.hpp"

namespace tank::plugins {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using config::Option;
using config::Type;

const Option kOptions[] = {
    {.name = "url",
     .type = Type::string,
     .default_value = "",
     .description = "Where each batch is POSTed: http://host[:port][/path].",
     .required = true},
    {.name = "headers",
     .type = Type::string_list,
     .default_value = "[]",
     .description = "Extra request headers, each \"Name: value\" (e.g. \"X-Tenant: plant-7\")."},
    {.name = "token",
     .type = Type::string,
     .default_value = "",
     .description = "A bearer token sent as \"Authorization: Bearer <token>\"; better given as token_file.",
     .secret = true},
    {.name = "connect_timeout",
     .type = Type::duration,
     .default_value = "\"5s\"",
     .description = "How long connecting may take before the attempt counts as failed (and is retried).",
     .min = "1ms"},
    {.name = "response_timeout",
     .type = Type::duration,
     .default_value = "\"30s\"",
     .description = "How long sending a batch and reading the answer may take before the attempt counts as failed "
                    "(and is retried).",
     .min = "1ms"},
};

struct Url {
  std::string host;
  std::string port;
  std::string target;
};

// http://host[:port][/path]; nullopt (and `error`) otherwise.
std::optional<Url> parse_url(std::string_view text, std::string* error) {
  constexpr std::string_view kHttp = "http://";
  if (text.starts_with("https://")) {
    *error = "https:// is not supported yet (TLS for outputs.http comes next); use http:// to a local TLS proxy "
             "meanwhile";
    return std::nullopt;
  }
  if (!text.starts_with(kHttp)) {
    *error = fmt::format("\"{}\" is not an http:// URL", text);
    return std::nullopt;
  }
  std::string_view rest = text.substr(kHttp.size());
  const auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  Url u;
  u.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (authority.starts_with('[')) {  // [::1]:8080
    const auto close = authority.find(']');
    if (close == std::string_view::npos) {
      *error = fmt::format("\"{}\": an IPv6 address needs its closing ']'", text);
      return std::nullopt;
    }
    u.host = std::string(authority.substr(1, close - 1));
    authority = authority.substr(close + 1);
    u.port = authority.starts_with(':') ? std::string(authority.substr(1)) : "80";
  } else {
    const auto colon = authority.rfind(':');
    u.host = std::string(authority.substr(0, colon));
    u.port = colon == std::string_view::npos ? "80" : std::string(authority.substr(colon + 1));
  }
  unsigned port = 0;
  auto [p, ec] = std::from_chars(u.port.data(), u.port.data() + u.port.size(), port);
  if (u.host.empty() || ec != std::errc() || p != u.port.data() + u.port.size() || port == 0 || port > 65535) {
    *error = fmt::format("\"{}\" has no valid host and port", text);
    return std::nullopt;
  }
  return u;
}

std::optional<std::pair<std::string, std::string>> parse_header(std::string_view text) {
  const auto colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  std::string name(text.substr(0, colon));
  std::string_view value = text.substr(colon + 1);
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return std::nullopt;
  }
  return std::pair{name, std::string(value)};
}

void check(const config::SectionValues& v, config::Diagnostics& diagnostics) {
  std::string error;
  if (v.has("url") && !parse_url(v.string("url"), &error)) {
    diagnostics.error(v.location_of("url"), v.path() + ".url", error);
  }
  if (v.has("headers")) {
    const auto& headers = v.strings("headers");
    for (std::size_t i = 0; i < headers.size(); ++i) {
      if (!parse_header(headers[i])) {
        diagnostics.error(v.location_of("headers"), fmt::format("{}.headers[{}]", v.path(), i),
                          fmt::format("\"{}\" is not \"Name: value\"", headers[i]));
      }
    }
  }
}

const config::Section kSection{
    .path = "outputs.http",
    .summary = "POSTs each batch to an HTTP endpoint with keep-alive, an Idempotency-Key header, Content-Encoding and "
               "extra headers; 2xx is delivered, 408/429/5xx and network errors are retried (Retry-After honoured), "
               "any other 4xx dead-letters the batch with reason `upstream_rejected`.",
    .options = kOptions,
    .common = plugin::output_common_options(),
    .repeated = true,
    .check = check,
};

// Retry-After: delta-seconds or an HTTP date (RFC 9110, section 10.2.3).
std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value, std::int64_t now_ns) {
  std::uint64_t seconds = 0;
  auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
  if (ec == std::errc() && p == value.data() + value.size()) {
    return std::chrono::milliseconds(std::min<std::uint64_t>(seconds, 24 * 3600) * 1000);
  }
  std::tm tm{};
  const std::string owned(value);
  if (strptime(owned.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm) == nullptr) return std::nullopt;
  const std::int64_t at_ms = static_cast<std::int64_t>(timegm(&tm)) * 1000;
  const std::int64_t now_ms = now_ns / 1'000'000;
  return std::chrono::milliseconds(std::clamp<std::int64_t>(at_ms - now_ms, 0, 24 * 3600 * 1000));
}

class HttpOutput final : public plugin::Output {
 public:
  HttpOutput(const config::SectionValues& v, const plugin::OutputContext& context) : clock_(context.clock) {
    std::string error;
    url_ = *parse_url(v.string("url"), &error);
    for (const auto& h : v.strings("headers")) headers_.push_back(*parse_header(h));
    if (v.has("token")) headers_.emplace_back("Authorization", "Bearer " + v.string("token"));
    connect_timeout_ = v.duration("connect_timeout");
    response_timeout_ = v.duration("response_timeout");
    host_header_ = url_.port == "80" ? url_.host : fmt::format("{}:{}", url_.host, url_.port);
    if (url_.host.find(':') != std::string::npos) {
      host_header_ = url_.port == "80" ? "[" + url_.host + "]" : fmt::format("[{}]:{}", url_.host, url_.port);
    }
  }

  plugin::SendResult send(const plugin::OutgoingBatch& batch) override {
    io_.restart();
    // After restart(): an interrupt() from here on stops the run below.
    if (interrupted_) return {plugin::SendStatus::retry, "stopping", std::nullopt};
    plugin::SendResult result{plugin::SendStatus::retry, "", std::nullopt};
    bool done = false;
    auto fail = [&](std::string what, const beast::error_code& ec) {
      result = {plugin::SendStatus::retry,
                ec == beast::error::timeout ? fmt::format("{}: timed out", what) : fmt::format("{}: {}", what, ec.message()),
                std::nullopt};
      close();
      done = true;
    };
    request_ = {};
    request_.method(http::verb::post);
    request_.target(url_.target);
    request_.version(11);
    request_.set(http::field::host, host_header_);
    request_.set(http::field::user_agent, "tank");
    request_.set(http::field::content_type, batch.content_type);
    if (!batch.content_encoding.empty()) request_.set(http::field::content_encoding, batch.content_encoding);
    request_.set("Idempotency-Key", batch.idempotency_key);
    for (const auto& [name, value] : headers_) request_.set(name, value);
    request_.body().assign(batch.body);
    request_.prepare_payload();
    response_.emplace();
    response_->body_limit(1 << 20);
    buffer_.clear();

    auto exchange = [&] {
      stream_->expires_after(response_timeout_);
      http::async_write(*stream_, request_, [&](beast::error_code ec, std::size_t) {
        if (ec) return fail(fmt::format("sending to {}", host_header_), ec);
        http::async_read(*stream_, buffer_, *response_, [&](beast::error_code rec, std::size_t) {
          if (rec) return fail(fmt::format("reading the answer of {}", host_header_), rec);
          result = classify(response_->get());
          if (!response_->get().keep_alive()) close();
          done = true;
        });
      });
    };
    if (stream_ && stream_->socket().is_open()) {
      exchange();
    } else {
      stream_.emplace(io_);
      tcp::resolver resolver(io_);
      beast::error_code ec;
      auto endpoints = resolver.resolve(url_.host, url_.port, ec);
      if (ec) {
        close();
        return {plugin::SendStatus::retry, fmt::format("resolving {}: {}", url_.host, ec.message()), std::nullopt};
      }
      stream_->expires_after(connect_timeout_);
      stream_->async_connect(endpoints, [&](beast::error_code cec, const tcp::endpoint&) {
        if (cec) return fail(fmt::format("connecting to {}", host_header_), cec);
        exchange();
      });
    }
    io_.run();
    if (!done) {
      close();
      return {plugin::SendStatus::retry, "stopping", std::nullopt};
    }
    return result;
  }

  void interrupt() override {
    interrupted_ = true;
    io_.stop();
  }

  void stop() override { close(); }

 private:
  plugin::SendResult classify(const http::response<http::string_body>& r) {
    const unsigned status = r.result_int();
    std::string excerpt = r.body().substr(0, 512);
    if (strings::invalid_utf8_at(excerpt)) excerpt = "(a body that is not UTF-8 text)";
    const std::string detail = fmt::format("HTTP {} {}{}{}", status, std::string(r.reason()), excerpt.empty() ? "" : ": ",
                                           excerpt);
    if (status >= 200 && status < 300) return {plugin::SendStatus::delivered, detail, std::nullopt};
    if (status == 408 || status == 429 || status >= 500 || (status >= 300 && status < 400)) {
      std::optional<std::chrono::milliseconds> after;
      if (auto it = r.find(http::field::retry_after); it != r.end()) after = parse_retry_after(it->value(), clock_.wall_ns());
      return {plugin::SendStatus::retry, detail, after};
    }
    return {plugin::SendStatus::rejected, detail, std::nullopt};
  }

  void close() {
    if (stream_) {
      beast::error_code ec;
      stream_->socket().shutdown(tcp::socket::shutdown_both, ec);
      stream_->close();
      stream_.reset();
    }
  }

  const Clock& clock_;
  Url url_;
  std::string host_header_;
  std::vector<std::pair<std::string, std::string>> headers_;
  std::chrono::nanoseconds connect_timeout_{};
  std::chrono::nanoseconds response_timeout_{};
  asio::io_context io_;
  std::optional<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  std::optional<http::response_parser<http::string_body>> response_;
  std::atomic<bool> interrupted_{false};
};

std::unique_ptr<plugin::Output> create(const config::SectionValues& v, const plugin::OutputContext& context) {
  return std::make_unique<HttpOutput>(v, context);
}

}  // namespace

void register_outputs_http(plugin::Registry& registry) {
  registry.add({.kind = plugin::Kind::output,
                .name = "http",
                .section = &kSection,
                .summary = "POSTs batches to an HTTP endpoint with an Idempotency-Key",
                .create_output = create});
}

}  // namespace tank::plugins
