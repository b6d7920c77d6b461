// The device holding the queue runs out of space (a real ENOSPC, on a small tmpfs the test
// mounts): commits are refused with a clear reason, nothing is half-written, tank's queue keeps
// working, and accepts records again once space returns.

#include <catch2/catch.hpp>

#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "support/queue_helpers.hpp"

using namespace tank;
using namespace tank::test;

namespace {

// A tmpfs of `bytes` mounted on a fresh directory for the life of the object.
class SmallFilesystem {
 public:
  explicit SmallFilesystem(std::uint64_t bytes) : mount_point_(dir_ / "fs") {
    std::filesystem::create_directories(mount_point_);
    std::string options = "size=" + std::to_string(bytes);
    if (::mount("tmpfs", mount_point_.c_str(), "tmpfs", 0, options.c_str()) != 0) {
      FAIL("cannot mount a tmpfs (the failure tests run as root, like packaging/test.sh): " << std::strerror(errno));
    }
  }
  ~SmallFilesystem() { ::umount2(mount_point_.c_str(), MNT_DETACH); }
  const std::filesystem::path& path() const { return mount_point_; }

 private:
  TempDir dir_;
  std::filesystem::path mount_point_;
};

}  // namespace

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
