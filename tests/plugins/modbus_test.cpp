// inputs.modbus without a device: decoding every type in every byte order (floats checked against
// libmodbus's own getters and setters), request planning within the protocol's limits, the poll
// schedule, the record, and the configuration's errors with their key paths.

#include <catch2/catch.hpp>

#include <modbus/modbus.h>

#include <boost/json.hpp>

#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "config/loader.hpp"
#include "engine/agent_config.hpp"
#include "inputs_modbus/modbus_link.hpp"
#include "inputs_modbus/modbus_poller.hpp"
#include "inputs_modbus/register_map.hpp"
#include "plugin/registry.hpp"

using namespace tank;
using namespace tank::modbus;

namespace {

Field field(DataType type, ByteOrder order = ByteOrder::abcd, unsigned length = 0) {
  Field f;
  f.name = "f";
  f.type = type;
  f.byte_order = order;
  f.length = length;
  return f;
}

template <class T>
T decoded(const Field& f, std::initializer_list<std::uint16_t> words) {
  const std::vector<std::uint16_t> w(words);
  auto v = decode_registers(f, w);
  REQUIRE(v);
  REQUIRE(std::holds_alternative<T>(*v));
  return std::get<T>(*v);
}

constexpr std::array kOrders{ByteOrder::abcd, ByteOrder::dcba, ByteOrder::badc, ByteOrder::cdab};

}  // namespace

TEST_CASE("modbus: 32-bit integers in each byte order", "[modbus][decode]") {
  // 0x01020304: A=01 B=02 C=03 D=04, as the registers carry it in each order.
  CHECK(decoded<std::uint64_t>(field(DataType::uint32, ByteOrder::abcd), {0x0102, 0x0304}) == 0x01020304u);
  CHECK(decoded<std::uint64_t>(field(DataType::uint32, ByteOrder::dcba), {0x0403, 0x0201}) == 0x01020304u);
  CHECK(decoded<std::uint64_t>(field(DataType::uint32, ByteOrder::badc), {0x0201, 0x0403}) == 0x01020304u);
  CHECK(decoded<std::uint64_t>(field(DataType::uint32, ByteOrder::cdab), {0x0304, 0x0102}) == 0x01020304u);
  CHECK(decoded<std::int64_t>(field(DataType::int32, ByteOrder::abcd), {0xFFFF, 0xFFFE}) == -2);
  CHECK(decoded<std::int64_t>(field(DataType::int32, ByteOrder::cdab), {0xFFFE, 0xFFFF}) == -2);
}

TEST_CASE("modbus: 16-bit integers only see the byte swap", "[modbus][decode]") {
  CHECK(decoded<std::uint64_t>(field(DataType::uint16, ByteOrder::abcd), {0x1234}) == 0x1234u);
  CHECK(decoded<std::uint64_t>(field(DataType::uint16, ByteOrder::cdab), {0x1234}) == 0x1234u);
  CHECK(decoded<std::uint64_t>(field(DataType::uint16, ByteOrder::dcba), {0x3412}) == 0x1234u);
  CHECK(decoded<std::uint64_t>(field(DataType::uint16, ByteOrder::badc), {0x3412}) == 0x1234u);
  CHECK(decoded<std::int64_t>(field(DataType::int16), {0x8000}) == -32768);
  CHECK(decoded<std::int64_t>(field(DataType::int16, ByteOrder::dcba), {0xFFFF}) == -1);
}

TEST_CASE("modbus: 64-bit values extend the pattern over four registers (Telegraf's ABCDEFGH..GHEFCDAB)",
          "[modbus][decode]") {
  const std::uint64_t v = 0x0102030405060708ULL;
  CHECK(decoded<std::uint64_t>(field(DataType::uint64, ByteOrder::abcd), {0x0102, 0x0304, 0x0506, 0x0708}) == v);
  CHECK(decoded<std::uint64_t>(field(DataType::uint64, ByteOrder::dcba), {0x0807, 0x0605, 0x0403, 0x0201}) == v);
  CHECK(decoded<std::uint64_t>(field(DataType::uint64, ByteOrder::badc), {0x0201, 0x0403, 0x0605, 0x0807}) == v);
  CHECK(decoded<std::uint64_t>(field(DataType::uint64, ByteOrder::cdab), {0x0708, 0x0506, 0x0304, 0x0102}) == v);
  CHECK(decoded<std::int64_t>(field(DataType::int64), {0xFFFF, 0xFFFF, 0xFFFF, 0xFFFD}) == -3);
  CHECK(decoded<std::uint64_t>(field(DataType::uint64), {0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF}) ==
        std::numeric_limits<std::uint64_t>::max());
  // 1234.5678 as an IEEE 754 double, big-endian: 40 93 4A 45 6D 5C FA AD.
  CHECK(decoded<double>(field(DataType::float64, ByteOrder::abcd), {0x4093, 0x4A45, 0x6D5C, 0xFAAD}) == 1234.5678);
  CHECK(decoded<double>(field(DataType::float64, ByteOrder::cdab), {0xFAAD, 0x6D5C, 0x4A45, 0x4093}) == 1234.5678);
  CHECK(decoded<double>(field(DataType::float64, ByteOrder::dcba), {0xADFA, 0x5C6D, 0x454A, 0x9340}) == 1234.5678);
  CHECK(decoded<double>(field(DataType::float64, ByteOrder::badc), {0x9340, 0x454A, 0x5C6D, 0xADFA}) == 1234.5678);
}

