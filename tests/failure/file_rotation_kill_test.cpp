// logrotate itself rotating a file that is being written (create mode and copytruncate mode),
// with tank kill -9'd in between: every line ends up in the queue exactly once.

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <map>

#include <fmt/format.h>

#include "queue/queue.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

// The length of every line written (without its newline).
constexpr std::size_t kLineBytes = 69;

// Appends lines the way a logger does: open (O_APPEND), write, close, so that after a rename
// the next line goes to the new file at the path.
void write_lines(const std::filesystem::path& file, int from, int to) {
  for (int i = from; i < to; ++i) {
    std::string line = fmt::format("{{\"seq\":{:06d},\"msg\":\"a log line long enough to fingerprint the file\"}}\n", i);
    int fd = ::open(file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()));
    ::close(fd);
  }
}

std::map<std::string, int> queue_contents(const std::filesystem::path& queue_dir) {
  ManualClock clock;
  auto q = queue::Queue::open_read_only(queue_dir, clock);
  std::map<std::string, int> count;
  std::uint64_t position = 0;
  for (;;) {
    auto b = q->read(position, {10000, 16 << 20});
    if (b.empty()) break;
    for (const auto& r : b.records()) ++count[std::string(r.payload)];
    position = b.scanned_to();
  }
  return count;
}

void rotate(const TempDir& dir, const std::string& mode) {
  write_file(dir / "logrotate.conf", (dir / "logs" / "app.log").string() + " {\n  " + mode +
                                         "\n  rotate 100\n  missingok\n  nocompress\n}\n");
  auto r = run({"/usr/sbin/logrotate", "-f", "-s", (dir / "logrotate.state").string(), (dir / "logrotate.conf").string()});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
}

}  // namespace

TEST_CASE("file: logrotate create and copytruncate with kill -9 of tank in between, every line exactly once",
          "[failure][file][rotation][kill9]") {
  for (std::string mode : {"create", "copytruncate"}) {
    INFO("mode " << mode);
    TempDir dir;
    std::filesystem::create_directories(dir / "logs");
    const auto log = dir / "logs" / "app.log";
    const auto config = write_test_config(
        dir, "[[inputs.file]]\nname = \"app\"\npaths = [\"" + (dir / "logs" / "app.log*").string() +
                 "\"]\npoll_interval = \"50ms\"\nrotate_wait = \"1s\"\n");
    int written = 0;
    auto write = [&](int n) {
      write_lines(log, written, written + n);
      written += n;
    };
    write(1000);
    std::string logs;  // what every tank said (shown on failure)
    auto tank = std::make_unique<TankProcess>(config);
    tank->wait_running(dir / "data");
    for (int round = 0; round < 4; ++round) {
      write(1500);
      rotate(dir, mode);  // while tank reads
      write(500);
      if (round % 2 == 0) {
        tank->process().signal(SIGKILL);
        REQUIRE(tank->process().wait().has_value());
        logs += tank->process().err() + "---- kill -9\n";
        write(700);       // while tank is down
        rotate(dir, mode);
        write(300);
        tank = std::make_unique<TankProcess>(config);
        tank->wait_running(dir / "data");
      }
    }
    std::map<std::string, int> seen;
    bool all = wait_until([&] {
      seen = queue_contents(dir / "data" / "queue");
      return static_cast<int>(seen.size()) >= written;
    }, std::chrono::seconds(60));
    INFO("distinct lines " << seen.size() << " of " << written);
    CHECK(all);
    int duplicates = 0;
    std::string odd;
    std::vector<int> doubled;
    for (const auto& [line, n] : seen) {
      duplicates += n - 1;
      if (line.size() != kLineBytes && odd.size() < 2000) odd += "[" + line + "]\n";
      if (n > 1) doubled.push_back(std::atoi(line.c_str() + 7));  // {"seq":NNNNNN
    }
    // Lines read more than once, as ranges of sequence numbers.
    for (std::size_t i = 0; i < doubled.size() && odd.size() < 4000;) {
      std::size_t j = i;
      while (j + 1 < doubled.size() && doubled[j + 1] == doubled[j] + 1) ++j;
      odd += fmt::format("read twice: {}..{}\n", doubled[i], doubled[j]);
      i = j + 1;
    }
    INFO("odd records:\n" << odd);
    INFO("tank logs:\n" << logs << tank->process().err());
    CHECK(duplicates == 0);
    CHECK(static_cast<int>(seen.size()) == written);
    CHECK(tank->stop() == 0);
  }
}
