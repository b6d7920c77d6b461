// Model-based test: random sequences of append / read / acknowledge / restart against an
// in-memory model of what the queue must hold. Any divergence fails with the seed and step.

#include <catch2/catch.hpp>

#include <map>
#include <random>

#include "support/queue_helpers.hpp"

using namespace tank;
using namespace tank::test;
using queue::CommitStatus;
using queue::Overflow;
using queue::Queue;

namespace {

struct Model {
  std::map<std::uint64_t, std::string> records;
  std::map<std::string, std::uint64_t> acked;
  std::uint64_t next_seq = 1;

  void delete_acknowledged() {
    std::uint64_t min_pos = UINT64_MAX;
    for (const auto& [c, pos] : acked) min_pos = std::min(min_pos, pos);
    records.erase(records.begin(), records.upper_bound(min_pos));
  }
};

struct Run {
  std::uint64_t seed;
  Overflow overflow;
  queue::Mode mode;
  bool restarts;
  int steps;
};

std::string describe(const Run& r) {
  return "seed " + std::to_string(r.seed) + ", overflow " + std::string(queue::to_string(r.overflow)) + ", mode " +
         std::string(queue::to_string(r.mode));
}

void run_model(const Run& run) {
  INFO(describe(run));
  TempDir dir;
  ManualClock clock;
  std::mt19937_64 rng(run.seed);
  auto options = small_queue(dir / "q", 256 << 10);
  options.overflow = run.overflow;
  options.mode = run.mode;
  options.max_memory_bytes = 32 << 10;
  options.consumers = {"a", "b"};
  auto q = Queue::open(options, clock, nullptr);
  Model model;
  model.acked = {{"a", 0}, {"b", 0}};
  std::map<std::string, std::uint64_t> cursor = model.acked;
  std::uint64_t batch_id = 0;

  auto check_contents = [&](int step) {
    INFO("step " << step);
    auto all = everything(*q);
    std::vector<std::pair<std::uint64_t, std::string>> expected(model.records.begin(), model.records.end());
    REQUIRE(all.size() == expected.size());
    REQUIRE(all == expected);
    REQUIRE(q->stats().records == expected.size());
  };

  for (int step = 0; step < run.steps; ++step) {
    INFO("step " << step);
    int op = static_cast<int>(rng() % 100);
    if (op < 40) {
      std::size_t n = 1 + rng() % 30;
      std::vector<std::string> p;
      for (std::size_t i = 0; i < n; ++i) {
        std::string s = "b" + std::to_string(batch_id) + "." + std::to_string(i) + ":";
        s.append(10 + rng() % 800, static_cast<char>('a' + rng() % 26));
        p.push_back(std::move(s));
      }
      ++batch_id;
      auto r = q->append(batch_of(p, clock));
      REQUIRE(q->stats().disk_used_bytes <= options.max_disk_bytes);
      if (r.status == CommitStatus::committed) {
        REQUIRE(r.first_seq == model.next_seq);
        REQUIRE(r.last_seq == model.next_seq + n - 1);
        for (std::size_t i = 0; i < n; ++i) model.records[model.next_seq + i] = p[i];
        model.next_seq += n;
        if (run.overflow == Overflow::drop_oldest) {
          // Evictions take the oldest records, and only those.
          std::uint64_t first = q->stats().first_seq;
          REQUIRE(first != 0);
          model.records.erase(model.records.begin(), model.records.lower_bound(first));
        }
      } else if (r.status == CommitStatus::full) {
        REQUIRE(run.overflow == Overflow::block);
        REQUIRE(q->blocked());
      } else {
        REQUIRE(r.status == CommitStatus::dropped);
        REQUIRE(run.overflow == Overflow::drop_newest);
      }
    } else if (op < 65) {
      const std::string c = rng() % 2 ? "a" : "b";
      queue::ReadLimits limits{static_cast<std::size_t>(1 + rng() % 50), static_cast<std::size_t>(1 + rng() % 20000)};
      auto b = q->read(cursor[c], limits);
      auto it = model.records.upper_bound(cursor[c]);
      if (it == model.records.end()) {
        REQUIRE(b.empty());
        continue;
      }
      REQUIRE_FALSE(b.empty());
      for (const auto& rec : b.records()) {
        REQUIRE(it != model.records.end());
        REQUIRE(rec.seq == it->first);
        REQUIRE(rec.payload == it->second);
        ++it;
      }
      REQUIRE(b.size() <= limits.max_records);
      cursor[c] = b.scanned_to();
    } else if (op < 85) {
      const std::string c = rng() % 2 ? "a" : "b";
      std::uint64_t to = cursor[c];
      if (to > model.acked[c] && rng() % 3 == 0) to = model.acked[c] + rng() % (to - model.acked[c] + 1);
      auto r = q->ack(c, to);
      REQUIRE(r.ok());
      model.acked[c] = std::max(model.acked[c], to);
      model.delete_acknowledged();
      REQUIRE(q->position(c) == model.acked[c]);
    } else if (op < 92) {
      check_contents(step);
    } else if (run.restarts) {
      q.reset();
      q = Queue::open(options, clock, nullptr);
      cursor = model.acked;
      REQUIRE(q->stats().next_seq == model.next_seq);
      REQUIRE(q->position("a") == model.acked["a"]);
      REQUIRE(q->position("b") == model.acked["b"]);
      check_contents(step);
    }
  }
  check_contents(run.steps);
}

// The seeds to run: `defaults`, or TANK_MODEL_SEED alone when set (to reproduce a failure).
std::vector<std::uint64_t> seeds(std::initializer_list<std::uint64_t> defaults) {
  if (const char* seed = std::getenv("TANK_MODEL_SEED")) return {std::stoull(seed)};
  return defaults;
}

// Steps per run: 1500, or TANK_MODEL_STEPS for a longer soak.
int steps() {
  if (const char* n = std::getenv("TANK_MODEL_STEPS")) return std::stoi(n);
  return 1500;
}

}  // namespace

TEST_CASE("random operations agree with the model: block", "[queue][model]") {
  for (auto seed : seeds({1, 2, 3})) run_model({seed, Overflow::block, queue::Mode::disk, true, steps()});
}

TEST_CASE("random operations agree with the model: drop_newest", "[queue][model]") {
  for (auto seed : seeds({11, 12, 13})) run_model({seed, Overflow::drop_newest, queue::Mode::disk, true, steps()});
}

TEST_CASE("random operations agree with the model: drop_oldest", "[queue][model]") {
  for (auto seed : seeds({21, 22, 23})) run_model({seed, Overflow::drop_oldest, queue::Mode::disk, true, steps()});
}

TEST_CASE("random operations agree with the model: memory mode", "[queue][model]") {
  for (auto seed : seeds({31, 32})) run_model({seed, Overflow::block, queue::Mode::memory, false, steps()});
  for (auto seed : seeds({41, 42})) run_model({seed, Overflow::drop_newest, queue::Mode::memory, false, steps()});
}
