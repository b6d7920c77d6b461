// Benchmark of the aggregate processor's state machine (agent/process/aggregator.hpp) on one
// thread.
//
//   aggregate_bench [--records N] [--devices D] [--repeat R] [--help]
//
// The workload is the design target: D devices (default 10,000) each sending one record per
// second of event time ({"ts":<unix ms>,"device":"dev-00042","temp":21.37,"hum":48.2}), with up to
// 400 ms of disorder, into 10 s tumbling windows with 2 s allowed lateness, grouped by device,
// min/max/mean of temp and hum (3 functions on 2 fields).
//
// Figures (records/s, the median of R runs; each run uses a new Aggregator):
//   parse       boost::json parsing of the record texts alone (a reused parser)
//   aggregate   add() of already parsed records, close_ready() every 1,000 records (one input
//               batch) and take_changes() every 50,000 (one state commit)
//   full        parse + aggregate, record by record
// The records are generated and, for `aggregate`, parsed before the clock starts.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "process/aggregator.hpp"

using namespace tank;
using Steady = std::chrono::steady_clock;

namespace {

struct Settings {
  std::size_t records = 1'000'000;
  std::size_t devices = 10'000;
  int repeat = 3;
};

constexpr std::size_t kCloseEvery = 1'000;
constexpr std::size_t kCommitEvery = 50'000;
constexpr std::int64_t kStartMs = 1'795'255'200'000;  // 2026-11-21T10:00:00Z

[[noreturn]] void usage(int code) {
  std::fputs(
      "usage: aggregate_bench [--records N] [--devices D] [--repeat R]\n"
      "  --records N  records per run (default 1000000)\n"
      "  --devices D  devices, each sending one record per second of event time (default 10000)\n"
      "  --repeat R   runs per figure; the median is printed (default 3)\n",
      code == 0 ? stdout : stderr);
  std::exit(code);
}

std::vector<std::string> make_records(const Settings& s) {
  std::mt19937_64 rng(20261121);
  std::vector<std::string> out;
  out.reserve(s.records);
  for (std::size_t i = 0; i < s.records; ++i) {
    // Record i is device i % D's report for second i / D, up to 400 ms early or late.
    const auto second = static_cast<std::int64_t>(i / s.devices);
    const std::int64_t ts = kStartMs + second * 1000 + static_cast<std::int64_t>(rng() % 800) - 400;
    const double temp = 15.0 + static_cast<double>(rng() % 2000) / 100.0;
    const double hum = 30.0 + static_cast<double>(rng() % 400) / 10.0;
    out.push_back(fmt::format(R"({{"ts":{},"device":"dev-{:05}","temp":{},"hum":{}}})", ts, i % s.devices, temp, hum));
  }
  return out;
}

process::AggregateSpec make_spec() {
  using process::AggFunction;
  process::AggregateSpec spec;
  spec.window_ns = 10'000'000'000;
  spec.hop_ns = spec.window_ns;
  spec.allowed_lateness_ns = 2'000'000'000;
  spec.time_field = "ts";
  spec.time_format = process::TimeFormat::unix_ms;
  spec.group_by = {"device"};
  spec.fields = {{"temp", {AggFunction::min, AggFunction::max, AggFunction::mean}},
                 {"hum", {AggFunction::min, AggFunction::max, AggFunction::mean}}};
  spec.max_cells = 1'000'000;
  return spec;
}

struct Tally {
  std::size_t absorbed = 0;
  std::size_t other = 0;
  std::size_t emitted = 0;
  std::size_t commits = 0;
  std::size_t state_puts = 0;
  std::size_t state_bytes = 0;
  std::size_t max_cells = 0;
};

// What the processor does around add(): close after each batch, commit state now and then.
class Driver {
 public:
  Driver() : aggregator_(make_spec()) {}

  void add(const boost::json::value& record) {
    if (aggregator_.add(record, &detail_) == process::AddOutcome::absorbed) {
      ++tally_.absorbed;
    } else {
      ++tally_.other;
    }
    ++n_;
    if (n_ % kCloseEvery == 0) close();
    if (n_ % kCommitEvery == 0) commit();
  }

  void finish() {
    close();
    emitted_.clear();
    aggregator_.close_all(&emitted_);
    tally_.emitted += emitted_.size();
    commit();
  }

  const Tally& tally() const { return tally_; }

