// `tank run` as a user runs it: start, endpoints, Prometheus' own checker, signals, the data
// directory, and the queue commands against a running agent.

#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <fstream>

#include <fmt/format.h>

#include "queue/queue.hpp"
#include "support/http_upstream.hpp"
#include "support/input_helpers.hpp"
#include "support/mosquitto.hpp"
#include "support/queue_helpers.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

ProcessResult tank_cmd(std::vector<std::string> args) {
  args.insert(args.begin(), tank_binary());
  return run(std::move(args));
}

// Stores `batch` in the queue of `data_dir`, as an earlier run of tank would have.
void store_earlier_records(const std::filesystem::path& data_dir, const queue::EncodedRecords& batch) {
  ManualClock clock;
  auto options = small_queue(data_dir / "queue", 1ULL << 30);
  options.consumers = {};
  auto q = queue::Queue::open(options, clock, nullptr);
  REQUIRE(q->append(batch).ok());
}

// `promtool check metrics` on a scrape; returns promtool's exit code and output.
ProcessResult promtool_check(const TempDir& dir, const std::string& exposition) {
  write_file(dir / "scrape.txt", exposition);
  return run({"/bin/sh", "-c", "promtool check metrics < " + (dir / "scrape.txt").string() + " 2>&1"});
}


// A prefix for TankProcess that runs tank under the host name `host`: in a UTS namespace of its
// own (unshare(1)), so the machine's host name stays as it is.
std::vector<std::string> as_host(const std::string& host) {
  return {"/usr/bin/unshare", "--uts", "/bin/sh", "-c", "hostname \"$0\" && exec \"$@\"", host};
}

// Whether this machine lets a test rename the host for one process (unshare --uts needs root or
// CAP_SYS_ADMIN).
bool can_rename_host() {
  if (!std::filesystem::exists("/usr/bin/unshare")) return false;
  auto argv = as_host("tank-probe");
  argv.push_back("/bin/true");
  return run(argv).exit_code == 0;
}

}  // namespace

TEST_CASE("tank runs, serves its endpoints, passes promtool, and stops cleanly on SIGTERM", "[agent]") {
  TempDir dir;
  auto config = write_test_config(dir);
  TankProcess agent(config);
  std::string address = agent.wait_running(dir / "data");

  auto ready = http_get(address, "/readyz");
  REQUIRE(ready);
  CHECK(ready->status == 200);
  CHECK(ready->body == "ready\n");
  auto health = http_get(address, "/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  auto missing = http_get(address, "/nope");
  REQUIRE(missing);
  CHECK(missing->status == 404);

  std::string metrics = scrape(address);
  CHECK(metric_value(metrics, "tank_queue_records") == 0);
  CHECK(metric_value(metrics, "tank_queue_disk_limit_bytes") == 1ULL << 30);
  CHECK(metric_value(metrics, "tank_queue_damaged_recoveries_total") == 0);
  CHECK(contains(metrics, "tank_build_info{"));
  CHECK(metric_value(metrics, "process_resident_memory_bytes").value_or(0) > 0);
  auto check = promtool_check(dir, metrics);
  INFO(check.out);
  CHECK(check.exit_code == 0);

  // SIGHUP is not fatal.
  agent.process().signal(SIGHUP);
  CHECK(wait_until([&] { return contains(agent.process().err(), "SIGHUP received"); }));
  CHECK(agent.process().running());

  auto code = agent.stop();
  REQUIRE(code);
  CHECK(*code == 0);
  CHECK(contains(read_file(dir / "data" / "run.json"), "\"state\":\"stopped\""));
  CHECK(contains(agent.process().err(), "SIGTERM received: stopping"));
}

TEST_CASE("a configuration error exits 2 before anything is opened", "[agent]") {
  TempDir dir;
  auto config = write_test_config(dir, "[queue]\nfsync = \"sometimes\"\n");
  auto r = tank_cmd({"run", "-c", config.string()});
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "queue.fsync: expected one of"));
  CHECK_FALSE(std::filesystem::exists(dir / "data"));
}

TEST_CASE("a data_dir that cannot be created gives one line naming it and exits 1", "[agent]") {
  TempDir dir;
  write_file(dir / "a-file", "x");
  write_file(dir / "tank.toml", "[agent]\ndata_dir = \"" + (dir / "a-file" / "data").string() +
                                    "\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n");
  auto r = tank_cmd({"run", "-c", (dir / "tank.toml").string()});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, "cannot create data_dir " + (dir / "a-file" / "data").string() + ": Not a directory"));
  CHECK(contains(r.err, "set agent.data_dir to a writable directory"));
}

