// A fault of the moment at start-up never costs the queue (issue 17, DESIGN invariant 5): tank
// refuses to start with the reason and a hint (exit 1, systemd restarts it later), leaves the
// queue where it is, and the next start finds every record.

#include <catch2/catch.hpp>

#include <fmt/format.h>

#include "support/helpers.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

// A stopped tank with `records` in its queue, fed through inputs.http.
std::filesystem::path queue_with_records(const TempDir& dir, int records, const std::string& max_disk) {
  const int port = free_tcp_port();
  const auto config = write_test_config(
      dir, fmt::format("[queue]\nmax_disk_bytes = \"{}\"\n\n[[inputs.http]]\nlisten = \"127.0.0.1:{}\"\n", max_disk, port));
  TankProcess tank(config);
  tank.wait_running(dir / "data");
  std::string body = "[";
  for (int i = 0; i < records; ++i) body += fmt::format("{}{{\"n\":{}}}", i == 0 ? "" : ",", i);
  body += "]";
  auto reply = http_request(fmt::format("127.0.0.1:{}", port), "POST", "/", body);
  REQUIRE(reply);
  REQUIRE(reply->status == 200);
  REQUIRE(tank.stop() == 0);
  return config;
}

std::string queue_stats(const TempDir& dir) {
  return run({tank_binary(), "queue", "stats", "--data-dir", (dir / "data").string(), "--json"}).out;
}

bool any_moved_aside(const TempDir& dir) {
  for (const auto& e : std::filesystem::directory_iterator(dir / "data")) {
    if (e.path().filename().string().starts_with("queue.damaged-")) return true;
  }
  return false;
}

}  // namespace

#if !defined(__SANITIZE_ADDRESS__)  // the sanitizer's shadow memory alone exceeds any `ulimit -v`
TEST_CASE("a start that cannot map the queue (ulimit -v) refuses with the reason and keeps the queue",
          "[failure][queue]") {
  TempDir dir;
  const auto config = queue_with_records(dir, 40, "2GiB");
  const std::string before = queue_stats(dir);
  REQUIRE(before.find("\"records\":40") != std::string::npos);
  // 1.5 GB of address space: enough for tank, not for LMDB's map of a 2 GiB queue.
  auto r = run({"/bin/sh", "-c", fmt::format("ulimit -v 1500000; exec {} run -c {}", tank_binary(), config.string())});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("Cannot allocate memory") != std::string::npos);
  CHECK(r.err.find("this is not damage") != std::string::npos);
  CHECK(r.err.find("ulimit -v") != std::string::npos);  // the hint
  CHECK_FALSE(any_moved_aside(dir));
  // The next start, with the memory it needs, has every record.
  TankProcess tank(config);
  tank.wait_running(dir / "data");
  REQUIRE(tank.stop() == 0);
  CHECK(queue_stats(dir).find("\"records\":40") != std::string::npos);
}
#endif

TEST_CASE("a start that cannot read the queue (EIO) refuses with the reason and keeps the queue", "[failure][queue]") {
  TempDir dir;
  const auto config = queue_with_records(dir, 25, "64MiB");
  std::map<std::string, std::string> env{{"LD_PRELOAD", TANK_EIO_PRELOAD}, {"TANK_EIO_FILE", "/queue/data.mdb"}};
  // Under AddressSanitizer the preloaded library comes before ASan's runtime, which ASan refuses
  // unless told (the library's pread() calls on to ASan's through RTLD_NEXT, so nothing is lost).
  const char* asan = std::getenv("ASAN_OPTIONS");
  env["ASAN_OPTIONS"] = std::string(asan != nullptr ? asan : "") + (asan != nullptr && *asan != '\0' ? ":" : "") +
                        "verify_asan_link_order=0";
  auto r = run({tank_binary(), "run", "-c", config.string()}, env);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("Input/output error") != std::string::npos);
  CHECK(r.err.find("this is not damage") != std::string::npos);
  CHECK_FALSE(any_moved_aside(dir));
  TankProcess tank(config);
  tank.wait_running(dir / "data");
  REQUIRE(tank.stop() == 0);
  CHECK(queue_stats(dir).find("\"records\":25") != std::string::npos);
}
