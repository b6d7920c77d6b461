// processors.aggregate under kill -9: a generated stream (out of order, with late events, missing
// and non-numeric values, 3000 devices) is aggregated by the real tank once without interruption and once with
// tank killed at random moments and restarted; the aggregates must be byte for byte the same, in
// the same order, and agree with a reference computation done here.

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

constexpr std::size_t kRecords = 100000;
// Enough devices that a window holds more cells than the stage emits at once (1024), and a queue
// small enough (max_disk_bytes below) that their aggregates need several commits: the bounded
// drain with commits between chunks is killed too.
constexpr std::size_t kDevices = 3000;
constexpr std::int64_t kWindowMs = 10000;
constexpr std::int64_t kLatenessMs = 5000;
constexpr std::int64_t kStartMs = 1798761600000;  // 2027-01-01T00:00:00Z

struct Event {
  std::string device;
  std::int64_t ts;
  double temp;
  std::string line;
};

std::vector<Event> generate() {
  std::mt19937_64 rng(20261122);
  std::uniform_int_distribution<std::size_t> device(0, kDevices - 1);
  std::uniform_int_distribution<std::int64_t> jitter(-3000, 3000);
  std::uniform_int_distribution<int> temp_milli(-20000, 40000);
  std::uniform_int_distribution<int> percent(0, 999);
  std::vector<Event> out;
  out.reserve(kRecords);
  for (std::size_t i = 0; i < kRecords; ++i) {
    Event e;
    e.device = fmt::format("d{}", device(rng));
    const std::int64_t base = kStartMs + static_cast<std::int64_t>(i) * 5;  // 200 records per second of event time
    const int p = percent(rng);
    e.ts = p < 5 ? base - 60000 : base + jitter(rng);  // 0.5 % far behind: late
    e.temp = temp_milli(rng) / 1000.0;
    std::string hum = p % 10 == 1 ? "" : p % 10 == 2 ? R"(,"hum":"NaN")" : fmt::format(R"(,"hum":{})", 40 + p % 50);
    e.line = fmt::format(R"({{"device":"{}","ts":{},"temp":{}{}}})", e.device, e.ts, e.temp, hum);
    out.push_back(std::move(e));
  }
  return out;
}

struct Cell {
  std::uint64_t count = 0;
  double min = INFINITY, max = -INFINITY, sum = 0;
  double first = 0, last = 0;
  std::int64_t first_ts = INT64_MAX, last_ts = INT64_MIN;
};

// The reference: tumbling windows, watermark = highest event time seen - lateness, a record late
// when its window has ended at or before the watermark (after counting the record itself).
std::map<std::pair<std::string, std::int64_t>, Cell> reference(const std::vector<Event>& events, std::size_t* late) {
  std::map<std::pair<std::string, std::int64_t>, Cell> cells;
  std::int64_t max_ts = INT64_MIN;
  *late = 0;
  for (const Event& e : events) {
    max_ts = std::max(max_ts, e.ts);
    const std::int64_t watermark = max_ts - kLatenessMs;
    const std::int64_t start = e.ts - ((e.ts % kWindowMs) + kWindowMs) % kWindowMs;
    if (start + kWindowMs <= watermark) {
      ++*late;
      continue;
    }
    Cell& c = cells[{e.device, start}];
    ++c.count;
    c.min = std::min(c.min, e.temp);
    c.max = std::max(c.max, e.temp);
    c.sum += e.temp;
    if (e.ts < c.first_ts) c.first_ts = e.ts, c.first = e.temp;
    if (e.ts >= c.last_ts) c.last_ts = e.ts, c.last = e.temp;
  }
  return cells;
}

std::int64_t parse_rfc3339_ms(std::string_view s) {
  // "2027-01-01T00:00:10Z": the windows here start on whole seconds.
  std::tm tm{};
  std::string text(s.substr(0, 19));
  strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  return static_cast<std::int64_t>(timegm(&tm)) * 1000;
}

// The aggregates in the queue, in order, and how many records they and the `late` dead letters
// account for.
struct Observed {
  std::vector<std::string> aggregates;
  std::uint64_t counted = 0;
  std::uint64_t late = 0;
};

Observed observe(const std::filesystem::path& data) {
  Observed o;
  for (const auto& r : records_in(data / "queue")) {
    if (!r.derived) continue;
    o.aggregates.push_back(r.payload);
    o.counted += boost::json::parse(r.payload).at("count").as_int64();
  }
  for (const auto& d : dead_letters_in(data)) {
    if (d.at("reason").as_string() == "late") ++o.late;
  }
  return o;
}

