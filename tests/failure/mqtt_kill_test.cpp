// The real tank binary reading MQTT QoS 1 from a real mosquitto while tank is kill -9'd three
// times and the broker is restarted once: every message the broker accepted ends up in the
// queue (duplicates allowed: at least once), none lost.

#include <catch2/catch.hpp>

#include <signal.h>

#include <set>
#include <thread>

#include "queue/queue.hpp"
#include "support/mosquitto.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

TEST_CASE("mqtt: 20000 QoS 1 messages through 3 kill -9 of tank and a broker restart, none lost",
          "[failure][mqtt][kill9]") {
  Mosquitto broker;
  TempDir dir;
  const auto config = write_test_config(dir, "[queue]\nfsync = \"always\"\n\n[[inputs.mqtt]]\nname = \"plant\"\n"
                                             "servers = [\"" + broker.uri() + "\"]\ntopics = [\"load/#\"]\n"
                                             "reconnect_min = \"20ms\"\nreconnect_max = \"500ms\"\n");
  constexpr std::size_t kMessages = 20000;
  std::vector<std::string> payloads;
  for (std::size_t i = 0; i < kMessages; ++i) payloads.push_back("{\"id\":" + std::to_string(i) + "}");

  auto tank = std::make_unique<TankProcess>(config);
  tank->wait_running(dir / "data");
  std::atomic<std::size_t> published{0};
  std::size_t acknowledged = 0;
  std::thread publisher([&] { acknowledged = publish_all(broker.uri(), "load/x", payloads, 1, std::chrono::seconds(300), &published); });

  // Faults at points of progress: kill -9 at 3000, 7000 and 14000 acknowledged publications,
  // a broker restart at 10000.
  for (std::size_t at : {3000u, 7000u, 10000u, 14000u}) {
    REQUIRE(wait_until([&] { return published.load() >= at; }, std::chrono::seconds(120)));
    if (at == 10000) {
      broker.stop();
      broker.start();
      continue;
    }
    tank->process().signal(SIGKILL);
    REQUIRE(tank->process().wait().has_value());
    tank = std::make_unique<TankProcess>(config);
    tank->wait_running(dir / "data");
  }
  publisher.join();
  REQUIRE(acknowledged == kMessages);

  // Everything the broker accepted reaches the queue; read it while tank runs.
  std::set<std::string> seen;
  std::size_t records = 0;
  ManualClock clock;
  bool complete = wait_until(
      [&] {
        auto q = queue::Queue::open_read_only(dir / "data" / "queue", clock);
        seen.clear();
        records = 0;
        std::uint64_t position = 0;
        for (;;) {
          auto b = q->read(position, {10000, 16 << 20});
          if (b.empty()) break;
          for (const auto& r : b.records()) {
            seen.insert(std::string(r.payload));
            ++records;
          }
          position = b.scanned_to();
        }
        return seen.size() == kMessages;
      },
      std::chrono::seconds(120));
  INFO("distinct messages in the queue: " << seen.size() << " of " << kMessages << ", records " << records);
  CHECK(complete);
  for (const auto& p : payloads) {
    if (!seen.contains(p)) {
      FAIL_CHECK("lost: " << p);
      break;
    }
  }
  CHECK(tank->stop() == 0);
}
