// Clocks that lie, through the real binary: with the kernel's answer forced to "not synchronized"
// (TANK_TEST_CLOCK_SYNC=file:..., common/clock_sync.hpp), tank says so in /readyz (still 200) and
// tank_clock_synchronized, marks the records it commits, and processors.aggregate holds them;
// once the file says "synced", the held records are aggregated, each exactly once.

#include <catch2/catch.hpp>

#include <unistd.h>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "support/input_helpers.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

TEST_CASE("clock: an unsynchronized clock is said, its records marked and held, then aggregated once",
          "[integration][clock]") {
  TempDir dir;
  const auto data = dir / "data";
  const auto state = dir / "clock-state";
  write_file(state, "unsynced\n");
  const auto config = write_test_config(
      dir, "[[inputs.tcp]]\nname = \"sensors\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
           "[[processors.aggregate]]\nname = \"agg\"\nwindow = \"10s\"\ntime_field = \"ts\"\n"
           "time_format = \"unix_ms\"\nfields = { v = [\"count\"] }\nidle_timeout = \"1s\"\n");
  TankProcess tank(config, {{"TANK_TEST_CLOCK_SYNC", "file:" + state.string()}});
  const std::string metrics = tank.wait_running(data);

  auto ready = http_get(metrics, "/readyz");
  REQUIRE(ready);
  CHECK(ready->status == 200);
  CHECK(ready->body.find("clock: not synchronized") != std::string::npos);
  CHECK(metric_value(scrape(metrics), "tank_clock_synchronized") == 0);

  const std::int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::system_clock::now().time_since_epoch()).count();
  int fd = tcp_connect(input_address(data, "sensors"));
  REQUIRE(fd >= 0);
  std::string lines;
  for (int i = 0; i < 20; ++i) lines += fmt::format(R"({{"ts":{},"v":{}}})", now_ms + i, i) + "\n";
  REQUIRE(send_all(fd, lines));
  ::close(fd);

  auto raw_records = [&] {
    std::vector<StoredRecord> out;
    for (auto& r : records_in(data / "queue")) {
      if (!r.derived) out.push_back(std::move(r));
    }
    return out;
  };
  REQUIRE(wait_until([&] { return raw_records().size() == 20; }));
  for (const StoredRecord& r : raw_records()) CHECK(r.attributes.contains("clock_unsynced"));
  REQUIRE(wait_until([&] {
    return metric_value(scrape(metrics), R"(tank_processor_holding{processor="agg",type="aggregate"})") == 1;
  }));
  // The stage stopped at the first of them: nothing aggregated, nothing taken for late.
  for (const auto& r : records_in(data / "queue")) CHECK_FALSE(r.derived);

  write_file(state, "synced\n");
  REQUIRE(wait_until([&] { return metric_value(scrape(metrics), "tank_clock_synchronized") == 1; }));
  std::int64_t counted = 0;
  REQUIRE(wait_until([&] {
    counted = 0;
    for (const auto& r : records_in(data / "queue")) {
      if (r.derived) counted += boost::json::parse(r.payload).as_object().at("count").to_number<std::int64_t>();
    }
    return counted >= 20;
  }, std::chrono::seconds(30)));
  CHECK(counted == 20);
  ready = http_get(metrics, "/readyz");
  REQUIRE(ready);
  CHECK(ready->body == "ready\n");
  CHECK(metric_value(scrape(metrics), R"(tank_processor_holding{processor="agg",type="aggregate"})") == 0);
  CHECK(dead_letters_in(data).empty());
  CHECK(tank.stop() == 0);
}
