// processors.dedup then processors.deadband under kill -9: a generated sensor stream (random
// walks with noise, resent lines, quiet stretches that trigger heartbeats) goes through the chain
// in the real tank once without interruption and once with tank killed at random moments and
// right after commits, and restarted. What the chain passes on must be the same records in the
// same order both times, and what a reference computation here says.

#include <catch2/catch.hpp>

#include <csignal>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <cmath>
#include <map>
#include <random>
#include <thread>

#include "support/input_helpers.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

constexpr std::size_t kLines = 60000;
constexpr std::size_t kDevices = 300;
constexpr std::int64_t kStartMs = 1798761600000;  // 2027-01-01T00:00:00Z
constexpr double kBand = 0.5;
constexpr std::int64_t kHeartbeatMs = 30000;
constexpr std::int64_t kDedupWindowMs = 5000;

std::vector<std::string> generate() {
  std::mt19937_64 rng(20261207);
  std::uniform_int_distribution<std::size_t> device(0, kDevices - 1);
  std::normal_distribution<double> step(0, 0.2);
  std::uniform_int_distribution<int> percent(0, 99);
  std::vector<double> level(kDevices, 20.0);
  std::vector<std::string> out;
  out.reserve(kLines);
  while (out.size() < kLines) {
    const std::size_t d = device(rng);
    level[d] += step(rng);
    const std::int64_t ts = kStartMs + static_cast<std::int64_t>(out.size()) * 10;  // 100 lines per second
    std::string line = fmt::format(R"({{"device":"d{}","ts":{},"temp":{:.2f}}})", d, ts, level[d]);
    out.push_back(line);
    if (percent(rng) < 10 && out.size() < kLines) out.push_back(line);  // resent by a flaky link
  }
  return out;
}

// What dedup (whole records, window by ts) then deadband (temp per device, absolute kBand,
// heartbeat by ts) pass on.
std::vector<std::string> reference(const std::vector<std::string>& lines) {
  std::map<std::string, std::int64_t> seen;  // line -> ts it passed
  struct Ref {
    double temp;
    std::int64_t ts;
  };
  std::map<std::string, Ref> refs;
  std::vector<std::string> out;
  for (const std::string& line : lines) {
    const auto o = boost::json::parse(line).as_object();
    const std::int64_t ts = o.at("ts").as_int64();
    auto s = seen.find(line);
    if (s != seen.end() && std::llabs(ts - s->second) < kDedupWindowMs) continue;
    seen[line] = ts;
    const std::string device(o.at("device").as_string());
    const double temp = boost::json::value_to<double>(o.at("temp"));
    auto r = refs.find(device);
    if (r != refs.end() && std::fabs(temp - r->second.temp) <= kBand && std::llabs(ts - r->second.ts) < kHeartbeatMs) {
      continue;
    }
    refs[device] = Ref{temp, ts};
    out.push_back(line);
  }
  return out;
}

std::filesystem::path config_for(const TempDir& run_dir, const std::filesystem::path& stream) {
  return write_test_config(
      run_dir,
      fmt::format("[queue]\nmax_disk_bytes = \"32MiB\"\n\n[[inputs.file]]\nname = \"stream\"\npaths = [\"{}\"]\n"
                  "format = \"json\"\nread_from = \"beginning\"\npoll_interval = \"50ms\"\n\n"
                  "[[processors.dedup]]\nname = \"dd\"\nwindow = \"5s\"\ntime_field = \"ts\"\ntime_format = \"unix_ms\"\n\n"
                  "[[processors.deadband]]\nname = \"db\"\nfields = [\"temp\"]\ngroup_by = [\"device\"]\n"
                  "absolute = {}\nmax_interval = \"30s\"\ntime_field = \"ts\"\ntime_format = \"unix_ms\"\n",
                  stream.string(), kBand));
}

// What deadband passed on (chain level 2), in order.
std::vector<std::string> passed(const std::filesystem::path& data) {
  std::vector<std::string> out;
  for (const auto& r : records_in(data / "queue")) {
    if (r.level == 2) out.push_back(r.payload);
  }
  return out;
}

}  // namespace

TEST_CASE("dedup and deadband: kill -9 at random moments and restarts give exactly the output of an uninterrupted run",
          "[failure][deadband][dedup][kill9]") {
  TempDir dir;
  const auto lines = generate();
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  write_file(dir / "stream.ndjson", text);
  const auto expected = reference(lines);
  REQUIRE(expected.size() < lines.size() / 2);  // the chain does reduce
  // Done when the chain passed on as many records as the reference: a lost record never gets
  // there (the wait fails), a repeated one makes the comparison below fail.
  auto done = [&](const std::filesystem::path& data) { return passed(data).size() >= expected.size(); };

  TempDir run_a;
  const auto data_a = run_a / "data";
  {
    TankProcess tank(config_for(run_a, dir / "stream.ndjson"));
    tank.wait_running(data_a);
    REQUIRE(wait_until([&] { return done(data_a); }, std::chrono::seconds(300)));
    REQUIRE(tank.stop() == 0);
  }
  const auto a = passed(data_a);

  TempDir run_b;
  const auto data_b = run_b / "data";
  const auto config_b = config_for(run_b, dir / "stream.ndjson");
  std::string logs;
  for (const char* point : {"record_stage.commit=1", "record_stage.commit=2", "record_stage.commit=5",
                            "record_stage.commit=8"}) {
    run_until_failpoint(config_b, point, logs);
  }
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> delay_ms(30, 400);
  for (int kill = 0; kill < 8 && !done(data_b); ++kill) {
    TankProcess tank(config_b);
    tank.wait_running(data_b);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));  // a random moment, not a synchronisation
    tank.process().signal(SIGKILL);
    tank.process().wait();
    logs += tank.process().err() + "---- kill -9\n";
  }
  {
    TankProcess tank(config_b);
    tank.wait_running(data_b);
    REQUIRE(wait_until([&] { return done(data_b); }, std::chrono::seconds(300)));
    REQUIRE(tank.stop() == 0);
    logs += tank.process().err();
  }
  const auto b = passed(data_b);
  INFO(logs);
  CHECK(a.size() == expected.size());
  CHECK(b.size() == expected.size());
  CHECK(a == expected);
  REQUIRE(b == expected);
}
