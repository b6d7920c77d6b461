// outputs.http against a real HTTP server (tests/support/http_upstream.hpp) that fails on
// command -- 503, 429 with Retry-After, a connection reset, a 400 -- while tank is also killed
// at the moment the upstream has a batch and the queue does not know yet. Verdict from what the
// upstream received: every record arrives or is in the dead-letter store, and every repeated
// key carries exactly the same content.

#include <catch2/catch.hpp>

#include <csignal>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <map>
#include <random>
#include <thread>
#include <set>

#include "queue/queue.hpp"
#include "support/http_upstream.hpp"
#include "support/input_helpers.hpp"
#include "support/proxies.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

constexpr int kRecords = 20000;

std::vector<int> numbers_in(const std::string& ndjson) {
  std::vector<int> out;
  std::istringstream in(ndjson);
  for (std::string line; std::getline(in, line);) out.push_back(static_cast<int>(boost::json::parse(line).at("n").as_int64()));
  return out;
}

// The originals of the dead letters, read from the queue (tank dlq show has them one by one).
std::vector<queue::StoredDeadLetter> letters_of(const std::filesystem::path& data_dir) {
  ManualClock clock;
  auto q = queue::Queue::open_read_only(data_dir / "queue", clock);
  queue::DeadLetterQuery query;
  query.limit = 1000000;
  return q->dead_letters(query);
}

// How many distinct records were delivered (answered 200) or dead-lettered.
std::size_t accounted(const HttpUpstream& upstream, const std::filesystem::path& data_dir) {
  std::set<int> seen;
  for (const auto& r : upstream.received()) {
    if (r.answered == 200) {
      for (int n : numbers_in(r.body)) seen.insert(n);
    }
  }
  for (const auto& d : letters_of(data_dir)) {
    seen.insert(static_cast<int>(boost::json::parse(d.letter.original).at("n").as_int64()));
  }
  return seen.size();
}

}  // namespace

TEST_CASE("outputs.http: failures, Retry-After, a refused batch and kill -9: nothing lost, keys stable",
          "[failure][outputs][http]") {
  HttpUpstream upstream;
  using R = HttpUpstream::Reply;
  upstream.script({R{.status = 503, .body = "overloaded"}, R{.status = 429, .retry_after = "1"}, R{.reset = true},
                   R{}, R{.status = 400, .body = "field n: too large"}, R{}, R{.status = 500}});
  TempDir dir;
  std::string text;
  for (int i = 0; i < kRecords; ++i) text += fmt::format(R"({{"n":{}}})", i) + "\n";
  write_file(dir / "in.ndjson", text);
  const auto config = write_test_config(
      dir, fmt::format("[[inputs.file]]\nname = \"src\"\npaths = [\"{}\"]\nformat = \"json\"\nread_from = \"beginning\"\n"
                       "poll_interval = \"50ms\"\n\n"
                       "[[outputs.http]]\nname = \"cloud\"\nurl = \"{}\"\nbatch_max_records = 1000\nlinger = \"0s\"\n"
                       "retry_initial = \"10ms\"\nretry_max = \"50ms\"\nbreaker_failures = 100\n"
                       "headers = [\"X-Tenant: plant-7\"]\ntoken = \"s3cret\"\n",
                       (dir / "in.ndjson").string(), upstream.url()));
  std::string logs;
  // Batch 1 meets 503, 429, a reset, then 200; batch 2 a 400 (dead-lettered); batch 3 a 200,
  // and tank is killed before the queue knows (the third answer that ends an attempt).
  run_until_failpoint(config, "output.sent=3", logs);
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  CHECK(wait_until([&] { return accounted(upstream, dir / "data") == kRecords; }, std::chrono::seconds(60)));
  CHECK(tank.stop() == 0);
  logs += tank.process().err();
  INFO(logs);

  const auto received = upstream.received();
  // Every repeated key came with exactly the same content; the batch killed after its 200 was
  // sent again under its key.
  std::map<std::string, std::string> content;
  std::map<std::string, int> times;
  for (const auto& r : received) {
    auto [it, fresh] = content.emplace(r.key, r.body);
    if (!fresh) CHECK(it->second == r.body);
    ++times[r.key];
    CHECK(r.key.starts_with("test-agent/cloud/"));
    CHECK(r.encoding == "zstd");
    CHECK(r.header("Content-Type") == "application/x-ndjson");
    CHECK(r.header("X-Tenant") == "plant-7");
    CHECK(r.header("Authorization") == "Bearer s3cret");
  }
  int delivered_twice = 0;
  for (const auto& [key, n] : times) {
    int ok = 0;
    for (const auto& r : received) ok += (r.key == key && r.answered == 200) ? 1 : 0;
    if (ok > 1) ++delivered_twice;
  }
  CHECK(delivered_twice >= 1);  // the kill came after a 200: that batch was delivered again, same key
  // The scripted failures were retried: the first batch saw 503, 429, reset and then 200.
  REQUIRE(received.size() >= 7);
  CHECK(received[0].key == received[3].key);
  CHECK(received[0].answered == 503);
  CHECK(received[3].answered == 200);
  // Retry-After: 1 was honoured.
  CHECK(received[2].at - received[1].at >= std::chrono::milliseconds(950));
  // The 400: its batch is in the dead-letter store with the status and the body.
  const auto letters = letters_of(dir / "data");
  CHECK(letters.size() == 1000);
  for (const auto& d : letters) {
    CHECK(d.letter.reason == "upstream_rejected");
    CHECK(d.letter.input == "src");
    CHECK(d.letter.detail == "output \"cloud\": HTTP 400 Bad Request: field n: too large");
  }
  CHECK(records_in(dir / "data" / "queue").empty());
}

