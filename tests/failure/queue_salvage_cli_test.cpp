// A damaged queue moved aside at start-up, and its records put back with `tank queue salvage`:
// through the running agent, and again offline (nothing is taken twice).

#include <catch2/catch.hpp>

#include <fstream>

#include <fmt/format.h>

#include "support/helpers.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

std::filesystem::path moved_aside(const TempDir& dir) {
  for (const auto& e : std::filesystem::directory_iterator(dir / "data")) {
    if (e.path().filename().string().starts_with("queue.damaged-")) return e.path();
  }
  return {};
}

}  // namespace

TEST_CASE("tank queue salvage puts a moved-aside queue's records back, once", "[failure][queue][salvage]") {
  TempDir dir;
  const int port = free_tcp_port();
  // No output: the records stay in the queue.
  const auto config = write_test_config(dir, fmt::format("[[inputs.http]]\nlisten = \"127.0.0.1:{}\"\n", port));
  {
    TankProcess tank(config);
    tank.wait_running(dir / "data");
    for (int body = 0; body < 3; ++body) {
      std::string json = "[";
      for (int i = 0; i < 100; ++i) json += fmt::format("{}{{\"body\":{},\"n\":{}}}", i == 0 ? "" : ",", body, i);
      json += "]";
      auto reply = http_request(fmt::format("127.0.0.1:{}", port), "POST", "/", json);
      REQUIRE(reply);
      REQUIRE(reply->status == 200);
    }
    REQUIRE(tank.stop() == 0);
  }
  // Both meta pages destroyed: LMDB cannot open the file, the next start moves it aside.
  {
    std::fstream f(dir / "data" / "queue" / "data.mdb", std::ios::in | std::ios::out | std::ios::binary);
    const std::string garbage(64, '\x42');
    const auto page = static_cast<std::streamoff>(::sysconf(_SC_PAGESIZE));
    for (std::streamoff at : {std::streamoff{0}, page}) {
      f.seekp(at);
      f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
    }
  }
  TankProcess tank(config);
  tank.wait_running(dir / "data");
  const std::filesystem::path damaged = moved_aside(dir);
  REQUIRE_FALSE(damaged.empty());
  CHECK(tank.process().err().find("tank queue salvage " + damaged.string()) != std::string::npos);  // the hint

  // Through the running agent.
  auto salvaged = run({tank_binary(), "queue", "salvage", damaged.string(), "--data-dir", (dir / "data").string()});
  INFO(salvaged.out << salvaged.err);
  CHECK(salvaged.exit_code == 0);
  CHECK(salvaged.out.find("salvaged 300 records") != std::string::npos);
  auto stats = run({tank_binary(), "queue", "stats", "--data-dir", (dir / "data").string(), "--json"});
  CHECK(stats.out.find("\"records\":300") != std::string::npos);
  auto peek = run({tank_binary(), "queue", "peek", "1", "--data-dir", (dir / "data").string(), "--json"});
  CHECK(peek.out.find(R"({\"body\":0,\"n\":0})") != std::string::npos);
  CHECK(std::filesystem::exists(damaged / "SALVAGED"));
  REQUIRE(tank.stop() == 0);

  // Offline, again: nothing is taken twice.
  auto again = run({tank_binary(), "queue", "salvage", damaged.string(), "-c", config.string()});
  INFO(again.out << again.err);
  CHECK(again.exit_code == 0);
  CHECK(again.out.find("salvaged 0 records") != std::string::npos);
  CHECK(again.out.find("taken by an earlier salvage of this queue: 300") != std::string::npos);
  stats = run({tank_binary(), "queue", "stats", "--data-dir", (dir / "data").string(), "--json"});
  CHECK(stats.out.find("\"records\":300") != std::string::npos);
}
