// TCP -> queue -> outputs.kafka against librdkafka's mock cluster (issue 20's figure), and the
// mock cluster's own ceiling measured in the same run: a bare librdkafka producer (idempotent,
// acks = all, as tank's) sending the same records into the same cluster.
//
//   kafka_bench --tank build/agent/tank --mock build/tests/kafka_mock_cluster --dir /work/kbench
//     [--records 3000000] [--size 60] [--partitions 3] [--repeat 3] [--batch 10000] [--in-flight 4]
//     [--rtt MS]   every broker answers MS later (rd_kafka_mock_broker_set_rtt): a distant cluster
//   kafka_bench ... --agents 20 [--per-agent 50000] --partitions 24
//     the fleet: 20 tank processes (agent ids gw-0...) into one cluster, aggregate records/s, and
//     every record looked for in the cluster afterwards (use enough partitions: the mock keeps
//     ~5 MB of each)
//
// Output: one Markdown row per run (records/s, CPU-s per million records of tank or of the bare
// producer, peak RSS of tank). The mock keeps only the last ~5 MB of each partition: the figures
// are the cluster's intake, not what a consumer could read back.

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <thread>
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <librdkafka/rdkafka.h>

#include "bench_support.hpp"

using namespace bench;
using Clock = std::chrono::steady_clock;

namespace {

std::string strings_replace(std::string text, const std::string& what, const std::string& with) {
  if (const auto at = text.find(what); at != std::string::npos) text.replace(at, what.size(), with);
  return text;
}

struct Settings {
  std::string tank, mock;
  fs::path dir;
  std::uint64_t records = 3'000'000;
  std::size_t size = 60;
  int partitions = 3;
  int repeat = 3;
  std::size_t batch = 10000;
  int in_flight = 4;  // outputs.kafka's max_in_flight (its default)
  int rtt_ms = 0;     // every broker answers this much later (a link to a distant cluster)
};

// The mock cluster as a child: its bootstrap list from its first line; closing its stdin ends it.
struct Mock {
  pid_t pid = -1;
  int to = -1;
  int from = -1;
  std::string buffer;
  std::string bootstraps;
  Mock(const Settings& s) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) die("pipe failed");
    const std::string topic = fmt::format("t:{}:3", s.partitions);
    pid = ::fork();
    if (pid == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::execl(s.mock.c_str(), s.mock.c_str(), "--brokers", "3", "--topic", topic.c_str(), "--scan-timeout-ms", "300000",
              nullptr);
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    to = in[1];
    from = out[0];
    const std::string line = read_line();
    if (!line.starts_with("bootstraps=")) die("the mock cluster did not start: " + line);
    bootstraps = line.substr(11);
    if (s.rtt_ms > 0 && command(fmt::format("rtt -1 {}", s.rtt_ms)) != "ok") die("the mock cluster refused rtt");
  }
  std::string read_line() {
    for (;;) {
      if (const auto nl = buffer.find('\n'); nl != std::string::npos) {
        std::string line = buffer.substr(0, nl);
        buffer.erase(0, nl + 1);
        return line;
      }
      char chunk[65536];
      const ssize_t n = ::read(from, chunk, sizeof chunk);
      if (n <= 0) die("the mock cluster exited");
      buffer.append(chunk, static_cast<std::size_t>(n));
    }
  }
  // Sends a command; calls `line` with each line before the answer, returns the answer.
  std::string command(const std::string& text, const std::function<void(const std::string&)>& line = {}) {
    write_all(to, text + "\n");
    for (;;) {
      std::string l = read_line();
      if (l.starts_with("ok") || l.starts_with("error")) return l;
      if (line) line(l);
    }
  }
  ~Mock() {
    ::close(from);
    ::close(to);
    int status = 0;
    ::waitpid(pid, &status, 0);
  }
};

std::string record(std::uint64_t i, std::size_t size) {
  std::string r = fmt::format("{{\"device\":\"d{}\",\"n\":{},\"pad\":\"", i % 100, i);
  if (r.size() + 2 < size) r.append(size - r.size() - 2, 'p');
  return r + "\"}";
}

double self_cpu() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

struct Row {
  double rate = 0, cpu_per_m = 0, rss_mib = 0;
};

