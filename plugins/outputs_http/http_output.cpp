// outputs.http: each batch is one POST to `url` (Boost.Beast over Boost.Asio, OpenSSL for TLS),
// with keep-alive, Content-Type, Content-Encoding, Idempotency-Key and the configured headers. The
// delivery engine (output/delivery.hpp) retries and dead-letters; this plugin classifies the answer:
//
//   2xx                                   delivered
//   408, 429, 5xx, 3xx (not followed),    retry (Retry-After honoured: seconds or an HTTP date)
//   timeouts, connection and TLS errors
//   any other 4xx                         rejected: the batch goes to the dead-letter store with
//                                         the status and the start of the body
//
// TLS (https://) verifies the server's certificate and name (common/tls.hpp). A proxy (`proxy`,
// or HTTPS_PROXY / HTTP_PROXY unless NO_PROXY matches the host) is asked to CONNECT to the
// server for https:// URLs, and is sent the request in absolute form for http:// URLs (what curl
// and Go do); credentials in the proxy URL go as Proxy-Authorization: Basic.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <variant>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <fmt/format.h>

#include "common/log.hpp"
#include "common/strings.hpp"
#include "common/tls.hpp"
#include "common/units.hpp"
#include "net/uri.hpp"
#include "plugin/input.hpp"
#include "plugin/registry.hpp"
#include "plugin/tls_options.hpp"
#include "response.hpp"

