// outputs.http: each batch is one POST to `url` (net::HttpClient: Boost.Beast, OpenSSL for TLS),
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
#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "common/log.hpp"
#include "common/strings.hpp"
#include "common/tls.hpp"
#include "common/units.hpp"
#include "config/bind.hpp"
#include "net/http_client.hpp"
#include "net/uri.hpp"
#include "plugin/input.hpp"
#include "plugin/registry.hpp"
#include "plugin/tls_options.hpp"
#include "response.hpp"

namespace tank::plugins {
namespace {

namespace http = boost::beast::http;
struct HttpSettings {
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::optional<std::string> token;  // a bearer token, when given
  std::chrono::nanoseconds connect_timeout = std::chrono::seconds(5);
  std::chrono::nanoseconds response_timeout = std::chrono::seconds(30);
  std::string proxy;  // "": from the environment; "none": never
  tls::ClientSettings tls;
};
using S = HttpSettings;

const config::Options<S> kOptions{
    config::string("url", &S::url)
        .describe("Where each batch is POSTed: http://host[:port][/path] or https://host[:port][/path].")
        .required(),
    config::string_list("headers", &S::headers)
        .default_value("[]")
        .describe("Extra request headers, each \"Name: value\" (e.g. \"X-Tenant: plant-7\")."),
    config::string("token", [](S& s, const std::string& token) { s.token = token; })
        .describe("A bearer token sent as \"Authorization: Bearer <token>\"; better given as token_file.")
        .secret(),
    config::duration("connect_timeout", &S::connect_timeout)
        .default_value("5s")
        .describe("How long connecting (TCP, proxy CONNECT, TLS handshake) may take before the attempt counts as "
                  "failed (and is retried).")
        .min("1ms"),
    config::duration("response_timeout", &S::response_timeout)
        .default_value("30s")
        .describe("How long sending a batch and reading the answer may take before the attempt counts as failed "
                  "(and is retried).")
        .min("1ms"),
    config::string("proxy", &S::proxy)
        .default_value("")
        .describe("An HTTP proxy, http://[user:password@]host:port: https:// URLs are tunnelled through it with "
                  "CONNECT, http:// requests are sent to it. Empty: HTTPS_PROXY (https://) or HTTP_PROXY (http://) "
                  "from the environment, unless NO_PROXY lists the host. \"none\": never a proxy.")
        .secret(),
    config::nested(&S::tls, plugin::tls_client_bindings()),
};

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
    .options = kOptions.all(),
    .common = plugin::output_common_options(),
    .repeated = true,
    .check = check,
};

// The proxy for `url`: the option's ("" means the environment's, "none" none). `error`: an
// environment variable that holds no usable proxy (reported at start).
struct ProxyChoice {
  std::optional<net::Uri> proxy;
  const char* from = nullptr;  // the environment variable `proxy` came from
  std::string error;
};

ProxyChoice choose_proxy(const std::string& option, const net::Uri& url) {
  ProxyChoice choice;
  std::string error;
  if (option == "none") return choice;
  if (!option.empty()) {
    choice.proxy = parse_proxy(option, &error);
    return choice;
  }
  const char* from = url.tls ? "HTTPS_PROXY" : "HTTP_PROXY";
  const std::string value = url.tls ? env("HTTPS_PROXY", "https_proxy") : env("HTTP_PROXY", "http_proxy");
  if (value.empty() || no_proxy_matches(env("NO_PROXY", "no_proxy"), url.host)) return choice;
  choice.from = from;
  choice.proxy = parse_proxy(value, &error);
  if (!choice.proxy) {
    choice.error = fmt::format("the environment's {} is not usable: {} (fix it, or set proxy = \"none\")", from, error);
  }
  return choice;
}

// The url option's value, which check() found valid.
net::Uri url_of(const HttpSettings& s) {
  std::string error;
  return *parse_url(s.url, &error);
}

net::HttpClientSettings client_settings(const HttpSettings& s, const ProxyChoice& proxy) {
  return net::HttpClientSettings{.server = url_of(s),
                                 .proxy = proxy.proxy,
                                 .connect_timeout = s.connect_timeout,
                                 .response_timeout = s.response_timeout,
                                 .tls = s.tls};
}

// One sender's plugin instance: what each batch's request holds and what its answer means; the
// connection is net::HttpClient's.
class HttpOutput final : public plugin::Output {
 public:
  HttpOutput(const HttpSettings& s, const plugin::OutputContext& context)
      : clock_(context.clock),
        component_("output " + context.name),
        proxy_(choose_proxy(s.proxy, url_of(s))),
        client_(client_settings(s, proxy_)) {
    for (const auto& h : s.headers) headers_.push_back(*parse_header(h));
    if (s.token) headers_.emplace_back("Authorization", "Bearer " + *s.token);
  }

  void start() override {
    if (!proxy_.error.empty()) throw plugin::StartError(proxy_.error);
    try {
      client_.start();
    } catch (const std::runtime_error& e) {
      throw plugin::StartError(e.what());
    }
    if (proxy_.proxy) {
      log::info(component_, "sends through the proxy {}{}", net::host_port(*proxy_.proxy, false),
                proxy_.from ? fmt::format(" (from {})", proxy_.from) : "");
    }
  }

  plugin::SendResult send(const plugin::OutgoingBatch& batch) override {
    // A new request, but the body's buffer is kept: a batch is often megabytes, and allocating
    // (and faulting in) a fresh one per send costs more CPU than the send itself.
    std::string body = std::move(request_.body());
    request_ = client_.make_request(http::verb::post);
    request_.body() = std::move(body);
    request_.set(http::field::content_type, batch.content_type);
    if (!batch.content_encoding.empty()) request_.set(http::field::content_encoding, batch.content_encoding);
    request_.set("Idempotency-Key", batch.idempotency_key);
    for (const auto& [name, value] : headers_) request_.set(name, value);
    request_.body().assign(batch.body);
    request_.prepare_payload();

    response_.emplace();
    http_output::limit_response(*response_);
    const auto result = client_.exchange(request_, *response_);
    switch (result.outcome) {
      case net::HttpClient::ExchangeResult::Outcome::answered:
        return http_output::classify_response(response_->get(), clock_.wall_ns());
      case net::HttpClient::ExchangeResult::Outcome::failed:
      case net::HttpClient::ExchangeResult::Outcome::interrupted:
        return {plugin::SendStatus::retry, result.error, std::nullopt};
    }
    return {plugin::SendStatus::retry, result.error, std::nullopt};
  }

  void interrupt() override { client_.interrupt(); }

  void stop() override { client_.close(); }

  // Connecting (each resolved address, a proxy's CONNECT, the TLS handshake) and the answer.
  std::chrono::nanoseconds longest_send() const override { return client_.longest_exchange(); }

 private:
  const Clock& clock_;
  std::string component_;
  ProxyChoice proxy_;
  std::vector<std::pair<std::string, std::string>> headers_;
  net::HttpClient client_;
  net::HttpClient::Request request_;
  std::optional<http_output::ResponseParser> response_;
};

std::unique_ptr<plugin::Output> create(const config::SectionValues& v, const plugin::OutputContext& context) {
  return std::make_unique<HttpOutput>(kOptions.read(v), context);
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
