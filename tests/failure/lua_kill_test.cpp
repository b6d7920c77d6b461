// processors.lua with state = true under kill -9: a script keeps running counts per device in its
// `state` table and stamps each record with them. tank runs once without interruption and once
// killed at random moments (and right after stage commits) and restarted; the output must be byte
// for byte the same, in the same order, and its counts those computed here: the state table is
// committed with the stage's position, so no record is counted twice or missed.

#include <catch2/catch.hpp>

#include <csignal>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <map>
#include <random>
#include <thread>

#include "support/input_helpers.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

constexpr std::size_t kRecords = 60000;
constexpr std::size_t kDevices = 50;

const char* const kScript = R"(
function process(r)
  if r.v % 1000 == 999 then error("refused " .. r.v) end
  local d = state.devices[r.device] or {n = 0, sum = 0}
  d.n = d.n + 1
  d.sum = d.sum + r.v
  state.devices[r.device] = d
  state.total = state.total + 1
  return {device = r.device, v = r.v, n = d.n, sum = d.sum, total = state.total}
end
state.devices = state.devices or {}
state.total = state.total or 0
)";

struct Observed {
  std::vector<std::string> records;
  std::size_t dead = 0;
};

Observed observe(const std::filesystem::path& data) {
  Observed o;
  for (auto& r : records_in(data / "queue")) {
    if (r.derived) o.records.push_back(std::move(r.payload));
  }
  for (const auto& d : dead_letters_in(data)) {
    if (d.at("reason").as_string() == "transform_error") ++o.dead;
  }
  return o;
}

bool complete(const std::filesystem::path& data) {
  const Observed o = observe(data);
  return o.records.size() + o.dead >= kRecords;
}

std::filesystem::path config_for(const TempDir& run_dir, const std::filesystem::path& stream,
                                 const std::filesystem::path& script) {
  return write_test_config(
      run_dir, fmt::format("[[inputs.file]]\nname = \"stream\"\npaths = [\"{}\"]\nformat = \"json\"\n"
                           "read_from = \"beginning\"\npoll_interval = \"50ms\"\n\n"
                           "[[processors.lua]]\nname = \"counts\"\nscript = \"{}\"\nstate = true\n",
                           stream.string(), script.string()));
}

}  // namespace

TEST_CASE("lua: with state = true, kill -9 and restarts give exactly the output of an uninterrupted run",
          "[failure][lua][kill9]") {
  TempDir dir;
  std::mt19937_64 rng(20270101);
  std::uniform_int_distribution<std::size_t> device(0, kDevices - 1);
  std::string text;
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> expected;  // device: n, sum
  std::size_t refused = 0;
  for (std::size_t i = 0; i < kRecords; ++i) {
    const std::string d = fmt::format("d{}", device(rng));
    const auto v = static_cast<std::int64_t>(i);
    text += fmt::format(R"({{"device":"{}","v":{}}})", d, v) + "\n";
    if (v % 1000 == 999) {
      ++refused;
      continue;
    }
    expected[d].first += 1;
    expected[d].second += v;
  }
  write_file(dir / "stream.ndjson", text);
  write_file(dir / "counts.lua", kScript);

  TempDir run_a;
  {
    TankProcess tank(config_for(run_a, dir / "stream.ndjson", dir / "counts.lua"));
    tank.wait_running(run_a / "data");
    REQUIRE(wait_until([&] { return complete(run_a / "data"); }, std::chrono::seconds(300)));
    REQUIRE(tank.stop() == 0);
  }
  const Observed a = observe(run_a / "data");

  TempDir run_b;
  const auto data_b = run_b / "data";
  const auto config_b = config_for(run_b, dir / "stream.ndjson", dir / "counts.lua");
  std::string logs;
  for (const char* point : {"record_stage.commit=1", "record_stage.commit=1", "record_stage.commit=2"}) {
    run_until_failpoint(config_b, point, logs);
  }
  std::mt19937 kill_rng(11);
  std::uniform_int_distribution<int> delay_ms(30, 400);
  for (int kill = 0; kill < 6; ++kill) {
    TankProcess tank(config_b);
    tank.wait_running(data_b);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(kill_rng)));  // a random moment, not a synchronisation
    tank.process().signal(SIGKILL);
    tank.process().wait();
    logs += tank.process().err() + "---- kill -9\n";
    if (complete(data_b)) break;
  }
  {
    TankProcess tank(config_b);
    tank.wait_running(data_b);
    REQUIRE(wait_until([&] { return complete(data_b); }, std::chrono::seconds(300)));
    REQUIRE(tank.stop() == 0);
    logs += tank.process().err();
  }
  const Observed b = observe(data_b);
  INFO(logs);

  CHECK(a.dead == refused);
  CHECK(b.dead == refused);
  CHECK(a.records.size() == kRecords - refused);
  CHECK(b.records.size() == a.records.size());
  REQUIRE(a.records == b.records);
  // The last record of each device carries its count and sum; the last of all, the total.
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> last;
  for (const std::string& payload : b.records) {
    const auto o = boost::json::parse(payload).as_object();
    last[std::string(o.at("device").as_string())] = {o.at("n").as_int64(), o.at("sum").as_int64()};
  }
  CHECK(last == expected);
  CHECK(boost::json::parse(b.records.back()).at("total").as_int64() == static_cast<std::int64_t>(kRecords - refused));
}
