// outputs.mqtt under fire: mosquitto as the upstream broker is stopped for a minute in the middle
// of the stream and started again, and tank is kill -9'd (right after a PUBACK, before the queue
// knows; and at random while the broker is away). Verdict from what a persistent subscriber
// received: every record arrives, and every key that arrives twice carries the same content.

#include <catch2/catch.hpp>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <map>
#include <set>
#include <sstream>

#include "support/http_upstream.hpp"
#include "support/input_helpers.hpp"
#include "support/mosquitto.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

void append_records(const std::filesystem::path& file, int first, int count) {
  std::string text;
  for (int i = first; i < first + count; ++i) text += fmt::format(R"({{"n":{}}})", i) + "\n";
  append_file(file, text);
}

struct Seen {
  std::set<int> numbers;
  std::map<std::string, std::string> content;  // key -> body
  std::size_t repeated = 0;
  bool consistent = true;
};

Seen seen(const MqttCollector& collector) {
  Seen s;
  for (const auto& m : collector.messages()) {
    const std::string key = m.user_property("idempotency-key");
    const std::string body = decompress_body(m.user_property("content-encoding"), m.payload);
    auto [it, fresh] = s.content.emplace(key, body);
    if (!fresh) {
      ++s.repeated;
      s.consistent = s.consistent && it->second == body;
    }
    std::istringstream in(body);
    for (std::string line; std::getline(in, line);) {
      s.numbers.insert(static_cast<int>(boost::json::parse(line).at("n").as_int64()));
    }
  }
  return s;
}

// How long the broker stays away: a minute, as an upstream that goes down for real would
// (TANK_TEST_BROKER_DOWN_SECONDS shortens it when working on this test).
std::chrono::seconds broker_down() {
  const char* v = std::getenv("TANK_TEST_BROKER_DOWN_SECONDS");
  return std::chrono::seconds(v != nullptr ? std::atoi(v) : 60);
}

}  // namespace

TEST_CASE("outputs.mqtt: mosquitto stopped for a minute mid-stream and tank kill -9'd: every record arrives",
          "[failure][outputs][mqtt]") {
  constexpr int kChunk = 10000;
  Mosquitto broker;
  MqttCollector collector(broker.uri(), "tank/#", 5);
  TempDir dir;
  const auto file = dir / "in.ndjson";
  append_records(file, 0, kChunk);
  const auto config = write_test_config(
      dir, fmt::format("[[inputs.file]]\nname = \"src\"\npaths = [\"{}\"]\nformat = \"json\"\nread_from = "
                       "\"beginning\"\npoll_interval = \"50ms\"\n\n"
                       "[[outputs.mqtt]]\nname = \"cloud\"\nservers = [\"{}\"]\nbatch_max_records = 500\n"
                       "linger = \"20ms\"\nretry_initial = \"50ms\"\nretry_max = \"1s\"\nbreaker_failures = 5\n"
                       "breaker_cooldown = \"2s\"\nconnect_timeout = \"2s\"\npublish_timeout = \"5s\"\n",
                       file.string(), broker.uri()));
  std::string logs;
  // Killed right after the third PUBACK: that batch is at the broker, the queue does not know.
  run_until_failpoint(config, "output.sent=3", logs);

  auto tank = std::make_unique<TankProcess>(config);
  std::string metrics = tank->wait_running(dir / "data");
  CHECK(wait_until([&] { return seen(collector).numbers.size() == kChunk; }, std::chrono::seconds(60)));

  // The broker goes away in the middle of the stream; records keep coming and wait in the queue.
  broker.stop();
  const auto down_since = std::chrono::steady_clock::now();
  append_records(file, kChunk, kChunk);
  CHECK(wait_until([&] {
    return metric_value(scrape(metrics), R"(tank_output_batches_total{output="cloud",result="retried",type="mqtt"})")
               .value_or(0) >= 3;
  }));
  // kill -9 while the broker is away, and again at a random moment after the restart.
  tank->process().signal(SIGKILL);
  tank->process().wait();
  logs += tank->process().err() + "---- kill -9 while the broker is away\n";
  tank = std::make_unique<TankProcess>(config);
  metrics = tank->wait_running(dir / "data");
  append_records(file, 2 * kChunk, kChunk);
  std::this_thread::sleep_until(down_since + broker_down());  // the outage lasts its minute
  CHECK(tank->process().running());
  broker.start();

  std::mt19937 random(std::random_device{}());
  std::this_thread::sleep_for(std::chrono::milliseconds(random() % 1500));  // a random instant of the catch-up
  tank->process().signal(SIGKILL);
  tank->process().wait();
  logs += tank->process().err() + "---- kill -9 at a random moment after the broker came back\n";
  tank = std::make_unique<TankProcess>(config);
  tank->wait_running(dir / "data");
  CHECK(wait_until([&] { return seen(collector).numbers.size() == 3 * kChunk; }, std::chrono::seconds(120)));
  CHECK(tank->stop() == 0);
  logs += tank->process().err();
  INFO(logs);

  const Seen s = seen(collector);
  CHECK(s.numbers.size() == 3 * kChunk);
  CHECK(*s.numbers.begin() == 0);
  CHECK(*s.numbers.rbegin() == 3 * kChunk - 1);
  CHECK(s.consistent);     // every repeated key carried identical content
  CHECK(s.repeated >= 1);  // the batch killed after its PUBACK came again under its key
  CHECK(logs.find("connecting to") != std::string::npos);  // the outage was reported
}
