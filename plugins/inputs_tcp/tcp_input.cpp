// inputs.tcp: newline-delimited records over TCP (see agent/input/stream_server.hpp).

#include <thread>

#include "input/stream_server.hpp"
#include "metrics/listen_address.hpp"
#include "plugin/registry.hpp"

namespace tank::plugins {
namespace {

using config::Option;
using config::Type;

const Option kOptions[] = {
    plugin::format_option("\"text\""),
    {.name = "listen",
     .type = Type::string,
     .default_value = "\"127.0.0.1:5170\"",
     .description = "Address to listen on, \"host:port\" (\"[::]:5170\" for every IPv6 and IPv4 address; port 0 "
                    "picks a free port)."},
    {.name = "max_line_bytes",
     .type = Type::size,
     .default_value = "\"64KiB\"",
     .description = "The longest line taken as a record (without its newline). A longer line is not split: it "
                    "goes to the dead-letter store with reason `line_too_long` (as much of its start as fits one commit, at most 64 KiB, is kept).",
     .min = "16B",
     .max = "4MiB"},
    {.name = "max_connections",
     .type = Type::integer,
     .default_value = "256",
     .description = "Connections served at once; further ones are closed at once, counted in "
                    "tank_input_errors_total{reason=\"too_many_connections\"} and logged once per episode.",
     .min = "1",
     .max = "65536"},
    {.name = "idle_timeout",
     .type = Type::duration,
     .default_value = "\"5m\"",
     .description = "A connection that sends nothing for this long is closed (\"0\": never). Time spent paused by "
                    "backpressure does not count.",
     .max = "24h"},
    {.name = "threads",
     .type = Type::integer,
     .default_value = "2",
     .description = "Threads reading connections (each connection is read by one at a time).",
     .min = "1",
     .max = "64"},
};

void check(const config::SectionValues& values, config::Diagnostics& diagnostics) {
  std::string error;
  if (!metrics::parse_listen_address(values.string("listen"), &error)) {
    diagnostics.error(values.location_of("listen"), values.path() + ".listen", error);
  }
}

const config::Section kSection{
    .path = "inputs.tcp",
    .summary = "Newline-delimited records over TCP, one record per line; the peer address is kept as the `peer` "
               "attribute. While the queue refuses records (overflow = \"block\") tank stops reading, so TCP's "
               "flow control slows the senders.",
    .options = kOptions,
    .common = plugin::input_common_options(),
    .repeated = true,
    .check = check,
};

std::unique_ptr<plugin::Input> create(const config::SectionValues& v, const plugin::InputContext& context) {
  input::StreamSettings s;
  s.type = "tcp";
  s.listen = v.string("listen");
  s.max_line_bytes = v.size("max_line_bytes");
  s.max_connections = static_cast<std::size_t>(v.integer("max_connections"));
  s.idle_timeout = v.duration("idle_timeout");
  s.threads = static_cast<unsigned>(v.integer("threads"));
  return input::make_tcp_input(s, context);
}

}  // namespace

void register_inputs_tcp(plugin::Registry& registry) {
  registry.add({.kind = plugin::Kind::input,
                .name = "tcp",
                .section = &kSection,
                .summary = "newline-delimited records over TCP",
                .create_input = create});
}

}  // namespace tank::plugins