 private:
  void close() {
    tally_.max_cells = std::max(tally_.max_cells, aggregator_.open_cells());
    emitted_.clear();
    aggregator_.close_ready(&emitted_);
    tally_.emitted += emitted_.size();
  }
  void commit() {
    puts_.clear();
    deletes_.clear();
    aggregator_.take_changes(&puts_, &deletes_);
    ++tally_.commits;
    tally_.state_puts += puts_.size();
    for (const auto& [k, v] : puts_) tally_.state_bytes += k.size() + v.size();
  }

  process::Aggregator aggregator_;
  std::string detail_;
  std::vector<process::Emitted> emitted_;
  std::vector<std::pair<std::string, std::string>> puts_;
  std::vector<std::string> deletes_;
  std::size_t n_ = 0;
  Tally tally_;
};

double seconds_since(Steady::time_point start) {
  return std::chrono::duration<double>(Steady::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> long long {
      if (i + 1 >= argc) usage(2);
      char* end = nullptr;
      const long long v = std::strtoll(argv[++i], &end, 10);
      if (end == nullptr || *end != '\0' || v <= 0) usage(2);
      return v;
    };
    if (a == "--help" || a == "-h") usage(0);
    else if (a == "--records") s.records = static_cast<std::size_t>(value());
    else if (a == "--devices") s.devices = static_cast<std::size_t>(value());
    else if (a == "--repeat") s.repeat = static_cast<int>(value());
    else usage(2);
  }

  const auto texts = make_records(s);
  std::size_t text_bytes = 0;
  for (const auto& t : texts) text_bytes += t.size();

  // Parsing alone (also builds the parsed records `aggregate` uses).
  std::vector<boost::json::value> parsed;
  std::vector<double> parse_rates;
  boost::json::parser parser;
  for (int r = 0; r < s.repeat; ++r) {
    parsed.clear();
    parsed.reserve(texts.size());
    const auto start = Steady::now();
    for (const auto& t : texts) {
      parser.reset();
      parser.write(t);
      parsed.push_back(parser.release());
    }
    parse_rates.push_back(static_cast<double>(texts.size()) / seconds_since(start));
  }

  std::vector<double> aggregate_rates;
  Tally tally;
  for (int r = 0; r < s.repeat; ++r) {
    Driver driver;
    const auto start = Steady::now();
    for (const auto& v : parsed) driver.add(v);
    driver.finish();
    aggregate_rates.push_back(static_cast<double>(parsed.size()) / seconds_since(start));
    tally = driver.tally();
  }
  parsed.clear();
  parsed.shrink_to_fit();

  std::vector<double> full_rates;
  for (int r = 0; r < s.repeat; ++r) {
    Driver driver;
    const auto start = Steady::now();
    for (const auto& t : texts) {
      parser.reset();
      parser.write(t);
      driver.add(parser.release());
    }
    driver.finish();
    full_rates.push_back(static_cast<double>(texts.size()) / seconds_since(start));
  }

  fmt::print("aggregate_bench: {} records ({:.1f} MB of JSON, {} B each on average), {} devices, "
             "{} s of event time, median of {} runs\n",
             s.records, static_cast<double>(text_bytes) / 1e6, text_bytes / std::max<std::size_t>(1, s.records),
             s.devices, s.records / s.devices, s.repeat);
  fmt::print("workload: 10 s tumbling windows, 2 s lateness, group_by device, min/max/mean of 2 fields; "
             "close_ready every {} records, take_changes every {}\n",
             kCloseEvery, kCommitEvery);
  fmt::print("| figure    | records/s  |\n|-----------|------------|\n");
  fmt::print("| parse     | {:>10.0f} |\n", median(parse_rates));
  fmt::print("| aggregate | {:>10.0f} |\n", median(aggregate_rates));
  fmt::print("| full      | {:>10.0f} |\n", median(full_rates));
  fmt::print("per run: {} absorbed, {} not absorbed, {} windows emitted, at most {} cells held; "
             "{} commits with {} puts, {:.1f} MB of state written ({:.0f} B per put)\n",
             tally.absorbed, tally.other, tally.emitted, tally.max_cells, tally.commits, tally.state_puts,
             static_cast<double>(tally.state_bytes) / 1e6,
             static_cast<double>(tally.state_bytes) / static_cast<double>(std::max<std::size_t>(1, tally.state_puts)));
  return 0;
}
