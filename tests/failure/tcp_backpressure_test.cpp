// The real tank binary with a TCP sender faster than the queue can take (overflow = "block",
// a small queue and nothing draining it): tank stops reading, TCP's flow control blocks the
// sender, nothing is dropped, and tank's own memory stays bounded however much is sent.

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>

#include "engine/run_state.hpp"
#include "queue/queue.hpp"
#include "support/input_helpers.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

std::string line_of(std::uint64_t seq) {
  return fmt::format("{{\"seq\":{:09d},\"pad\":\"{}\"}}\n", seq, std::string(70, 'x'));
}

}  // namespace

TEST_CASE("tcp: a sender faster than a full queue (overflow = block) is slowed down, nothing is lost, memory stays bounded",
          "[failure][tcp][backpressure]") {
  TempDir dir;
  const auto config = write_test_config(
      dir, "[queue]\nmax_disk_bytes = \"16MiB\"\noverflow = \"block\"\n\n"
           "[[inputs.tcp]]\nname = \"bulk\"\nlisten = \"127.0.0.1:0\"\n");
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  auto state = engine::read_run_state(dir / "data" / "run.json", nullptr);
  REQUIRE(state);
  REQUIRE(state->inputs.size() == 1);
  const int fd = tcp_connect(state->inputs[0].second);
  REQUIRE(fd >= 0);
  REQUIRE(::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);

  // Send until tank reports the input paused and the socket has taken nothing for 300 ms.
  // 256 MiB is 16 times the queue: a sender that gets that far was not slowed down.
  const std::uint64_t limit = 256ull << 20;
  const std::uint64_t line_bytes = line_of(0).size();
  std::uint64_t seq = 0, sent = 0;
  std::string pending;
  std::uint64_t peak_anon = 0;
  bool blocked = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  while (sent < limit && std::chrono::steady_clock::now() < deadline) {
    while (pending.size() < 256 * 1024) pending += line_of(seq++);
    ssize_t n = ::write(fd, pending.data(), pending.size());
    if (n > 0) {
      sent += static_cast<std::uint64_t>(n);
      pending.erase(0, static_cast<std::size_t>(n));
      continue;
    }
    REQUIRE(errno == EAGAIN);
    peak_anon = std::max(peak_anon, status_bytes(tank.process().pid(), "RssAnon"));
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 300) == 0 &&
        metric_value(scrape(metrics), "tank_input_paused{input=\"bulk\",type=\"tcp\"}") == 1) {
      blocked = true;
      break;
    }
  }
  INFO("sent " << sent << " bytes");
  CHECK(blocked);
  CHECK(sent < limit);

  const std::string exposition = scrape(metrics);
  const double committed = metric_value(exposition, "tank_input_records_total{input=\"bulk\",type=\"tcp\"}").value_or(0);
  INFO("committed " << committed << " records");
  // The queue is full (16 MiB of ~110 B records), and what it refused is not dropped.
  CHECK(committed > 50000);
  CHECK(metric_value(exposition, "tank_input_dropped_records_total{input=\"bulk\",reason=\"overflow_drop_newest\",type=\"tcp\"}")
            .value_or(0) == 0);
  // What was sent but not committed is at most the socket buffers and one read of tank's.
  CHECK(sent - static_cast<std::uint64_t>(committed) * line_bytes < 64ull << 20);
  // tank's own memory (not LMDB's file-backed map) stayed small while it was pushed.
  peak_anon = std::max(peak_anon, status_bytes(tank.process().pid(), "RssAnon"));
  INFO("peak anonymous RSS " << peak_anon);
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer's shadow memory and quarantine of freed blocks (256 MiB by default) are
  // anonymous memory too: the bound is checked in the normal build only.
  CHECK(peak_anon < 512ull << 20);
#else
  CHECK(peak_anon < 64ull << 20);
#endif

  // The queue holds the first lines sent, in order, each once, none torn.
  ::close(fd);
  CHECK(tank.stop() == 0);
  ManualClock clock;
  auto q = queue::Queue::open_read_only(dir / "data" / "queue", clock);
  std::uint64_t expect = 0, position = 0;
  bool in_order = true;
  for (;;) {
    auto b = q->read(position, {10000, 16 << 20});
    if (b.empty()) break;
    for (const auto& r : b.records()) {
      if (in_order && std::string(r.payload) + "\n" != line_of(expect)) {
        in_order = false;
        UNSCOPED_INFO("record " << expect << " is " << r.payload);
      }
      ++expect;
    }
    position = b.scanned_to();
  }
  CHECK(in_order);
  CHECK(expect >= static_cast<std::uint64_t>(committed));
}
