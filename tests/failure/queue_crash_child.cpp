// A worker for the kill -9 test: appends and acknowledges in a loop and reports each operation
// on stdout only after it returned:
//   A <first_seq> <last_seq> <first_id>   records with payload ids first_id.. were committed
//   K <seq>                               consumer "c" acknowledged through seq
// Usage: queue_crash_child DIR FSYNC(always|interval|never) FIRST_ID SEED

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include "common/clock.hpp"
#include "queue/queue.hpp"

using namespace tank;

namespace {

void report(const std::string& line) {
  // One write per line: a kill leaves whole lines or a torn last one the parent ignores.
  std::string l = line + "\n";
  (void)!::write(1, l.data(), l.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s DIR FSYNC FIRST_ID SEED\n", argv[0]);
    return 2;
  }
  queue::Options options;
  options.dir = argv[1];
  // Small, so that segments (a thirty-second of it: 128 KiB) roll and are emptied whole many
  // times a round, and the queue fills (then everything is acknowledged).
  options.max_disk_bytes = 4 << 20;
  std::string fsync = argv[2];
  options.fsync = fsync == "always" ? queue::Fsync::always
                  : fsync == "never" ? queue::Fsync::never
                                     : queue::Fsync::interval;
  options.fsync_interval = std::chrono::milliseconds(5);
  options.consumers = {"c"};
  std::uint64_t id = std::strtoull(argv[3], nullptr, 10);
  std::mt19937_64 rng(std::strtoull(argv[4], nullptr, 10));
  auto q = queue::Queue::open(options, system_clock(), nullptr);
  std::uint64_t position = q->position("c").value_or(0);
  for (;;) {
    if (rng() % 100 < 65) {
      std::size_t n = 1 + rng() % 100;
      queue::EncodedRecords batch;
      for (std::size_t i = 0; i < n; ++i) {
        std::string payload = "id:" + std::to_string(id + i) + ":";
        payload.append(rng() % 300, 'x');
        batch.add("crash", system_clock().wall_ns(), payload);
      }
      auto r = q->append(std::move(batch));
      if (r.ok()) {
        report("A " + std::to_string(r.first_seq) + " " + std::to_string(r.last_seq) + " " + std::to_string(id));
        id += n;
      } else if (r.status == queue::CommitStatus::full) {
        position = q->stats().last_seq;
        if (q->ack("c", position).ok()) report("K " + std::to_string(position));
      } else {
        std::fprintf(stderr, "append failed: %s\n", r.error.c_str());
        return 1;
      }
    } else {
      auto b = q->read(position, {1 + rng() % 300, 1 << 20});
      if (b.empty()) continue;
      // Acknowledge a prefix of what was read, as an output that delivered part of it.
      std::uint64_t to = b.records()[rng() % b.size()].seq;
      if (q->ack("c", to).ok()) {
        report("K " + std::to_string(to));
        position = to;
      }
    }
  }
}
