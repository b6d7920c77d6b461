// inputs.unix: records over a unix socket, stream (newline-delimited) or datagram (one record
// per datagram). See agent/input/stream_server.hpp and agent/input/datagram_server.hpp.

#include <cstdlib>
#include <optional>

#include <fmt/format.h>

#include "config/bind.hpp"
#include "input/datagram_server.hpp"
#include "input/stream_server.hpp"
#include "plugin/registry.hpp"

namespace tank::plugins {
namespace {

constexpr std::string_view kSocketTypes[] = {"stream", "datagram"};

std::optional<unsigned> parse_mode(const std::string& text) {
  if (text.empty() || text.size() > 4) return std::nullopt;
  unsigned v = 0;
  for (char c : text) {
    if (c < '0' || c > '7') return std::nullopt;
    v = v * 8 + static_cast<unsigned>(c - '0');
  }
  return v;
}

// A stream and a datagram socket take their settings apart; `socket_type` says which is used.
struct UnixSettings {
  bool datagram = false;
  input::StreamSettings stream;
  input::DatagramSettings datagram_socket;
};
using S = UnixSettings;

const config::Options<S> kOptions{
    plugin::format_option("\"text\""),
    config::string("path",
                   [](S& s, const std::string& path) {
                     s.stream.path = path;
                     s.datagram_socket.path = path;
                   })
        .describe("The socket file to create. A stale socket file left by an earlier run is replaced; a file "
                  "that is not a socket, or a socket something still listens on, is an error.")
        .required(),
    config::choice("socket_type", kSocketTypes, &S::datagram, {false, true})
        .default_value("stream")
        .describe("\"stream\": newline-delimited records, the sender's pid and uid kept as the `peer` attribute; "
                  "\"datagram\": one record per datagram."),
    config::string("mode",
                   [](S& s, const std::string& text) {
                     const unsigned mode = parse_mode(text).value_or(0660);
                     s.stream.mode = mode;
                     s.datagram_socket.mode = mode;
                   })
        .default_value("0660")
        .describe("Permissions of the socket file, in octal."),
    config::size("max_line_bytes", [](S& s, std::uint64_t n) { s.stream.max_line_bytes = n; })
        .default_value("64KiB")
        .describe("Stream: the longest line taken as a record; longer ones go to the dead-letter store "
                  "(`line_too_long`).")
        .min("16B")
        .max("4MiB"),
    config::size("max_message_bytes", [](S& s, std::uint64_t n) { s.datagram_socket.max_message_bytes = n; })
        .default_value("64KiB")
        .describe("Datagram: the largest datagram taken as a record; larger ones go to the dead-letter store "
                  "(`message_too_large`).")
        .min("16B")
        .max("4MiB"),
    config::integer("max_connections",
                    [](S& s, std::int64_t n) { s.stream.max_connections = static_cast<std::size_t>(n); })
        .default_value(256)
        .describe("Stream: connections served at once; further ones are closed and counted.")
        .min("1")
        .max("65536"),
    config::duration("idle_timeout", [](S& s, std::chrono::nanoseconds d) { s.stream.idle_timeout = d; })
        .default_value("5m")
        .describe("Stream: a connection silent this long is closed (\"0\": never).")
        .max("24h"),
};

void check(const config::SectionValues& values, config::Diagnostics& diagnostics) {
  if (!parse_mode(values.string("mode"))) {
    diagnostics.error(values.location_of("mode"), values.path() + ".mode",
                      fmt::format("expected octal permissions such as \"0660\", got \"{}\"", values.string("mode")));
  }
  const std::string& path = values.string("path");
  if (path.empty() || path.size() >= 108) {
    diagnostics.error(values.location_of("path"), values.path() + ".path",
                      "a unix socket path must have 1 to 107 bytes");
  }
}

const config::Section kSection{
    .path = "inputs.unix",
    .summary = "Records over a unix socket: newline-delimited on a stream socket (backpressure as for TCP), one "
               "per datagram on a datagram socket (counted as dropped while the queue refuses records).",
    .options = kOptions.all(),
    .common = plugin::input_common_options(),
    .repeated = true,
    .check = check,
};

std::unique_ptr<plugin::Input> create(const config::SectionValues& v, const plugin::InputContext& context) {
  UnixSettings s = kOptions.read(v);
  if (s.datagram) {
    s.datagram_socket.type = "unix";
    return input::make_unix_datagram_input(s.datagram_socket, context);
  }
  s.stream.type = "unix";
  s.stream.threads = 1;
  return input::make_unix_stream_input(s.stream, context);
}

}  // namespace

void register_inputs_unix(plugin::Registry& registry) {
  registry.add({.kind = plugin::Kind::input,
                .name = "unix",
                .section = &kSection,
                .summary = "records over a unix stream or datagram socket",
                .create_input = create});
}

}  // namespace tank::plugins
