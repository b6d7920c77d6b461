// Input throughput, end to end: the real tank binary with one input and a disk queue, fed by
// a load generator in this process, timed until tank's metrics count every record committed.
//
//   input_bench --tank build/agent/tank --dir /work/ibench --kind tcp  [--connections 1,4]
//   input_bench --tank build/agent/tank --dir /work/ibench --kind http [--connections 1,4]
//   input_bench --tank build/agent/tank --dir /work/ibench --kind mqtt [--qos 0,1]
//   input_bench --tank build/agent/tank --dir /work/ibench --kind sparkplug [--qos 0,1]
//
// Every run starts a fresh tank (fresh data_dir) for each fsync mode in --fsync (default
// "interval"; "always,interval,never" for all). Figures: records/s from the first byte sent
// to the last record counted by tank_input_records_total, and tank's peak RSS (VmHWM).
//
// MQTT: a mosquitto started here on a free loopback port (persistence off), a publisher
// speaking MQTT 3.1.1 with tank's own packet codec (QoS 1 with a window of 1000 unacknowledged
// publications), and, as the ceiling, a "baseline" subscriber in this process that acknowledges
// each message on receipt without storing it (what mosquitto and the publisher allow).
//
// Sparkplug (--kind sparkplug): the same, with inputs.mqtt's format = "sparkplug_b"; the
// publisher sends one NBIRTH of 20 metrics with aliases 1-20, then --records NDATA messages of
// those 20 metrics by alias (Double, Float, Int32, Int64, Boolean, String; values vary with seq),
// each about 200 bytes. tank makes 20 records of each; the clock stops when it counts all of
// them. The baseline is the same subscriber as for mqtt, on the same messages.
//
// Payloads are NDJSON of about 60 bytes: {"ts":1700000000123,"id":"s-0042","v":23.517,"n":123}.
//
// --output http: an outputs.http named "bench" POSTs (zstd, batches of 10,000, linger 10ms) to a
// receiver in this process that answers 200 at once; the clock stops when tank counts every
// record delivered (tank_output_records_total{result="delivered"}), and the p50 and p99 of the
// delivery latency are printed (as the histogram buckets that hold them). --rate N paces the TCP
// senders to N records/s (e.g. 10 % of the flat-out rate, for latency). --sink-delay-ms D makes
// the receiver answer each batch D ms late (a distant upstream), --output-in-flight N sets the
// output's max_in_flight and --output-batch N its batch_max_records (default 10,000).
//
// --processor validate|aggregate|lua (TCP only) sets format = "json" and adds one processor named
// "bench": validate checks a 4-property JSON Schema before the commit (timed as above);
// aggregate groups by "id" (10,000 devices, each one record per second of event time), 10 s
// tumbling windows of "ts" (so 10 records per device and window), min/max/mean of "v" and "n", and the
// clock stops when tank_processor_records_in_total{processor="bench"} counts every record (the
// stage read, aggregated and committed them).
// --processor deadband|dedup (issue 22) send sensor-like records instead (sensor_payload: each
// id's value steps by 0.05 every 10 of its records) through a stage named "bench" after the queue,
// timed like aggregate: deadband watches "v" per "id" with percent = 0.5 (about 1 record in 20
// passes), dedup drops records whose ("id", "v") repeats within 10 minutes (9 in 10).
// --processor lua runs a 5-line script after the queue that renames "v" to "temp_f" and converts
// it from Celsius to Fahrenheit; the clock stops the same way (the stage read, transformed and
// committed every record).

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "bench_support.hpp"
#include "engine/run_state.hpp"
#include "inputs_mqtt/sparkplug/payload.hpp"
#include "mqtt/packets.hpp"

namespace fs = std::filesystem;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Clock = std::chrono::steady_clock;

using namespace bench;

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string part; std::getline(in, part, sep);) {
    if (!part.empty()) out.push_back(part);
  }
  return out;
}

// About 60 bytes each, all different. Event time advances 1 s per 10,000 records, so each of the
// 10,000 ids sends one record per second of event time.
std::string payload(std::uint64_t n) {
  return fmt::format(R"({{"ts":{},"id":"s-{:04d}","v":{}.{:03d},"n":{}}})", 1700000000000ULL + n / 10, n % 10000,
                     n % 97, n % 1000, n);
}