TEST_CASE("a data_dir that cannot be written gives one line naming it and exits 1", "[agent]") {
  TempDir dir;
  std::filesystem::create_directories(dir / "data");
  // Immutable: not even root may create a file in it (root ignores permission bits).
  REQUIRE(run({"/usr/bin/chattr", "+i", (dir / "data").string()}).exit_code == 0);
  auto config = write_test_config(dir);
  auto r = tank_cmd({"run", "-c", config.string()});
  run({"/usr/bin/chattr", "-i", (dir / "data").string()});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, "cannot write in data_dir " + (dir / "data").string() + ": Operation not permitted"));
}

TEST_CASE("a second tank on the same data_dir is refused", "[agent]") {
  TempDir dir;
  auto config = write_test_config(dir);
  TankProcess first(config);
  first.wait_running(dir / "data");
  auto second = tank_cmd({"run", "-c", config.string()});
  CHECK(second.exit_code == 1);
  CHECK(contains(second.err, "is locked by another running tank (pid " + std::to_string(first.process().pid()) + ")"));
  CHECK(first.process().running());
}

TEST_CASE("a metrics port in use is a clear error", "[agent]") {
  TempDir dir;
  auto config = write_test_config(dir);
  TankProcess first(config);
  std::string address = first.wait_running(dir / "data");
  TempDir other;
  write_file(other / "tank.toml", "[agent]\ndata_dir = \"" + (other / "data").string() + "\"\n[metrics]\nlisten = \"" +
                                      address + "\"\n");
  auto r = tank_cmd({"run", "-c", (other / "tank.toml").string()});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, "cannot listen on " + address + ": Address already in use"));
}

TEST_CASE("a damaged queue is moved aside at start and tank runs", "[agent][recovery]") {
  TempDir dir;
  auto config = write_test_config(dir);
  std::filesystem::create_directories(dir / "data" / "queue");
  write_file(dir / "data" / "queue" / "data.mdb", std::string(100000, '\x5a'));
  TankProcess agent(config);
  std::string address = agent.wait_running(dir / "data");
  std::string metrics = scrape(address);
  CHECK(metric_value(metrics, "tank_queue_damaged_recoveries_total") == 1);
  std::string err = agent.process().err();
  CHECK(contains(err, "the queue in " + (dir / "data" / "queue").string() + " is damaged"));
  CHECK(contains(err, "moved it to " + (dir / "data" / "queue.damaged-").string()));
  bool found = false;
  for (const auto& e : std::filesystem::directory_iterator(dir / "data")) {
    found = found || e.path().filename().string().rfind("queue.damaged-", 0) == 0;
  }
  CHECK(found);
  CHECK(agent.stop() == 0);
}

TEST_CASE("tank queue stats and peek read the queue while the agent runs", "[agent][queue]") {
  TempDir dir;
  auto config = write_test_config(dir);
  {
    ManualClock clock;
    queue::EncodedRecords b;
    queue::Attribute attrs[] = {{"topic", "plant/1"}};
    b.add("plant", clock.wall_ns(), "{\"temp\":21.5}", attrs);
    b.add("plant", clock.wall_ns(), std::string("\x00\xff\x01", 3));
    b.add("logs", clock.wall_ns(), "line three");
    store_earlier_records(dir / "data", b);
  }
  TankProcess agent(config);
  agent.wait_running(dir / "data");

  auto peek = tank_cmd({"queue", "peek", "2", "--json", "-c", config.string()});
  INFO(peek.err);
  CHECK(peek.exit_code == 0);
  CHECK(peek.out == "{\"seq\":1,\"ingest_time\":\"2023-11-14T22:13:20.000Z\",\"input\":\"plant\",\"attributes\":"
                    "{\"topic\":\"plant/1\"},\"payload\":\"{\\\"temp\\\":21.5}\"}\n"
                    "{\"seq\":2,\"ingest_time\":\"2023-11-14T22:13:20.000Z\",\"input\":\"plant\",\"attributes\":{},"
                    "\"payload_base64\":\"AP8B\"}\n");
  auto human = tank_cmd({"queue", "peek", "-c", config.string()});
  CHECK(human.exit_code == 0);
  CHECK(contains(human.out, "#3 2023-11-14T22:13:20.000Z input=logs 10 B: line three"));
  CHECK(contains(human.out, "#2 2023-11-14T22:13:20.000Z input=plant 3 B: \\x00\\xff\\x01"));

  auto stats = tank_cmd({"queue", "stats", "--json", "-c", config.string()});
  CHECK(stats.exit_code == 0);
  CHECK(contains(stats.out, "\"records\":3"));
  CHECK(contains(stats.out, "\"disk_limit_bytes\":1073741824"));
  auto text = tank_cmd({"queue", "stats", "--data-dir", (dir / "data").string()});
  CHECK(text.exit_code == 0);
  CHECK(contains(text.out, "records    3 ("));

  auto verify = tank_cmd({"queue", "verify", "-c", config.string()});
  CHECK(verify.exit_code == 0);
  CHECK(contains(verify.out, ": sound"));
  CHECK(agent.stop() == 0);
}

