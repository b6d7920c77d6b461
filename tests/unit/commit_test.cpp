// The one commit path of inputs (input/commit.hpp) on a real queue: for every outcome the queue
// can give and every input's kind of record, each record offered is committed, dead-lettered with
// a reason, or counted as dropped by policy, and the source is acknowledged only then. Also the
// batch's own limits (a record or dead letter too large for one commit) and the shared backoff.

#include <catch2/catch.hpp>

#include <random>
#include <set>

#include "common/backoff.hpp"
#include "input/batch.hpp"
#include "input/commit.hpp"
#include "input/input_metrics.hpp"
#include "metrics/registry.hpp"
#include "queue/dead_letter.hpp"
#include "queue/queue.hpp"
#include "support/helpers.hpp"
#include "support/queue_helpers.hpp"

using namespace tank;
using namespace tank::test;

namespace {

enum class Want { committed, dropped, full, failed, too_large };

const char* name_of(Want w) {
  switch (w) {
    case Want::committed: return "committed";
    case Want::dropped: return "dropped";
    case Want::full: return "full";
    case Want::failed: return "failed";
    case Want::too_large: return "too_large";
  }
  return "?";
}

// The attributes each input gives its records.
struct Kind {
  const char* input;
  const char* key;  // "" = none
  std::string value;
};

const std::vector<Kind>& kinds() {
  static const std::vector<Kind> k = {
      {"file", "path", "/var/log/app/" + std::string(200, 'p') + ".log"},
      {"tcp", "peer", "127.0.0.1:40123"},
      {"udp", "peer", "[::1]:5514"},
      {"unix", "peer", "/run/tank.sock"},
      {"http", "peer", "10.0.0.7:55012"},
      {"mqtt", "topic", "plant/line-3/" + std::string(300, 't')},
  };
  return k;
}

// Fills the queue with records until it refuses (block) or drops (drop_newest) even small ones.
void fill(queue::Queue& q, const Clock& clock, std::vector<std::size_t> sizes) {
  for (std::size_t size : sizes) {
    for (int i = 0; i < 100000; ++i) {
      const auto r = q.append(batch_of(payloads(size == 4000 ? 8 : 1, "fill", size), clock, "fill"));
      if (!r.ok()) break;
    }
  }
}

std::size_t entries(const queue::Queue& q) { return q.dead_letter_stats().entries; }

}  // namespace