TEST_CASE("outputs.http: configuration errors say what is wrong", "[failure][outputs][http]") {
  TempDir dir;
  const auto config = write_test_config(
      dir,
      "[[inputs.tcp]]\nlisten = \"127.0.0.1:0\"\n\n"
      "[[outputs.http]]\nname = \"a\"\nurl = \"https://user:pw@cloud.example/ingest\"\n\n"
      "[[outputs.http]]\nname = \"b\"\nurl = \"ftp://x\"\nheaders = [\"NoColon\"]\n\n"
      "[[outputs.http]]\nname = \"c\"\nurl = \"http://host:99999/\"\n\n"
      "[[outputs.http]]\nname = \"d\"\nurl = \"https://cloud.example/\"\ntls_cert_file = \"/etc/tank/gw.pem\"\n\n"
      "[[outputs.http]]\nname = \"e\"\nurl = \"https://cloud.example/\"\nproxy = \"https://proxy:3128\"\n");
  auto r = run({tank_binary(), "check", "-c", config.string()});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("credentials in the URL are not sent: use token, token_file or headers") != std::string::npos);
  CHECK(r.err.find("\"ftp://x\" is not an http:// or https:// URL") != std::string::npos);
  CHECK(r.err.find("the header starting \"NoColon\" (7 bytes) is not \"Name: value\"") != std::string::npos);
  CHECK(r.err.find("has no valid host and port") != std::string::npos);
  CHECK(r.err.find("outputs.http[3].tls_cert_file: mutual TLS needs both tls_cert_file and tls_key_file") !=
        std::string::npos);
  CHECK(r.err.find("a proxy reached over TLS (https://) is not supported") != std::string::npos);
  INFO(r.err);

  // What only starting can find: a CA file that is not there, an unusable HTTPS_PROXY.
  const auto missing_ca = write_test_config(
      dir,
      "[[inputs.tcp]]\nlisten = \"127.0.0.1:0\"\n\n"
      "[[outputs.http]]\nurl = \"https://127.0.0.1:9/\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n",
      "missing_ca.toml");
  r = run({tank_binary(), "run", "-c", missing_ca.string()});
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("cannot load tls_ca_file /nonexistent/ca.pem") != std::string::npos);
  INFO(r.err);
  const auto env_proxy = write_test_config(
      dir, "[[inputs.tcp]]\nlisten = \"127.0.0.1:0\"\n\n[[outputs.http]]\nurl = \"https://127.0.0.1:9/\"\n",
      "env_proxy.toml");
  r = run({tank_binary(), "run", "-c", env_proxy.string()}, {{"HTTPS_PROXY", "socks5://127.0.0.1:1080"}});
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("the environment's HTTPS_PROXY is not usable: \"socks5://127.0.0.1:1080\" is not an http:// proxy "
                   "URL (fix it, or set proxy = \"none\")") != std::string::npos);
  INFO(r.err);
}

TEST_CASE("outputs.http: a slow upstream times out and a malformed answer is retried, same batch, same key",
          "[failure][outputs][http]") {
  HttpUpstream upstream;
  using R = HttpUpstream::Reply;
  upstream.script({R{.delay = std::chrono::milliseconds(1500)}, R{.raw = "this is not HTTP\r\n\r\n"},
                   R{.raw = "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"}});
  TempDir dir;
  const auto config = write_test_config(
      dir, fmt::format("[[inputs.tcp]]\nname = \"src\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
                       "[[outputs.http]]\nname = \"cloud\"\nurl = \"{}\"\nlinger = \"0s\"\nretry_initial = \"10ms\"\n"
                       "retry_max = \"20ms\"\nresponse_timeout = \"300ms\"\n",
                       upstream.url()));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  int fd = tcp_connect(input_address(dir / "data", "src"));
  REQUIRE(fd >= 0);
  REQUIRE(send_all(fd, "{\"n\":1}\n{\"n\":2}\n"));
  ::close(fd);
  // (The slow answer is recorded last: the server logs a request once it has waited.)
  REQUIRE(wait_until([&] {
    return metric_value(scrape(metrics), R"(tank_output_batches_total{output="cloud",result="delivered",type="http"})") == 1 &&
           upstream.received().size() == 4;
  }, std::chrono::seconds(30)));
  const auto received = upstream.received();
  REQUIRE(received.size() == 4);
  for (const auto& r : received) {
    CHECK(r.key == received[0].key);
    CHECK(r.body == "{\"n\":1}\n{\"n\":2}\n");
  }
  CHECK(wait_until([&] {
    return metric_value(scrape(metrics), R"(tank_output_batches_total{output="cloud",result="retried",type="http"})") == 3;
  }));
  CHECK(tank.stop() == 0);
  const std::string err = tank.process().err();
  CHECK(err.find("timed out") != std::string::npos);
  CHECK(dead_letters_in(dir / "data").empty());
}

