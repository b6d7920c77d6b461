// inputs.udp: one record per UDP datagram (see agent/input/datagram_server.hpp).

#include "input/datagram_server.hpp"
#include "plugin/listen_options.hpp"
#include "plugin/registry.hpp"

namespace tank::plugins {
namespace {

using S = input::DatagramSettings;

const config::Options<S> kOptions{
    plugin::format_option("\"text\""),
    plugin::listen_option(&S::listen, "127.0.0.1:5171"),
    config::size("max_message_bytes", &S::max_message_bytes)
        .default_value("64KiB")
        .describe("The largest datagram taken as a record; a larger one goes to the dead-letter store with "
                  "reason `message_too_large`.")
        .min("16B")
        .max("64KiB"),
    config::size("receive_buffer_bytes", &S::receive_buffer_bytes)
        .default_value("4MiB")
        .describe("The socket's receive buffer (SO_RCVBUF; the kernel may grant less, see net.core.rmem_max). "
                  "Datagrams the kernel drops because it is full are counted in "
                  "tank_input_dropped_records_total{reason=\"socket_buffer_full\"}.")
        .min("64KiB")
        .max("1GiB"),
};

const config::Section kSection{
    .path = "inputs.udp",
    .summary = "One record per UDP datagram; the sender's address is kept as the `peer` attribute. UDP cannot be "
               "pushed back: while the queue refuses records, datagrams are counted as dropped "
               "(tank_input_dropped_records_total{reason=\"queue_full\"}).",
    .options = kOptions.all(),
    .common = plugin::input_common_options(),
    .repeated = true,
    .check = plugin::check_listen_option,
};

std::unique_ptr<plugin::Input> create(const config::SectionValues& v, const plugin::InputContext& context) {
  input::DatagramSettings s = kOptions.read(v);
  s.type = "udp";
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