TEST_CASE("commit path: every record is committed, dead-lettered with a reason or dropped by policy, and the "
          "source is acknowledged only then",
          "[unit][input][commit]") {
  std::mt19937_64 random(20261206);
  for (Want want : {Want::committed, Want::dropped, Want::full, Want::failed, Want::too_large}) {
    TempDir dir;
    ManualClock clock;
    queue::Options o = small_queue(dir / "q", 2 << 20);  // one commit: 64 KiB
    o.dead_letter_max_bytes = 64 << 20;                  // no eviction in this test
    if (want == Want::dropped) o.overflow = queue::Overflow::drop_newest;
    auto q = queue::Queue::open(o, clock, nullptr);
    const std::size_t limit = q->max_commit_bytes();
    REQUIRE(limit == 64 << 10);
    // Full to the last page (block), or full for batches of some size only (drop_newest, so that
    // some batches are dropped while their state still fits).
    if (want == Want::full) fill(*q, clock, {4000, 200, 1});
    if (want == Want::dropped) fill(*q, clock, {4000});
    metrics::Registry registry;
    std::set<input::Settlement> seen;

    for (const Kind& kind : kinds()) {
      input::InputMetrics metrics(registry, kind.input, kind.input);
      input::Committer committer(*q, metrics, clock, std::string("input ") + kind.input, "retrying");
      for (int round = 0; round < 12; ++round) {
        INFO(name_of(want) << " " << kind.input << " round " << round);
        input::PendingBatch batch(kind.input, limit);
        std::vector<std::string> offered;
        const std::size_t n = 1 + random() % 6;
        for (std::size_t i = 0; i < n; ++i) {
          // Small, large, one commit exactly (too large with its header and attributes), larger.
          const std::size_t sizes[] = {10, 3000, 20000, limit, limit + 1 + random() % 100000};
          std::size_t size = sizes[random() % 5];
          if (want != Want::too_large && batch.records() > 0 && !batch.fits(size, kind.value.size() + 16)) break;
          std::string payload = fmt::format("{}-{}-{}-", kind.input, round, i);
          payload.resize(std::max(size, payload.size()), 'x');
          queue::Attribute attrs[] = {{kind.key, kind.value}};
          batch.add(payload, clock.wall_ns(), attrs);
          offered.push_back(std::move(payload));
        }
        if (want == Want::too_large) {
          // Past what one commit takes (an input that did not check fits()): committed in parts.
          while (batch.used() <= limit) {
            std::string payload = fmt::format("{}-{}-extra{}-", kind.input, round, batch.records());
            payload.resize(9000, 'y');
            batch.add(payload, clock.wall_ns());
            offered.push_back(std::move(payload));
          }
        }
        // A dead letter of the input's own (a line over max_line_bytes): kept as far as it fits.
        if (random() % 2 == 0) {
          if (!batch.fits_dead_letter(200000)) {
            (void)committer.commit(batch);  // (not what this round checks)
            batch.clear();
            offered.clear();
          }
          batch.dead_letter("line_too_long", std::string(5000, 'd'), std::string(200000, 'o'), 200000, clock.wall_ns());
        }
        batch.write_batch().state_puts.emplace_back("input/" + std::string(kind.input) + "/offset",
                                                    std::to_string(round));
        if (want == Want::failed) {
          batch.write_batch().state_puts.emplace_back(std::string(600, 'k'), "a key the queue refuses");
        }
        for (const auto& d : batch.write_batch().dead_letters) CHECK(queue::commit_bytes(d) <= limit);

        const std::size_t records_before = q->stats().records;
        const std::size_t letters_before = entries(*q);
        const std::size_t batch_records = batch.records();
        const std::size_t batch_letters = batch.dead_letters();
        const double dropped_before =
            counter(registry, fmt::format("tank_input_dropped_records_total{{input=\"{}\",reason=\"overflow_drop_"
                                          "newest\",type=\"{}\"}}",
                                          kind.input, kind.input));
        const input::Outcome out = committer.commit(batch);

        // Which outcome the queue gives depends on what room is left (a full queue may still
        // take a batch without records, or refuse even its state): the invariants are checked
        // for the outcome it gave, and every outcome wanted must have been seen.
        seen.insert(out.settlement);
        if (want == Want::committed || want == Want::too_large) CHECK(out.settlement == input::Settlement::stored);
        if (want == Want::failed) CHECK(out.settlement == input::Settlement::failed);
        switch (out.settlement) {
          case input::Settlement::stored: {
            CHECK(out.acknowledge());
            CHECK(batch.empty());
            CHECK(q->stats().records - records_before == out.stored_records);
            CHECK(entries(*q) - letters_before == out.dead_letters);
            CHECK(q->state("input/" + std::string(kind.input) + "/offset") == std::to_string(round));
            // Every payload offered is a record, or a record_too_large dead letter with its start.
            auto stored = everything(*q);
            auto letters = q->dead_letters({0, 100000, kind.input, "", 0});
            for (const std::string& p : offered) {
              const bool as_record =
                  std::any_of(stored.begin(), stored.end(), [&](const auto& r) { return r.second == p; });
              const bool as_letter = std::any_of(letters.begin(), letters.end(), [&](const auto& d) {
                return d.letter.reason == "record_too_large" && d.letter.original_size == p.size() &&
                       p.starts_with(d.letter.original) && d.letter.original.size() > 1000;
              });
              INFO("payload of " << p.size() << " bytes; " << stored.size() << " records stored, "
                                  << q->stats().records << " in stats, first seq " << q->stats().first_seq);
              CHECK(as_record != as_letter);
            }
            // Room for the next rounds: an output took these.
            if (want == Want::committed || want == Want::too_large) REQUIRE(q->ack("out", q->stats().last_seq).ok());
            break;
          }
          case input::Settlement::dropped: {
            CHECK(want == Want::dropped);
            CHECK(out.acknowledge());
            CHECK(batch.empty());
            CHECK(q->stats().records == records_before);
            CHECK(out.dropped_records == batch_records);
            CHECK(entries(*q) - letters_before == batch_letters);  // evidence is kept
            CHECK(counter(registry, fmt::format("tank_input_dropped_records_total{{input=\"{}\",reason=\"overflow_"
                                                "drop_newest\",type=\"{}\"}}",
                                                kind.input, kind.input)) -
                      std::max(dropped_before, 0.0) ==
                  static_cast<double>(batch_records));
            break;
          }
          case input::Settlement::held:
          case input::Settlement::failed: {
            CHECK((want == Want::full || want == Want::dropped || want == Want::failed));
            CHECK_FALSE(out.acknowledge());
            // Nothing is lost: the batch holds all that is not stored or dropped, to offer again
            // (a batch committed in parts may have stored some parts before one was refused).
            CHECK(q->stats().records - records_before == out.stored_records);
            CHECK(entries(*q) - letters_before == out.dead_letters);
            CHECK(batch.records() + out.stored_records + out.dropped_records == batch_records);
            CHECK(batch.dead_letters() + out.dead_letters == batch_letters);
            if (out.settlement == input::Settlement::failed) {
              batch.write_batch().state_puts.pop_back();  // the cause goes away
              const input::Outcome again = committer.commit(batch);
              CHECK(again.settlement == input::Settlement::stored);
              CHECK(q->stats().records - records_before == batch_records - out.dropped_records);
            } else {
              batch.clear();
            }
            break;
          }
        }
      }
    }
    INFO(name_of(want) << ": seen " << seen.count(input::Settlement::stored) << seen.count(input::Settlement::dropped)
                       << seen.count(input::Settlement::held) << seen.count(input::Settlement::failed) << ", "
                       << q->stats().disk_used_bytes << " of " << q->stats().disk_limit_bytes << " used");
    const input::Settlement expected = want == Want::dropped ? input::Settlement::dropped
                                       : want == Want::full  ? input::Settlement::held
                                       : want == Want::failed ? input::Settlement::failed
                                                              : input::Settlement::stored;
    CHECK(seen.count(expected) == 1);
  }
}

