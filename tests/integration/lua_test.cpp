// processors.lua in the real tank binary: records over TCP go through a script after the queue
// (transformed, dropped, split, dead-lettered), `tank check` refuses a script that does not load
// with its line, and SIGHUP reads an edited script again while a broken one is refused.

#include <catch2/catch.hpp>

#include <csignal>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <unistd.h>

#include <map>

#include <sstream>

#include "support/http_upstream.hpp"
#include "support/input_helpers.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

std::vector<StoredRecord> derived_in(const std::filesystem::path& data) {
  std::vector<StoredRecord> out;
  for (auto& r : records_in(data / "queue")) {
    if (r.derived) out.push_back(std::move(r));
  }
  return out;
}

void send_lines(const std::string& address, const std::string& lines) {
  const int fd = tcp_connect(address);
  REQUIRE(fd >= 0);
  REQUIRE(send_all(fd, lines));
  ::close(fd);
}

std::string lua_config(const std::filesystem::path& script, int port, const std::string& extra = "") {
  return fmt::format("[[inputs.tcp]]\nname = \"plant\"\nlisten = \"127.0.0.1:{}\"\nformat = \"json\"\n\n"
                     "[[processors.lua]]\nname = \"conv\"\nscript = \"{}\"\n{}",
                     port, script.string(), extra);
}

}  // namespace

TEST_CASE("lua: the running agent transforms, drops, splits and dead-letters records", "[integration][lua]") {
  TempDir dir;
  const auto data = dir / "data";
  write_file(dir / "conv.lua", R"(-- Celsius to Fahrenheit
function process(r, a)
  if r.drop then return nil end
  if r.loop then while true do end end
  if r.split then
    local out = {}
    for i, v in ipairs(r.split) do out[i] = {device = r.device, v = v} end
    return out
  end
  a.unit = "F"
  r.temp_f = r.temp * 9 / 5 + 32
  r.temp = nil
  return r
end
)");
  const int port = free_tcp_port();
  const auto config = write_test_config(dir, lua_config(dir / "conv.lua", port, "instruction_limit = 100000\n"));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(data);
  send_lines(fmt::format("127.0.0.1:{}", port),
             "{\"device\":\"a\",\"temp\":20}\n{\"drop\":true}\n{\"device\":\"b\"}\n{\"loop\":true}\n"
             "{\"device\":\"c\",\"split\":[1,2.5]}\nnot json\n{\"device\":\"d\",\"temp\":0.5}\n");
  std::vector<StoredRecord> out;
  REQUIRE(wait_until([&] {
    out = derived_in(data);
    return out.size() == 4;
  }));
  CHECK(out[0].payload == R"({"device":"a","temp_f":68.0})");
  CHECK(out[0].attributes.at("unit") == "F");
  CHECK(out[0].attributes.count("peer") == 1);  // the record's own attributes stay
  CHECK(out[1].payload == R"({"device":"c","v":1})");
  CHECK(out[2].payload == R"({"device":"c","v":2.5})");
  CHECK(out[3].payload == R"({"device":"d","temp_f":32.9})");
  for (const auto& r : out) CHECK(r.input == "plant");

  std::vector<boost::json::object> letters;
  REQUIRE(wait_until([&] {
    letters = dead_letters_in(data);
    return letters.size() == 3;
  }));
  std::map<std::string, std::string> by_original;
  for (const auto& d : letters) {
    by_original[std::string(d.at("reason").as_string()) + " " + std::string(d.at("detail").as_string())] = "";
  }
  std::string all;
  for (const auto& [k, v] : by_original) all += k + "\n";
  INFO(all);
  CHECK(all.find("decode_error") != std::string::npos);
  CHECK(all.find("transform_error processor \"conv\": " + (dir / "conv.lua").string() + ":11:") != std::string::npos);
  CHECK(all.find("transform_error processor \"conv\": the script ran more than 100000 instructions") !=
        std::string::npos);

  const std::string scraped = scrape(metrics);
  // "not json" never reaches the stage: the input refuses it before the commit.
  CHECK(metric_value(scraped, R"(tank_processor_records_in_total{processor="conv",type="lua"})") == 6);
  CHECK(metric_value(scraped, R"(tank_processor_records_out_total{processor="conv",type="lua"})") == 4);
  CHECK(metric_value(scraped, R"(tank_processor_dropped_records_total{processor="conv",reason="script_nil",type="lua"})") ==
        1);
  CHECK(metric_value(scraped,
                     R"(tank_processor_dead_letters_total{processor="conv",reason="transform_error",type="lua"})") == 2);
  CHECK(tank.stop() == 0);
}

TEST_CASE("lua: tank check refuses a script that does not load, with its line", "[integration][lua][check]") {
  TempDir dir;
  write_file(dir / "bad.lua", "function process(r)\n  r.x = 1\n  return r +\nend\n");
  auto config = write_test_config(dir, lua_config(dir / "bad.lua", 9));
  auto r = run({tank_binary(), "check", "-c", config.string()});
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("processors.lua[0].script") != std::string::npos);
  CHECK(r.err.find((dir / "bad.lua").string() + ":4: unexpected symbol near 'end'") != std::string::npos);

  config = write_test_config(dir, lua_config(dir / "absent.lua", 9), "absent.toml");
  r = run({tank_binary(), "check", "-c", config.string()});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find((dir / "absent.lua").string() + ": cannot be read") != std::string::npos);

  write_file(dir / "none.lua", "function transform(r) return r end\n");
  config = write_test_config(dir, lua_config(dir / "none.lua", 9), "none.toml");
  r = run({tank_binary(), "check", "-c", config.string()});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("defines no function process") != std::string::npos);

  write_file(dir / "good.lua", "function process(r) return r end\n");
  config = write_test_config(dir, lua_config(dir / "good.lua", 9), "good.toml");
  r = run({tank_binary(), "check", "-c", config.string()});
  INFO(r.err);
  CHECK(r.exit_code == 0);
}

