// outputs.file under kill -9: a file input of 100,000 numbered records, tank killed first at
// failpoints (right after a batch's boundaries were committed; right after the output wrote a
// batch and before the queue knew; while the next batch was prepared ahead, read and encoded but
// not stored), then at random moments while it delivers, then left to finish. Every record reaches the output at least once
// (nothing acknowledged is lost), and a record appears twice only when a kill came between a
// batch's write and its acknowledgement (at most one batch per kill).

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

constexpr int kRecords = 100000;
constexpr int kBatch = 200;

std::map<int, int> delivered(const std::filesystem::path& out) {
  std::map<int, int> seen;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(out, ec)) {
    std::istringstream in(read_file(e.path()));
    for (std::string line; std::getline(in, line);) {
      boost::system::error_code bad;
      auto v = boost::json::parse(line, bad);
      if (bad || !v.is_object()) continue;  // a line cut by the kill (the batch is written again)
      ++seen[static_cast<int>(v.at("n").as_int64())];
    }
  }
  return seen;
}

}  // namespace

TEST_CASE("outputs.file: kill -9 while delivering loses nothing, duplicates at most a batch per kill",
          "[failure][outputs][kill9]") {
  TempDir dir;
  std::string text;
  for (int i = 0; i < kRecords; ++i) text += fmt::format(R"({{"n":{},"pad":"{}"}})", i, std::string(60, 'p')) + "\n";
  write_file(dir / "in.ndjson", text);
  const auto config = write_test_config(
      dir, fmt::format("[[inputs.file]]\nname = \"src\"\npaths = [\"{}\"]\nformat = \"json\"\nread_from = \"beginning\"\n"
                       "poll_interval = \"50ms\"\n\n"
                       "[[outputs.file]]\nname = \"out\"\ndirectory = \"{}\"\ncompression = \"none\"\n"
                       "batch_max_records = {}\nlinger = \"0s\"\nmax_file_bytes = \"256KiB\"\nmax_files = 100000\n",
                       (dir / "in.ndjson").string(), (dir / "out").string(), kBatch));
  int kills = 0;
  std::string logs;
  for (const char* point :
       {"output.sent=3", "output.boundaries=4", "output.prepared=3", "output.sent=1", "output.boundaries=1"}) {
    run_until_failpoint(config, point, logs);
    ++kills;
  }
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> delay_ms(20, 300);
  for (int k = 0; k < 8; ++k) {
    TankProcess tank(config);
    tank.wait_running(dir / "data");
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));  // a random moment, not a synchronisation
    tank.process().signal(SIGKILL);
    tank.process().wait();
    ++kills;
    logs += tank.process().err() + "---- kill -9\n";
    if (delivered(dir / "out").size() == kRecords) break;
  }
  {
    TankProcess tank(config);
    tank.wait_running(dir / "data");
    CHECK(wait_until([&] { return delivered(dir / "out").size() == kRecords; }, std::chrono::seconds(120)));
    CHECK(tank.stop() == 0);
    logs += tank.process().err();
  }
  INFO(logs);
  const auto seen = delivered(dir / "out");
  CHECK(seen.size() == kRecords);
  int extra = 0;
  for (const auto& [n, count] : seen) extra += count - 1;
  CHECK(extra <= kills * kBatch);
  CHECK(records_in(dir / "data" / "queue").empty());
}