TEST_CASE("queue commands on a data_dir without a queue fail clearly", "[agent][queue]") {
  TempDir dir;
  auto r = tank_cmd({"queue", "stats", "--data-dir", (dir / "none").string()});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, "there is no queue in " + (dir / "none" / "queue").string()));
}

TEST_CASE("after kill -9 tank restarts with its records and after a reboot it checks every page", "[agent][recovery]") {
  TempDir dir;
  auto config = write_test_config(dir);
  store_earlier_records(dir / "data", batch_of(payloads(100), ManualClock()));
  {
    TankProcess agent(config);
    agent.wait_running(dir / "data");
    agent.process().signal(SIGKILL);
    agent.process().wait();
  }
  CHECK(contains(read_file(dir / "data" / "run.json"), "\"state\":\"running\""));
  {
    TankProcess agent(config);
    std::string address = agent.wait_running(dir / "data");
    CHECK(metric_value(scrape(address), "tank_queue_records") == 100);
    CHECK_FALSE(contains(agent.process().err(), "checking every page"));
    agent.process().signal(SIGKILL);
    agent.process().wait();
  }
  // Pretend the machine rebooted since: another boot id in run.json.
  std::string state = read_file(dir / "data" / "run.json");
  auto pos = state.find("\"boot_id\":\"");
  REQUIRE(pos != std::string::npos);
  state.replace(pos + 11, 8, "00000000");
  write_file(dir / "data" / "run.json", state);
  {
    TankProcess agent(config);
    std::string address = agent.wait_running(dir / "data");
    CHECK(contains(agent.process().err(), "checking every page of the queue: the previous run did not stop and the "
                                         "machine restarted since"));
    CHECK(metric_value(scrape(address), "tank_queue_records") == 100);
    agent.process().signal(SIGKILL);
    agent.process().wait();
  }
  // Runs that keep ending without stopping (a crash that repeats may come from damaged pages)
  // are followed by a full check too.
  TankProcess agent(config);
  agent.wait_running(dir / "data");
  CHECK(contains(agent.process().err(), "checking every page of the queue: the last 3 runs ended without stopping"));
  CHECK(agent.stop() == 0);
  CHECK(contains(read_file(dir / "data" / "run.json"), "\"unclean_exits\":0"));
}

TEST_CASE("the embedded default configuration takes JSON over HTTP on loopback and archives it in the state dir",
          "[agent][default]") {
  TempDir dir;
  // The default as printed, on free ports (the fixed ones may be taken on this machine).
  auto printed = run({tank_binary(), "check", "--print-default"});
  REQUIRE(printed.exit_code == 0);
  std::string config = printed.out;
  const int metrics_port = free_tcp_port();
  const int ingest_port = free_tcp_port();
  for (const auto& [from, to] : {std::pair{std::string("127.0.0.1:9464"), "127.0.0.1:" + std::to_string(metrics_port)},
                                 std::pair{std::string("127.0.0.1:9880"), "127.0.0.1:" + std::to_string(ingest_port)}}) {
    REQUIRE(config.find(from) != std::string::npos);
    for (auto at = config.find(from); at != std::string::npos; at = config.find(from, at + to.size())) {
      config.replace(at, from.size(), to);
    }
  }
  write_file(dir / "default.toml", config);
  TankProcess tank(dir / "default.toml", {{"STATE_DIRECTORY", (dir / "state").string()}});
  tank.wait_running(dir / "state");
  auto r = http_request("127.0.0.1:" + std::to_string(ingest_port), "POST", "/",
                        R"({"device":"d1","temp":21.5})" "\n" R"({"device":"d2","temp":19.0})" "\n");
  INFO(tank.process().err());
  REQUIRE(r);
  CHECK(r->status == 200);
  std::string archived;
  CHECK(wait_until([&] {
    archived.clear();
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir / "state" / "archive", ec)) {
      if (e.path().filename().string().starts_with("archive-") && e.path().string().ends_with(".ndjson.zst")) {
        archived += decompress_body("zstd", read_file(e.path()));
      }
    }
    return archived.find("\"d2\"") != std::string::npos;
  }));
  CHECK(archived == "{\"device\":\"d1\",\"temp\":21.5}\n{\"device\":\"d2\",\"temp\":19.0}\n");
  CHECK(tank.stop() == 0);
}

