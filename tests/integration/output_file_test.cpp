// outputs.file in the real binary: every record of its routes arrives, compressed files read
// back as one stream, files rotate and the oldest are deleted beyond max_files, the queue drains,
// and the outputs' metrics count it.

#include <catch2/catch.hpp>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include "engine/run_state.hpp"
#include "support/http_upstream.hpp"
#include "support/input_helpers.hpp"
#include "support/mosquitto.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

std::vector<std::filesystem::path> files_in(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace

TEST_CASE("outputs.file: every record of its routes, zstd files that read back, the queue drained",
          "[integration][outputs][file]") {
  TempDir dir;
  const auto data = dir / "data";
  const auto config = write_test_config(
      dir, fmt::format("[[inputs.tcp]]\nname = \"plant\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
                       "[[inputs.tcp]]\nname = \"logs\"\nlisten = \"127.0.0.1:0\"\n\n"
                       "[[inputs.tcp]]\nname = \"ignored\"\nlisten = \"127.0.0.1:0\"\n\n"
                       "[[outputs.file]]\nname = \"archive\"\ninputs = [\"plant\", \"logs\"]\ndirectory = \"{}\"\n"
                       "batch_max_records = 100\nlinger = \"20ms\"\nmax_file_bytes = \"4KiB\"\nmax_files = 1000\n",
                       (dir / "out").string()));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(data);
  std::string plant, logs;
  for (int i = 0; i < 3000; ++i) plant += fmt::format(R"({{"device":"d{}","seq":{}}})", i % 7, i) + "\n";
  for (int i = 0; i < 500; ++i) logs += fmt::format("log line {} with \"quotes\"", i) + "\n";
  for (const auto& [input, text] : {std::pair{"plant", plant}, std::pair{"logs", logs}, std::pair{"ignored", logs}}) {
    int fd = tcp_connect(input_address(data, input));
    REQUIRE(fd >= 0);
    REQUIRE(send_all(fd, text));
    ::close(fd);
  }
  std::vector<std::string> lines;
  REQUIRE(wait_until([&] {
    lines.clear();
    for (const auto& f : files_in(dir / "out")) {
      for (auto& l : lines_of(decompress_body("zstd", read_file(f)))) lines.push_back(std::move(l));
    }
    return lines.size() >= 3500;
  }, std::chrono::seconds(30)));
  CHECK(lines.size() == 3500);
  std::set<std::int64_t> seqs;
  std::set<std::string> messages;
  for (const auto& l : lines) {
    auto v = boost::json::parse(l).as_object();
    if (v.contains("seq")) seqs.insert(v.at("seq").as_int64());
    else messages.insert(std::string(v.at("message").as_string()));
  }
  CHECK(seqs.size() == 3000);
  CHECK(messages.size() == 500);
  CHECK(messages.contains("log line 7 with \"quotes\""));
  // Rotated by size (4 KiB): zstd packs the 3500 lines into some 6 KB, so at least two files.
  const auto files = files_in(dir / "out");
  INFO("files: " << files.size() << ", first " << std::filesystem::file_size(files.front()) << " bytes");
  CHECK(files.size() >= 2);
  for (const auto& f : files) {
    CHECK(f.filename().string().starts_with("archive-"));
    CHECK(f.extension() == ".zst");
  }
  // Delivered records of its routes leave the queue; "ignored" has no output and stays.
  REQUIRE(wait_until([&] {
    const std::string s = scrape(metrics);
    return metric_value(s, R"(tank_output_records_total{output="archive",result="delivered",type="file"})") == 3500;
  }));
  const std::string s = scrape(metrics);
  CHECK(metric_value(s, R"(tank_output_batches_total{output="archive",result="retried",type="file"})") == 0);
  CHECK(metric_value(s, R"(tank_output_circuit_state{output="archive",type="file"})") == 0);
  CHECK(metric_value(s, R"(tank_output_delivery_latency_seconds_count{output="archive",type="file"})") == 3500);
  CHECK(metric_value(s, R"(tank_output_last_success_timestamp_seconds{output="archive",type="file"})") > 0);
  CHECK(tank.stop() == 0);
  // The "ignored" input goes to no output: its records were passed by the output and deleted
  // (tank check warns about such an input).
  CHECK(records_in(data / "queue").empty());
  auto r = run({tank_binary(), "check", "-c", config.string()});
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("input \"ignored\" goes to no output") != std::string::npos);
}