// "none", "validate", "aggregate", "deadband", "dedup" or "lua" (--processor).
std::string g_processor = "none";

// Records whose value moves slowly, as a sensor's: each of the 10,000 ids steps its "v" by 0.05
// every 10 of its records (event time 1 s per 10,000 records, as payload()).
std::string sensor_payload(std::uint64_t n) {
  const std::uint64_t step = (n / 100000) % 200;
  return fmt::format(R"({{"ts":{},"id":"s-{:04d}","v":{}.{:02d},"n":{}}})", 1700000000000ULL + n / 10, n % 10000,
                     20 + step / 20, (step % 20) * 5, n);
}

bool stage_processor() {
  return g_processor == "aggregate" || g_processor == "deadband" || g_processor == "dedup" || g_processor == "lua";
}
bool g_sparkplug = false;  // --kind sparkplug

// The NBIRTH (seq 0) and the NDATA messages (one per seq 1..255, 0) of --kind sparkplug.
std::string sparkplug_message(bool birth, std::uint64_t seq) {
  namespace sp = tank::sparkplug;
  sp::Payload p;
  p.timestamp_ms = 1700000000000 + seq;
  p.seq = seq % 256;
  for (int i = 0; i < 20; ++i) {
    sp::Metric m;
    if (birth) m.name = fmt::format("line3/motor{}/{}", i / 4, i % 4 == 0 ? "rpm" : i % 4 == 1 ? "temp" : i % 4 == 2 ? "running" : "state");
    m.alias = static_cast<std::uint64_t>(i + 1);
    switch (i % 4) {
      case 0: m.datatype = static_cast<std::uint32_t>(sp::DataType::int32); m.value = static_cast<std::int64_t>(1000 + seq % 500 + i); break;
      case 1: m.datatype = static_cast<std::uint32_t>(sp::DataType::float64); m.value = 20.0 + static_cast<double>(seq % 100) / 7.0; break;
      case 2: m.datatype = static_cast<std::uint32_t>(sp::DataType::boolean); m.value = seq % 2 == 0; break;
      default: m.datatype = static_cast<std::uint32_t>(sp::DataType::string); m.value = seq % 3 == 0 ? "running" : "idle"; break;
    }
    p.metrics.push_back(std::move(m));
  }
  return sp::encode(p);
}
// "none" or "http" (--output): with "http", an outputs.http named "bench" sends to g_sink_url, and
// the clock stops when it has delivered every record.
std::string g_output = "none";
std::string g_sink_url;
// --rate N: the TCP senders pace themselves to N records/s in total (10 ms steps); 0: flat out.
std::uint64_t g_rate = 0;
// --sink-delay-ms, --output-in-flight, --output-batch (see the top of this file).
unsigned g_sink_delay_ms = 0;
unsigned g_output_in_flight = 1;
unsigned g_output_batch = 10000;

// The upper bounds of the histogram buckets that hold the p50 and p99 of the output's delivery
// latency (tank_output_delivery_latency_seconds{output="bench"}).
std::string latency_quantiles(const std::string& metrics_address) {
  std::vector<std::pair<double, double>> buckets;  // le, cumulative count
  std::istringstream in(scrape_metrics(metrics_address));
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with("tank_output_delivery_latency_seconds_bucket{") ||
        line.find("output=\"bench\"") == std::string::npos) {
      continue;
    }
    const auto le = line.find("le=\"");
    if (le == std::string::npos) continue;
    const std::string bound = line.substr(le + 4, line.find('"', le + 4) - le - 4);
    buckets.emplace_back(bound == "+Inf" ? 1e300 : std::stod(bound), std::stod(line.substr(line.rfind(' ') + 1)));
  }
  if (buckets.empty() || buckets.back().second == 0) return "no latency samples";
  const double total = buckets.back().second;
  auto quantile = [&](double q) {
    for (const auto& [le, count] : buckets) {
      if (count >= q * total) return le >= 1e300 ? std::string("> the last bucket") : fmt::format("<= {} ms", le * 1000);
    }
    return std::string("?");
  };
  return fmt::format("delivery latency p50 {}, p99 {}", quantile(0.5), quantile(0.99));
}

