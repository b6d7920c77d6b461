// inputs.modbus: Modbus TCP and RTU devices polled on a clock-aligned schedule, one JSON record
// per device per poll (see modbus_poller.hpp), register maps as in register_map.hpp.

#include <fmt/format.h>

#include <map>
#include <set>

#include "config/bind.hpp"
#include "modbus_poller.hpp"
#include "plugin/registry.hpp"

namespace tank::plugins {
namespace {

using modbus::ByteOrder;
using modbus::DataType;
using modbus::DeviceSettings;
using modbus::Field;
using modbus::PollerSettings;
using modbus::Table;

constexpr std::string_view kTables[] = {"holding", "input", "coil", "discrete"};
constexpr std::string_view kTypes[] = {"int16",  "uint16",  "int32",   "uint32", "int64",
                                       "uint64", "float32", "float64", "bool",   "string"};
constexpr std::string_view kByteOrders[] = {"ABCD", "DCBA", "BADC", "CDAB"};
constexpr std::string_view kParities[] = {"none", "even", "odd"};

const config::Options<Field> kFieldOptions{
    config::string("name", &Field::name)
        .required()
        .describe("The field's name in the record (not \"time\", \"device\" or \"slave_id\", which the record uses)."),
    config::choice("register", kTables, &Field::table,
                   {Table::holding_register, Table::input_register, Table::coil, Table::discrete_input})
        .default_value("holding")
        .describe("The data table: \"holding\" registers (function 3), \"input\" registers (4), \"coil\"s (1) or "
                  "\"discrete\" inputs (2)."),
    config::integer("address", &Field::address)
        .required()
        .describe("The first register's (or the bit's) protocol address, from 0: register 40001 of a data sheet "
                  "that counts from 1 is address 0.")
        .min("0")
        .max("65535"),
    config::choice("type", kTypes, &Field::type,
                   {DataType::int16, DataType::uint16, DataType::int32, DataType::uint32, DataType::int64,
                    DataType::uint64, DataType::float32, DataType::float64, DataType::boolean, DataType::string})
        .default_value("uint16")
        .describe("How the registers are read: 16-bit types take one register, 32-bit two, 64-bit four; "
                  "\"string\" takes `length` registers (two ASCII characters each); \"bool\" is the type of coils "
                  "and discrete inputs, and theirs only."),
    config::choice("byte_order", kByteOrders, &Field::byte_order,
                   {ByteOrder::abcd, ByteOrder::dcba, ByteOrder::badc, ByteOrder::cdab})
        .default_value("ABCD")
        .describe("Where the value's bytes, A the most significant, sit in the registers as sent: \"ABCD\" "
                  "big-endian, \"DCBA\" little-endian, \"BADC\" bytes swapped in each register, \"CDAB\" low word "
                  "first. 64-bit values follow the same pattern over four registers; 16-bit values and strings only "
                  "see the byte swap (DCBA, BADC)."),
    config::number("scale", &Field::scale)
        .default_value("1.0")
        .describe("The value is raw * scale + offset. An integer with scale 1 and offset 0 stays an integer; "
                  "otherwise the value is a floating-point number."),
    config::number("offset", &Field::offset).default_value("0.0").describe("Added after scale."),
    config::integer("length", &Field::length)
        .default_value(0)
        .describe("A string's length in registers (required for \"string\", not allowed for other types). Trailing "
                  "NUL bytes and spaces are removed, bytes outside printable ASCII become '?'.")
        .min("0")
        .max("125"),
};

void check_field(const config::SectionValues& values, config::Diagnostics& diagnostics) {
  const Field field = kFieldOptions.read(values);
  if (auto problem = modbus::field_problem(field)) {
    const char* key = field.type == DataType::string || field.length != 0 ? "length" : "type";
    diagnostics.error(values.location_of(key), values.path() + "." + key, *problem);
  }
  for (std::string_view reserved : modbus::kRecordKeys) {
    if (field.name == reserved) {
      diagnostics.error(values.location_of("name"), values.path() + ".name",
                        fmt::format("\"{}\" is a key of the record itself; name the field otherwise", reserved));
    }
  }
  if (field.name.empty()) diagnostics.error(values.location_of("name"), values.path() + ".name", "a field needs a name");
}

constexpr std::string_view kFieldSummary =
    "One field of a register map: where it is, its type and byte order, and its scale. Fields of a table whose "
    "registers follow each other without a gap are read in one request (at most 125 registers or 2000 bits); "
    "fields may not overlap.";
const config::Section kFieldSection{
    .path = "inputs.modbus.fields",
    .summary = kFieldSummary,
    .options = kFieldOptions.all(),
    .check = check_field,
};
const config::Section kDeviceFieldSection{
    .path = "inputs.modbus.devices.fields",
    .summary = kFieldSummary,
    .options = kFieldOptions.all(),
    .check = check_field,
};

const config::Options<DeviceSettings> kDeviceOptions{
    config::integer("slave_id", &DeviceSettings::slave_id)
        .required()
        .describe("The device's slave id (unit identifier): 1 to 247 on a serial line; on TCP 0 to 255, as the "
                  "device or the gateway in front of it expects (many TCP devices take 1 or 255).")
        .min("0")
        .max("255"),
    config::string("name", &DeviceSettings::name)
        .default_note("`<input name>-<slave_id>`")
        .describe("The record's `device`."),
    config::table_list("fields", &DeviceSettings::fields, kDeviceFieldSection, kFieldOptions)
        .default_value("[]")
        .describe("This device's register map, when it differs from the input's `fields`."),
};

const config::Section kDeviceSection{
    .path = "inputs.modbus.devices",
    .summary = "One device on the controller: its slave id, the name its records carry and, if it differs from "
               "the input's, its register map.",
    .options = kDeviceOptions.all(),
};

const config::Options<PollerSettings> kOptions{
    config::string("controller", &PollerSettings::controller)
        .required()
        .describe("Where the devices are: \"tcp://host:port\" for Modbus TCP (port 502 when left out; "
                  "\"tcp://[::1]:502\" for IPv6) or \"file:///dev/ttyUSB0\" for Modbus RTU on a serial line."),
    config::integer("baud_rate", [](PollerSettings& s, std::int64_t v) { s.serial.baud_rate = static_cast<int>(v); })
        .default_value(9600)
        .describe("RTU: the serial line's speed in bit/s.")
        .min("50")
        .max("4000000"),
    config::choice("parity", kParities,
                   [](PollerSettings& s, const std::string& v) {
                     s.serial.parity = v == "even" ? 'E' : (v == "odd" ? 'O' : 'N');
                   })
        .default_value("none")
        .describe("RTU: the parity bit: \"none\", \"even\" or \"odd\"."),
    config::integer("data_bits", [](PollerSettings& s, std::int64_t v) { s.serial.data_bits = static_cast<int>(v); })
        .default_value(8)
        .describe("RTU: data bits per character.")
        .min("5")
        .max("8"),
    config::integer("stop_bits", [](PollerSettings& s, std::int64_t v) { s.serial.stop_bits = static_cast<int>(v); })
        .default_value(1)
        .describe("RTU: stop bits per character.")
        .min("1")
        .max("2"),
    config::duration("timeout", &PollerSettings::timeout)
        .default_value("1s")
        .describe("How long a request waits for its answer (and a TCP connection for its handshake). A device "
                  "that does not answer in time is counted (reason `timeout`) and backs off.")
        .min("10ms")
        .max("10s"),
    config::duration("poll_interval", &PollerSettings::poll_interval)
        .default_value("10s")
        .describe("How often every device is read. Polls fall on multiples of the interval since the Unix epoch "
                  "(10s: at :00, :10, :20...); one that runs past the next is counted as `poll_overrun`, and the "
                  "missed instant skipped.")
        .min("10ms")
        .max("24h"),
    config::duration("backoff_max", &PollerSettings::backoff_max)
        .default_value("5m")
        .describe("The longest a device that does not answer is left alone: after each failed poll it is skipped "
                  "for a doubling time, from poll_interval up to this.")
        .min("0s")
        .max("24h"),
    config::table_list("devices", &PollerSettings::devices, kDeviceSection, kDeviceOptions)
        .required()
        .describe("The devices to poll, at least one: [[inputs.modbus.devices]] tables."),
    config::table_list("fields", &PollerSettings::fields, kFieldSection, kFieldOptions)
        .default_value("[]")
        .describe("The register map of every device that has no `fields` of its own: [[inputs.modbus.fields]] "
                  "tables."),
};

// The name a device's records carry.
std::string device_name(const DeviceSettings& d, const std::string& input) {
  return d.name.empty() ? fmt::format("{}-{}", input, d.slave_id) : d.name;
}

// The names of `fields` are unique and their registers do not overlap; `tables` are where each was written.
void check_map(std::span<const Field> fields, const config::TableList& tables, config::Diagnostics& diagnostics) {
  std::map<std::string, std::size_t> names;
  for (std::size_t i = 0; i < fields.size(); ++i) {
    auto [it, fresh] = names.emplace(fields[i].name, i);
    if (!fresh) {
      diagnostics.error(tables[i].location_of("name"), tables[i].path() + ".name",
                        fmt::format("the field \"{}\" is defined twice (also at {})", fields[i].name,
                                    tables[it->second].location_of("name").to_string()));
    }
  }
  if (auto overlap = modbus::first_overlap(fields)) {
    const Field& a = fields[overlap->first];
    const Field& b = fields[overlap->second];
    const auto& where = tables[overlap->second];
    diagnostics.error(where.location_of("address"), where.path() + ".address",
                      fmt::format("\"{}\" ({} {} to {}) overlaps \"{}\" ({} {} to {})", b.name, modbus::name_of(b.table),
                                  b.address, b.address + modbus::width_of(b) - 1, a.name, modbus::name_of(a.table),
                                  a.address, a.address + modbus::width_of(a) - 1));
  }
}

void check(const config::SectionValues& values, config::Diagnostics& diagnostics) {
  const std::string path = values.path();
  const PollerSettings s = kOptions.read(values);
  std::string error;
  const auto endpoint = modbus::parse_controller(s.controller, error);
  if (!endpoint) diagnostics.error(values.location_of("controller"), path + ".controller", error);
  const bool rtu = endpoint && endpoint->kind == modbus::Endpoint::Kind::rtu;

  const auto& device_tables = values.tables("devices");
  if (device_tables.empty()) {
    diagnostics.error(values.location_of("devices"), path + ".devices",
                      "give at least one device: [[inputs.modbus.devices]] with its slave_id");
  }
  const std::string input = plugin::input_name(values, "modbus");
  std::map<int, std::size_t> slave_ids;
  std::map<std::string, std::size_t> names;
  const bool input_map_ok = !values.tables("fields").empty();
  if (input_map_ok) check_map(s.fields, values.tables("fields"), diagnostics);
  for (std::size_t i = 0; i < s.devices.size() && i < device_tables.size(); ++i) {
    const DeviceSettings& d = s.devices[i];
    const auto& t = device_tables[i];
    if (rtu && (d.slave_id < 1 || d.slave_id > 247)) {
      diagnostics.error(t.location_of("slave_id"), t.path() + ".slave_id",
                        fmt::format("on a serial line a slave id is 1 to 247 (0 is broadcast, which no device "
                                    "answers), got {}",
                                    d.slave_id));
    }
    if (auto [it, fresh] = slave_ids.emplace(d.slave_id, i); !fresh) {
      diagnostics.error(t.location_of("slave_id"), t.path() + ".slave_id",
                        fmt::format("slave id {} is listed twice (also at {})", d.slave_id,
                                    device_tables[it->second].location_of("slave_id").to_string()));
    }
    const std::string name = device_name(d, input);
    if (auto [it, fresh] = names.emplace(name, i); !fresh) {
      diagnostics.error(t.location_of("name"), t.path() + ".name",
                        fmt::format("two devices are named \"{}\" (also at {})", name,
                                    device_tables[it->second].where().to_string()));
    }
    if (!d.fields.empty()) {
      check_map(d.fields, t.tables("fields"), diagnostics);
    } else if (!input_map_ok) {
      diagnostics.error(t.where(), t.path() + ".fields",
                        "no register map: give the input [[inputs.modbus.fields]] tables, or this device "
                        "[[inputs.modbus.devices.fields]] of its own");
    }
  }
}

const config::Section kSection{
    .path = "inputs.modbus",
    .summary = "Polls Modbus TCP and RTU devices (through libmodbus) at clock-aligned instants and commits one JSON "
               "record per device per poll, `{\"time\", \"device\", \"slave_id\", <field>: <value>...}`, the records "
               "of a poll in one transaction. Reads only, never writes. Modbus keeps no history: a poll the queue "
               "refuses is counted as dropped (reason `queue_full`), not retried. Failures are counted by reason "
               "(`timeout`, `connect_failed`, `connection_lost`, `bad_response`, `exception_<name>`) and logged once "
               "per episode; a device that does not answer backs off without holding up the others.",
    .options = kOptions.all(),
    .common = plugin::input_common_options(),
    .repeated = true,
    .check = check,
};

std::unique_ptr<plugin::Input> create(const config::SectionValues& v, const plugin::InputContext& context) {
  PollerSettings s = kOptions.read(v);
  for (auto& d : s.devices) d.name = device_name(d, context.name);
  return modbus::make_modbus_poller(s, context);
}

}  // namespace

void register_inputs_modbus(plugin::Registry& registry) {
  registry.add({.kind = plugin::Kind::input,
                .name = "modbus",
                .section = &kSection,
                .summary = "polls Modbus TCP and RTU devices",
                .create_input = create});
}

}  // namespace tank::plugins