TEST_CASE("commit path: a too-large batch that fails part way keeps exactly what is left", "[unit][input][commit]") {
  TempDir dir;
  ManualClock clock;
  auto q = queue::Queue::open(small_queue(dir / "q", 2 << 20), clock, nullptr);
  const std::size_t limit = q->max_commit_bytes();
  queue::WriteBatch big;
  for (int i = 0; i < 20; ++i) big.records.add("in", clock.wall_ns(), fmt::format("r{:02}-", i) + std::string(9000, 'z'));
  big.state_puts.emplace_back("k", "v");
  auto parts = input::split_for_commit(big, limit, "in", clock.wall_ns());
  REQUIRE(parts.size() >= 3);
  std::size_t records = 0;
  for (const auto& p : parts) {
    CHECK(p.records.bytes() <= limit);
    records += p.records.size();
  }
  CHECK(records == 20);
  CHECK(parts.back().state_puts.size() == 1);
  CHECK(parts.front().state_puts.empty());

  // The second part fails (a bad state key): the first is stored, the batch keeps the rest.
  metrics::Registry registry;
  input::InputMetrics metrics(registry, "in", "tcp");
  input::Committer committer(*q, metrics, clock, "input in", "retrying");
  input::PendingBatch batch("in", limit);
  queue::WriteBatch w = big;
  w.state_puts.emplace_back(std::string(600, 'k'), "refused");
  batch.replace(std::move(w));
  const input::Outcome out = committer.commit(batch);
  CHECK(out.settlement == input::Settlement::failed);
  CHECK(out.stored_records == q->stats().records);
  CHECK(out.stored_records + batch.records() == 20);
  batch.write_batch().state_puts.pop_back();
  CHECK(committer.commit(batch).settlement == input::Settlement::stored);
  auto stored = everything(*q);
  REQUIRE(stored.size() == 20);
  for (int i = 0; i < 20; ++i) CHECK(stored[static_cast<std::size_t>(i)].second.starts_with(fmt::format("r{:02}-", i)));
  CHECK(q->state("k") == "v");
}

