#pragma once

// The `listen` option of the inputs that listen on an IP address (inputs.tcp, inputs.udp,
// inputs.http) and its check: declared once, so it is named, checked and documented alike.

#include <string>
#include <string_view>

#include "config/bind.hpp"
#include "config/document.hpp"

namespace tank::plugin {

inline constexpr std::string_view kListenDescription =
    "Address to listen on, \"host:port\" (port 0 picks a free port).";

// `listen`, a "host:port" string bound to `member`, with the plugin's own default address
// ("127.0.0.1:5170"). A plugin may say more with .describe().
template <class S>
config::Declaration<S> listen_option(std::string S::*member, std::string_view default_address) {
  auto option = config::string("listen", member);
  option.default_value(default_address).describe(kListenDescription);
  return option;
}

// Adds an error at `listen` when it is not an address net::parse_listen_address takes.
void check_listen_option(const config::SectionValues& values, config::Diagnostics& diagnostics);

}  // namespace tank::plugin