TEST_CASE("outputs.http fault run: 100k records while the upstream fails in every way and tank is kill -9'd "
          "again and again (also through nginx)",
          "[failure][outputs][http]") {
  constexpr int kRecords = 100000;
  // Straight to the test server with max_in_flight 1 and 4, and once through nginx.
  const auto [in_flight, via_nginx] = GENERATE(std::pair{1u, false}, std::pair{4u, false}, std::pair{1u, true});
  INFO("max_in_flight = " << in_flight << (via_nginx ? ", through nginx" : ""));
  HttpUpstream upstream;
  std::optional<Nginx> nginx;
  if (via_nginx) {
    const std::string port = upstream.url().substr(upstream.url().rfind(':') + 1);
    nginx.emplace(std::stoi(port.substr(0, port.find('/'))));
  }
  upstream.chaos({.seed = 7 + in_flight,
                  .status_503 = 0.12,
                  .status_429 = 0.05,
                  .reset = 0.05,
                  .slow = 0.03,
                  .status_400 = 0.03,
                  .slow_delay = std::chrono::milliseconds(700)});
  TempDir dir;
  std::string text;
  for (int i = 0; i < kRecords; ++i) text += fmt::format(R"({{"n":{}}})", i) + "\n";
  write_file(dir / "in.ndjson", text);
  const auto config = write_test_config(
      dir, fmt::format("[[inputs.file]]\nname = \"src\"\npaths = [\"{}\"]\nformat = \"json\"\nread_from = \"beginning\"\n"
                       "poll_interval = \"50ms\"\n\n"
                       "[[outputs.http]]\nname = \"cloud\"\nurl = \"{}\"\nbatch_max_records = 1000\nlinger = \"0s\"\n"
                       "retry_initial = \"10ms\"\nretry_max = \"100ms\"\nbreaker_failures = 8\nbreaker_cooldown = \"200ms\"\n"
                       "response_timeout = \"500ms\"\nmax_in_flight = {}\n",
                       (dir / "in.ndjson").string(), via_nginx ? nginx->url() : upstream.url(), in_flight));
  std::string logs;
  // Killed right after an upstream's 200 (the narrow window), then at random moments.
  run_until_failpoint(config, "output.sent=4", logs);
  std::mt19937 random(std::random_device{}());
  int kills = 1;
  for (; kills < 8; ++kills) {
    TankProcess tank(config);
    tank.wait_running(dir / "data");
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + random() % 500));  // a random instant, not a sync
    tank.process().signal(SIGKILL);
    tank.process().wait();
    logs += tank.process().err() + "---- kill -9\n";
  }
  TankProcess tank(config);
  tank.wait_running(dir / "data");
  CHECK(wait_until([&] { return accounted(upstream, dir / "data") == kRecords; }, std::chrono::seconds(180)));
  CHECK(tank.stop() == 0);
  logs += tank.process().err();
  INFO(logs.substr(logs.size() > 20000 ? logs.size() - 20000 : 0));

  // Every repeated key carried identical content; every failure kind happened.
  std::map<std::string, std::string> content;
  std::map<unsigned, int> answers;
  std::set<std::string> refused_keys;
  std::size_t repeated = 0;
  for (const auto& r : upstream.received()) {
    auto [it, fresh] = content.emplace(r.key, r.body);
    if (!fresh) {
      ++repeated;
      CHECK(it->second == r.body);
    }
    ++answers[r.answered];
    if (r.answered == 400) refused_keys.insert(r.key);
  }
  CHECK(repeated > 0);
  for (unsigned status : {0u, 200u, 400u, 429u, 503u}) CHECK(answers[status] > 0);
  // The permanent failures are in the dead-letter store with the status and the body.
  const auto letters = letters_of(dir / "data");
  CHECK(!letters.empty());
  for (const auto& d : letters) {
    CHECK(d.letter.reason == "upstream_rejected");
    CHECK(d.letter.detail == "output \"cloud\": HTTP 400 Bad Request: refused by the chaos upstream");
  }
  CHECK(letters.size() <= refused_keys.size() * 1000);
  CHECK(kills == 8);
}
