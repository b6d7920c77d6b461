// kill -9 at random moments, at least 50 times, while a child process appends and
// acknowledges: every record whose append returned success must still be there or have been
// acknowledged, in order, and acknowledged records must never come back.

#include <catch2/catch.hpp>

#include <signal.h>

#include <map>
#include <set>
#include <random>
#include <sstream>
#include <thread>

#include "support/queue_helpers.hpp"

using namespace tank;
using namespace tank::test;

namespace {

struct Confirmed {
  std::map<std::uint64_t, std::uint64_t> id_of_seq;  // seq -> payload id, for every reported append
  std::uint64_t acked = 0;                            // highest reported acknowledgement
  std::uint64_t max_id = 0;
};

// Reads the child's report; a torn last line is ignored (it was not reported).
void parse_report(const std::string& out, Confirmed& c) {
  std::istringstream lines(out);
  std::string line;
  std::size_t consumed = 0;
  while (std::getline(lines, line)) {
    consumed += line.size() + 1;
    if (consumed > out.size()) break;  // no newline: torn
    std::istringstream in(line);
    char kind = 0;
    in >> kind;
    if (kind == 'A') {
      std::uint64_t first = 0, last = 0, id = 0;
      in >> first >> last >> id;
      for (std::uint64_t s = first; s <= last; ++s) c.id_of_seq[s] = id + (s - first);
      c.max_id = std::max(c.max_id, id + (last - first));
    } else if (kind == 'K') {
      std::uint64_t seq = 0;
      in >> seq;
      c.acked = std::max(c.acked, seq);
    }
  }
}

std::string child_binary() { return QUEUE_CRASH_CHILD_PATH; }

}  // namespace

TEST_CASE("kill -9 at random moments loses no committed record and resurrects no acknowledged one",
          "[failure][crash]") {
  TempDir dir;
  const auto queue_dir = dir / "q";
  std::mt19937_64 rng(20261121);
  Confirmed confirmed;
  std::uint64_t next_id = 1;
  const char* modes[] = {"always", "interval", "never"};
  int kills = 0;
  std::uint64_t total_confirmed_records = 0;
  // Records committed by a child killed before it could report them: allowed to exist.
  std::set<std::uint64_t> unreported;
  for (int round = 0; round < 50; ++round) {
    INFO("round " << round);
    std::string fsync = modes[rng() % 3];
    Process child({child_binary(), queue_dir.string(), fsync, std::to_string(next_id), std::to_string(rng())});
    if (rng() % 5 != 0) {
      // Let it work, then kill it at a random moment of its work.
      REQUIRE(wait_until([&] { return !child.out().empty() || !child.running(); }, std::chrono::seconds(30)));
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 40000));
    } else {
      // Kill it at a random moment of its start-up.
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20000));
    }
    REQUIRE(child.running());
    child.signal(SIGKILL);
    REQUIRE(child.wait() == 128 + SIGKILL);
    ++kills;
    Confirmed round_report;
    parse_report(child.out(), round_report);
    for (const auto& [seq, id] : round_report.id_of_seq) {
      REQUIRE_FALSE(confirmed.id_of_seq.contains(seq));  // a sequence number is never given twice
      confirmed.id_of_seq[seq] = id;
    }
    total_confirmed_records += round_report.id_of_seq.size();
    confirmed.acked = std::max(confirmed.acked, round_report.acked);
    next_id = std::max(next_id, round_report.max_id + 1) + 100000;  // unreported appends used ids too

    // Reopen and judge.
    ManualClock clock;
    auto options = small_queue(queue_dir, 4 << 20);  // as the child's
    options.consumers = {"c"};
    queue::OpenReport report;
    auto q = queue::Queue::open(options, clock, nullptr, &report);
    REQUIRE_FALSE(report.recovered);  // kill -9 never damages the queue
    std::uint64_t position = q->position("c").value_or(0);
    REQUIRE(position >= confirmed.acked);  // an acknowledgement that returned is never lost
    auto all = everything(*q);
    std::uint64_t max_confirmed_seq = confirmed.id_of_seq.empty() ? 0 : confirmed.id_of_seq.rbegin()->first;
    std::uint64_t previous = 0;
    for (const auto& [seq, payload] : all) {
      REQUIRE(seq > position);  // acknowledged records never come back
      REQUIRE(seq > previous);  // order holds
      if (previous != 0) REQUIRE(seq == previous + 1);
      previous = seq;
      auto it = confirmed.id_of_seq.find(seq);
      if (it != confirmed.id_of_seq.end()) {
        REQUIRE(payload.rfind("id:" + std::to_string(it->second) + ":", 0) == 0);
      } else if (!unreported.contains(seq)) {
        // Committed but killed before it was reported: only ever the newest records of a round.
        REQUIRE(seq > max_confirmed_seq);
        unreported.insert(seq);
      }
    }
    // Every reported record after the consumer's position is still there.
    std::uint64_t present = 0;
    for (auto it = confirmed.id_of_seq.upper_bound(position); it != confirmed.id_of_seq.end(); ++it) {
      ++present;
      REQUIRE(std::binary_search(all.begin(), all.end(), std::pair<std::uint64_t, std::string>{it->first, ""},
                                 [](const auto& a, const auto& b) { return a.first < b.first; }));
    }
    REQUIRE(present <= all.size());
    // Forget what was acknowledged for good; it must stay gone.
    confirmed.acked = position;
    confirmed.id_of_seq.erase(confirmed.id_of_seq.begin(), confirmed.id_of_seq.upper_bound(position));
  }
  CHECK(kills >= 50);
  INFO("records confirmed across all rounds: " << total_confirmed_records);
  CHECK(total_confirmed_records > 1000);
}