// GET /metrics; the sum of the samples of tank_input_records_total with input="bench" (with
// --processor aggregate or lua: tank_processor_records_in_total of the processor "bench").
std::uint64_t records_counted(const std::string& metrics_address) {
  const std::string text = scrape_metrics(metrics_address);
  std::uint64_t total = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const bool counted =
        g_output == "http"
            ? line.starts_with("tank_output_records_total{") && line.find("output=\"bench\"") != std::string::npos &&
                  line.find("result=\"delivered\"") != std::string::npos
        : stage_processor()
            ? line.starts_with("tank_processor_records_in_total{") && line.find("processor=\"bench\"") != std::string::npos
            : line.starts_with("tank_input_records_total{") && line.find("input=\"bench\"") != std::string::npos;
    if (counted) {
      total += static_cast<std::uint64_t>(std::stod(line.substr(line.rfind(' ') + 1)));
    }
  }
  return total;
}

using Tank = RunningTank;

Tank start_tank(const std::string& binary, const fs::path& dir, const std::string& fsync, const std::string& input) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string pipeline = input;
  if (g_processor != "none") {
    pipeline += "format = \"json\"\n\n";
    if (g_processor == "validate") {
      std::ofstream(dir / "schema.json") << R"({"type": "object", "required": ["ts", "id", "v", "n"],
  "additionalProperties": false, "properties": {"ts": {"type": "integer", "minimum": 0},
  "id": {"type": "string", "pattern": "^s-[0-9]{4}$"}, "v": {"type": "number", "minimum": 0, "maximum": 100},
  "n": {"type": "integer", "minimum": 0}}})";
      pipeline += fmt::format("[[processors.validate]]\nname = \"bench\"\nschema = \"{}\"\n",
                              (dir / "schema.json").string());
    } else if (g_processor == "deadband") {
      pipeline += "[[processors.deadband]]\nname = \"bench\"\nfields = [\"v\"]\ngroup_by = [\"id\"]\npercent = 0.5\n";
    } else if (g_processor == "dedup") {
      pipeline += "[[processors.dedup]]\nname = \"bench\"\nfields = [\"id\", \"v\"]\nwindow = \"10m\"\n";
    } else if (g_processor == "lua") {
      std::ofstream(dir / "bench.lua") << "function process(record, attributes)\n"
                                          "  record.temp_f = record.v * 9 / 5 + 32\n"
                                          "  record.v = nil\n"
                                          "  return record\n"
                                          "end\n";
      pipeline += fmt::format("[[processors.lua]]\nname = \"bench\"\nscript = \"{}\"\n", (dir / "bench.lua").string());
    } else {
      pipeline += "[[processors.aggregate]]\nname = \"bench\"\nwindow = \"10s\"\ntime_field = \"ts\"\n"
                  "time_format = \"unix_ms\"\ngroup_by = [\"id\"]\n"
                  "fields = { v = [\"min\", \"max\", \"mean\"], n = [\"min\", \"max\", \"mean\"] }\n";
    }
  }
  if (g_output == "http") {
    pipeline += fmt::format("\n[[outputs.http]]\nname = \"bench\"\nurl = \"{}\"\nbatch_max_records = {}\n"
                            "linger = \"10ms\"\nmax_in_flight = {}\n",
                            g_sink_url, g_output_batch, g_output_in_flight);
  }
  return bench::start_tank(binary, dir, dir / "data",
                           bench_config(dir / "data", fsync, pipeline));
}

struct Result {
  double seconds = 0;
  std::uint64_t records = 0;
  std::uint64_t rss = 0;   // peak resident (VmHWM), LMDB's mapped pages included
  std::uint64_t anon = 0;  // resident anonymous memory at the end (RssAnon)
  double tank_cpu = -1;    // CPU seconds tank used during the run (user + system)
  double broker_cpu = -1;  // CPU seconds mosquitto used (MQTT)
};