TEST_CASE("outputs.file: max_files bounds the directory, and json_array is refused", "[integration][outputs][file]") {
  TempDir dir;
  const auto data = dir / "data";
  const auto config = write_test_config(
      dir, fmt::format("[[inputs.tcp]]\nname = \"plant\"\nlisten = \"127.0.0.1:0\"\n\n"
                       "[[outputs.file]]\ndirectory = \"{}\"\ncompression = \"none\"\nbatch_max_records = 10\n"
                       "linger = \"0s\"\nmax_file_bytes = \"4KiB\"\nmax_files = 3\n",
                       (dir / "out").string()));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(data);
  std::string text;
  for (int i = 0; i < 2000; ++i) text += fmt::format("line {:06d} {}", i, std::string(40, 'x')) + "\n";
  int fd = tcp_connect(input_address(data, "plant"));
  REQUIRE(fd >= 0);
  REQUIRE(send_all(fd, text));
  ::close(fd);
  REQUIRE(wait_until([&] {
    return metric_value(scrape(metrics), R"(tank_output_records_total{output="file",result="delivered",type="file"})") ==
           2000;
  }, std::chrono::seconds(30)));
  const auto files = files_in(dir / "out");
  CHECK(files.size() == 3);
  // The newest files hold the last lines.
  const auto last = lines_of(read_file(files.back()));
  REQUIRE(!last.empty());
  CHECK(last.back() == fmt::format("{{\"message\":\"line 001999 {}\"}}", std::string(40, 'x')));
  CHECK(tank.stop() == 0);

  const auto bad = write_test_config(dir,
                                     "[[inputs.tcp]]\nlisten = \"127.0.0.1:0\"\n\n"
                                     "[[outputs.file]]\ndirectory = \"/tmp\"\nencoding = \"json_array\"\n",
                                     "bad.toml");
  auto r = run({tank_binary(), "check", "-c", bad.string()});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("NDJSON only") != std::string::npos);
  // Cross-section problems (checked once every section is valid).
  const auto twice = write_test_config(dir,
                                       "[[inputs.tcp]]\nlisten = \"127.0.0.1:0\"\n\n"
                                       "[[outputs.file]]\ndirectory = \"/tmp\"\n\n"
                                       "[[outputs.file]]\ndirectory = \"/tmp\"\ninputs = [\"nope\"]\n",
                                       "twice.toml");
  r = run({tank_binary(), "check", "-c", twice.string()});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("another output is named \"file\"") != std::string::npos);
  CHECK(r.err.find("no input is named \"nope\"") != std::string::npos);
}

TEST_CASE("outputs.file: two outputs in one directory, one's name the other's with a suffix (arc, arc-1), each "
          "prunes only its own files",
          "[integration][outputs][file]") {
  TempDir dir;
  const auto data = dir / "data";
  const auto out = dir / "out";
  // "arc" keeps 2 files, "arc-1" all of its own. Every name of "arc-1" starts with "arc-" too.
  const auto config = write_test_config(
      dir, fmt::format("[[inputs.tcp]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n\n"
                       "[[inputs.tcp]]\nname = \"b\"\nlisten = \"127.0.0.1:0\"\n\n"
                       "[[outputs.file]]\nname = \"arc\"\ninputs = [\"b\"]\ndirectory = \"{0}\"\ncompression = \"none\"\n"
                       "batch_max_records = 10\nlinger = \"0s\"\nmax_file_bytes = \"4KiB\"\nmax_files = 2\n\n"
                       "[[outputs.file]]\nname = \"arc-1\"\ninputs = [\"a\"]\ndirectory = \"{0}\"\ncompression = \"none\"\n"
                       "batch_max_records = 10\nlinger = \"0s\"\nmax_file_bytes = \"4KiB\"\nmax_files = 100\n",
                       out.string()));
  auto r = run({tank_binary(), "check", "-c", config.string()});
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("warning") == std::string::npos);
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(data);
  auto send_lines = [&](const std::string& input, int count) {
    std::string text;
    for (int i = 0; i < count; ++i) text += fmt::format("{} {:06d} {}", input, i, std::string(40, 'x')) + "\n";
    int fd = tcp_connect(input_address(data, input));
    REQUIRE(fd >= 0);
    REQUIRE(send_all(fd, text));
    ::close(fd);
  };
  auto delivered = [&](const std::string& output) {
    return metric_value(scrape(metrics),
                        fmt::format(R"(tank_output_records_total{{output="{}",result="delivered",type="file"}})", output))
        .value_or(0);
  };
  auto files_of = [&](const std::string& prefix) {
    std::vector<std::filesystem::path> mine;
    for (const auto& f : files_in(out)) {
      const std::string name = f.filename().string();
      if (name.starts_with(prefix) && (prefix != "arc-" || !name.starts_with("arc-1-"))) mine.push_back(f);
    }
    return mine;
  };
  // First "arc-1" writes its files (some 30 of 4 KiB), then "arc" rotates past its max_files.
  send_lines("a", 2000);
  REQUIRE(wait_until([&] { return delivered("arc-1") == 2000; }, std::chrono::seconds(30)));
  const std::size_t arc1_files = files_of("arc-1-").size();
  CHECK(arc1_files >= 10);
  send_lines("b", 1000);
  REQUIRE(wait_until([&] { return delivered("arc") == 1000; }, std::chrono::seconds(30)));
  CHECK(files_of("arc-").size() == 2);
  CHECK(files_of("arc-1-").size() == arc1_files);
  std::size_t arc1_lines = 0;
  for (const auto& f : files_of("arc-1-")) arc1_lines += lines_of(read_file(f)).size();
  CHECK(arc1_lines == 2000);
  CHECK(tank.stop() == 0);
}