TEST_CASE("modbus: float32 in each byte order agrees with libmodbus's getters", "[modbus][decode]") {
  // libmodbus 3.1.6's getters read the four orders as Telegraf means them; its setters do not
  // agree with its own getters for ABCD and CDAB on a little-endian host (modbus_set_float_abcd(230.5)
  // gives 6643 0080), so the wire words are built here from the value's bytes A B C D.
  using Get = float (*)(const std::uint16_t*);
  const std::array<Get, 4> getters{modbus_get_float_abcd, modbus_get_float_dcba, modbus_get_float_badc,
                                   modbus_get_float_cdab};
  // Where each of the value's bytes A B C D goes on the wire, per order (ABCD, DCBA, BADC, CDAB).
  const std::array<std::array<int, 4>, 4> wire{{{0, 1, 2, 3}, {3, 2, 1, 0}, {1, 0, 3, 2}, {2, 3, 0, 1}}};
  for (float value : {230.5f, -0.125f, 3.4028235e38f, 1.17549435e-38f, 0.0f, -1234.5678f}) {
    const auto bits = std::bit_cast<std::uint32_t>(value);
    const std::uint8_t bytes[4] = {static_cast<std::uint8_t>(bits >> 24), static_cast<std::uint8_t>(bits >> 16),
                                   static_cast<std::uint8_t>(bits >> 8), static_cast<std::uint8_t>(bits)};
    for (std::size_t i = 0; i < kOrders.size(); ++i) {
      std::uint8_t on_wire[4] = {};
      for (int b = 0; b < 4; ++b) on_wire[wire[i][b]] = bytes[b];
      std::uint16_t words[2] = {static_cast<std::uint16_t>(on_wire[0] << 8 | on_wire[1]),
                                static_cast<std::uint16_t>(on_wire[2] << 8 | on_wire[3])};
      INFO("order " << i << " value " << value);
      CHECK(getters[i](words) == value);
      CHECK(decoded<double>(field(DataType::float32, kOrders[i]), {words[0], words[1]}) ==
            static_cast<double>(value));
    }
  }
  // 230.5f = 0x43668000: ABCD is the bytes as written.
  CHECK(decoded<double>(field(DataType::float32, ByteOrder::abcd), {0x4366, 0x8000}) == 230.5);
  CHECK(decoded<double>(field(DataType::float32, ByteOrder::cdab), {0x8000, 0x4366}) == 230.5);
}

TEST_CASE("modbus: scale and offset, and NaN is no number", "[modbus][decode]") {
  Field f = field(DataType::int16);
  f.scale = 0.1;
  f.offset = -40;
  CHECK(decoded<double>(f, {2500}) == Approx(210.0));
  Field g = field(DataType::uint32);
  g.scale = 2;
  CHECK(decoded<double>(g, {0x0001, 0x0000}) == 131072.0);
  const std::vector<std::uint16_t> nan{0x7FC0, 0x0000};
  CHECK_FALSE(decode_registers(field(DataType::float32), nan));
  const std::vector<std::uint16_t> inf{0x7F80, 0x0000};
  CHECK_FALSE(decode_registers(field(DataType::float32), inf));
  const std::vector<std::uint16_t> too_few{0x0001};
  CHECK_FALSE(decode_registers(field(DataType::uint32), too_few));
}

