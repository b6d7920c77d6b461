#include "mqtt/broker_uri.hpp"

#include <string_view>

#include <fmt/format.h>

#include "common/strings.hpp"

namespace tank::input {

std::optional<BrokerAddress> parse_broker_uri(const std::string& uri, std::string& error) {
  const std::string shown = strings::redact_url_userinfo(uri);
  BrokerAddress a;
  std::string_view rest;
  if (uri.starts_with("tcp://") || uri.starts_with("mqtt://")) {
    rest = std::string_view(uri).substr(uri.find("://") + 3);
    a.port = "1883";
  } else if (uri.starts_with("ssl://") || uri.starts_with("mqtts://")) {
    rest = std::string_view(uri).substr(uri.find("://") + 3);
    a.tls = true;
    a.port = "8883";
  } else {
    error = fmt::format("\"{}\" is not a broker URI: write tcp://host:1883 or ssl://host:8883 (also mqtt://, mqtts://)",
                        shown);
    return std::nullopt;
  }
  if (rest.find('@') != std::string_view::npos) {
    error = fmt::format("\"{}\": credentials in a broker URI are not sent; give them as username and password "
                        "(or password_file)",
                        shown);
    return std::nullopt;
  }
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.starts_with('[')) {  // [::1]:1883
    auto close = rest.find(']');
    if (close == std::string_view::npos) {
      error = fmt::format("\"{}\": an IPv6 address needs its closing ]", shown);
      return std::nullopt;
    }
    a.host = std::string(rest.substr(1, close - 1));
    rest.remove_prefix(close + 1);
    if (rest.starts_with(':')) a.port = std::string(rest.substr(1));
    else if (!rest.empty()) {
      error = fmt::format("\"{}\": unexpected text after the address", shown);
      return std::nullopt;
    }
  } else {
    auto colon = rest.rfind(':');
    a.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) a.port = std::string(rest.substr(colon + 1));
  }
  if (a.host.empty() || a.host.find('/') != std::string::npos) {
    error = fmt::format("\"{}\" names no host", shown);
    return std::nullopt;
  }
  // At most 5 digits before converting: a longer number would not fit (std::stoul throws).
  if (a.port.empty() || a.port.size() > 5 || a.port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(a.port) == 0 || std::stoul(a.port) > 65535) {
    error = fmt::format("\"{}\" has no valid port", shown);
    return std::nullopt;
  }
  return a;
}

}  // namespace tank::input
