// inputs.modbus in the real binary against pymodbus (an implementation nobody here wrote), over
// TCP on 127.0.0.1 and over RTU through a socat pty pair: every data type in every byte order
// read back as pymodbus's own BinaryPayloadBuilder wrote it, exception responses and timeouts
// counted by reason while the other devices go on, a server stopped and started again, a slow
// server past the timeout. Records are read back from an outputs.file directory.

#include <catch2/catch.hpp>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

#include "support/input_helpers.hpp"
#include "support/modbus_peer.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

// One value pymodbus serves and tank must read back.
struct Known {
  std::string name;
  std::string table;  // holding, input, coil, discrete
  unsigned address;
  std::string type;
  std::string order;
  boost::json::value value;
};

constexpr const char* kOrders[] = {"ABCD", "DCBA", "BADC", "CDAB"};

// Every numeric type in every byte order (holding registers 0..79), a string, input registers,
// coils and discrete inputs.
std::vector<Known> known_values() {
  std::vector<Known> out;
  unsigned address = 0;
  for (const char* order : kOrders) {
    const std::string o = order;
    auto add = [&](const std::string& type, unsigned width, boost::json::value v) {
      out.push_back({type + "_" + o, "holding", address, type, o, std::move(v)});
      address += width;
    };
    add("int16", 1, -12345);
    add("uint16", 1, 54321);
    add("int32", 2, -123456789);
    add("uint32", 2, 3123456789u);
    add("int64", 4, std::int64_t{-1234567890123456789});
    add("uint64", 4, std::uint64_t{12345678901234567890u});
    add("float32", 2, 230.5);
    add("float64", 4, 1234.5678);
  }
  out.push_back({"serial", "holding", 100, "string", "ABCD", "EM-0042"});
  out.push_back({"power", "input", 10, "float32", "CDAB", -1500.25});
  out.push_back({"frequency", "input", 12, "uint16", "ABCD", 5002});
  out.push_back({"breaker", "coil", 5, "bool", "ABCD", true});
  out.push_back({"alarm", "coil", 6, "bool", "ABCD", false});
  out.push_back({"door_open", "discrete", 0, "bool", "ABCD", true});
  return out;
}

std::string values_file(const TempDir& dir, const std::vector<Known>& values) {
  boost::json::array items;
  for (const auto& k : values) {
    items.push_back({{"table", k.table}, {"address", k.address}, {"type", k.type}, {"order", k.order},
                     {"value", k.value}});
  }
  const auto path = dir / "values.json";
  write_file(path, boost::json::serialize(items));
  return path.string();
}

std::string fields_toml(const std::vector<Known>& values, const std::string& table = "inputs.modbus.fields") {
  std::string out;
  for (const auto& k : values) {
    out += fmt::format("[[{}]]\nname = \"{}\"\nregister = \"{}\"\naddress = {}\ntype = \"{}\"\nbyte_order = \"{}\"\n",
                       table, k.name, k.table, k.address, k.type, k.order);
    if (k.type == "string") out += "length = 4\n";
    out += "\n";
  }
  return out;
}

std::string output_toml(const TempDir& dir) {
  return fmt::format("[[outputs.file]]\nname = \"out\"\ninputs = [\"m\"]\ndirectory = \"{}\"\ncompression = \"none\"\n"
                     "linger = \"10ms\"\n\n",
                     (dir / "out").string());
}

// Every record outputs.file wrote so far.
std::vector<boost::json::object> records(const TempDir& dir) { return json_records_in(dir / "out"); }

std::vector<boost::json::object> records_of(const TempDir& dir, const std::string& device) {
  std::vector<boost::json::object> out;
  for (auto& r : records(dir)) {
    if (r.contains("device") && r.at("device").as_string() == device) out.push_back(std::move(r));
  }
  return out;
}

double metric(const std::string& metrics, const std::string& sample) {
  return metric_value(scrape(metrics), sample).value_or(0);
}

std::string errors_sample(const std::string& reason) {
  return fmt::format("tank_input_errors_total{{input=\"m\",reason=\"{}\",type=\"modbus\"}}", reason);
}

void check_known(const boost::json::object& record, const std::vector<Known>& values) {
  for (const auto& k : values) {
    INFO(k.name << " in " << boost::json::serialize(record));
    REQUIRE(record.contains(k.name));
    const auto& got = record.at(k.name);
    if (k.value.is_double()) {
      REQUIRE(got.is_double());
      if (k.type == "float32") CHECK(got.as_double() == static_cast<double>(static_cast<float>(k.value.as_double())));
      else CHECK(got.as_double() == k.value.as_double());
    } else if (k.value.is_int64() || k.value.is_uint64()) {
      REQUIRE(got.is_number());
      CHECK(boost::json::serialize(got) == boost::json::serialize(k.value));
    } else {
      CHECK(got == k.value);
    }
  }
}

}  // namespace