// Waits until tank counted `n` records (or stopped counting for 10 s); the time since `start`.
Result finish(Tank& tank, std::uint64_t n, Clock::time_point start, double tank_cpu_at_start) {
  Result r;
  std::uint64_t last = 0;
  auto last_change = Clock::now();
  for (;;) {
    r.records = records_counted(tank.metrics_address);
    auto now = Clock::now();
    if (r.records >= n) break;
    if (r.records != last) {
      last = r.records;
      last_change = now;
    } else if (now - last_change > std::chrono::seconds(10)) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  r.rss = status_bytes(tank.process->pid(), "VmHWM");
  r.anon = status_bytes(tank.process->pid(), "RssAnon");
  r.tank_cpu = cpu_seconds(tank.process->pid()) - tank_cpu_at_start;
  return r;
}

// ---------------------------------------------------------------------------------------------

Result run_tcp(const std::string& binary, const fs::path& dir, const std::string& fsync, std::uint64_t n,
               int connections) {
  Tank tank = start_tank(binary, dir, fsync, "[[inputs.tcp]]\nname = \"bench\"\nlisten = \"127.0.0.1:0\"\n");
  const std::uint64_t each = n / static_cast<std::uint64_t>(connections);
  std::vector<std::string> data(static_cast<std::size_t>(connections));
  for (int c = 0; c < connections; ++c) {
    auto& d = data[static_cast<std::size_t>(c)];
    d.reserve(each * 64);
    const bool sensor = g_processor == "deadband" || g_processor == "dedup";
    for (std::uint64_t i = 0; i < each; ++i) {
      const std::uint64_t k = static_cast<std::uint64_t>(c) * each + i;
      (d += sensor ? sensor_payload(k) : payload(k)) += '\n';
    }
  }
  std::vector<int> fds;
  for (int c = 0; c < connections; ++c) fds.push_back(connect_tcp(tank.input_address));
  const double cpu0 = cpu_seconds(tank.process->pid());
  const auto start = Clock::now();
  std::vector<std::thread> senders;
  for (int c = 0; c < connections; ++c) {
    senders.emplace_back([&, c] {
      std::string_view d = data[static_cast<std::size_t>(c)];
      const int fd = fds[static_cast<std::size_t>(c)];
      if (g_rate == 0) {
        for (std::size_t off = 0; off < d.size(); off += 256 * 1024) write_all(fd, d.substr(off, 256 * 1024));
        return;
      }
      // Paced: every 10 ms, the lines due by then.
      const double per_step = static_cast<double>(g_rate) / static_cast<double>(connections) / 100.0;
      double due = 0;
      std::size_t off = 0;
      auto next = Clock::now();
      while (off < d.size()) {
        due += per_step;
        std::size_t end = off;
        for (; due >= 1 && end < d.size(); due -= 1) end = d.find('\n', end) + 1;
        if (end > off) write_all(fd, d.substr(off, end - off));
        off = end;
        next += std::chrono::milliseconds(10);
        std::this_thread::sleep_until(next);
      }
    });
  }
  for (auto& t : senders) t.join();
  Result r = finish(tank, each * static_cast<std::uint64_t>(connections), start, cpu0);
  if (g_output == "http") std::cout << latency_quantiles(tank.metrics_address) << "\n";
  for (int fd : fds) ::close(fd);
  return r;
}

Result run_http(const std::string& binary, const fs::path& dir, const std::string& fsync, std::uint64_t n,
                int connections, int body_records) {
  Tank tank = start_tank(binary, dir, fsync,
                         "[[inputs.http]]\nname = \"bench\"\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = \"4MiB\"\n");
  const std::uint64_t bodies_each = n / static_cast<std::uint64_t>(connections) / static_cast<std::uint64_t>(body_records);
  // A few different bodies per connection, reused (building them is not what is measured).
  std::vector<std::vector<std::string>> bodies(static_cast<std::size_t>(connections));
  for (int c = 0; c < connections; ++c) {
    for (int b = 0; b < 8; ++b) {
      std::string body;
      for (int i = 0; i < body_records; ++i) {
        (body += payload(static_cast<std::uint64_t>((c * 8 + b) * body_records + i))) += '\n';
      }
      bodies[static_cast<std::size_t>(c)].push_back(std::move(body));
    }
  }
  auto [host, port] = host_port(tank.input_address);
  std::atomic<std::uint64_t> refused{0};
  const double cpu0 = cpu_seconds(tank.process->pid());
  const auto start = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < connections; ++c) {
    clients.emplace_back([&, c, host = host, port = port] {
      asio::io_context io;
      beast::tcp_stream stream(io);
      stream.connect(asio::ip::tcp::endpoint(asio::ip::make_address(host), port));
      stream.socket().set_option(asio::ip::tcp::no_delay(true));
      beast::flat_buffer buffer;
      for (std::uint64_t i = 0; i < bodies_each;) {
        http::request<http::string_body> req{http::verb::post, "/", 11};
        req.set(http::field::host, "bench");
        req.set(http::field::content_type, "application/x-ndjson");
        req.body() = bodies[static_cast<std::size_t>(c)][i % 8];
        req.prepare_payload();
        http::write(stream, req);
        http::response<http::string_body> res;
        http::read(stream, buffer, res);
        if (res.result() == http::status::ok) {
          ++i;
        } else {
          ++refused;
          if (res.result() != http::status::service_unavailable) die(fmt::format("HTTP {}: {}", res.result_int(), res.body()));
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  // Every 200 came after the commit: the clock can stop here.
  Result r;
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  r.records = records_counted(tank.metrics_address);
  r.rss = status_bytes(tank.process->pid(), "VmHWM");
  r.anon = status_bytes(tank.process->pid(), "RssAnon");
  r.tank_cpu = cpu_seconds(tank.process->pid()) - cpu0;
  if (refused > 0) std::cerr << "  (" << refused << " bodies got 503 and were sent again)\n";
  return r;
}

// ---------------------------------------------------------------------------------------------
// MQTT

// Publishes n payloads at `qos` (QoS 1: at most `window` unacknowledged).
void publish(int port, std::uint64_t n, int qos, std::uint64_t window = 1000) {
  // Sparkplug: message 0 is the NBIRTH, then n NDATA messages.
  std::vector<std::string> ndata;
  if (g_sparkplug) {
    for (std::uint64_t seq = 0; seq < 256; ++seq) ndata.push_back(sparkplug_message(false, seq));
    ++n;
  }
  MqttConnection c(port, "bench-publisher", true);
  std::atomic<std::uint64_t> acked{0};
  std::thread reader;
  if (qos == 1) reader = count_pubacks(c, acked, n);
  std::string out;
  std::uint16_t id = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    if (qos == 1) {
      if (i - acked.load() >= window) {
        write_all(c.fd(), out);
        out.clear();
        while (i - acked.load() >= window) std::this_thread::yield();
      }
      if (++id == 0) id = 1;
    }
    if (!g_sparkplug) {
      out += tank::mqtt::encode_publish("bench/data", payload(i), qos, id, false, tank::mqtt::kVersion311);
    } else if (i == 0) {
      out += tank::mqtt::encode_publish("spBv1.0/bench/NBIRTH/edge", sparkplug_message(true, 0), qos, id, false,
                                        tank::mqtt::kVersion311);
    } else {
      out += tank::mqtt::encode_publish("spBv1.0/bench/NDATA/edge", ndata[i % 256], qos, id, false,
                                        tank::mqtt::kVersion311);
    }
    if (out.size() >= 64 * 1024) {
      write_all(c.fd(), out);
      out.clear();
    }
  }
  write_all(c.fd(), out);
  if (reader.joinable()) reader.join();
  write_all(c.fd(), tank::mqtt::encode_disconnect(tank::mqtt::kVersion311));
}

// The ceiling: a subscriber that acknowledges each message as it arrives.
Result run_mqtt_baseline(const fs::path& dir, std::uint64_t n, int qos, int max_inflight) {
  Broker broker = start_mosquitto(dir / "mosquitto", max_inflight);
  MqttConnection sub(broker.port, "bench-baseline", true);
  write_all(sub.fd(), tank::mqtt::encode_subscribe(1, {{g_sparkplug ? "spBv1.0/#" : "bench/#", qos}},
                                                   tank::mqtt::kVersion311));
  const std::uint64_t expected = g_sparkplug ? n + 1 : n;  // and the NBIRTH
  auto ack = sub.next();
  if (!ack || ack->first != tank::mqtt::PacketType::suback) die("no SUBACK");
  std::atomic<std::uint64_t> received{0};
  const double broker0 = cpu_seconds(broker.process->pid());
  const auto start = Clock::now();
  std::thread consumer([&] {
    std::string error;
    while (received < expected) {
      auto p = sub.next();
      if (!p) break;
      if (p->first != tank::mqtt::PacketType::publish) continue;
      tank::mqtt::RawPacket raw{p->first, sub.flags(), p->second, 0};
      auto pub = tank::mqtt::parse_publish(raw, tank::mqtt::kVersion311, error);
      if (!pub) die("bad PUBLISH: " + error);
      if (pub->qos == 1) write_all(sub.fd(), tank::mqtt::encode_puback(pub->packet_id));
      ++received;
    }
  });
  publish(broker.port, n, qos);
  wait_for([&] { return received >= expected; }, std::chrono::seconds(60));
  Result r;
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  r.records = received;
  r.broker_cpu = cpu_seconds(broker.process->pid()) - broker0;
  ::shutdown(sub.fd(), SHUT_RDWR);
  consumer.join();
  return r;
}

Result run_mqtt(const std::string& binary, const fs::path& dir, const std::string& fsync, std::uint64_t n, int qos,
                int max_inflight) {
  Broker broker = start_mosquitto(dir.parent_path() / (dir.filename().string() + "-mosquitto"), max_inflight);
  const std::string filter = g_sparkplug ? "spBv1.0/#" : "bench/#";
  std::string topics = qos == 1 ? fmt::format("topics = [\"{}\"]\n", filter)
                                : fmt::format("topics = []\ntopics_qos0 = [\"{}\"]\n", filter);
  if (g_sparkplug) topics += "format = \"sparkplug_b\"\n";
  Tank tank = start_tank(binary, dir, fsync,
                         fmt::format("[[inputs.mqtt]]\nname = \"bench\"\nservers = [\"tcp://127.0.0.1:{}\"]\n{}",
                                     broker.port, topics));
  // Subscribed once mosquitto lists the subscription: wait for tank's connection metric.
  bool connected = wait_for([&] {
    int fd = connect_tcp(tank.metrics_address);
    write_all(fd, "GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n");
    std::string text;
    char buf[65536];
    for (ssize_t k; (k = ::read(fd, buf, sizeof buf)) > 0;) text.append(buf, static_cast<std::size_t>(k));
    ::close(fd);
    return text.find("tank_input_connections{input=\"bench\",type=\"mqtt\"} 1") != std::string::npos;
  }, std::chrono::seconds(20));
  if (!connected) die("tank did not connect to mosquitto; see " + (dir / "tank.log").string());
  // The SUBSCRIBE follows the CONNACK at once; a short settle avoids racing the first messages.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const double cpu0 = cpu_seconds(tank.process->pid());
  const double broker0 = cpu_seconds(broker.process->pid());
  const auto start = Clock::now();
  publish(broker.port, n, qos);
  Result r = finish(tank, g_sparkplug ? 20 * n + 20 : n, start, cpu0);
  r.broker_cpu = cpu_seconds(broker.process->pid()) - broker0;
  return r;
}

void report(const std::string& what, const Result& r) {
  std::string memory = r.rss == 0 ? std::string("(no tank)")
                                  : fmt::format("RSS peak {:.1f} MiB, anon {:.1f} MiB", static_cast<double>(r.rss) / 1048576.0,
                                                static_cast<double>(r.anon) / 1048576.0);
  std::string cpu;
  if (r.tank_cpu >= 0) cpu += fmt::format("  tank CPU {:.0f} %", 100 * r.tank_cpu / r.seconds);
  if (r.broker_cpu >= 0) cpu += fmt::format("  mosquitto CPU {:.0f} %", 100 * r.broker_cpu / r.seconds);
  std::cout << fmt::format("{:<52} {:>9} records {:>7.2f} s {:>10.0f} records/s   {}{}\n", what, r.records, r.seconds,
                           static_cast<double>(r.records) / r.seconds, memory, cpu)
            << std::flush;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  std::string tank = "build/agent/tank", kind = "tcp", fsync_list = "interval", connections_list = "1,4",
              qos_list = "0,1";
  fs::path dir = "/tmp/tank-input-bench";
  std::uint64_t records = 0;
  int body_records = 1000, repeat = 1, max_inflight = 20;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value for " + a);
      return argv[++i];
    };
    if (a == "--tank") tank = value();
    else if (a == "--dir") dir = value();
    else if (a == "--kind") kind = value();
    else if (a == "--fsync") fsync_list = value();
    else if (a == "--connections") connections_list = value();
    else if (a == "--qos") qos_list = value();
    else if (a == "--records") records = std::stoull(value());
    else if (a == "--body-records") body_records = std::stoi(value());
    else if (a == "--repeat") repeat = std::stoi(value());
    else if (a == "--max-inflight") max_inflight = std::stoi(value());
    else if (a == "--processor") g_processor = value();
    else if (a == "--output") g_output = value();
    else if (a == "--rate") g_rate = std::stoull(value());
    else if (a == "--sink-delay-ms") g_sink_delay_ms = static_cast<unsigned>(std::stoul(value()));
    else if (a == "--output-in-flight") g_output_in_flight = static_cast<unsigned>(std::stoul(value()));
    else if (a == "--output-batch") g_output_batch = static_cast<unsigned>(std::stoul(value()));
    else die("unknown option " + a + " (see the comment at the top of bench/input_bench.cpp)");
  }
  tank = fs::absolute(tank).string();
  if (!fs::exists(tank)) die("no tank binary at " + tank + " (--tank)");
  if (kind == "sparkplug") {
    g_sparkplug = true;
    kind = "mqtt";
  }
  if (records == 0) records = kind == "mqtt" ? (g_sparkplug ? 100000 : 400000) : 5000000;
  if (g_processor != "none" && g_processor != "validate" && g_processor != "aggregate" && g_processor != "deadband" &&
      g_processor != "dedup" && g_processor != "lua") {
    die("--processor is none, validate, aggregate, deadband, dedup or lua");
  }
  if (g_processor != "none" && kind != "tcp") die("--processor needs --kind tcp");
  if (g_output != "none" && g_output != "http") die("--output is none or http");
  std::optional<HttpSink> sink;
  if (g_output == "http") {
    sink.emplace();
    sink->set_delay_ms(g_sink_delay_ms);
    g_sink_url = sink->url();
  }
  for (int rep = 0; rep < repeat; ++rep) {
    for (const auto& fsync : split(fsync_list, ',')) {
      if (kind == "tcp" || kind == "http") {
        for (const auto& c : split(connections_list, ',')) {
          const int conns = std::stoi(c);
          Result r = kind == "tcp" ? run_tcp(tank, dir / "run", fsync, records, conns)
                                   : run_http(tank, dir / "run", fsync, records, conns, body_records);
          report(fmt::format("{} fsync={} connections={}{}{}", kind, fsync, conns,
                             g_processor == "none" ? "" : " processor=" + g_processor,
                             g_output == "none" ? "" : " output=" + g_output),
                 r);
        }
      } else if (kind == "mqtt") {
        for (const auto& q : split(qos_list, ',')) {
          const int qos = std::stoi(q);
          Result r = run_mqtt(tank, dir / "run", fsync, records, qos, max_inflight);
          report(fmt::format("{} qos={} fsync={} max_inflight={}", g_sparkplug ? "sparkplug" : "mqtt", qos, fsync,
                             max_inflight),
                 r);
          if (g_sparkplug) {
            std::cout << fmt::format("  = {:.0f} NDATA messages/s of 20 metrics\n",
                                     static_cast<double>(r.records) / 20.0 / r.seconds);
          }
        }
      } else {
        die("--kind is tcp, http or mqtt");
      }
    }
    if (kind == "mqtt") {
      for (const auto& q : split(qos_list, ',')) {
        const int qos = std::stoi(q);
        report(fmt::format("{} qos={} baseline (ack on receipt, messages) max_inflight={}",
                           g_sparkplug ? "sparkplug" : "mqtt", qos, max_inflight),
               run_mqtt_baseline(dir / "baseline", records, qos, max_inflight));
      }
    }
  }
  fs::remove_all(dir);
  return 0;
}
