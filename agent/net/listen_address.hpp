#pragma once

// "host:port" addresses for listeners, shared by configuration checks and servers.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tank::net {

struct ListenAddress {
  std::string host;  // an IP literal ("127.0.0.1", "::1", "0.0.0.0", "::")
  std::uint16_t port = 0;  // 0: the kernel picks a free port
};

// Parses "127.0.0.1:9464", "[::1]:9464", "localhost:9464" (127.0.0.1) or ":9464" (all IPv4
// interfaces). Returns nullopt and sets `error` to what was expected otherwise.
std::optional<ListenAddress> parse_listen_address(std::string_view text, std::string* error);

}  // namespace tank::net