TEST_CASE("inputs.modbus over TCP reads every type in every byte order as pymodbus encoded it",
          "[integration][modbus]") {
  INFO("needs python3-pymodbus and python3-serial-asyncio: packaging/setup-debian.sh --with-tests");
  REQUIRE(pymodbus_available());
  TempDir dir;
  const auto values = known_values();
  const int port = free_tcp_port();
  ModbusServer server({"--tcp", std::to_string(port), "--slaves", "2", "--values", values_file(dir, values)});
  const auto config = write_test_config(
      dir, fmt::format("[[inputs.modbus]]\nname = \"m\"\ncontroller = \"tcp://127.0.0.1:{}\"\npoll_interval = \"100ms\"\n"
                       "timeout = \"2s\"\n\n"
                       "[[inputs.modbus.devices]]\nslave_id = 1\nname = \"meter-1\"\n\n"
                       "[[inputs.modbus.devices]]\nslave_id = 2\n"
                       "fields = [{{ name = \"frequency\", register = \"input\", address = 12, scale = 0.01 }}]\n\n"
                       "{}{}",
                       port, fields_toml(values), output_toml(dir)));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  REQUIRE(wait_until([&] { return records_of(dir, "meter-1").size() >= 3 && records_of(dir, "m-2").size() >= 3; }));
  const auto meter = records_of(dir, "meter-1");
  for (const auto& r : meter) check_known(r, values);
  CHECK(meter[0].at("slave_id").as_int64() == 1);
  CHECK(meter[0].size() == values.size() + 3);  // time, device, slave_id and every field
  // Polls fall on multiples of poll_interval: the time ends in .x00Z.
  for (const auto& r : meter) {
    const std::string time(r.at("time").as_string());
    INFO(time);
    CHECK(time.substr(time.size() - 3) == "00Z");
  }
  const auto other = records_of(dir, "m-2");
  CHECK(other[0].at("frequency").as_double() == Approx(50.02));
  CHECK(other[0].size() == 4);
  // One request for slave 1's 80 contiguous holding registers, one for the string, one for the
  // input registers, one for the coils, one for the discrete inputs: nothing failed.
  CHECK(metric(metrics, errors_sample("timeout")) == 0);
  CHECK(tank.stop() == 0);
}

TEST_CASE("inputs.modbus: exceptions and a missing device are counted by reason, the others go on",
          "[integration][modbus]") {
  INFO("needs python3-pymodbus and python3-serial-asyncio: packaging/setup-debian.sh --with-tests");
  REQUIRE(pymodbus_available());
  TempDir dir;
  const int port = free_tcp_port();
  ModbusServer server({"--tcp", std::to_string(port), "--slaves", "3", "--failing-slave", "2", "--registers", "50"});
  const auto config = write_test_config(
      dir, fmt::format("[[inputs.modbus]]\nname = \"m\"\ncontroller = \"tcp://127.0.0.1:{}\"\npoll_interval = \"100ms\"\n"
                       "timeout = \"300ms\"\nbackoff_max = \"1s\"\n\n"
                       "[[inputs.modbus.devices]]\nslave_id = 1\nname = \"good\"\n\n"
                       "[[inputs.modbus.devices]]\nslave_id = 2\nname = \"failing\"\n\n"
                       "[[inputs.modbus.devices]]\nslave_id = 3\nname = \"bad-map\"\n"
                       "fields = [{{ name = \"far\", address = 4095, type = \"uint32\" }}]\n\n"
                       "[[inputs.modbus.devices]]\nslave_id = 9\nname = \"absent\"\n\n"
                       "[[inputs.modbus.fields]]\nname = \"r7\"\naddress = 7\n\n{}",
                       port, output_toml(dir)));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  REQUIRE(wait_until([&] {
    const auto text = scrape(metrics);
    return metric_value(text, errors_sample("timeout")).value_or(0) >= 2 &&
           metric_value(text, errors_sample("exception_server_device_failure")).value_or(0) >= 3 &&
           metric_value(text, errors_sample("exception_illegal_data_address")).value_or(0) >= 3 &&
           records_of(dir, "good").size() >= 5;
  }));
  for (const auto& r : records_of(dir, "good")) CHECK(r.at("r7").as_int64() == 7);
  CHECK(records_of(dir, "failing").empty());
  CHECK(records_of(dir, "bad-map").empty());
  CHECK(records_of(dir, "absent").empty());
  // The absent device backs off: it is skipped, counted, and costs the others no timeout per poll.
  REQUIRE(wait_until([&] {
    return metric(metrics, "tank_input_dropped_records_total{input=\"m\",reason=\"device_backoff\",type=\"modbus\"}") >= 1;
  }));
  CHECK(tank.stop() == 0);
  const std::string log = tank.process().err();
  // Logged once per episode, not once per poll.
  auto count = [&](const std::string& needle) {
    std::size_t n = 0;
    for (auto p = log.find(needle); p != std::string::npos; p = log.find(needle, p + 1)) ++n;
    return n;
  };
  INFO(log);
  CHECK(count("device failing (slave 2) on tcp") == 1);
  CHECK(count("exception_server_device_failure") == 1);
  CHECK(count("device bad-map (slave 3)") == 1);
  CHECK(count("device absent (slave 9)") == 1);
}

