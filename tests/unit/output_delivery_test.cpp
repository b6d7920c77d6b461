// The delivery engine (output/delivery.hpp) against a real queue, with an output plugin written
// for the test that does what it is told (deliver, fail, refuse) and records what it was sent.
// The plugins' own tests and the integration tests run the real outputs.

#include <catch2/catch.hpp>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <set>
#include <mutex>

#include <fmt/format.h>

#include "metrics/registry.hpp"
#include "output/delivery.hpp"
#include "support/helpers.hpp"
#include "support/queue_helpers.hpp"

using namespace tank;
using namespace tank::test;

namespace {

struct Sent {
  std::string key;
  std::string body;
  std::uint64_t first = 0, last = 0;
  std::size_t records = 0;
  std::string input;
  std::vector<std::string> each;  // the payloads of OutgoingBatch::each
};

// Answers from a script (then `otherwise`), and records every attempt.
class ScriptedOutput final : public plugin::Output {
 public:
  struct Shared {
    std::mutex mutex;
    std::deque<plugin::SendResult> script;
    plugin::SendStatus otherwise = plugin::SendStatus::delivered;
    std::vector<Sent> sent;
    std::vector<Sent> snapshot() {
      std::lock_guard lock(mutex);
      return sent;
    }
  };
  explicit ScriptedOutput(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
  plugin::SendResult send(const plugin::OutgoingBatch& b) override {
    std::lock_guard lock(shared_->mutex);
    std::vector<std::string> each;
    for (const queue::RecordView* r : b.each) each.emplace_back(r->payload);
    shared_->sent.push_back({std::string(b.idempotency_key), std::string(b.body), b.first_seq, b.last_seq, b.records,
                             std::string(b.input), std::move(each)});
    if (shared_->script.empty()) return {shared_->otherwise, "scripted", std::nullopt};
    plugin::SendResult r = shared_->script.front();
    shared_->script.pop_front();
    return r;
  }

 private:
  std::shared_ptr<Shared> shared_;
};

output::DeliverySettings settings(std::size_t max_records = 3) {
  output::DeliverySettings s;
  s.output = "cloud";
  s.type = "test";
  s.agent_id = "gw";
  s.kinds = {{"in", output::PayloadKind::json}, {"logs", output::PayloadKind::text}};
  s.max_records = max_records;
  s.linger = std::chrono::milliseconds(0);
  s.compression = output::Compression::none;
  s.retry_initial = std::chrono::milliseconds(1);
  s.retry_max = std::chrono::milliseconds(4);
  s.breaker_failures = 1000;
  return s;
}

struct Harness {
  TempDir dir;
  SystemClock clock;
  metrics::Registry registry;
  std::unique_ptr<queue::Queue> queue;
  std::shared_ptr<ScriptedOutput::Shared> shared = std::make_shared<ScriptedOutput::Shared>();

