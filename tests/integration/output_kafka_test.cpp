// outputs.kafka against librdkafka's mock cluster (3 brokers, a topic of 3 partitions; a Kafka
// protocol peer nobody here wrote: tests/support/kafka_mock.hpp), the real tank binary, and what
// the cluster holds read back by a consumer: every record once (or again with the same
// tank-record header), keys from key_field, in order per key; injected broker errors with the
// outcome each must have; kill -9 while delivering.

#include <catch2/catch.hpp>

#include <csignal>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "queue/queue.hpp"
#include "support/input_helpers.hpp"
#include "support/kafka_mock.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

// records {"device":"d<k % devices>","n":k} for k in [first, first + count)
std::string file_input(const TempDir& dir, int first, int count, int devices = 7) {
  std::string text;
  for (int k = first; k < first + count; ++k) text += fmt::format(R"({{"device":"d{}","n":{}}})", k % devices, k) + "\n";
  append_file(dir / "in.ndjson", text);
  return fmt::format("[[inputs.file]]\nname = \"plant\"\npaths = [\"{}\"]\nformat = \"json\"\nread_from = \"beginning\"\n"
                     "poll_interval = \"50ms\"\n\n",
                     (dir / "in.ndjson").string());
}

std::string kafka_output(const KafkaMock& mock, const std::string& extra) {
  return fmt::format("[[outputs.kafka]]\nname = \"fleet\"\nbrokers = {}\ntopic = \"t\"\nkey_field = \"device\"\n"
                     "linger = \"0s\"\nretry_initial = \"20ms\"\nretry_max = \"200ms\"\nbreaker_failures = 1000\n{}\n",
                     mock.brokers_toml(), extra);
}

int n_of(const KafkaMock::Message& m) { return static_cast<int>(boost::json::parse(m.value).at("n").as_int64()); }

double metric(const std::string& address, const std::string& sample) {
  return metric_value(scrape(address), sample).value_or(-1);
}

// The sum of the samples of `name` (every label set), e.g. brokers up.
double metric_sum(const std::string& address, const std::string& name) {
  std::istringstream in(scrape(address));
  double total = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + "{", 0) == 0) total += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return total;
}

// How many samples (label sets) of `name` there are.
int metric_samples(const std::string& address, const std::string& name) {
  std::istringstream in(scrape(address));
  int n = 0;
  for (std::string line; std::getline(in, line);) n += line.rfind(name + "{", 0) == 0 ? 1 : 0;
  return n;
}

const char* const kDelivered = R"(tank_output_records_total{output="fleet",result="delivered",type="kafka"})";
const char* const kRejected = R"(tank_output_records_total{output="fleet",result="rejected",type="kafka"})";

}  // namespace

TEST_CASE("outputs.kafka: one message per record with idempotency-key and tank-record headers, keyed and in order per key",
          "[integration][outputs][kafka]") {
  KafkaMock mock;
  TempDir dir;
  const auto config = write_test_config(dir, file_input(dir, 0, 3000) + kafka_output(mock, "batch_max_records = 500\n"));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  CHECK(wait_until([&] { return metric(metrics, kDelivered) == 3000; }, std::chrono::seconds(60)));
  CHECK(tank.stop() == 0);
  INFO(tank.process().err());
  const auto messages = mock.dump("t");
  REQUIRE(messages.size() == 3000);  // no failure here: each record once
  std::set<int> seen;
  std::set<std::string> batch_keys, record_ids;
  std::map<std::string, int> partition_of;  // key -> partition
  std::map<std::string, int> last_n;        // key -> the last n read (partition order = offset order)
  for (const auto& m : messages) {
    const auto v = boost::json::parse(m.value).as_object();
    const int n = static_cast<int>(v.at("n").as_int64());
    CHECK(seen.insert(n).second);
    REQUIRE(m.key);
    CHECK(*m.key == std::string(v.at("device").as_string()));
    // One key, one partition, and its records in the order they were read.
    auto [it, fresh] = partition_of.emplace(*m.key, m.partition);
    CHECK(it->second == m.partition);
    if (!fresh) CHECK(last_n[*m.key] < n);
    last_n[*m.key] = n;
    const std::string& key = m.headers.at("idempotency-key");
    CHECK(key.starts_with("test-agent/fleet/"));
    batch_keys.insert(key);
    CHECK(m.headers.at("tank-record").starts_with(key + "#"));
    CHECK(record_ids.insert(m.headers.at("tank-record")).second);
    CHECK(m.headers.at("tank-input") == "plant");
  }
  CHECK(batch_keys.size() >= 6);  // 3000 records in batches of at most 500
  std::set<int> partitions;
  for (const auto& [key, p] : partition_of) partitions.insert(p);
  CHECK(partitions.size() > 1);  // 7 devices spread over the 3 partitions
}