namespace tank::plugins {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::use_awaitable;
using tcp = asio::ip::tcp;
using config::Option;
using config::Type;

const Option kOwnOptions[] = {
    {.name = "url",
     .type = Type::string,
     .default_value = "",
     .description = "Where each batch is POSTed: http://host[:port][/path] or https://host[:port][/path].",
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
     .description = "How long connecting (TCP, proxy CONNECT, TLS handshake) may take before the attempt counts as "
                    "failed (and is retried).",
     .min = "1ms"},
    {.name = "response_timeout",
     .type = Type::duration,
     .default_value = "\"30s\"",
     .description = "How long sending a batch and reading the answer may take before the attempt counts as failed "
                    "(and is retried).",
     .min = "1ms"},
    {.name = "proxy",
     .type = Type::string,
     .default_value = "\"\"",
     .description = "An HTTP proxy, http://[user:password@]host:port: https:// URLs are tunnelled through it with "
                    "CONNECT, http:// requests are sent to it. Empty: HTTPS_PROXY (https://) or HTTP_PROXY (http://) "
                    "from the environment, unless NO_PROXY lists the host. \"none\": never a proxy.",
     .secret = true},
};

const std::vector<Option> kOptions = plugin::with_tls_client_options(kOwnOptions);

constexpr net::Scheme kHttpSchemes[] = {{"http", 80, false}, {"https", 443, true}};

// http(s)://[user[:password]@]host[:port][/path] (net/uri.hpp); nullopt (and `error`) otherwise.
// The error shows `text` without its userinfo: a proxy's URL carries its password.
std::optional<net::Uri> parse_url(std::string_view text, std::string* error) {
  auto parsed = net::parse_uri(text, {.schemes = kHttpSchemes, .userinfo = true});
  if (auto* uri = std::get_if<net::Uri>(&parsed)) return std::move(*uri);
  const auto& refused = std::get<net::UriError>(parsed);
  const std::string shown = strings::redact_url_userinfo(text);
  switch (refused.problem) {
    case net::UriProblem::scheme:
      *error = fmt::format("\"{}\" is not an http:// or https:// URL", shown);
      break;
    case net::UriProblem::unclosed_ipv6:
      *error = refused.message;
      break;
    case net::UriProblem::userinfo:
    case net::UriProblem::host:
    case net::UriProblem::port:
    case net::UriProblem::path:
    case net::UriProblem::syntax:
      *error = fmt::format("\"{}\" has no valid host and port", shown);
      break;
  }
  return std::nullopt;
}

// Proxy-Authorization: Basic's user-id:password, percent-decoded from the proxy's URL; empty when
// the URL has none.
std::string proxy_credentials(const net::Uri& proxy) {
  if (proxy.user.empty() && proxy.password.empty()) return {};
  return proxy.password.empty() ? proxy.user : proxy.user + ":" + proxy.password;
}

// The proxy option's value: "" (from the environment), "none", or an http:// URL.
std::optional<net::Uri> parse_proxy(std::string_view text, std::string* error) {
  if (text.starts_with("https://")) {
    *error = "a proxy reached over TLS (https://) is not supported: give the proxy as http://host:port (https:// "
             "URLs are still tunnelled through it end to end with CONNECT)";
    return std::nullopt;
  }
  if (!text.starts_with("http://")) {
    // HTTPS_PROXY=proxy.example:3128 (no scheme) is common and means http://.
    if (text.find("://") != std::string_view::npos) {
      *error = fmt::format("\"{}\" is not an http:// proxy URL", strings::redact_url_userinfo(text));
      return std::nullopt;
    }
    return parse_url("http://" + std::string(text), error);
  }
  return parse_url(text, error);
}

// NO_PROXY: a comma-separated list of host names (matching the host and its subdomains, with or
// without a leading dot), IP addresses, or "*" (everything).
bool no_proxy_matches(std::string_view list, const std::string& host) {
  std::string lowered_host = host;
  std::transform(lowered_host.begin(), lowered_host.end(), lowered_host.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  while (!list.empty()) {
    const auto comma = list.find(',');
    std::string_view entry = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    while (!entry.empty() && entry.front() == ' ') entry.remove_prefix(1);
    while (!entry.empty() && entry.back() == ' ') entry.remove_suffix(1);
    if (entry.starts_with('[') && entry.ends_with(']')) entry = entry.substr(1, entry.size() - 2);
    if (entry.starts_with('.')) entry.remove_prefix(1);
    if (entry.empty()) continue;
    if (entry == "*") return true;
    std::string e(entry);
    std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (lowered_host == e) return true;
    if (lowered_host.size() > e.size() && lowered_host.ends_with(e) &&
        lowered_host[lowered_host.size() - e.size() - 1] == '.') {
      return true;
    }
  }
  return false;
}

std::string env(const char* upper, const char* lower) {
  if (const char* v = std::getenv(lower); v != nullptr && *v != '\0') return v;
  if (const char* v = std::getenv(upper); v != nullptr && *v != '\0') return v;
  return {};
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
  if (v.has("url")) {
    const auto url = parse_url(v.string("url"), &error);
    if (!url) {
      diagnostics.error(v.location_of("url"), v.path() + ".url", error);
    } else if (url->has_userinfo) {
      diagnostics.error(v.location_of("url"), v.path() + ".url",
                        "credentials in the URL are not sent: use token, token_file or headers");
    }
  }
  if (v.has("headers")) {
    const auto& headers = v.strings("headers");
    for (std::size_t i = 0; i < headers.size(); ++i) {
      if (!parse_header(headers[i])) {
        // Only its first word is shown: a header often carries a credential ("Authorization
        // Bearer ..." without its colon would otherwise be printed whole).
        const std::string_view text = headers[i];
        const std::string_view first = text.substr(0, std::min<std::size_t>(text.find_first_of(": \t"), 40));
        diagnostics.error(v.location_of("headers"), fmt::format("{}.headers[{}]", v.path(), i),
                          fmt::format("the header starting \"{}\" ({} bytes) is not \"Name: value\" (a name of "
                                      "letters, digits, '-' and '_', a colon, the value)",
                                      first, text.size()));
      }
    }
  }
  plugin::check_tls_client_options(v, diagnostics);
  if (const auto& proxy = v.string("proxy"); !proxy.empty() && proxy != "none" && !parse_proxy(proxy, &error)) {
    diagnostics.error(v.location_of("proxy"), v.path() + ".proxy", error);
  }
}

const config::Section kSection{
    .path = "outputs.http",
    .summary = "POSTs each batch to an HTTP(S) endpoint with keep-alive, an Idempotency-Key header, Content-Encoding "
               "and extra headers; TLS verifies the server (mutual TLS optional), proxies via CONNECT; 2xx is "
               "delivered, 408/429/5xx and network errors are retried (Retry-After honoured), any other 4xx "
               "dead-letters the batch with reason `upstream_rejected`.",
    .options = kOptions,
    .common = plugin::output_common_options(),
    .repeated = true,
    .check = check,
};

std::string host_port(const net::Uri& u, bool omit_default_port) {
  const bool default_port = u.port == (u.tls ? "443" : "80");
  const std::string host = u.host.find(':') != std::string::npos ? "[" + u.host + "]" : u.host;
  return omit_default_port && default_port ? host : fmt::format("{}:{}", host, u.port);
}

// Failures of one attempt, with what was being done.
struct AttemptError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class HttpOutput final : public plugin::Output {
 public:
  HttpOutput(const config::SectionValues& v, const plugin::OutputContext& context)
      : clock_(context.clock), component_("output " + context.name) {
    std::string error;
    url_ = *parse_url(v.string("url"), &error);
    for (const auto& h : v.strings("headers")) headers_.push_back(*parse_header(h));
    if (v.has("token")) headers_.emplace_back("Authorization", "Bearer " + v.string("token"));
    connect_timeout_ = v.duration("connect_timeout");
    response_timeout_ = v.duration("response_timeout");
    host_header_ = host_port(url_, true);
    tls_settings_ = plugin::tls_client_settings(v);
    choose_proxy(v.string("proxy"));
  }

  void start() override {
    if (!proxy_error_.empty()) throw plugin::StartError(proxy_error_);
    if (url_.tls) {
      try {
        tls_context_.emplace(tls::make_client_context(tls_settings_));
      } catch (const std::runtime_error& e) {
        throw plugin::StartError(e.what());
      }
    }
    if (proxy_) {
      log::info(component_, "sends through the proxy {}{}", host_port(*proxy_, false),
                proxy_from_ ? fmt::format(" (from {})", proxy_from_) : "");
    }
  }

  plugin::SendResult send(const plugin::OutgoingBatch& batch) override {
    io_.restart();
    // After restart(): an interrupt() from here on stops the run below.
    if (interrupted_) return {plugin::SendStatus::retry, "stopping", std::nullopt};
    request_ = {};
    request_.method(http::verb::post);
    // Through a proxy, plain HTTP goes in absolute form (RFC 9112, section 3.2.2).
    request_.target(proxy_ && !url_.tls ? fmt::format("http://{}{}", host_header_, url_.target) : url_.target);
    request_.version(11);
    request_.set(http::field::host, host_header_);
    request_.set(http::field::user_agent, "tank");
    request_.set(http::field::content_type, batch.content_type);
    if (!batch.content_encoding.empty()) request_.set(http::field::content_encoding, batch.content_encoding);
    request_.set("Idempotency-Key", batch.idempotency_key);
    if (proxy_ && !url_.tls && !proxy_credentials(*proxy_).empty()) {
      request_.set(http::field::proxy_authorization, "Basic " + strings::base64(proxy_credentials(*proxy_)));
    }
    for (const auto& [name, value] : headers_) request_.set(name, value);
    request_.body().assign(batch.body);
    request_.prepare_payload();

    std::optional<plugin::SendResult> result;
    asio::co_spawn(io_, exchange(), [&](std::exception_ptr failure, plugin::SendResult r) {
      if (failure) {
        try {
          std::rethrow_exception(failure);
        } catch (const std::exception& e) {
          r = {plugin::SendStatus::retry, e.what(), std::nullopt};
        }
      }
      result = std::move(r);
    });
    io_.run();
    if (!result) {
      close();
      return {plugin::SendStatus::retry, "stopping", std::nullopt};
    }
    return *result;
  }

  void interrupt() override {
    interrupted_ = true;
    io_.stop();
  }

  void stop() override { close(); }

 private:
  void choose_proxy(const std::string& option) {
    std::string error;
    if (option == "none") return;
    if (!option.empty()) {
      proxy_ = parse_proxy(option, &error);
      return;
    }
    proxy_from_ = url_.tls ? "HTTPS_PROXY" : "HTTP_PROXY";
    const std::string value = url_.tls ? env("HTTPS_PROXY", "https_proxy") : env("HTTP_PROXY", "http_proxy");
    if (value.empty() || no_proxy_matches(env("NO_PROXY", "no_proxy"), url_.host)) {
      proxy_from_ = nullptr;
      return;
    }
    proxy_ = parse_proxy(value, &error);
    if (!proxy_) {
      proxy_error_ =
          fmt::format("the environment's {} is not usable: {} (fix it, or set proxy = \"none\")", proxy_from_, error);
    }
  }

  bool connected() const { return plain_ ? plain_->socket().is_open() : secure_ && secure_->next_layer().socket().is_open(); }

  awaitable<plugin::SendResult> exchange() {
    std::string doing;
    bool fresh = false;
    try {
      if (!connected()) {
        co_await connect(doing);
        fresh = true;
      }
      doing = fmt::format("sending to {}", host_header_);
      response_.emplace();
      http_output::limit_response(*response_);
      buffer_.clear();
      if (secure_) {
        co_await write_and_read(*secure_, doing);
      } else {
        co_await write_and_read(*plain_, doing);
      }
      plugin::SendResult r = http_output::classify_response(response_->get(), clock_.wall_ns());
      if (!response_->get().keep_alive()) close();
      co_return r;
    } catch (const AttemptError& e) {
      close();
      co_return plugin::SendResult{plugin::SendStatus::retry, e.what(), std::nullopt};
    } catch (const boost::system::system_error& e) {
      close();
      std::string hint;
      // TLS 1.3: the client's handshake is over before the server has checked the client's
      // certificate; a refusal arrives as an alert (or a closed connection) at the first read.
      if (fresh && url_.tls && e.code() != beast::error::timeout &&
          (e.code().category() == asio::error::get_ssl_category() || e.code() == asio::error::eof ||
           e.code() == asio::ssl::error::stream_truncated || e.code() == asio::error::connection_reset)) {
        hint = tls_settings_.cert_file.empty()
                   ? " (does the server require a client certificate? set tls_cert_file and tls_key_file)"
                   : " (does the server trust the CA that signed tls_cert_file?)";
      }
      co_return plugin::SendResult{
          plugin::SendStatus::retry,
          e.code() == beast::error::timeout ? fmt::format("{}: timed out", doing)
                                            : fmt::format("{}: {}{}", doing, e.code().message(), hint),
          std::nullopt};
    }
  }

  template <class Stream>
  awaitable<void> write_and_read(Stream& stream, std::string& doing) {
    beast::get_lowest_layer(stream).expires_after(response_timeout_);
    co_await http::async_write(stream, request_, use_awaitable);
    doing = fmt::format("reading the answer of {}", host_header_);
    co_await http::async_read(stream, buffer_, *response_, use_awaitable);
  }

  // TCP to the server or the proxy; CONNECT through the proxy for https://; the TLS handshake.
  awaitable<void> connect(std::string& doing) {
    close();
    const net::Uri& first_hop = proxy_ ? *proxy_ : url_;
    const std::string first_hop_name = host_port(first_hop, false);
    doing = fmt::format("resolving {}", first_hop.host);
    tcp::resolver resolver(io_);
    auto endpoints = co_await resolver.async_resolve(first_hop.host, first_hop.port, use_awaitable);
    doing = proxy_ ? fmt::format("connecting to the proxy {}", first_hop_name)
                   : fmt::format("connecting to {}", first_hop_name);
    beast::tcp_stream stream(io_);
    stream.expires_after(connect_timeout_);
    co_await stream.async_connect(endpoints, use_awaitable);
    if (proxy_ && url_.tls) {
      doing = fmt::format("asking the proxy {} to CONNECT to {}", first_hop_name, host_port(url_, false));
      http::request<http::empty_body> connect_request{http::verb::connect, host_port(url_, false), 11};
      connect_request.set(http::field::host, host_port(url_, false));
      connect_request.set(http::field::user_agent, "tank");
      if (!proxy_credentials(*proxy_).empty()) {
        connect_request.set(http::field::proxy_authorization, "Basic " + strings::base64(proxy_credentials(*proxy_)));
      }
      co_await http::async_write(stream, connect_request, use_awaitable);
      http::response_parser<http::empty_body> answer;
      answer.skip(true);  // a 2xx answer to CONNECT has no body: the tunnel follows
      beast::flat_buffer buffer;
      co_await http::async_read_header(stream, buffer, answer, use_awaitable);
      const unsigned status = answer.get().result_int();
      if (status / 100 != 2) {
        throw AttemptError(fmt::format("the proxy {} refused to CONNECT to {}: {} {}{}", first_hop_name,
                                       host_port(url_, false), status, strings::printable(answer.get().reason(), 128),
                                       status == 407 ? " (it wants credentials: write them in the proxy URL, "
                                                       "http://user:password@host:port)"
                                                     : ""));
      }
    }
    if (!url_.tls) {
      plain_.emplace(std::move(stream));
      co_return;
    }
    secure_.emplace(std::move(stream), *tls_context_);
    if (auto error = tls::prepare_client(secure_->native_handle(), url_.host, tls_settings_.verify); !error.empty()) {
      throw AttemptError(error);
    }
    doing = fmt::format("in the TLS handshake with {}", host_port(url_, false));
    try {
      co_await secure_->async_handshake(asio::ssl::stream_base::client, use_awaitable);
    } catch (const boost::system::system_error& e) {
      if (e.code() == beast::error::timeout) throw;
      throw AttemptError(tls::explain_handshake_failure(secure_->native_handle(), e.code(), tls_settings_, url_.host,
                                                        url_.port, "server"));
    }
  }

  // Closes the connection without a TLS close_notify: a batch is only ever done when its answer
  // has been read, so nothing is lost by it, and a dead peer cannot hold the close up.
  void close() {
    beast::error_code ec;
    if (plain_) {
      plain_->socket().shutdown(tcp::socket::shutdown_both, ec);
      plain_->close();
      plain_.reset();
    }
    if (secure_) {
      secure_->next_layer().socket().shutdown(tcp::socket::shutdown_both, ec);
      secure_->next_layer().close();
      secure_.reset();
    }
  }

  const Clock& clock_;
  std::string component_;
  net::Uri url_;
  std::string host_header_;
  std::vector<std::pair<std::string, std::string>> headers_;
  std::chrono::nanoseconds connect_timeout_{};
  std::chrono::nanoseconds response_timeout_{};

 public:
  // Connecting (each resolved address, a proxy's CONNECT, the TLS handshake) and the answer.
  std::chrono::nanoseconds longest_send() const override { return 3 * connect_timeout_ + 2 * response_timeout_; }

 private:
  tls::ClientSettings tls_settings_;
  std::optional<net::Uri> proxy_;
  const char* proxy_from_ = nullptr;  // the environment variable proxy_ came from
  std::string proxy_error_;
  asio::io_context io_;
  std::optional<asio::ssl::context> tls_context_;
  std::optional<beast::tcp_stream> plain_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  std::optional<http_output::ResponseParser> response_;
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
                .summary = "POSTs batches to an HTTP(S) endpoint with an Idempotency-Key",
                .create_output = create});
}

}  // namespace tank::plugins