TEST_CASE("dead letters shrink to fit one commit: the detail first, then the original, never the input or reason",
          "[unit][input][commit]") {
  queue::DeadLetter d = queue::DeadLetter::make("in", "line_too_long", std::string(3000, 'd'), std::string(100000, 'o'), 1);
  d.attributes = queue::encode_attributes(std::vector<queue::Attribute>{{"peer", "127.0.0.1:1"}});
  CHECK(queue::commit_bytes(d) > 64 << 10);
  REQUIRE(queue::shrink_to_fit(d, 64 << 10));
  CHECK(queue::commit_bytes(d) <= 64 << 10);
  CHECK(d.original_size == 100000);
  CHECK(d.original.size() > 60000);
  CHECK(d.detail.size() == 3000);  // it had room
  CHECK(d.input == "in");
  CHECK(d.reason == "line_too_long");
  CHECK_FALSE(d.attributes.empty());

  queue::DeadLetter tight = queue::DeadLetter::make("in", "r", std::string(3000, 'd'), std::string(5000, 'o'), 1);
  REQUIRE(queue::shrink_to_fit(tight, 2000));
  CHECK(queue::commit_bytes(tight) <= 2000);
  CHECK(tight.detail.ends_with("..."));
  CHECK(tight.detail.size() < 3000);
  CHECK_FALSE(tight.original.empty());
  CHECK(tight.original_size == 5000);

  auto decoded = queue::decode_dead_letter(1, queue::encode_dead_letter(tight, "test"));
  REQUIRE(decoded);
  CHECK(decoded->truncated);
}

TEST_CASE("backoff: capped exponential growth, with the jitter the policy names and the injected random source",
          "[unit][backoff]") {
  using std::chrono::milliseconds;
  Backoff plain(BackoffPolicy{milliseconds(100), milliseconds(5000), BackoffPolicy::Jitter::none});
  std::vector<std::int64_t> got;
  for (int i = 0; i < 9; ++i) got.push_back(std::chrono::duration_cast<milliseconds>(plain.next()).count());
  CHECK(got == std::vector<std::int64_t>{100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000});
  CHECK(plain.attempts() == 9);
  plain.reset();
  CHECK(plain.next() == milliseconds(100));

  for (std::uint64_t r : {0ULL, 1ULL, 12345ULL, ~0ULL}) {
    Backoff half(BackoffPolicy{milliseconds(500), milliseconds(60000), BackoffPolicy::Jitter::half}, [r] { return r; });
    Backoff full(BackoffPolicy{milliseconds(500), milliseconds(60000), BackoffPolicy::Jitter::full}, [r] { return r; });
    for (unsigned attempt = 0; attempt < 30; ++attempt) {
      const auto cap = half.ceiling(attempt);
      CHECK(cap == std::min<std::chrono::nanoseconds>(milliseconds(60000), milliseconds(500LL << std::min(attempt, 20u))));
      const auto h = half.next();
      CHECK(h >= cap / 2);
      CHECK(h <= cap);
      const auto f = full.next();
      CHECK(f >= std::chrono::nanoseconds(0));
      CHECK(f <= cap);
    }
  }
  // Different draws spread a fleet out.
  Backoff a(BackoffPolicy{milliseconds(500), milliseconds(60000), BackoffPolicy::Jitter::half}, [] { return 1ULL; });
  Backoff b(BackoffPolicy{milliseconds(500), milliseconds(60000), BackoffPolicy::Jitter::half}, [] { return 20000ULL; });
  for (int i = 0; i < 6; ++i) CHECK(a.next() != b.next());
  // A maximum below the start counts as the start.
  Backoff odd(BackoffPolicy{milliseconds(300), milliseconds(10), BackoffPolicy::Jitter::none});
  CHECK(odd.next() == milliseconds(300));
  CHECK(odd.next() == milliseconds(300));
}
