// inputs.unix: records over a unix socket, stream (newline-delimited) or datagram (one record
// per datagram). See agent/input/stream_server.hpp and agent/input/datagram_server.hpp.

#include <cstdlib>
#include <optional>

#include <fmt/format.h>

#include "input/datagram_server.hpp"
#include "input/stream_server.hpp"
#include "plugin/registry.hpp"

namespace tank::plugins {
namespace {

using config::Option;
using config::Type;

constexpr std::string_view kSocketTypes[] = {"stream", "datagram"};

const Option kOptions[] = {
    plugin::format_option("\"text\""),
    {.name = "path",
     .type = Type::string,
     .default_value = "",
     .description = "The socket file to create. A stale socket file left by an earlier run is replaced; a file "
                    "that is not a socket, or a socket something still listens on, is an error.",
     .required = true},
    {.name = "socket_type",
     .type = Type::choice,
     .default_value = "\"stream\"",
     .description = "\"stream\": newline-delimited records, the sender's pid and uid kept as the `peer` attribute; "
                    "\"datagram\": one record per datagram.",
     .choices = kSocketTypes},
    {.name = "mode",
     .type = Type::string,
     .default_value = "\"0660\"",
     .description = "Permissions of the socket file, in octal."},
    {.name = "max_line_bytes",
     .type = Type::size,
     .default_value = "\"64KiB\"",
     .description = "Stream: the longest line taken as a record; longer ones go to the dead-letter store "
                    "(`line_too_long`).",
     .min = "16B",
     .max = "4MiB"},
    {.name = "max_message_bytes",
     .type = Type::size,
     .default_value = "\"64KiB\"",
     .description = "Datagram: the largest datagram taken as a record; larger ones go to the dead-letter store "
                    "(`message_too_large`).",
     .min = "16B",
     .max = "4MiB"},
    {.name = "max_connections",
     .type = Type::integer,
     .default_value = "256",
     .description = "Stream: connections served at once; further ones are closed and counted.",
     .min = "1",
     .max = "65536"},
    {.name = "idle_timeout",
     .type = Type::duration,
     .default_value = "\"5m\"",
     .description = "Stream: a connection silent this long is closed (\"0\": never).",
     .max = "24h"},
};

std::optional<unsigned> parse_mode(const std::string& text) {
  if (text.empty() || text.size() > 4) return std::nullopt;
  unsigned v = 0;
  for (char c : text) {
    if (c < '0' || c > '7') return std::nullopt;
    v = v * 8 + static_cast<unsigned>(c - '0');
  }
  return v;
}

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
    .options = kOptions,
    .common = plugin::input_common_options(),
    .repeated = true,
    .check = check,
};

std::unique_ptr<plugin::Input> create(const config::SectionValues& v, const plugin::InputContext& context) {
  const unsigned mode = parse_mode(v.string("mode")).value_or(0660);
  if (v.choice("socket_type") == "datagram") {
    input::DatagramSettings s;
    s.type = "unix";
    s.path = v.string("path");
    s.mode = mode;
    s.max_message_bytes = v.size("max_message_bytes");
    return input::make_unix_datagram_input(s, context);
  }
  input::StreamSettings s;
  s.type = "unix";
  s.path = v.string("path");
  s.mode = mode;
  s.max_line_bytes = v.size("max_line_bytes");
  s.max_connections = static_cast<std::size_t>(v.integer("max_connections"));
  s.idle_timeout = v.duration("idle_timeout");
  s.threads = 1;
  return input::make_unix_stream_input(s, context);
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
