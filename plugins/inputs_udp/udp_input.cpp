// inputs.udp: one record per UDP datagram (see agent/input/datagram_server.hpp).

#include "input/datagram_server.hpp"
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
     .default_value = "\"127.0.0.1:5171\"",
     .description = "Address to listen on, \"host:port\" (port 0 picks a free port)."},
    {.name = "max_message_bytes",
     .type = Type::size,
     .default_value = "\"64KiB\"",
     .description = "The largest datagram taken as a record; a larger one goes to the dead-letter store with "
                    "reason `message_too_large`.",
     .min = "16B",
     .max = "64KiB"},
    {.name = "receive_buffer_bytes",
     .type = Type::size,
     .default_value = "\"4MiB\"",
     .description = "The socket's receive buffer (SO_RCVBUF; the kernel may grant less, see net.core.rmem_max). "
                    "Datagrams the kernel drops because it is full are counted in "
                    "tank_input_dropped_records_total{reason=\"socket_buffer_full\"}.",
     .min = "64KiB",
     .max = "1GiB"},
};

void check(const config::SectionValues& values, config::Diagnostics& diagnostics) {
  std::string error;
  if (!metrics::parse_listen_address(values.string("listen"), &error)) {
    diagnostics.error(values.location_of("listen"), values.path() + ".listen", error);
  }
}

const config::Section kSection{
    .path = "inputs.udp",
    .summary = "One record per UDP datagram; the sender's address is kept as the `peer` attribute. UDP cannot be "
               "pushed back: while the queue refuses records, datagrams are counted as dropped "
               "(tank_input_dropped_records_total{reason=\"queue_full\"}).",
    .options = kOptions,
    .common = plugin::input_common_options(),
    .repeated = true,
    .check = check,
};

std::unique_ptr<plugin::Input> create(const config::SectionValues& v, const plugin::InputContext& context) {
  input::DatagramSettings s;
  s.type = "udp";
  s.listen = v.string("listen");
  s.max_message_bytes = v.size("max_message_bytes");
  s.receive_buffer_bytes = v.size("receive_buffer_bytes");
  return input::make_udp_input(s, context);
}

}  // namespace

void register_inputs_udp(plugin::Registry& registry) {
  registry.add({.kind = plugin::Kind::input,
                .name = "udp",
                .section = &kSection,
                .summary = "one record per UDP datagram",
                .create_input = create});
}

}  // namespace tank::plugins