std::filesystem::path config_for(const TempDir& run_dir, const std::filesystem::path& stream) {
  return write_test_config(
      run_dir,
      fmt::format("[queue]\nmax_disk_bytes = \"48MiB\"\n\n[[inputs.file]]\nname = \"stream\"\npaths = [\"{}\"]\nformat = \"json\"\nread_from = \"beginning\"\n"
                  "poll_interval = \"50ms\"\n\n"
                  "[[processors.aggregate]]\nname = \"agg\"\nwindow = \"10s\"\nallowed_lateness = \"5s\"\n"
                  "time_field = \"ts\"\ntime_format = \"unix_ms\"\ngroup_by = [\"device\"]\nidle_timeout = \"2s\"\n"
                  "fields = {{ temp = [\"count\", \"sum\", \"min\", \"max\", \"mean\", \"stddev\", \"first\", "
                  "\"last\"], hum = [\"mean\", \"count\"] }}\n",
                  stream.string()));
}

// Every record is accounted for (or more than every one: a double count, which the checks
// below then report instead of waiting for ever).
bool complete(const std::filesystem::path& data, std::size_t total) {
  Observed o = observe(data);
  return o.counted + o.late >= total;
}

}  // namespace

TEST_CASE("aggregate: kill -9 at random moments and restarts give exactly the output of an uninterrupted run",
          "[failure][aggregate][kill9]") {
  TempDir dir;
  const auto events = generate();
  std::string text;
  for (const Event& e : events) text += e.line + "\n";
  write_file(dir / "stream.ndjson", text);

  // Run A: uninterrupted.
  TempDir run_a;
  const auto data_a = run_a / "data";
  {
    TankProcess tank(config_for(run_a, dir / "stream.ndjson"));
    tank.wait_running(data_a);
    REQUIRE(wait_until([&] { return complete(data_a, kRecords); }, std::chrono::seconds(300)));
    REQUIRE(tank.stop() == 0);
  }
  const Observed a = observe(data_a);

  // Run B: killed at random moments, then left to finish.
  TempDir run_b;
  const auto data_b = run_b / "data";
  const auto config_b = config_for(run_b, dir / "stream.ndjson");
  // First at the moments random kills rarely hit (common/failpoint.hpp): right after a commit
  // made in the middle of emitting a large window, and right after ordinary commits.
  std::string logs;
  for (const char* point : {"aggregate.drain_commit=1", "aggregate.drain_commit=2", "aggregate.commit=3",
                            "aggregate.drain_commit=4", "aggregate.commit=7", "aggregate.drain_commit=9"}) {
    run_until_failpoint(config_b, point, logs);
  }
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> delay_ms(30, 500);
  for (int kill = 0; kill < 8; ++kill) {
    TankProcess tank(config_b);
    tank.wait_running(data_b);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));  // a random moment, not a synchronisation
    tank.process().signal(SIGKILL);
    tank.process().wait();
    logs += tank.process().err() + "---- kill -9\n";
    if (complete(data_b, kRecords)) break;
  }
  {
    TankProcess tank(config_b);
    tank.wait_running(data_b);
    REQUIRE(wait_until([&] { return complete(data_b, kRecords); }, std::chrono::seconds(300)));
    REQUIRE(tank.stop() == 0);
    logs += tank.process().err();
  }
  const Observed b = observe(data_b);
  INFO(logs);

  CHECK(a.counted + a.late == kRecords);
  CHECK(b.counted + b.late == kRecords);
  CHECK(a.late == b.late);
  CHECK(a.aggregates.size() == b.aggregates.size());
  REQUIRE(a.aggregates == b.aggregates);

  // And both agree with the reference.
  std::size_t late = 0;
  const auto cells = reference(events, &late);
  CHECK(a.late == late);
  CHECK(a.aggregates.size() == cells.size());
  for (const std::string& payload : a.aggregates) {
    const auto o = boost::json::parse(payload).as_object();
    const std::string device(o.at("device").as_string());
    const std::int64_t start = parse_rfc3339_ms(o.at("window_start").as_string());
    INFO(payload);
    auto it = cells.find({device, start});
    REQUIRE(it != cells.end());
    const Cell& c = it->second;
    CHECK(o.at("count").as_int64() == static_cast<std::int64_t>(c.count));
    CHECK(o.at("temp_count").as_int64() == static_cast<std::int64_t>(c.count));
    CHECK(boost::json::value_to<double>(o.at("temp_min")) == c.min);
    CHECK(boost::json::value_to<double>(o.at("temp_max")) == c.max);
    CHECK(boost::json::value_to<double>(o.at("temp_first")) == c.first);
    CHECK(boost::json::value_to<double>(o.at("temp_last")) == c.last);
    CHECK(boost::json::value_to<double>(o.at("temp_sum")) == Approx(c.sum).epsilon(1e-9));
    CHECK(boost::json::value_to<double>(o.at("temp_mean")) == Approx(c.sum / static_cast<double>(c.count)).epsilon(1e-9));
    if (c.count < 2) CHECK(o.at("temp_stddev").is_null());
  }
}