TEST_CASE("modbus: strings, two characters a register, trimmed, printable", "[modbus][decode]") {
  CHECK(decoded<std::string>(field(DataType::string, ByteOrder::abcd, 4), {0x454D, 0x2D34, 0x3200, 0x0000}) ==
        "EM-42");
  CHECK(decoded<std::string>(field(DataType::string, ByteOrder::badc, 3), {0x4D45, 0x342D, 0x0032}) == "EM-42");
  CHECK(decoded<std::string>(field(DataType::string, ByteOrder::dcba, 2), {0x4241, 0x2020}) == "AB");
  CHECK(decoded<std::string>(field(DataType::string, ByteOrder::abcd, 2), {0x41FF, 0x0142}) == "A??B");
  CHECK(std::get<bool>(decode_bit(1)));
  CHECK_FALSE(std::get<bool>(decode_bit(0)));
}

TEST_CASE("modbus: requests read contiguous fields together, within 125 registers and 2000 bits",
          "[modbus][plan]") {
  std::vector<Field> fields;
  auto add = [&](Table t, unsigned address, DataType type, unsigned length = 0) {
    Field f = field(type, ByteOrder::abcd, length);
    f.name = "f" + std::to_string(fields.size());
    f.table = t;
    f.address = address;
    fields.push_back(f);
  };
  add(Table::holding_register, 10, DataType::float32);  // 10-11
  add(Table::holding_register, 0, DataType::uint16);    // 0
  add(Table::holding_register, 12, DataType::uint64);   // 12-15
  add(Table::holding_register, 1, DataType::uint16);    // 1
  add(Table::holding_register, 16, DataType::string, 118);  // 16-133: 124 registers with 10-15, fits
  add(Table::holding_register, 134, DataType::uint32);       // 126 registers: past 125, a new request
  add(Table::input_register, 1, DataType::int16);
  add(Table::coil, 0, DataType::boolean);
  add(Table::coil, 1, DataType::boolean);
  for (unsigned a = 0; a < 2100; ++a) add(Table::discrete_input, a, DataType::boolean);
  const auto plan = plan_requests(fields);
  REQUIRE(plan.size() == 7);
  CHECK((plan[0].table == Table::holding_register && plan[0].address == 0 && plan[0].count == 2));
  CHECK(plan[0].fields == std::vector<std::size_t>{1, 3});
  CHECK((plan[1].address == 10 && plan[1].count == 124));
  CHECK(plan[1].fields == std::vector<std::size_t>{0, 2, 4});
  CHECK((plan[2].address == 134 && plan[2].count == 2));
  CHECK((plan[3].table == Table::input_register && plan[3].count == 1));
  CHECK((plan[4].table == Table::coil && plan[4].count == 2));
  CHECK((plan[5].table == Table::discrete_input && plan[5].address == 0 && plan[5].count == 2000));
  CHECK((plan[6].table == Table::discrete_input && plan[6].address == 2000 && plan[6].count == 100));
  for (const auto& r : plan) {
    CHECK(r.count <= (is_bit_table(r.table) ? kMaxBitsPerRead : kMaxRegistersPerRead));
  }
}

TEST_CASE("modbus: overlaps and fields that cannot be read", "[modbus][plan]") {
  std::vector<Field> fields(3);
  fields[0] = field(DataType::float32);
  fields[0].address = 0;
  fields[1] = field(DataType::uint16);
  fields[1].address = 2;
  fields[2] = field(DataType::uint16);
  fields[2].address = 1;
  auto overlap = first_overlap(fields);
  REQUIRE(overlap);
  CHECK(overlap->first == 0);
  CHECK(overlap->second == 2);
  fields[2].table = Table::input_register;  // another table: no overlap
  CHECK_FALSE(first_overlap(fields));

  CHECK(field_problem(field(DataType::string)));
  CHECK(field_problem(field(DataType::string, ByteOrder::abcd, 126)));
  CHECK_FALSE(field_problem(field(DataType::string, ByteOrder::abcd, 125)));
  CHECK(field_problem(field(DataType::uint16, ByteOrder::abcd, 2)));
  CHECK(field_problem(field(DataType::boolean)));
  Field coil = field(DataType::uint16);
  coil.table = Table::coil;
  CHECK(field_problem(coil));
  Field last = field(DataType::uint32);
  last.address = 65535;
  CHECK(field_problem(last));
}