  Harness() { open(); }
  void open() {
    queue::Options o = small_queue(dir / "q");
    o.consumers = {"output/cloud"};
    queue = queue::Queue::open(o, clock, nullptr);
  }
  std::unique_ptr<output::Delivery> delivery(output::DeliverySettings s = settings()) {
    return std::make_unique<output::Delivery>(std::move(s), *queue, std::make_unique<ScriptedOutput>(shared), registry,
                                              clock);
  }
  void append(const std::vector<std::string>& payloads, const std::string& input = "in") {
    REQUIRE(queue->append(batch_of(payloads, clock, input)).ok());
  }
  std::uint64_t acked() { return queue->position("output/cloud").value_or(0); }
};

}  // namespace

TEST_CASE("delivery: batches in queue order, acknowledged after delivery, each with its own key", "[unit][output]") {
  Harness h;
  h.append({"1", "2", "3", "4", "5"});
  auto d = h.delivery();
  d->start();
  REQUIRE(wait_until([&] { return h.acked() == 5; }));
  d->stop();
  const auto sent = h.shared->snapshot();
  REQUIRE(sent.size() == 2);
  CHECK(sent[0].body == "1\n2\n3\n");
  CHECK(sent[0].first == 1);
  CHECK(sent[0].last == 3);
  CHECK(sent[1].body == "4\n5\n");
  CHECK(sent[0].key != sent[1].key);
  CHECK(sent[0].key.starts_with(fmt::format("gw/cloud/{:016x}/1-3/", h.queue->id())));
  CHECK(sent[0].input == "in");
  CHECK_FALSE(h.queue->state(output::open_batch_key("cloud")));
  CHECK(h.queue->stats().records == 0);  // the only consumer passed them: deleted
}

TEST_CASE("delivery: a failed batch is sent again with the same records and the same key", "[unit][output]") {
  Harness h;
  h.append({"1", "2", "3"});
  h.shared->script = {{plugin::SendStatus::retry, "HTTP 503", std::nullopt},
                      {plugin::SendStatus::retry, "timed out", std::nullopt}};
  auto d = h.delivery();
  d->start();
  REQUIRE(wait_until([&] { return h.acked() == 3; }));
  d->stop();
  const auto sent = h.shared->snapshot();
  REQUIRE(sent.size() == 3);
  for (const Sent& s : sent) {
    CHECK(s.key == sent[0].key);
    CHECK(s.body == "1\n2\n3\n");
  }
  CHECK(metric_value(h.registry.serialize(), R"(tank_output_batches_total{output="cloud",result="retried",type="test"})") == 2);
  CHECK(metric_value(h.registry.serialize(), R"(tank_output_batches_total{output="cloud",result="delivered",type="test"})") == 1);
}

TEST_CASE("delivery: after a stop (or a crash) the batch in flight is sent again as it was", "[unit][output]") {
  Harness h;
  h.append({"a1", "a2", "a3", "a4"});
  h.shared->otherwise = plugin::SendStatus::retry;  // the upstream is down
  auto d = h.delivery();
  d->start();
  REQUIRE(wait_until([&] { return h.shared->snapshot().size() >= 2; }));
  d->stop();
  const Sent first = h.shared->snapshot().front();
  // Its boundaries are in the queue; new records arrive meanwhile; the batch is not cut again.
  REQUIRE(h.queue->state(output::open_batch_key("cloud")));
  h.append({"b1", "b2"});
  h.queue.reset();  // as after kill -9: only what was committed is left
  h.open();
  h.shared->otherwise = plugin::SendStatus::delivered;
  d = h.delivery();
  d->start();
  REQUIRE(wait_until([&] { return h.acked() == 6; }));
  d->stop();
  const auto sent = h.shared->snapshot();
  const auto resent = std::find_if(sent.begin() + 2, sent.end(), [](const Sent& s) { return s.first == 1; });
  REQUIRE(resent != sent.end());
  CHECK(resent->key == first.key);
  CHECK(resent->body == first.body);
  CHECK(resent->body == "a1\na2\na3\n");
  CHECK(sent.back().body == "a4\nb1\nb2\n");
}

TEST_CASE("delivery: a batch the upstream refuses for good goes to the dead-letter store and the queue moves on",
          "[unit][output]") {
  Harness h;
  h.append({"1", "2", "3", "4"});
  h.shared->script = {{plugin::SendStatus::rejected, "HTTP 400 Bad Request: field v: expected a number", std::nullopt}};
  auto d = h.delivery();
  d->start();
  REQUIRE(wait_until([&] { return h.acked() == 4; }));
  d->stop();
  auto letters = h.queue->dead_letters({});
  REQUIRE(letters.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(letters[i].letter.reason == "upstream_rejected");
    CHECK(letters[i].letter.input == "in");
    CHECK(letters[i].letter.original == std::to_string(i + 1));
    CHECK(letters[i].letter.detail == "output \"cloud\": HTTP 400 Bad Request: field v: expected a number");
  }
  CHECK(h.shared->snapshot().back().body == "4\n");
  CHECK(metric_value(h.registry.serialize(), R"(tank_output_records_total{output="cloud",result="rejected",type="test"})") == 3);
}

TEST_CASE("delivery: records an output refuses one by one go to the dead-letter store, the rest count as delivered",
          "[unit][output]") {
  Harness h;
  h.append({"1", "2", "3", "4"});
  plugin::SendResult partly{plugin::SendStatus::delivered, "2 of 3 refused", std::nullopt};
  // Out of order on purpose: the dead letters follow the queue's order.
  partly.rejected_records = {{2, "Kafka: Broker: Message size too large"},
                             {0, "Kafka: Broker: Topic authorization failed"}};
  h.shared->script = {partly};
  auto s = settings();
  s.sends_records = true;  // records refused one by one are records sent one by one (OutgoingBatch::each)
  auto d = h.delivery(s);
  d->start();
  REQUIRE(wait_until([&] { return h.acked() == 4; }));
  d->stop();
  const auto sent = h.shared->snapshot();
  REQUIRE(sent.size() == 2);
  CHECK(sent[0].each == std::vector<std::string>{"1", "2", "3"});  // every record, in queue order
  CHECK(sent[1].each == std::vector<std::string>{"4"});
  auto letters = h.queue->dead_letters({});
  REQUIRE(letters.size() == 2);
  CHECK(letters[0].letter.original == "1");
  CHECK(letters[0].letter.reason == "upstream_rejected");
  CHECK(letters[0].letter.detail == "output \"cloud\": Kafka: Broker: Topic authorization failed");
  CHECK(letters[1].letter.original == "3");
  CHECK(letters[1].letter.detail == "output \"cloud\": Kafka: Broker: Message size too large");
  const std::string m = h.registry.serialize();
  CHECK(metric_value(m, R"(tank_output_records_total{output="cloud",result="rejected",type="test"})") == 2);
  CHECK(metric_value(m, R"(tank_output_records_total{output="cloud",result="delivered",type="test"})") == 2);
}

TEST_CASE("delivery: an output that sends records gets no body, and its key hashes the records", "[unit][output]") {
  auto keys_of = [](const std::vector<std::string>& payloads, bool sends_records) {
    Harness h;
    h.append(payloads);
    h.shared->script = {plugin::SendResult{plugin::SendStatus::retry, "again", std::nullopt}};
    output::DeliverySettings s = settings(3);
    s.sends_records = sends_records;
    auto d = h.delivery(s);
    d->start();
    REQUIRE(wait_until([&] { return h.acked() == payloads.size(); }));
    d->stop();
    const auto sent = h.shared->snapshot();
    REQUIRE(sent.size() == 2);
    CHECK(sent[0].key == sent[1].key);  // the same key in every attempt
    // The records go to an output that sends them; one that gets a body gets only the body.
    CHECK(sent[0].each == (sends_records ? payloads : std::vector<std::string>{}));
    CHECK(sent[0].body.empty() == sends_records);
    const std::string m = h.registry.serialize();
    CHECK(metric_value(m, R"(tank_output_bytes_total{output="cloud",stage="sent",type="test"})") ==
          (sends_records ? 2.0 * 6 : 2.0 * 9));  // two attempts of the payloads, or of the body "ab\ncd\nef\n"
    return sent[0].key;
  };
  const std::string records = keys_of({"ab", "cd", "ef"}, true);
  const std::string other = keys_of({"ab", "cd", "eg"}, true);
  const std::string split = keys_of({"a", "bcd", "ef"}, true);  // the same bytes in other records
  const std::string body = keys_of({"ab", "cd", "ef"}, false);
  for (const std::string& key : {records, body}) {
    CHECK(key.starts_with("gw/cloud/"));
    CHECK(key.find("/1-3/") != std::string::npos);
  }
  CHECK(records != other);
  CHECK(records != split);
}

TEST_CASE("delivery: an output takes only its routes and passes the rest", "[unit][output]") {
  Harness h;
  h.append({"x1", "x2"}, "other");
  h.append({"hello"}, "logs");
  h.append({"x3"}, "other");
  output::DeliverySettings s = settings(10);
  s.filter.inputs = {"logs"};
  auto d = h.delivery(s);
  d->start();
  REQUIRE(wait_until([&] { return h.acked() == 4; }));
  d->stop();
  const auto sent = h.shared->snapshot();
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].body == "{\"message\":\"hello\"}\n");
  CHECK(sent[0].input == "logs");
}