TEST_CASE("inputs.modbus: a server stopped and started again, then a slow server past the timeout",
          "[integration][modbus]") {
  INFO("needs python3-pymodbus and python3-serial-asyncio: packaging/setup-debian.sh --with-tests");
  REQUIRE(pymodbus_available());
  TempDir dir;
  const int port = free_tcp_port();
  auto server = std::make_unique<ModbusServer>(std::vector<std::string>{"--tcp", std::to_string(port), "--registers", "10"});
  const auto config = write_test_config(
      dir, fmt::format("[[inputs.modbus]]\nname = \"m\"\ncontroller = \"tcp://127.0.0.1:{}\"\npoll_interval = \"100ms\"\n"
                       "timeout = \"200ms\"\nbackoff_max = \"300ms\"\n\n"
                       "[[inputs.modbus.devices]]\nslave_id = 1\nname = \"d\"\n\n"
                       "[[inputs.modbus.fields]]\nname = \"r3\"\naddress = 3\n\n{}",
                       port, output_toml(dir)));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  REQUIRE(wait_until([&] { return records_of(dir, "d").size() >= 2; }));

  server->stop();
  REQUIRE(wait_until([&] {
    const auto text = scrape(metrics);
    return metric_value(text, errors_sample("connect_failed")).value_or(0) +
               metric_value(text, errors_sample("connection_lost")).value_or(0) >=
           2;
  }));
  server = std::make_unique<ModbusServer>(std::vector<std::string>{"--tcp", std::to_string(port), "--registers", "10"});
  const std::size_t before = records_of(dir, "d").size();
  REQUIRE(wait_until([&] { return records_of(dir, "d").size() >= before + 2; }));

  // Now a server that answers after 600 ms, past the 200 ms timeout.
  server->stop();
  server = std::make_unique<ModbusServer>(
      std::vector<std::string>{"--tcp", std::to_string(port), "--registers", "10", "--delay-ms", "600"});
  REQUIRE(wait_until([&] { return metric(metrics, errors_sample("timeout")) >= 1; }));
  for (const auto& r : records_of(dir, "d")) CHECK(r.at("r3").as_int64() == 3);
  CHECK(tank.stop() == 0);
  const std::string log = tank.process().err();
  INFO(log);
  CHECK(log.find("device d (slave 1) on tcp 127.0.0.1:" + std::to_string(port)) != std::string::npos);
  CHECK(log.find("answers again") != std::string::npos);
}

TEST_CASE("inputs.modbus over RTU (a pty pair) reads every type in every byte order", "[integration][modbus]") {
  INFO("needs python3-pymodbus, python3-serial-asyncio and socat: packaging/setup-debian.sh --with-tests");
  REQUIRE(pymodbus_available());
  REQUIRE(socat_available());
  TempDir dir;
  const auto values = known_values();
  PtyPair pty(dir.path());
  ModbusServer server({"--rtu", pty.server_end().string(), "--baud", "19200", "--slaves", "2", "--values",
                       values_file(dir, values)});
  const auto config = write_test_config(
      dir, fmt::format("[[inputs.modbus]]\nname = \"m\"\ncontroller = \"file://{}\"\nbaud_rate = 19200\n"
                       "parity = \"none\"\ndata_bits = 8\nstop_bits = 1\npoll_interval = \"200ms\"\ntimeout = \"1s\"\n\n"
                       "[[inputs.modbus.devices]]\nslave_id = 1\nname = \"meter-1\"\n\n"
                       "[[inputs.modbus.devices]]\nslave_id = 2\nname = \"meter-2\"\n\n"
                       "{}{}",
                       pty.tank_end().string(), fields_toml(values), output_toml(dir)));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  REQUIRE(wait_until([&] { return records_of(dir, "meter-1").size() >= 2 && records_of(dir, "meter-2").size() >= 2; }));
  for (const auto& r : records_of(dir, "meter-1")) check_known(r, values);
  for (const auto& r : records_of(dir, "meter-2")) check_known(r, values);
  CHECK(records_of(dir, "meter-2")[0].at("slave_id").as_int64() == 2);
  CHECK(tank.stop() == 0);
}