TEST_CASE("fan-out: a dead output does not hold back the others and tank queue stats shows its lag in records and "
          "in bytes and age",
          "[integration][outputs][file]") {
  TempDir dir;
  const auto data = dir / "data";
  // "cloud" points at a port where nothing listens: every attempt fails.
  const auto config = write_test_config(
      dir, fmt::format("[[inputs.tcp]]\nname = \"plant\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
                       "[[outputs.file]]\nname = \"archive\"\ndirectory = \"{}\"\nlinger = \"20ms\"\n\n"
                       "[[outputs.http]]\nname = \"cloud\"\nurl = \"http://127.0.0.1:{}/ingest\"\nlinger = \"20ms\"\n"
                       "retry_initial = \"10ms\"\nretry_max = \"100ms\"\n",
                       (dir / "out").string(), free_tcp_port()));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(data);
  std::string plant;
  for (int i = 0; i < 2000; ++i) plant += fmt::format(R"({{"device":"d{}","seq":{}}})", i % 7, i) + "\n";
  int fd = tcp_connect(input_address(data, "plant"));
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, plant.data(), plant.size()) == static_cast<ssize_t>(plant.size()));
  ::close(fd);
  // The archive gets everything while the cloud output keeps failing.
  CHECK(wait_until([&] {
    return metric_value(scrape(metrics), R"(tank_output_records_total{output="archive",result="delivered",type="file"})") ==
           2000;
  }));
  CHECK(wait_until([&] {
    return metric_value(scrape(metrics), R"(tank_output_batches_total{output="cloud",result="retried",type="http"})")
               .value_or(0) >= 2;
  }));
  auto r = run({tank_binary(), "queue", "stats", "-c", config.string(), "--json"});
  REQUIRE(r.exit_code == 0);
  const auto stats = boost::json::parse(r.out).as_object();
  CHECK(stats.at("records").as_int64() == 2000);  // kept for the cloud output
  std::map<std::string, boost::json::object> consumers;
  for (const auto& c : stats.at("consumers").as_array()) consumers[std::string(c.at("name").as_string())] = c.as_object();
  REQUIRE(consumers.count("output/archive") == 1);
  REQUIRE(consumers.count("output/cloud") == 1);
  CHECK(consumers["output/archive"].at("lag_records").as_int64() == 0);
  CHECK(consumers["output/archive"].at("lag_bytes").as_int64() == 0);
  CHECK(consumers["output/cloud"].at("lag_records").as_int64() == 2000);
  CHECK(consumers["output/cloud"].at("lag_bytes").as_int64() == stats.at("bytes").as_int64());
  CHECK(consumers["output/cloud"].at("lag_bytes").as_int64() > 2000 * 20);
  CHECK(consumers["output/cloud"].at("lag_seconds").as_double() >= 0.0);
  r = run({tank_binary(), "queue", "stats", "-c", config.string()});
  CHECK(r.out.find("output/cloud") != std::string::npos);
  CHECK(r.out.find("lag 2000 records (") != std::string::npos);
  CHECK(tank.stop() == 0);
}