TEST_CASE("delivery: the circuit opens after failures in a row and one probe closes it", "[unit][output]") {
  Harness h;
  h.append({"1"});
  for (int i = 0; i < 3; ++i) h.shared->script.push_back({plugin::SendStatus::retry, "down", std::nullopt});
  output::DeliverySettings s = settings();
  s.breaker_failures = 3;
  s.breaker_cooldown = std::chrono::milliseconds(300);
  auto d = h.delivery(s);
  d->start();
  REQUIRE(wait_until([&] { return h.shared->snapshot().size() == 3; }));
  // Open: nothing is sent during the cooldown.
  CHECK(wait_until([&] {
    return metric_value(h.registry.serialize(), R"(tank_output_circuit_state{output="cloud",type="test"})") == 1;
  }));
  CHECK(h.shared->snapshot().size() == 3);
  REQUIRE(wait_until([&] { return h.acked() == 1; }));
  d->stop();
  CHECK(h.shared->snapshot().size() == 4);
  CHECK(metric_value(h.registry.serialize(), R"(tank_output_circuit_state{output="cloud",type="test"})") == 0);
}

TEST_CASE("delivery: split_by_input makes every batch hold one input, also when resent after a stop",
          "[unit][output]") {
  Harness h;
  h.append({"1", "2"}, "in");
  h.append({"a", "b", "c"}, "logs");
  h.append({"3"}, "in");
  h.append({"d"}, "logs");
  output::DeliverySettings s = settings(10);
  s.split_by_input = true;
  // The first batch fails once and the output stops: after the restart it goes again as it was.
  h.shared->otherwise = plugin::SendStatus::retry;
  auto d = h.delivery(s);
  d->start();
  REQUIRE(wait_until([&] { return !h.shared->snapshot().empty(); }));
  d->stop();
  h.shared->otherwise = plugin::SendStatus::delivered;
  d = h.delivery(s);
  d->start();
  REQUIRE(wait_until([&] { return h.acked() == 7; }));
  d->stop();
  auto sent = h.shared->snapshot();
  // Drop the retried attempts of the first batch: same key, same body.
  std::vector<Sent> batches;
  for (const Sent& x : sent) {
    if (!batches.empty() && batches.back().key == x.key) {
      CHECK(batches.back().body == x.body);
      continue;
    }
    batches.push_back(x);
  }
  REQUIRE(batches.size() == 4);
  CHECK(batches[0].body == "1\n2\n");
  CHECK(batches[0].input == "in");
  CHECK(batches[1].body == "{\"message\":\"a\"}\n{\"message\":\"b\"}\n{\"message\":\"c\"}\n");
  CHECK(batches[1].input == "logs");
  CHECK(batches[2].body == "3\n");
  CHECK(batches[3].input == "logs");
  // Without the split one batch takes them all.
  Harness mixed;
  mixed.append({"1"}, "in");
  mixed.append({"a"}, "logs");
  auto m = mixed.delivery(settings(10));
  m->start();
  REQUIRE(wait_until([&] { return mixed.acked() == 2; }));
  m->stop();
  REQUIRE(mixed.shared->snapshot().size() == 1);
  CHECK(mixed.shared->snapshot()[0].input.empty());
}

