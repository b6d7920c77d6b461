#pragma once

// Listen addresses moved to net/listen_address.hpp (issue 19); these names stay until the inputs
// that use them (input/http_ingest.cpp, input/socket_inputs.cpp, plugins/inputs_*) include it.

#include "net/listen_address.hpp"

namespace tank::metrics {

using net::ListenAddress;
using net::parse_listen_address;

}  // namespace tank::metrics
