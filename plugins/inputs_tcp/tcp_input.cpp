// inputs.tcp: newline-delimited records over TCP (see agent/input/stream_server.hpp).

#include <thread>

#include "input/stream_server.hpp"
#include "plugin/listen_options.hpp"
#include "plugin/registry.hpp"

namespace tank::plugins {
namespace {

using S = input::StreamSettings;

const config::Options<S> kOptions{
    plugin::format_option("\"text\""),
    plugin::listen_option(&S::listen, "127.0.0.1:5170")
        .describe("Address to listen on, \"host:port\" (\"[::]:5170\" for every IPv6 and IPv4 address; port 0 "
                  "picks a free port)."),
    config::size("max_line_bytes", &S::max_line_bytes)
        .default_value("64KiB")
        .describe("The longest line taken as a record (without its newline). A longer line is not split: it "
                  "goes to the dead-letter store with reason `line_too_long` (as much of its start as fits one commit, at most 64 KiB, is kept).")
        .min("16B")
        .max("4MiB"),
    config::integer("max_connections", &S::max_connections)
        .default_value(256)
        .describe("Connections served at once; further ones are closed at once, counted in "
                  "tank_input_errors_total{reason=\"too_many_connections\"} and logged once per episode.")
        .min("1")
        .max("65536"),
    config::duration("idle_timeout", &S::idle_timeout)
        .default_value("5m")
        .describe("A connection that sends nothing for this long is closed (\"0\": never). Time spent paused by "
                  "backpressure does not count.")
        .max("24h"),
    config::integer("threads", &S::threads)
        .default_value(2)
        .describe("Threads reading connections (each connection is read by one at a time).")
        .min("1")
        .max("64"),
};

const config::Section kSection{
    .path = "inputs.tcp",
    .summary = "Newline-delimited records over TCP, one record per line; the peer address is kept as the `peer` "
               "attribute. While the queue refuses records (overflow = \"block\") tank stops reading, so TCP's "
               "flow control slows the senders.",
    .options = kOptions.all(),
    .common = plugin::input_common_options(),
    .repeated = true,
    .check = plugin::check_listen_option,
};

std::unique_ptr<plugin::Input> create(const config::SectionValues& v, const plugin::InputContext& context) {
  input::StreamSettings s = kOptions.read(v);
  s.type = "tcp";
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