// The bare producer: what the mock cluster takes from one idempotent producer.
Row bare(const Settings& s, const Mock& mock) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  const std::pair<const char*, std::string> props[] = {
      {"bootstrap.servers", mock.bootstraps}, {"enable.idempotence", "true"}, {"acks", "all"},
      {"linger.ms", "5"}, {"queue.buffering.max.messages", std::to_string(s.batch)},
      {"compression.codec", "zstd"}};
  for (const auto& [k, v] : props) {
    if (rd_kafka_conf_set(conf, k, v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) die(err);
  }
  static std::uint64_t delivered, failed;
  delivered = failed = 0;
  rd_kafka_conf_set_dr_msg_cb(conf, [](rd_kafka_t*, const rd_kafka_message_t* m, void*) {
    (m->err ? failed : delivered)++;
  });
  rd_kafka_t* p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (!p) die(err);
  const double cpu0 = self_cpu();
  const auto start = Clock::now();
  for (std::uint64_t i = 0; i < s.records; ++i) {
    const std::string v = record(i, s.size);
    const std::string key = fmt::format("d{}", i % 100);
    for (;;) {
      rd_kafka_vu_t vus[4];
      vus[0].vtype = RD_KAFKA_VTYPE_TOPIC;
      vus[0].u.cstr = "t";
      vus[1].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
      vus[1].u.i = RD_KAFKA_MSG_F_COPY;
      vus[2].vtype = RD_KAFKA_VTYPE_VALUE;
      vus[2].u.mem.ptr = const_cast<char*>(v.data());
      vus[2].u.mem.size = v.size();
      vus[3].vtype = RD_KAFKA_VTYPE_KEY;
      vus[3].u.mem.ptr = const_cast<char*>(key.data());
      vus[3].u.mem.size = key.size();
      rd_kafka_error_t* error = rd_kafka_produceva(p, vus, 4);
      const auto e = error == nullptr ? RD_KAFKA_RESP_ERR_NO_ERROR : rd_kafka_error_code(error);
      if (error != nullptr) rd_kafka_error_destroy(error);
      if (e == RD_KAFKA_RESP_ERR_NO_ERROR) break;
      if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) die(std::string("produce: ") + rd_kafka_err2str(e));
      rd_kafka_poll(p, 1);
    }
    rd_kafka_poll(p, 0);
  }
  rd_kafka_flush(p, 60000);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu = self_cpu() - cpu0;
  rd_kafka_destroy(p);
  if (delivered != s.records) die(fmt::format("bare producer: {} delivered, {} failed", delivered, failed));
  return {static_cast<double>(s.records) / seconds, cpu / (static_cast<double>(s.records) / 1e6), 0};
}

Row through_tank(const Settings& s, const Mock& mock) {
  const fs::path dir = s.dir / "run";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string brokers;
  for (std::size_t at = 0; at <= mock.bootstraps.size();) {
    const auto comma = std::min(mock.bootstraps.find(',', at), mock.bootstraps.size());
    brokers += (brokers.empty() ? "\"" : ", \"") + mock.bootstraps.substr(at, comma - at) + "\"";
    at = comma + 1;
  }
  const std::string pipeline = fmt::format(
      "[[inputs.tcp]]\nname = \"bench\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
      "[[outputs.kafka]]\nname = \"bench\"\nbrokers = [{}]\ntopic = \"t\"\nkey_field = \"device\"\n"
      "batch_max_records = {}\nlinger = \"10ms\"\nmax_in_flight = {}\n",
      brokers, s.batch, s.in_flight);
  RunningTank t = start_tank(s.tank, dir, dir / "data", bench_config(dir / "data", "interval", pipeline));
  std::string data;
  data.reserve(s.records * (s.size + 1));
  for (std::uint64_t i = 0; i < s.records; ++i) data += record(i, s.size) + "\n";
  const double cpu0 = cpu_seconds(t.process->pid());
  const auto start = Clock::now();
  const int fd = connect_tcp(t.input_address);
  write_all(fd, data);
  ::close(fd);
  const bool done = wait_for([&] {
    return metric_sum(scrape_metrics(t.metrics_address), "tank_output_records_total",
                      {"output=\"bench\"", "result=\"delivered\""}) >= static_cast<double>(s.records);
  }, std::chrono::seconds(600));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu = cpu_seconds(t.process->pid()) - cpu0;
  const double rss = static_cast<double>(status_bytes(t.process->pid(), "VmHWM")) / 1048576.0;
  t.process->stop();
  if (!done) die("tank did not deliver every record; see " + (dir / "tank.log").string());
  return {static_cast<double>(s.records) / seconds, cpu / (static_cast<double>(s.records) / 1e6), rss};
}