TEST_CASE("outputs.kafka: retriable broker errors are retried, a message too large or an unauthorized topic is "
          "dead-lettered with Kafka's reason",
          "[integration][outputs][kafka]") {
  KafkaMock mock;
  TempDir dir;
  // One record a batch, so that an injected error answers exactly one record's Produce request.
  const auto config =
      write_test_config(dir, file_input(dir, 0, 12) + kafka_output(mock, "batch_max_records = 1\nmax_in_flight = 1\n"));
  // librdkafka retries these itself (idempotence keeps order): every record arrives once.
  REQUIRE(mock.command("produce_errors 4 NOT_LEADER_FOR_PARTITION REQUEST_TIMED_OUT NOT_ENOUGH_REPLICAS "
                       "NOT_LEADER_FOR_PARTITION") == "ok");
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  CHECK(wait_until([&] { return metric(metrics, kDelivered) == 12; }, std::chrono::seconds(60)));
  // Refused for good: the next two records are dead-lettered, the rest delivered.
  REQUIRE(mock.command("produce_errors 2 MSG_SIZE_TOO_LARGE TOPIC_AUTHORIZATION_FAILED") == "ok");
  append_file(dir / "in.ndjson", R"({"device":"d1","n":100})" "\n" R"({"device":"d2","n":101})" "\n"
                                 R"({"device":"d3","n":102})" "\n");
  CHECK(wait_until([&] { return metric(metrics, kRejected) == 2 && metric(metrics, kDelivered) == 13; },
                   std::chrono::seconds(60)));
  CHECK(tank.stop() == 0);
  INFO(tank.process().err());
  CHECK(tank.process().err().find("Message size too large") != std::string::npos);
  std::set<int> arrived;
  for (const auto& m : mock.dump("t")) arrived.insert(n_of(m));
  std::set<int> expected;
  for (int n = 0; n < 12; ++n) expected.insert(n);
  expected.insert(102);
  CHECK(arrived == expected);
  ManualClock clock;
  auto q = queue::Queue::open_read_only(dir / "data" / "queue", clock);
  queue::DeadLetterQuery query;
  const auto letters = q->dead_letters(query);
  REQUIRE(letters.size() == 2);
  CHECK(letters[0].letter.reason == "upstream_rejected");
  CHECK(letters[0].letter.original == R"({"device":"d1","n":100})");
  CHECK(letters[0].letter.detail.find("Message size too large") != std::string::npos);
  CHECK(letters[1].letter.original == R"({"device":"d2","n":101})");
  CHECK(letters[1].letter.detail.find("authorization") != std::string::npos);
}

TEST_CASE("outputs.kafka: every broker down and up again: the batches wait in the queue and all arrive",
          "[integration][outputs][kafka]") {
  KafkaMock mock;
  TempDir dir;
  const auto config = write_test_config(
      dir, file_input(dir, 0, 500) + kafka_output(mock, "batch_max_records = 100\ndelivery_timeout = \"1s\"\n"
                                                        "[outputs.kafka.librdkafka]\nstatistics.interval.ms = 200\n"));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  CHECK(wait_until([&] { return metric(metrics, kDelivered) == 500; }, std::chrono::seconds(60)));
  // Per-broker state from librdkafka's statistics, also between batches.
  CHECK(wait_until([&] { return metric_sum(metrics, "tank_output_kafka_broker_up") == 3; }, std::chrono::seconds(30)));
  REQUIRE(mock.command("broker_down -1") == "ok");
  CHECK(wait_until([&] { return metric_sum(metrics, "tank_output_kafka_broker_up") == 0; }, std::chrono::seconds(30)));
  append_file(dir / "in.ndjson", [] {
    std::string text;
    for (int n = 500; n < 1000; ++n) text += fmt::format(R"({{"device":"d{}","n":{}}})", n % 7, n) + "\n";
    return text;
  }());
  // While the cluster is away batches fail (delivery_timeout) and are retried.
  CHECK(wait_until([&] { return metric(metrics, R"(tank_output_batches_total{output="fleet",result="retried",type="kafka"})") >= 1; },
                   std::chrono::seconds(60)));
  REQUIRE(mock.command("broker_up -1") == "ok");
  CHECK(wait_until([&] { return metric(metrics, kDelivered) >= 1000; }, std::chrono::seconds(90)));
  CHECK(wait_until([&] { return metric_sum(metrics, "tank_output_kafka_broker_up") == 3; }, std::chrono::seconds(30)));
  // One round-trip series per broker (its value is the last interval's average: 0 when idle).
  CHECK(metric_samples(metrics, "tank_output_kafka_broker_rtt_seconds") == 3);
  CHECK(tank.stop() == 0);
  INFO(tank.process().err());
  std::map<int, std::set<std::string>> ids;  // n -> the tank-record headers it arrived with
  for (const auto& m : mock.dump("t")) ids[n_of(m)].insert(m.headers.at("tank-record"));
  CHECK(ids.size() == 1000);
  for (const auto& [n, set] : ids) {
    INFO(n);
    CHECK(set.size() == 1);  // a record sent again carries the same tank-record
  }
}

