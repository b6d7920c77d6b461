// The device holding the queue runs out of space (a real ENOSPC, on a small tmpfs the test
// mounts): commits are refused with a clear reason, nothing is half-written, tank's queue keeps
// working, and accepts records again once space returns. And outputs.file writing to a full
// device: the batch is retried, the file keeps only whole batches, and everything arrives once
// space returns.

#include <catch2/catch.hpp>

#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <fstream>
#include <map>
#include <set>

#include "support/queue_helpers.hpp"
#include "support/tank_process.hpp"
#include "support/small_filesystem.hpp"

using namespace tank;
using namespace tank::test;

TEST_CASE("a full disk refuses commits with a reason and the queue resumes when space returns",
          "[failure][disk]") {
  SmallFilesystem fs(4 << 20);
  ManualClock clock;
  metrics::Registry registry;
  auto options = small_queue(fs.path() / "q", 64 << 20);  // the bound is not what stops it
  auto q = queue::Queue::open(options, clock, &registry);
  // Another file takes most of the device.
  write_file(fs.path() / "filler", std::string(3 << 20, 'f'));

  std::uint64_t stored = 0;
  queue::CommitResult r;
  for (int i = 0; i < 10000; ++i) {
    r = q->append(batch_of(payloads(50, "d" + std::to_string(i) + "-", 200), clock));
    if (!r.ok()) break;
    stored = r.last_seq;
  }
  REQUIRE(r.status == queue::CommitStatus::failed);
  CHECK(r.error == "no space left on the device holding the queue");
  CHECK(counter(registry, "tank_queue_commit_failures_total") >= 1);
  // What was committed is intact and readable; the failed batch left nothing behind.
  CHECK(q->stats().records == stored);
  auto all = everything(*q);
  REQUIRE(all.size() == stored);
  CHECK(all.back().first == stored);

  // Space returns: the same batch is accepted.
  std::filesystem::remove(fs.path() / "filler");
  auto again = q->append(batch_of(payloads(50, "again", 200), clock));
  CHECK(again.ok());
  CHECK(again.first_seq == stored + 1);

  // And the queue reopens sound.
  q.reset();
  queue::OpenReport report;
  auto reopened = queue::Queue::open(options, clock, nullptr, &report);
  CHECK_FALSE(report.recovered);
  CHECK(reopened->stats().records == stored + 50);
}

TEST_CASE("outputs.file on a full device: retried with the reason, whole batches only, everything once space returns",
          "[failure][disk][outputs]") {
  SmallFilesystem fs(2 << 20);
  TempDir dir;
  std::string text;
  for (int i = 0; i < 20000; ++i) text += fmt::format(R"({{"n":{},"pad":"{}"}})", i, std::string(40, 'x')) + "\n";
  write_file(dir / "in.ndjson", text);  // about 1.3 MB: more than the device has left
  write_file(fs.path() / "filler", std::string(1 << 20, 'f'));
  const auto config = write_test_config(
      dir, fmt::format("[[inputs.file]]\nname = \"src\"\npaths = [\"{}\"]\nformat = \"json\"\n"
                       "read_from = \"beginning\"\n\n"
                       "[[outputs.file]]\nname = \"archive\"\ndirectory = \"{}\"\ncompression = \"none\"\n"
                       "batch_max_records = 1000\nlinger = \"0s\"\nretry_initial = \"20ms\"\nretry_max = \"200ms\"\n"
                       "breaker_failures = 1000\nmax_files = 5\n",
                       (dir / "in.ndjson").string(), (fs.path() / "out").string()));
  std::filesystem::create_directories(fs.path() / "out");
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  CHECK(wait_until([&] {
    return metric_value(scrape(metrics), R"(tank_output_batches_total{output="archive",result="retried",type="file"})")
               .value_or(0) >= 5;
  }));
  CHECK(tank.process().err().find("No space left on device (the batch is written again when there is space)") !=
        std::string::npos);
  CHECK(tank.process().running());
  std::filesystem::remove(fs.path() / "filler");  // space returns
  CHECK(wait_until([&] {
    return metric_value(scrape(metrics), R"(tank_output_records_total{output="archive",result="delivered",type="file"})") ==
           20000;
  }));
  CHECK(tank.stop() == 0);
  INFO(tank.process().err());
  // One file (the retries appended to it), whole lines only, every record exactly once.
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(fs.path() / "out")) files.push_back(e.path());
  CHECK(files.size() == 1);
  std::map<int, int> times;
  for (const auto& f : files) {
    std::ifstream in(f);
    for (std::string line; std::getline(in, line);) {
      ++times[static_cast<int>(boost::json::parse(line).at("n").as_int64())];
    }
  }
  CHECK(times.size() == 20000);
  for (const auto& [n, count] : times) {
    if (count != 1) FAIL_CHECK("record " << n << " is in the archive " << count << " times");
  }
}
