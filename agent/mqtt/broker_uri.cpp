#include "mqtt/broker_uri.hpp"

#include <variant>

#include <fmt/format.h>

#include "common/strings.hpp"
#include "net/uri.hpp"

namespace tank::input {

std::optional<BrokerAddress> parse_broker_uri(const std::string& uri, std::string& error) {
  static constexpr net::Scheme kSchemes[] = {
      {"tcp", 1883, false}, {"mqtt", 1883, false}, {"ssl", 8883, true}, {"mqtts", 8883, true}};
  auto parsed = net::parse_uri(uri, {.schemes = kSchemes, .userinfo = false, .path = false});
  if (const auto* a = std::get_if<net::Uri>(&parsed)) return BrokerAddress{a->tls, a->host, a->port};
  const auto& refused = std::get<net::UriError>(parsed);
  const std::string shown = strings::redact_url_userinfo(uri);
  if (refused.problem == net::UriProblem::scheme) {
    error = fmt::format("\"{}\" is not a broker URI: write tcp://host:1883 or ssl://host:8883 (also mqtt://, mqtts://)",
                        shown);
  } else if (refused.problem == net::UriProblem::userinfo) {
    error = fmt::format("\"{}\": credentials in a broker URI are not sent; give them as username and password "
                        "(or password_file)",
                        shown);
  } else {
    error = refused.message;
  }
  return std::nullopt;
}

}  // namespace tank::input