TEST_CASE("lua: SIGHUP reads an edited script again, and one that does not load is refused while the old one goes on",
          "[integration][lua][reload]") {
  TempDir dir;
  const auto data = dir / "data";
  auto script = [&](int version) {
    write_file(dir / "v.lua", fmt::format("function process(r)\n  r.version = {}\n  return r\nend\n", version));
  };
  script(1);
  const int port = free_tcp_port();
  const auto config = write_test_config(dir, lua_config(dir / "v.lua", port));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(data);
  const std::string address = fmt::format("127.0.0.1:{}", port);
  send_lines(address, "{\"n\":1}\n");
  REQUIRE(wait_until([&] { return derived_in(data).size() == 1; }));

  // tank.toml is the same; only the script changed.
  script(2);
  tank.process().signal(SIGHUP);
  REQUIRE(wait_until([&] { return metric_value(scrape(metrics), R"(tank_reloads_total{result="applied"})") == 1; }));
  send_lines(address, "{\"n\":2}\n");
  REQUIRE(wait_until([&] { return derived_in(data).size() == 2; }));

  write_file(dir / "v.lua", "function process(r)\n  return r r\nend\n");
  tank.process().signal(SIGHUP);
  REQUIRE(wait_until([&] { return metric_value(scrape(metrics), R"(tank_reloads_total{result="refused"})") == 1; }));
  CHECK(tank.process().err().find((dir / "v.lua").string() + ":2:") != std::string::npos);
  send_lines(address, "{\"n\":3}\n");
  std::vector<StoredRecord> out;
  REQUIRE(wait_until([&] {
    out = derived_in(data);
    return out.size() == 3;
  }));
  CHECK(out[0].payload == R"({"n":1,"version":1})");
  CHECK(out[1].payload == R"({"n":2,"version":2})");
  CHECK(out[2].payload == R"({"n":3,"version":2})");
  CHECK(tank.stop() == 0);
}

TEST_CASE("deadband then lua then an HTTP upstream: one pipeline of the real binary", "[integration][lua][deadband]") {
  TempDir dir;
  const auto data = dir / "data";
  HttpUpstream upstream;
  write_file(dir / "f.lua", "function process(r, a)\n  r.temp_f = r.temp * 9 / 5 + 32\n  r.temp = nil\n"
                            "  a.unit = \"F\"\n  return r\nend\n");
  const auto config = write_test_config(
      dir, fmt::format("[[inputs.tcp]]\nname = \"plant\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
                       "[[processors.deadband]]\nname = \"db\"\nfields = [\"temp\"]\ngroup_by = [\"device\"]\n"
                       "absolute = 0.5\n\n"
                       "[[processors.lua]]\nname = \"f\"\nscript = \"{}\"\n\n"
                       "[[outputs.http]]\nname = \"cloud\"\nurl = \"{}\"\nlinger = \"10ms\"\n",
                       (dir / "f.lua").string(), upstream.url()));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(data);
  // deadband passes 20, 21 and b's 5 (20.2 and 21.4 are within 0.5); lua converts what it passes.
  send_lines(input_address(data, "plant"), R"({"device":"a","temp":20})"
                                           "\n"
                                           R"({"device":"a","temp":20.2})"
                                           "\n"
                                           R"({"device":"b","temp":5})"
                                           "\n"
                                           R"({"device":"a","temp":21})"
                                           "\n"
                                           R"({"device":"a","temp":21.4})"
                                           "\n");
  std::vector<boost::json::object> got;
  REQUIRE(wait_until([&] {
    got.clear();
    for (const auto& r : upstream.received()) {
      if (r.answered != 200) continue;
      std::istringstream in(r.body);
      for (std::string line; std::getline(in, line);) {
        if (!line.empty()) got.push_back(boost::json::parse(line).as_object());
      }
    }
    return got.size() >= 3;
  }, std::chrono::seconds(30)));
  REQUIRE(got.size() == 3);
  std::map<std::string, std::vector<double>> by_device;
  for (const auto& o : got) {
    CHECK_FALSE(o.contains("temp"));
    by_device[std::string(o.at("device").as_string())].push_back(o.at("temp_f").to_number<double>());
  }
  CHECK(by_device["a"] == std::vector<double>{68, 69.8});
  CHECK(by_device["b"] == std::vector<double>{41});
  const std::string scraped = scrape(metrics);
  CHECK(metric_value(scraped, R"(tank_processor_dropped_records_total{processor="db",reason="deadband",type="deadband"})") == 2);
  CHECK(metric_value(scraped, R"(tank_processor_records_in_total{processor="f",type="lua"})") == 3);
  CHECK(tank.stop() == 0);
}
