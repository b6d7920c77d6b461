#pragma once

// The sd_notify protocol, spoken directly: one datagram to the socket named by NOTIFY_SOCKET.
// A documented, stable protocol (sd_notify(3)); no libsystemd needed.

#include <string_view>

namespace tank::systemd {

// Sends `state` (e.g. "READY=1", "STOPPING=1") when running under systemd with Type=notify.
// Returns false when NOTIFY_SOCKET is unset or the send failed; never throws.
bool notify(std::string_view state);

}  // namespace tank::systemd