TEST_CASE("modbus: polls fall on multiples of the interval", "[modbus][schedule]") {
  const std::int64_t s = 1'000'000'000;
  CHECK(next_poll_ns(1'700'000'003 * s, 10 * s) == 1'700'000'010 * s);
  CHECK(next_poll_ns(1'700'000'010 * s, 10 * s) == 1'700'000'020 * s);
  CHECK(next_poll_ns(1'700'000'010 * s - 1, 10 * s) == 1'700'000'010 * s);
  CHECK(next_poll_ns(-5 * s, 10 * s) == 0);
}

TEST_CASE("modbus: one record per device with the poll time and every field", "[modbus][record]") {
  std::vector<Field> fields(5);
  const char* names[] = {"voltage", "energy", "closed", "serial", "broken"};
  for (std::size_t i = 0; i < fields.size(); ++i) fields[i].name = names[i];
  std::vector<std::optional<Value>> values{Value(230.5), Value(std::uint64_t{18446744073709551615ULL}), Value(true),
                                           Value(std::string("EM \"42\"")), std::nullopt};
  const auto text = poll_record(1'700'000'010'000'000'000, "meter-1", 7, fields, values);
  const auto v = boost::json::parse(text).as_object();
  CHECK(v.at("time").as_string() == "2023-11-14T22:13:30.000Z");
  CHECK(v.at("device").as_string() == "meter-1");
  CHECK(v.at("slave_id").as_int64() == 7);
  CHECK(v.at("voltage").as_double() == 230.5);
  CHECK(v.at("energy").as_uint64() == 18446744073709551615ULL);
  CHECK(v.at("closed").as_bool());
  CHECK(v.at("serial").as_string() == "EM \"42\"");
  CHECK(v.at("broken").is_null());
}

TEST_CASE("modbus: controller URIs", "[modbus][config]") {
  std::string error;
  auto tcp = parse_controller("tcp://127.0.0.1:5020", error);
  REQUIRE(tcp);
  CHECK((tcp->kind == Endpoint::Kind::tcp && tcp->host == "127.0.0.1" && tcp->port == 5020));
  auto v6 = parse_controller("tcp://[::1]", error);
  REQUIRE(v6);
  CHECK((v6->host == "::1" && v6->port == 502));
  auto rtu = parse_controller("file:///dev/ttyUSB0", error);
  REQUIRE(rtu);
  CHECK((rtu->kind == Endpoint::Kind::rtu && rtu->device == "/dev/ttyUSB0"));
  CHECK_FALSE(parse_controller("udp://x:1", error));
  CHECK_FALSE(parse_controller("tcp://x:0", error));
  CHECK_FALSE(parse_controller("file://dev/tty", error));
  CHECK(classify_error(EMBXILADD).reason == "exception_illegal_data_address");
  CHECK(classify_error(EMBXILADD).answered);
  CHECK(classify_error(ETIMEDOUT).reason == "timeout");
  CHECK_FALSE(classify_error(ETIMEDOUT).answered);
  CHECK(classify_error(EMBBADCRC).reason == "bad_response");
  CHECK(classify_error(ECONNRESET).reason == "connection_lost");
}

namespace {

config::Schema schema() {
  plugin::Registry plugins;
  plugin::register_builtin(plugins);
  return engine::build_schema(plugins);
}

config::LoadResult load(const std::string& modbus_tables) {
  config::LoadOptions o;
  o.environment = [](std::string_view) -> std::optional<std::string> { return std::nullopt; };
  return config::load_text("[agent]\ndata_dir = \"/tmp/x\"\n\n" + modbus_tables, "m.toml", schema(), o);
}

std::string all_errors(const config::LoadResult& r) {
  std::string out;
  for (const auto& d : r.diagnostics.sorted()) out += d.to_string() + "\n";
  return out;
}

}  // namespace

TEST_CASE("modbus: a complete configuration loads", "[modbus][config]") {
  auto r = load(R"([[inputs.modbus]]
name = "meters"
controller = "tcp://127.0.0.1:5020"
poll_interval = "1s"

[[inputs.modbus.devices]]
slave_id = 1
[[inputs.modbus.devices]]
slave_id = 2
name = "pump"
fields = [{ name = "running", register = "coil", address = 0, type = "bool" }]

[[inputs.modbus.fields]]
name = "voltage"
register = "input"
address = 0
type = "float32"
byte_order = "CDAB"

[[inputs.modbus.fields]]
name = "serial"
address = 10
type = "string"
length = 4
)");
  INFO(all_errors(r));
  REQUIRE(r.document);
  const auto& instances = r.document->instances("inputs.modbus");
  REQUIRE(instances.size() == 1);
  const auto& devices = instances[0].tables("devices");
  REQUIRE(devices.size() == 2);
  CHECK(devices[1].tables("fields").size() == 1);
  CHECK(instances[0].tables("fields").size() == 2);
  CHECK(instances[0].tables("fields")[0].choice("byte_order") == "CDAB");
}

// A controller that is not Modbus, and two devices with the same slave id.
const std::string kTwoDevicesOnUdp = R"([[inputs.modbus]]
controller = "udp://127.0.0.1:5020"

[[inputs.modbus.devices]]
slave_id = 1
[[inputs.modbus.devices]]
slave_id = 1
)";

TEST_CASE("modbus: configuration errors name the key path and what was expected", "[modbus][config]") {
  auto r = load(kTwoDevicesOnUdp + R"(
[[inputs.modbus.fields]]
name = "a"
address = 0
type = "float23"

[[inputs.modbus.fields]]
name = "b"
address = 0
type = "uint32"
byte_order = "ABDC"
scael = 2

[[inputs.modbus.fields]]
name = "c"
address = 1
type = "uint16"

[[inputs.modbus.fields]]
name = "s"
address = 20
type = "string"

[[inputs.modbus.fields]]
name = "long"
address = 30
type = "string"
length = 126

[[inputs.modbus.fields]]
name = "time"
address = 200
)");
  const std::string errors = all_errors(r);
  INFO(errors);
  CHECK_FALSE(r.document);
  CHECK(errors.find("inputs.modbus[0].fields[0].type: expected one of") != std::string::npos);
  CHECK(errors.find("did you mean \"float32\"") != std::string::npos);
  CHECK(errors.find("inputs.modbus[0].fields[1].byte_order: expected one of") != std::string::npos);
  CHECK(errors.find("inputs.modbus[0].fields[3].length: a string needs its length") != std::string::npos);
  CHECK(errors.find("inputs.modbus[0].fields[4].length: must be at most 125") != std::string::npos);
  CHECK(errors.find("inputs.modbus[0].fields[5].name: \"time\" is a key of the record") != std::string::npos);
  CHECK(errors.find("inputs.modbus[0].fields[1].scael: unknown option in [inputs.modbus.fields]; did you mean "
                    "\"scale\"") != std::string::npos);
  // The section's own check runs on the tables without errors, in the same load.
  CHECK(errors.find("inputs.modbus[0].devices[1].slave_id: slave id 1 is listed twice") != std::string::npos);
  CHECK(errors.find("inputs.modbus[0].controller: \"udp://127.0.0.1:5020\": expected") != std::string::npos);
  // Overlaps among the fields without errors of their own:
  auto r2 = load(kTwoDevicesOnUdp + R"(
[[inputs.modbus.fields]]
name = "b"
address = 0
type = "uint32"

[[inputs.modbus.fields]]
name = "c"
address = 1
type = "uint16"
)");
  const std::string errors2 = all_errors(r2);
  INFO(errors2);
  CHECK(errors2.find("inputs.modbus[0].controller: \"udp://127.0.0.1:5020\": expected \"tcp://host:port\"") !=
        std::string::npos);
  CHECK(errors2.find("inputs.modbus[0].devices[1].slave_id: slave id 1 is listed twice") != std::string::npos);
  CHECK(errors2.find("inputs.modbus[0].fields[1].address: \"c\" (holding register 1 to 1) overlaps \"b\" "
                     "(holding register 0 to 1)") != std::string::npos);
}

TEST_CASE("modbus: a device needs a register map, and RTU slave ids are 1 to 247", "[modbus][config]") {
  auto r = load(R"([[inputs.modbus]]
controller = "file:///dev/ttyUSB0"
devices = [{ slave_id = 0 }, { slave_id = 3, fields = [{ name = "x", address = 0 }, { name = "x", address = 1 }] }]
)");
  const std::string errors = all_errors(r);
  INFO(errors);
  CHECK(errors.find("inputs.modbus[0].devices[0].slave_id: on a serial line a slave id is 1 to 247") !=
        std::string::npos);
  CHECK(errors.find("inputs.modbus[0].devices[0].fields: no register map") != std::string::npos);
  CHECK(errors.find("inputs.modbus[0].devices[1].fields[1].name: the field \"x\" is defined twice") !=
        std::string::npos);
  auto none = load("[[inputs.modbus]]\ncontroller = \"tcp://127.0.0.1\"\n");
  CHECK(all_errors(none).find("inputs.modbus[0].devices: required option is missing") != std::string::npos);
}
