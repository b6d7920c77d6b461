#include "net/listen_address.hpp"

#include <arpa/inet.h>

#include <charconv>

#include <fmt/format.h>

namespace tank::net {

std::optional<ListenAddress> parse_listen_address(std::string_view text, std::string* error) {
  auto fail = [&](std::string why) -> std::optional<ListenAddress> {
    if (error) {
      *error = fmt::format("expected \"host:port\" such as \"127.0.0.1:9464\" or \"[::1]:9464\", got \"{}\"{}", text,
                           why.empty() ? "" : " (" + why + ")");
    }
    return std::nullopt;
  };
  std::string_view host;
  std::string_view port;
  if (text.starts_with("[")) {
    auto close = text.find("]:");
    if (close == std::string_view::npos) return fail("an IPv6 address goes in brackets: [::1]:9464");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return fail("no port");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return fail("an IPv6 address goes in brackets: [::1]:9464");
  }
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || ptr != port.data() + port.size() || value > 65535) {
    return fail("the port must be a number from 0 to 65535");
  }
  ListenAddress out;
  out.port = static_cast<std::uint16_t>(value);
  if (host.empty()) {
    out.host = "0.0.0.0";
  } else if (host == "localhost") {
    out.host = "127.0.0.1";
  } else {
    unsigned char buf[16];
    std::string h(host);
    if (inet_pton(AF_INET, h.c_str(), buf) != 1 && inet_pton(AF_INET6, h.c_str(), buf) != 1) {
      return fail("the host must be an IP address or localhost");
    }
    out.host = h;
  }
  return out;
}

}  // namespace tank::net
