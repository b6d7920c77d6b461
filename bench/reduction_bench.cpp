// What processors.deadband saves on the link (issue 22): an hour of a recorded-looking sensor
// trace goes through the real tank to an HTTP upstream (zstd, as the default outputs.http sends)
// once as it is and once through a deadband, and the bytes the upstream received are compared.
//
// The trace: --sensors sensors (default 200) at 1 Hz for --hours hours (default 1) of event
// time; each a random walk (steps of N(0, --walk) per second, default 0.02) measured with noise
// N(0, --noise), default 0.05, around 20 (a temperature in degrees C, two decimals, as a typical
// sensor reports it). Records: {"ts":<unix ms>,"sensor":"temp-007","value":21.37,"unit":"C"}.
// The deadband: fields = ["value"], group_by = ["sensor"], percent = --percent (default 0.5),
// max_interval = --heartbeat (default 5m, by the record's ts).
//
// Usage: reduction_bench --tank build/agent/tank --dir /tmp/reduction [--sensors N] [--hours H]
//        [--percent P] [--heartbeat 5m] [--walk S] [--noise S]

#include <zstd.h>

#include <random>

#include "bench_support.hpp"

using namespace bench;

namespace {

struct Options {
  std::string tank;
  fs::path dir;
  int sensors = 200;
  double hours = 1;
  double percent = 0.5;
  std::string heartbeat = "5m";
  double walk = 0.02;
  double noise = 0.05;
};

std::string trace(const Options& o, std::uint64_t* records) {
  std::mt19937_64 rng(20261207);
  std::normal_distribution<double> step(0, o.walk);
  std::normal_distribution<double> noise(0, o.noise);
  std::vector<double> level(static_cast<std::size_t>(o.sensors), 20.0);
  std::string out;
  const auto seconds = static_cast<std::int64_t>(o.hours * 3600);
  *records = 0;
  for (std::int64_t s = 0; s < seconds; ++s) {
    for (int k = 0; k < o.sensors; ++k) {
      double& x = level[static_cast<std::size_t>(k)];
      x += step(rng);
      const double measured = std::round((x + noise(rng)) * 100) / 100;
      out += fmt::format(R"({{"ts":{},"sensor":"temp-{:03d}","value":{:.2f},"unit":"C"}})", 1798761600000 + s * 1000,
                         k, measured);
      out += '\n';
      ++*records;
    }
  }
  return out;
}

struct Result {
  std::uint64_t records = 0;       // records the upstream received
  std::uint64_t sent_bytes = 0;    // HTTP bodies as sent (zstd)
  std::uint64_t plain_bytes = 0;   // the same, decompressed
  std::uint64_t requests = 0;
};

Result run(const Options& o, const std::string& data, std::uint64_t records, bool deadband) {
  const fs::path dir = o.dir / (deadband ? "deadband" : "plain");
  fs::remove_all(dir);
  fs::create_directories(dir);
  HttpSink sink;
  sink.set_capture(true);
  std::string pipeline = "[[inputs.tcp]]\nname = \"bench\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n";
  if (deadband) {
    pipeline += fmt::format("[[processors.deadband]]\nname = \"reduce\"\nfields = [\"value\"]\ngroup_by = [\"sensor\"]\n"
                            "percent = {}\nmax_interval = \"{}\"\ntime_field = \"ts\"\ntime_format = \"unix_ms\"\n\n",
                            o.percent, o.heartbeat);
  }
  pipeline += fmt::format("[[outputs.http]]\nname = \"up\"\nurl = \"{}\"\ncompression = \"zstd\"\n", sink.url());
  RunningTank tank = start_tank(o.tank, dir, dir / "data", bench_config(dir / "data", "interval", pipeline));
  const int fd = connect_tcp(tank.input_address);
  write_all(fd, data);
  ::close(fd);
  // Done when the stage (if any) has read everything and the output delivered what it passed on.
  const bool done = wait_for([&] {
    const std::string m = scrape_metrics(tank.metrics_address);
    const double in = metric_sum(m, "tank_input_records_total", {"input=\"bench\""});
    if (in < static_cast<double>(records)) return false;
    double expected = static_cast<double>(records);
    if (deadband) {
      if (metric_sum(m, "tank_processor_records_in_total", {"processor=\"reduce\""}) < static_cast<double>(records)) {
        return false;
      }
      expected = metric_sum(m, "tank_processor_records_out_total", {"processor=\"reduce\""});
    }
    return metric_sum(m, "tank_output_records_total", {"output=\"up\"", "result=\"delivered\""}) >= expected;
  }, std::chrono::seconds(600));
  if (!done) die("tank did not deliver everything in 10 minutes; see " + (dir / "tank.log").string());
  tank.process->stop();
  Result r;
  r.requests = sink.requests();
  for (const auto& d : sink.take()) {
    r.sent_bytes += d.body.size();
    std::string plain = d.body;
    if (d.zstd) {
      const unsigned long long size = ZSTD_getFrameContentSize(d.body.data(), d.body.size());
      if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN) die("a body is not a zstd frame");
      plain.resize(size);
      if (ZSTD_isError(ZSTD_decompress(plain.data(), plain.size(), d.body.data(), d.body.size()))) die("zstd failed");
    }
    r.plain_bytes += plain.size();
    r.records += static_cast<std::uint64_t>(std::count(plain.begin(), plain.end(), '\n'));
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--tank") o.tank = value();
    else if (a == "--dir") o.dir = value();
    else if (a == "--sensors") o.sensors = std::stoi(value());
    else if (a == "--hours") o.hours = std::stod(value());
    else if (a == "--percent") o.percent = std::stod(value());
    else if (a == "--heartbeat") o.heartbeat = value();
    else if (a == "--walk") o.walk = std::stod(value());
    else if (a == "--noise") o.noise = std::stod(value());
    else die("unknown argument " + a);
  }
  if (o.tank.empty() || o.dir.empty()) die("usage: reduction_bench --tank PATH --dir DIR [options]");
  std::uint64_t records = 0;
  const std::string data = trace(o, &records);
  fmt::print("trace: {} sensors x {} h at 1 Hz = {} records, {} bytes of NDJSON\n", o.sensors, o.hours, records,
             data.size());
  const Result plain = run(o, data, records, false);
  const Result reduced = run(o, data, records, true);
  const double per_hour = 1.0 / o.hours;
  auto line = [&](const char* name, const Result& r) {
    fmt::print("{:<28} {:>10.0f} records/h {:>12.0f} B/h sent (zstd) {:>12.0f} B/h uncompressed {:>6} requests\n", name,
               static_cast<double>(r.records) * per_hour, static_cast<double>(r.sent_bytes) * per_hour,
               static_cast<double>(r.plain_bytes) * per_hour, r.requests);
  };
  line("without deadband", plain);
  line(fmt::format("deadband {} %, heartbeat {}", o.percent, o.heartbeat).c_str(), reduced);
  fmt::print("reduction: {:.1f} % fewer records, {:.1f} % fewer bytes sent\n",
             100.0 * (1.0 - static_cast<double>(reduced.records) / static_cast<double>(plain.records)),
             100.0 * (1.0 - static_cast<double>(reduced.sent_bytes) / static_cast<double>(plain.sent_bytes)));
  return 0;
}