TEST_CASE("the agent id of the first start is kept in data_dir/agent-id: a batch retried after the host was renamed "
          "keeps its idempotency key, and agent.id replaces the id with a warning",
          "[agent][identity]") {
  const bool rename = can_rename_host();
  if (!rename) WARN("unshare --uts is not permitted here: the host keeps its name, the id file is written beforehand");
  TempDir dir;
  const auto data = dir / "data";
  HttpUpstream upstream;
  using R = HttpUpstream::Reply;
  upstream.script(std::vector<R>(100000, R{.status = 503}));
  const std::string body = fmt::format(
      "[agent]\ndata_dir = \"{}\"\nlog_format = \"text\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n"
      "[[inputs.tcp]]\nname = \"plant\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
      "[[outputs.http]]\nname = \"cloud\"\nurl = \"{}\"\nlinger = \"0s\"\nretry_initial = \"10ms\"\n"
      "retry_max = \"50ms\"\nbreaker_failures = 1000000\n",
      data.string(), upstream.url());
  write_file(dir / "tank.toml", body);
  auto start = [&](const std::string& host) {
    return std::make_unique<TankProcess>(dir / "tank.toml", std::map<std::string, std::string>{},
                                         rename ? as_host(host) : std::vector<std::string>{});
  };
  auto send = [&](const std::string& line) {
    int fd = tcp_connect(input_address(data, "plant"));
    REQUIRE(fd >= 0);
    REQUIRE(send_all(fd, line + "\n"));
    ::close(fd);
  };

  // tank check reads the configuration only: no data directory, no id stored.
  CHECK(tank_cmd({"check", "-c", (dir / "tank.toml").string()}).exit_code == 0);
  CHECK_FALSE(std::filesystem::exists(data));

  // First start on host-a: its host name is the id, stored; the batch is refused (503) and retried.
  if (!rename) {
    std::filesystem::create_directories(data);
    write_file(data / "agent-id", "host-a\n");
  }
  auto tank = start("host-a");
  tank->wait_running(data);
  send(R"({"n":1})");
  REQUIRE(wait_until([&] { return upstream.received().size() >= 2; }));
  const std::string key = upstream.received().front().key;
  CHECK(key.starts_with("host-a/cloud/"));
  CHECK(tank->stop() == 0);
  INFO(tank->process().err());
  CHECK(contains(tank->process().err(), "running: agent id \"host-a\""));
  if (rename) CHECK(contains(tank->process().err(), "agent id \"host-a\" (the host name) stored in " + (data / "agent-id").string()));
  CHECK(read_file(data / "agent-id") == "host-a\n");
  for (const auto& r : upstream.received()) CHECK(r.key == key);

  // The host is renamed host-b: the same batch is sent again with the same key, and delivered.
  upstream.script({});
  const std::size_t before = upstream.received().size();
  tank = start("host-b");
  tank->wait_running(data);
  REQUIRE(wait_until([&] {
    const auto received = upstream.received();
    return received.size() > before && received.back().answered == 200;
  }));
  CHECK(upstream.received().back().key == key);
  CHECK(upstream.received().back().body == "{\"n\":1}\n");
  CHECK(tank->stop() == 0);
  INFO(tank->process().err());
  CHECK(contains(tank->process().err(), "running: agent id \"host-a\""));
  if (rename) CHECK(contains(tank->process().err(), "not the host name \"host-b\""));
  CHECK_FALSE(contains(tank->process().err(), "warn  agent:"));

  // agent.id set: it wins, the change is a warning, and it is stored.
  write_file(dir / "tank.toml", "[agent]\nid = \"gw-7\"\n" + body.substr(std::string("[agent]\n").size()));
  tank = start("host-b");
  tank->wait_running(data);
  send(R"({"n":2})");
  REQUIRE(wait_until([&] { return upstream.received().back().body == "{\"n\":2}\n"; }));
  CHECK(upstream.received().back().key.starts_with("gw-7/cloud/"));
  CHECK(tank->stop() == 0);
  INFO(tank->process().err());
  CHECK(contains(tank->process().err(), "agent.id changed from \"host-a\" to \"gw-7\"; idempotency keys of batches "
                                        "sent before now differ"));
  CHECK(contains(tank->process().err(), "running: agent id \"gw-7\""));
  CHECK(read_file(data / "agent-id") == "gw-7\n");

  // A damaged id file: a warning, the host name (or agent.id) instead, and tank runs.
  write_file(dir / "tank.toml", body);
  write_file(data / "agent-id", "not an id!\n");
  tank = start("host-c");
  tank->wait_running(data);
  CHECK(tank->stop() == 0);
  INFO(tank->process().err());
  CHECK(contains(tank->process().err(), (data / "agent-id").string() + " does not hold an agent id (it holds \"not an "
                                        "id!?\""));
  if (rename) {
    CHECK(contains(tank->process().err(), "running: agent id \"host-c\""));
    CHECK(read_file(data / "agent-id") == "host-c\n");
  }
}