namespace {

// Fails (retry) every batch whose first record is in `failing`, delivers the others; records
// every attempt. One instance per sender, all sharing one record.
class SelectiveOutput final : public plugin::Output {
 public:
  struct Shared {
    std::mutex mutex;
    std::set<std::uint64_t> failing;
    std::vector<Sent> sent;
    std::vector<Sent> snapshot() {
      std::lock_guard lock(mutex);
      return sent;
    }
    bool delivered(std::uint64_t first) {
      std::lock_guard lock(mutex);
      return std::any_of(sent.begin(), sent.end(), [&](const Sent& s) { return s.first == first; }) &&
             !failing.contains(first);
    }
  };
  explicit SelectiveOutput(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
  plugin::SendResult send(const plugin::OutgoingBatch& b) override {
    std::lock_guard lock(shared_->mutex);
    std::vector<std::string> each;
    for (const queue::RecordView* r : b.each) each.emplace_back(r->payload);
    shared_->sent.push_back({std::string(b.idempotency_key), std::string(b.body), b.first_seq, b.last_seq, b.records,
                             std::string(b.input), std::move(each)});
    if (shared_->failing.contains(b.first_seq)) return {plugin::SendStatus::retry, "HTTP 503", std::nullopt};
    return {plugin::SendStatus::delivered, "ok", std::nullopt};
  }

 private:
  std::shared_ptr<Shared> shared_;
};

std::unique_ptr<output::Delivery> parallel(Harness& h, std::shared_ptr<SelectiveOutput::Shared> shared, unsigned n) {
  std::vector<std::unique_ptr<plugin::Output>> instances;
  for (unsigned i = 0; i < n; ++i) instances.push_back(std::make_unique<SelectiveOutput>(shared));
  output::DeliverySettings s = settings(3);
  s.max_in_flight = n;
  return std::make_unique<output::Delivery>(std::move(s), *h.queue, std::move(instances), h.registry, h.clock);
}

}  // namespace

TEST_CASE("delivery: max_in_flight sends batches at once and later ones are done while an earlier one is retried, and "
          "the queue is acknowledged in order",
          "[unit][output]") {
  Harness h;
  h.append({"1", "2", "3", "4", "5", "6", "7", "8", "9"});
  auto shared = std::make_shared<SelectiveOutput::Shared>();
  shared->failing = {1};  // the first batch keeps failing
  auto d = parallel(h, shared, 3);
  d->start();
  REQUIRE(wait_until([&] { return shared->delivered(4) && shared->delivered(7); }));
  // Batches 4-6 and 7-9 reached the upstream before 1-3: marked done, not acknowledged yet.
  REQUIRE(wait_until([&] {
    auto stored = h.queue->state(output::open_batch_key("cloud"));
    auto list = stored ? output::decode_in_flight_batches(*stored) : std::nullopt;
    return list && list->size() == 3 && !(*list)[0].done && (*list)[1].done && (*list)[2].done;
  }));
  CHECK(h.acked() == 0);
  d->stop();
  const auto first_run = shared->snapshot();
  std::string key_of_first;
  for (const Sent& s : first_run) {
    if (s.first == 1) key_of_first = s.key;
  }
  REQUIRE_FALSE(key_of_first.empty());

  // Restarted (as after a crash): only the batch that was not done goes again, with its key.
  auto after = std::make_shared<SelectiveOutput::Shared>();
  d = parallel(h, after, 3);
  d->start();
  REQUIRE(wait_until([&] { return h.acked() == 9; }));
  d->stop();
  const auto second_run = after->snapshot();
  REQUIRE(second_run.size() == 1);
  CHECK(second_run[0].first == 1);
  CHECK(second_run[0].key == key_of_first);
  CHECK(second_run[0].body == "1\n2\n3\n");
  CHECK_FALSE(h.queue->state(output::open_batch_key("cloud")));
  CHECK(h.queue->stats().records == 0);
  CHECK(metric_value(h.registry.serialize(), R"(tank_output_batches_total{output="cloud",result="delivered",type="test"})") == 3);
}

TEST_CASE("delivery: max_in_flight with every batch delivered: all records, each batch once, acknowledged in order",
          "[unit][output]") {
  Harness h;
  std::vector<std::string> many;
  for (int i = 1; i <= 300; ++i) many.push_back(std::to_string(i));
  h.append(many);
  auto shared = std::make_shared<SelectiveOutput::Shared>();
  auto d = parallel(h, shared, 4);
  d->start();
  REQUIRE(wait_until([&] { return h.acked() == 300; }));
  d->stop();
  const auto sent = shared->snapshot();
  CHECK(sent.size() == 100);
  std::set<std::uint64_t> firsts;
  for (const Sent& s : sent) firsts.insert(s.first);
  CHECK(firsts.size() == 100);
  CHECK(*firsts.rbegin() == 298);
  CHECK_FALSE(h.queue->state(output::open_batch_key("cloud")));
}

TEST_CASE("delivery: a refused batch whose dead letters exceed one commit is dead-lettered in several",
          "[unit][output]") {
  Harness h;  // a 1 MiB queue: its largest commit is 64 KiB
  std::vector<std::string> many;
  for (int i = 0; i < 300; ++i) many.push_back(std::to_string(i));
  h.append(many);
  // The records fit one batch; their dead letters, each with this detail, are about 150 KiB.
  const std::string detail = "HTTP 403 Forbidden: " + std::string(400, 'x');
  h.shared->script = {{plugin::SendStatus::rejected, detail, std::nullopt}};
  auto d = h.delivery(settings(300));
  d->start();
  REQUIRE(wait_until([&] { return h.acked() == 300; }));
  d->stop();
  REQUIRE(h.shared->snapshot().size() == 1);
  CHECK(h.shared->snapshot()[0].records == 300);
  queue::DeadLetterQuery query;
  query.limit = 1000;
  const auto letters = h.queue->dead_letters(query);
  REQUIRE(letters.size() == 300);
  for (std::size_t i = 0; i < letters.size(); ++i) {
    CHECK(letters[i].letter.original == std::to_string(i));
    CHECK(letters[i].letter.detail == "output \"cloud\": " + detail);
  }
  CHECK_FALSE(h.queue->state(output::open_batch_key("cloud")));
}

TEST_CASE("delivery: records evicted by drop_oldest while their batch is retried are not sent as well",
          "[unit][output]") {
  // They are counted as dropped (tank_queue_dropped_records_total): arriving too would make that
  // count a lie. Found by the end-to-end overflow scenario (tests/e2e).
  Harness h;
  queue::Options o = small_queue(h.dir / "q-drop", 1 << 20);
  o.consumers = {"output/cloud"};
  o.overflow = queue::Overflow::drop_oldest;
  h.queue = queue::Queue::open(o, h.clock, &h.registry);
  {
    std::lock_guard lock(h.shared->mutex);
    h.shared->otherwise = plugin::SendStatus::retry;  // the upstream is away
  }
  h.append({"1", "2", "3"});
  auto d = h.delivery();
  d->start();
  REQUIRE(wait_until([&] { return h.shared->snapshot().size() >= 2; }));  // batch 1-3 is being retried
  // The queue fills up meanwhile and evicts the oldest records, those of the batch among them.
  const std::string big = "\"" + std::string(2000, 'x') + "\"";
  std::uint64_t appended = 3;
  for (int i = 0; i < 100000 && h.queue->oldest_seq() <= 3; ++i, ++appended) h.append({big});
  REQUIRE(h.queue->oldest_seq() > 3);
  std::size_t before = 0;
  {
    std::lock_guard lock(h.shared->mutex);
    before = h.shared->sent.size();
    h.shared->otherwise = plugin::SendStatus::delivered;  // the upstream is back
  }
  REQUIRE(wait_until([&] { return h.acked() == appended; }));
  d->stop();
  const auto sent = h.shared->snapshot();
  for (std::size_t i = before; i < sent.size(); ++i) {
    INFO("attempt " << i << ": records " << sent[i].first << " to " << sent[i].last);
    CHECK(sent[i].first > 3);
  }
  const std::string m = h.registry.serialize();
  const double delivered = metric_value(m, R"(tank_output_records_total{output="cloud",result="delivered",type="test"})").value_or(0);
  const double dropped = metric_value(m, R"(tank_queue_dropped_records_total{policy="drop_oldest"})").value_or(0);
  CHECK(dropped > 0);
  CHECK(delivered + dropped == static_cast<double>(appended));
}

namespace {

// Like a client shared by every instance (one Kafka producer): a send "queues" its batch (logs
// its first record), hands off, then awaits its "answer". Before it queues, a send waits for a
// later batch to queue first, the later batches less long (so that, begun at once, the last one
// queues first; it can only if the engine let it begin before the earlier ones handed off); after
// handing off it waits up to 1 s for a later batch to be queued while it still awaits its own
// answer (it is, when the engine lets the next batch begin at the hand-off).
class HandOffOutput final : public plugin::Output {
 public:
  struct Shared {
    std::mutex mutex;
    std::condition_variable changed;
    std::vector<std::uint64_t> queued;  // first records, in the order they were queued
    std::size_t overlapped = 0;         // sends during which a later batch was queued
    bool queued_after(std::uint64_t first) const {
      return std::any_of(queued.begin(), queued.end(), [&](std::uint64_t q) { return q > first; });
    }
  };
  explicit HandOffOutput(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
  plugin::SendResult send(const plugin::OutgoingBatch& b) override {
    std::unique_lock lock(shared_->mutex);
    // The later the batch (first records 1, 4, 7, 10), the shorter its wait: 400, 300, 200, 100 ms.
    const auto wait = std::chrono::milliseconds(100 * (4 - static_cast<int>((b.first_seq - 1) / 3)));
    shared_->changed.wait_for(lock, wait, [&] { return shared_->queued_after(b.first_seq); });
    shared_->queued.push_back(b.first_seq);
    shared_->changed.notify_all();
    lock.unlock();
    if (b.handed_off) b.handed_off();
    lock.lock();
    if (shared_->changed.wait_for(lock, std::chrono::seconds(1), [&] { return shared_->queued_after(b.first_seq); })) {
      ++shared_->overlapped;
    }
    return {plugin::SendStatus::delivered, "ok", std::nullopt};
  }

 private:
  std::shared_ptr<Shared> shared_;
};

}  // namespace

TEST_CASE("delivery: an output that hands off in order gets its batches in queue order with max_in_flight > 1, and "
          "awaits several answers at once",
          "[unit][output]") {
  for (const bool in_order : {true, false}) {
    DYNAMIC_SECTION((in_order ? "hands_off_in_order" : "without (the check itself can fail)")) {
      Harness h;
      h.append({"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"});  // 4 batches of 3
      auto shared = std::make_shared<HandOffOutput::Shared>();
      std::vector<std::unique_ptr<plugin::Output>> instances;
      for (unsigned i = 0; i < 4; ++i) instances.push_back(std::make_unique<HandOffOutput>(shared));
      output::DeliverySettings s = settings(3);
      s.max_in_flight = 4;
      s.hands_off_in_order = in_order;
      output::Delivery d(std::move(s), *h.queue, std::move(instances), h.registry, h.clock);
      d.start();
      REQUIRE(wait_until([&] { return h.acked() == 12; }));
      d.stop();
      std::lock_guard lock(shared->mutex);
      REQUIRE(shared->queued.size() == 4);
      const bool ordered = std::is_sorted(shared->queued.begin(), shared->queued.end());
      if (in_order) {
        CHECK(ordered);
        CHECK(shared->overlapped >= 3);  // each batch but the last saw the next one queued
      } else {
        CHECK_FALSE(ordered);  // four senders at once: the last one queues first
      }
    }
  }
}

namespace {

// Holds every send until the test lets it go (or the delivery is stopped: then it fails, as an
// interrupted HTTP exchange does), and records every attempt.
class GatedOutput final : public plugin::Output {
 public:
  struct Shared {
    std::mutex mutex;
    std::condition_variable changed;
    std::size_t released = 0;  // sends that may return
    bool interrupted = false;
    std::vector<Sent> sent;
    std::vector<Sent> snapshot() {
      std::lock_guard lock(mutex);
      return sent;
    }
    void release(std::size_t n) {
      {
        std::lock_guard lock(mutex);
        released = n;
      }
      changed.notify_all();
    }
  };
  explicit GatedOutput(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
  plugin::SendResult send(const plugin::OutgoingBatch& b) override {
    std::unique_lock lock(shared_->mutex);
    shared_->sent.push_back({std::string(b.idempotency_key), std::string(b.body), b.first_seq, b.last_seq, b.records,
                             std::string(b.input), {}});
    const std::size_t mine = shared_->sent.size();
    shared_->changed.notify_all();
    shared_->changed.wait(lock, [&] { return shared_->interrupted || shared_->released >= mine; });
    if (shared_->interrupted) return {plugin::SendStatus::retry, "interrupted", std::nullopt};
    return {plugin::SendStatus::delivered, "ok", std::nullopt};
  }
  void interrupt() override {
    {
      std::lock_guard lock(shared_->mutex);
      shared_->interrupted = true;
    }
    shared_->changed.notify_all();
  }

 private:
  std::shared_ptr<Shared> shared_;
};

std::vector<output::InFlightBatch> stored_batches(queue::Queue& q) {
  const auto stored = q.state(output::open_batch_key("cloud"));
  if (!stored) return {};
  return output::decode_in_flight_batches(*stored).value_or(std::vector<output::InFlightBatch>{});
}

double gauge(metrics::Registry& registry, const std::string& name) {
  return metric_value(registry.serialize(), name + R"({output="cloud",type="test"})").value_or(-1);
}

}  // namespace

TEST_CASE("delivery: the next batch is read and encoded while one is in flight, sent only after that one is "
          "acknowledged, and its boundaries go in the acknowledging commit",
          "[unit][output]") {
  Harness h;
  h.queue = queue::Queue::open(
      [&] {
        queue::Options o = small_queue(h.dir / "q-ahead");
        o.consumers = {"output/cloud"};
        return o;
      }(),
      h.clock, &h.registry);
  h.append({"1", "2", "3", "4", "5", "6", "7", "8", "9"});
  auto shared = std::make_shared<GatedOutput::Shared>();
  auto d = std::make_unique<output::Delivery>(settings(3), *h.queue, std::make_unique<GatedOutput>(shared), h.registry,
                                              h.clock);
  d->start();
  const std::string commits = R"(tank_queue_commits_total)";
  // Batch 1-3 is in flight (held); 4-6 is prepared meanwhile, and nothing of it is sent or stored.
  REQUIRE(wait_until([&] { return shared->snapshot().size() == 1; }));
  REQUIRE(wait_until([&] { return gauge(h.registry, "tank_output_prepared_batches") == 1; }));
  const double commits_before = metric_value(h.registry.serialize(), commits).value_or(0);
  CHECK(shared->snapshot().size() == 1);
  auto stored = stored_batches(*h.queue);
  REQUIRE(stored.size() == 1);
  CHECK(stored[0].first_seq == 1);
  CHECK(stored[0].last_seq == 3);
  CHECK(h.acked() == 0);

  // 1-3 delivered: its acknowledgement and the boundaries of 4-6 are one commit, made before 4-6
  // is sent; then 7-9 is prepared while 4-6 is held.
  shared->release(1);
  REQUIRE(wait_until([&] { return shared->snapshot().size() == 2; }));
  CHECK(h.acked() == 3);
  stored = stored_batches(*h.queue);
  REQUIRE(stored.size() == 1);
  CHECK(stored[0].first_seq == 4);
  CHECK(stored[0].last_seq == 6);
  REQUIRE(wait_until([&] { return gauge(h.registry, "tank_output_prepared_batches") == 1; }));
  CHECK(metric_value(h.registry.serialize(), commits).value_or(0) - commits_before == 1);
  CHECK(shared->snapshot().size() == 2);

  shared->release(3);
  REQUIRE(wait_until([&] { return h.acked() == 9; }));
  d->stop();
  const auto sent = shared->snapshot();
  REQUIRE(sent.size() == 3);
  CHECK(sent[0].body == "1\n2\n3\n");
  CHECK(sent[1].body == "4\n5\n6\n");
  CHECK(sent[2].body == "7\n8\n9\n");
  CHECK(gauge(h.registry, "tank_output_prepared_batches") == 0);
  CHECK(h.queue->stats().records == 0);
}

TEST_CASE("delivery: a stop (or a crash) while a batch is prepared ahead loses nothing and sends the batch in flight "
          "again as it was",
          "[unit][output]") {
  Harness h;
  h.append({"1", "2", "3", "4", "5", "6"});
  auto shared = std::make_shared<GatedOutput::Shared>();
  auto d = std::make_unique<output::Delivery>(settings(3), *h.queue, std::make_unique<GatedOutput>(shared), h.registry,
                                              h.clock);
  d->start();
  REQUIRE(wait_until([&] { return shared->snapshot().size() == 1; }));
  REQUIRE(wait_until([&] { return gauge(h.registry, "tank_output_prepared_batches") == 1; }));
  d->stop();  // the held send is interrupted: 1-3 stays open, 4-6 was never stored nor sent
  const Sent first = shared->snapshot().front();
  REQUIRE(shared->snapshot().size() == 1);
  REQUIRE(stored_batches(*h.queue).size() == 1);
  h.append({"7"});
  h.queue.reset();  // as after kill -9: only what was committed is left
  h.open();
  d = h.delivery();
  d->start();
  REQUIRE(wait_until([&] { return h.acked() == 7; }));
  d->stop();
  const auto sent = h.shared->snapshot();
  REQUIRE(sent.size() == 3);
  CHECK(sent[0].key == first.key);  // the batch in flight, again as it was
  CHECK(sent[0].body == "1\n2\n3\n");
  CHECK(sent[1].body == "4\n5\n6\n");  // cut again
  CHECK(sent[2].body == "7\n");
  CHECK(h.queue->stats().records == 0);
}