TEST_CASE("outputs.kafka: kill -9 while delivering, three times: every record arrives, every duplicate with a "
          "tank-record seen before",
          "[integration][outputs][kafka][kill9]") {
  KafkaMock mock;
  TempDir dir;
  constexpr int kRecords = 10000;
  const auto config = write_test_config(dir, file_input(dir, 0, kRecords) + kafka_output(mock, "batch_max_records = 100\n"));
  // While tank runs, every broker answers 200 ms late, so that delivering takes seconds (100
  // batches, 4 awaited at once: at least 5 s) and the kills land in it. The cluster is read back
  // without the delay (its scan fetches through the same brokers).
  auto distinct = [&] {
    std::set<int> n;
    for (const auto& m : mock.dump("t")) n.insert(n_of(m));
    return n.size();
  };
  std::mt19937 rng(20);
  std::uniform_int_distribution<int> delay_ms(300, 1500);
  std::size_t before = 0;
  for (int k = 0; k < 3; ++k) {
    REQUIRE(mock.command("rtt -1 200") == "ok");
    TankProcess tank(config);
    tank.wait_running(dir / "data");
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));  // a random moment, not a synchronisation
    tank.process().signal(SIGKILL);
    tank.process().wait();
    REQUIRE(mock.command("rtt -1 0") == "ok");
    const std::size_t now = distinct();
    CHECK(now >= before);
    before = now;
  }
  CHECK(before < static_cast<std::size_t>(kRecords));  // the kills came while records were on their way
  TankProcess tank(config);
  tank.wait_running(dir / "data");
  CHECK(wait_until([&] { return distinct() == kRecords; }, std::chrono::seconds(120)));
  CHECK(tank.stop() == 0);
  std::map<int, std::set<std::string>> ids;
  std::size_t total = 0;
  for (const auto& m : mock.dump("t")) {
    ids[n_of(m)].insert(m.headers.at("tank-record"));
    ++total;
  }
  CHECK(ids.size() == kRecords);  // nothing lost
  std::size_t duplicates = total - ids.size();
  for (const auto& [n, set] : ids) {
    INFO(n);
    CHECK(set.size() == 1);  // every copy of a record carries the same tank-record
  }
  // At most the batches in flight at each kill (max_in_flight 4 by default: four of 100 per kill).
  INFO(duplicates << " duplicates after 3 kills; " << before << " records had arrived before the last run");
  CHECK(duplicates <= 3 * 4 * 100);
}

TEST_CASE("outputs.kafka: a fatal producer error (sequence desynchronised) makes a new producer, and every record "
          "arrives",
          "[integration][outputs][kafka]") {
  KafkaMock mock;
  TempDir dir;
  constexpr int kRecords = 400;
  // librdkafka 2.0.2 raises a fatal error when the head-of-line Produce request of an idempotent
  // producer fails with OUT_OF_ORDER_SEQUENCE_NUMBER (rdkafka_request.c): the first one does.
  REQUIRE(mock.command("produce_errors 1 OUT_OF_ORDER_SEQUENCE_NUMBER") == "ok");
  const auto config = write_test_config(dir, file_input(dir, 0, kRecords) + kafka_output(mock, "batch_max_records = 20\n"));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  CHECK(wait_until([&] { return metric(metrics, kDelivered) == kRecords; }, std::chrono::seconds(60)));
  CHECK(tank.stop() == 0);
  CHECK(tank.process().err().find("the Kafka producer failed for good") != std::string::npos);
  std::map<int, std::set<std::string>> ids;
  for (const auto& m : mock.dump("t")) ids[n_of(m)].insert(m.headers.at("tank-record"));
  CHECK(ids.size() == kRecords);
  for (const auto& [n, set] : ids) {
    INFO(n);
    CHECK(set.size() == 1);
  }
}

TEST_CASE("outputs.kafka: tank check refuses librdkafka properties that would break the guarantees, with the reason",
          "[integration][outputs][kafka][config]") {
  TempDir dir;
  const auto config = write_test_config(
      dir, file_input(dir, 0, 1) +
               "[[outputs.kafka]]\nname = \"fleet\"\nbrokers = [\"127.0.0.1:9\"]\n"
               "security_protocol = \"sasl_ssl\"\n"
               "[outputs.kafka.librdkafka]\nacks = 1\nqueue.buffering.max.messages = 1000000\nlinger.ms = 20\n"
               "\"no.such.property\" = 1\nsocket.keepalive.enable = true\n");
  const auto check = run({tank_binary(), "check", "-c", config.string()});
  INFO(check.out << check.err);
  CHECK(check.exit_code != 0);
  const std::string text = check.out + check.err;
  CHECK(text.find("outputs.kafka[0].librdkafka.acks: cannot be set here: tank sends with acks = all") !=
        std::string::npos);
  CHECK(text.find("librdkafka.queue.buffering.max.messages: cannot be set here: tank bounds librdkafka's queue") !=
        std::string::npos);
  CHECK(text.find("librdkafka.linger.ms") == std::string::npos);  // a dotted key, and fine
  CHECK(text.find("socket.keepalive.enable") == std::string::npos);
  CHECK(text.find("No such configuration property: \"no.such.property\"") != std::string::npos);
  CHECK(text.find("needs username and password") != std::string::npos);
}