// The fleet: `agents` tank processes (agent ids gw-0...), each fed `per_agent` records over TCP at
// once, into one cluster; timed until every one counts them delivered; then every record is
// looked for in the cluster (a record is {"device":"gw-<a>-d<k % 10>","n":<k>}).
void fleet(const Settings& s, int agents, std::uint64_t per_agent) {
  Mock mock(s);
  std::string brokers;
  for (std::size_t at = 0; at <= mock.bootstraps.size();) {
    const auto comma = std::min(mock.bootstraps.find(',', at), mock.bootstraps.size());
    brokers += (brokers.empty() ? "\"" : ", \"") + mock.bootstraps.substr(at, comma - at) + "\"";
    at = comma + 1;
  }
  std::vector<RunningTank> tanks;
  for (int a = 0; a < agents; ++a) {
    const fs::path dir = s.dir / fmt::format("gw-{}", a);
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::string config = bench_config(dir / "data", "interval",
                                      fmt::format("[[inputs.tcp]]\nname = \"bench\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
                                                  "[[outputs.kafka]]\nname = \"bench\"\nbrokers = [{}]\ntopic = \"t\"\n"
                                                  "key_field = \"device\"\nbatch_max_records = {}\nlinger = \"10ms\"\n",
                                                  brokers, s.batch),
                                      "256MiB");
    config = strings_replace(config, "id = \"bench\"", fmt::format("id = \"gw-{}\"", a));
    tanks.push_back(start_tank(s.tank, dir, dir / "data", config));
  }
  std::vector<std::string> data(static_cast<std::size_t>(agents));
  for (int a = 0; a < agents; ++a) {
    for (std::uint64_t k = 0; k < per_agent; ++k) {
      data[static_cast<std::size_t>(a)] += fmt::format("{{\"device\":\"gw-{}-d{}\",\"n\":{}}}\n", a, k % 10, k);
    }
  }
  const auto start = Clock::now();
  std::vector<std::thread> senders;
  for (int a = 0; a < agents; ++a) {
    senders.emplace_back([&, a] {
      const int fd = connect_tcp(tanks[static_cast<std::size_t>(a)].input_address);
      write_all(fd, data[static_cast<std::size_t>(a)]);
      ::close(fd);
    });
  }
  for (auto& t : senders) t.join();
  const bool done = wait_for([&] {
    for (const auto& t : tanks) {
      if (metric_sum(scrape_metrics(t.metrics_address), "tank_output_records_total",
                     {"output=\"bench\"", "result=\"delivered\""}) < static_cast<double>(per_agent)) {
        return false;
      }
    }
    return true;
  }, std::chrono::seconds(900));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (auto& t : tanks) t.process->stop();
  if (!done) die("not every agent delivered its records");
  // Every record in the cluster: value hex-decoded, {"device":"gw-<a>-...","n":<k>}.
  std::vector<std::vector<bool>> seen(static_cast<std::size_t>(agents), std::vector<bool>(per_agent, false));
  std::uint64_t messages = 0;
  const std::string answer = mock.command("dump t", [&](const std::string& line) {
    const auto at = line.find(" value=");
    if (at == std::string::npos) return;
    std::string value;
    for (std::size_t i = at + 7; i + 1 < line.size(); i += 2) {
      value.push_back(static_cast<char>(std::stoi(line.substr(i, 2), nullptr, 16)));
    }
    ++messages;
    int a = -1;
    std::uint64_t k = 0;
    if (std::sscanf(value.c_str(), "{\"device\":\"gw-%d-d%*d\",\"n\":%lu}", &a, &k) == 2 && a >= 0 && a < agents &&
        k < per_agent) {
      seen[static_cast<std::size_t>(a)][k] = true;
    }
  });
  if (!answer.starts_with("ok")) die("dump failed: " + answer);
  std::uint64_t missing = 0;
  for (const auto& v : seen) missing += static_cast<std::uint64_t>(std::count(v.begin(), v.end(), false));
  const double total = static_cast<double>(agents) * static_cast<double>(per_agent);
  fmt::print("| {} agents x {} records | {:.0f} records/s in all | {:.1f} s | {} messages in the cluster | {} missing |\n",
             agents, per_agent, total / seconds, seconds, messages, missing);
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  int agents = 0;  // > 0: the fleet run instead
  std::uint64_t per_agent = 50000;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&] { return i + 1 < argc ? std::string(argv[++i]) : (die("missing value for " + a), std::string()); };
    if (a == "--tank") s.tank = value();
    else if (a == "--mock") s.mock = value();
    else if (a == "--dir") s.dir = value();
    else if (a == "--records") s.records = std::stoull(value());
    else if (a == "--size") s.size = std::stoul(value());
    else if (a == "--partitions") s.partitions = std::stoi(value());
    else if (a == "--repeat") s.repeat = std::stoi(value());
    else if (a == "--batch") s.batch = std::stoul(value());
    else if (a == "--in-flight") s.in_flight = std::stoi(value());
    else if (a == "--rtt") s.rtt_ms = std::stoi(value());
    else if (a == "--agents") agents = std::stoi(value());
    else if (a == "--per-agent") per_agent = std::stoull(value());
    else die("unknown argument " + a);
  }
  if (s.tank.empty() || s.mock.empty() || s.dir.empty()) die("usage: kafka_bench --tank PATH --mock PATH --dir DIR");
  fs::create_directories(s.dir);
  if (agents > 0) {
    fleet(s, agents, per_agent);
    return 0;
  }
  fmt::print("| run | records | bare producer records/s | its CPU-s per M | tank records/s | tank CPU-s per M | tank peak RSS MiB |\n"
             "|---|---|---|---|---|---|---|\n");
  for (int r = 1; r <= s.repeat; ++r) {
    Row b, t;
    {
      Mock mock(s);
      b = bare(s, mock);
    }
    {
      Mock mock(s);
      t = through_tank(s, mock);
    }
    fmt::print("| {} | {} | {:.0f} | {:.2f} | {:.0f} | {:.2f} | {:.1f} |\n", r, s.records, b.rate, b.cpu_per_m, t.rate,
               t.cpu_per_m, t.rss_mib);
    std::fflush(stdout);
  }
}
