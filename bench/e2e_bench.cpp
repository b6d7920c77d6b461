// End-to-end pipelines of the real tank binary, with the latency of every record: the suite of
// issue 7 (bench/run_all.sh runs it with the arguments that docs/BENCHMARKS.md names).
//
//   e2e_bench --tank build/agent/tank --dir /work/bench-data/e2e --scenario NAME [options]
//
// Scenarios (each a fresh tank with a fresh data_dir, disk queue of 16 GiB, fsync interval, unless
// said otherwise):
//   tcp-http       TCP (text lines) -> queue -> outputs.http (zstd, batches of 10,000, linger 10ms)
//   mqtt-http      a publisher (QoS 1, window 1,000) -> mosquitto -> inputs.mqtt (QoS 1) -> queue
//                  -> outputs.http
//   file-mqtt      lines appended to a file -> inputs.file (inotify) -> queue -> outputs.mqtt
//                  (QoS 1, MQTT 5, zstd) -> mosquitto -> a subscriber here (QoS 1)
//   validate-http  TCP (format json) -> processors.validate (5-property schema) -> queue -> outputs.http
//   aggregate      TCP (format json) -> queue -> processors.aggregate (10,000 ids, 10 s windows,
//                  min/max/mean of 2 fields); timed until the stage committed every record
//   size           tcp-http with records of --sizes bytes (default 100,1024,8192,65536), the same
//                  number of bytes per size (--size-bytes, default 512 MiB)
//   depth          tcp-http with the upstream held (it reads the first batch and does not answer)
//                  until the queue holds --depths MiB of LMDB pages (default 0,64,256,1024); then
//                  --depth-records more records are appended (timed until tank counts them) and,
//                  with the upstream released, as many are delivered from the head (timed until
//                  tank counts them delivered): append and consume at that depth
//   wear           flash wear (issue 17): tank at a steady --rate (default 10,000) records/s of
//                  100 B JSON for --seconds (default 60) after --warmup (default 5) s, outputs.http
//                  with its defaults to the receiver here (records are delivered and deleted: a
//                  gateway's steady state), disk queue of --max-disk (default 1 GiB), for each
//                  input shape of --shapes and fsync mode of --fsyncs (all three by default), each
//                  run twice: as built, and with TANK_TEST_NO_PIN=1 (recovery points without the
//                  pinned snapshot: the queue before issue 17, without its power-loss promise;
//                  --no-before skips it). Input shapes:
//                    http-100  inputs.http, one client POSTing NDJSON bodies of 100 records (100/s),
//                              each after the 200 of the previous one
//                    tcp       inputs.tcp, one connection, the records due written every 1 ms
//                    mqtt-1    inputs.mqtt (QoS 1) from a mosquitto of the bench's own (its default
//                              max_inflight_messages 20 towards tank), one record per message from
//                              a QoS 1 publisher (at most 1,000 unacknowledged by mosquitto)
//                  A sender that cannot keep the rate sends what it can: the row shows the rate
//                  tank committed. Measured over the window, per record committed
//                  (tank_queue_appended_records_total) and as a multiple of the 100 B payload:
//                    device       with --perf (root): the bytes of the block device's write requests
//                                 completed (tracepoint block:block_rq_complete) in the sectors of
//                                 data.mdb and recovery-point (FIEMAP): what the device receives
//                                 from the queue's files. Not in it: ext4's journal and inode
//                                 updates (the kernel's, not attributable to a file), and what the
//                                 flash translation layer multiplies (a 4 KiB block written alone
//                                 may cost a whole erase block): both outside tank's control.
//                    queue metric tank_queue_written_bytes_total: the queue's own count of the
//                                 data.mdb pages its commits wrote (with TANK_TEST_NO_PIN it counts
//                                 nothing: "-")
//                    write_bytes  /proc/PID/io: the kernel charges the process for the page-cache
//                                 memory it makes dirty, once per clean-to-dirty transition (plus
//                                 direct I/O): rewriting a page that is still dirty costs nothing,
//                                 and once the page is written back (an fsync or the kernel's
//                                 writeback) the next write counts again; so it is meant as the
//                                 bytes that reach the device, per page, per writeback. But it
//                                 charges a whole folio when one 4 KiB page of a clean large folio
//                                 is dirtied, while ext4 writes back only the dirty 4 KiB blocks:
//                                 with large folios in data.mdb's page cache (ext4 has them since
//                                 Linux 6.16; read-ahead and multi-page writes make them) it
//                                 overstates scattered page writes (docs/BENCHMARKS.md, "Flash
//                                 wear", has the check). It covers every file tank writes (also run.json and
//                                 its log, quiet in a steady state), not the journal either.
//                  Also: commits/s (tank_queue_commits_total), records per commit, flushes/s
//                  (tank_queue_fsyncs_total) and device 4 KiB blocks per commit (write_bytes when
//                  not traced), the queue's backlog and data.mdb's size at the end, the load.
//
// Every record carries its send time: "tsend":<10^17 + steady clock in ns> (18 digits), written
// into the record just before the bench writes it (TCP and file: per chunk of up to 256 KiB or per
// 10 ms step; MQTT: per message). The upstream (HTTP receiver or MQTT subscriber, both in this
// process, on the same clock) keeps each batch with its arrival time and decodes the batches
// after the run, so the latency of each record is arrival - tsend: from the bench handing it to
// tank to the upstream having it. p50 and p99 are exact over all records.
//
// Throughput runs send flat out (--records each); then, for the scenarios with an output, a paced
// run at --load percent (default 10) of the median flat-out rate for --paced-seconds gives the
// latency at that load. Each flat-out run is repeated --repeat times; the row shows the run with
// the median records/s and the range. records/s counts from the first byte sent to the last
// record counted by tank's metrics (delivered for outputs); CPU is tank's (user + system) over that
// time per million records; peak RSS is tank's VmHWM (LMDB's mapped file pages included), anon its
// RssAnon at the end. Output: Markdown table rows (see --scenario's header line).

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "bench_support.hpp"
#include "engine/run_state.hpp"
#include "mqtt/packets.hpp"

namespace fs = std::filesystem;
using namespace bench;

namespace {

constexpr std::uint64_t kStampBase = 100'000'000'000'000'000ULL;  // 18 digits, no leading zero
constexpr std::size_t kStampDigits = 18;
constexpr std::string_view kStampKey = "tsend";

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
}

struct Settings {
  std::string tank;
  fs::path dir = "/work/bench-data/e2e";
  std::string scenario;
  std::uint64_t records = 0;  // 0: the scenario's default
  int repeat = 1;
  double load_percent = 10;
  double paced_seconds = 10;
  std::vector<std::size_t> sizes{100, 1024, 8192, 65536};
  std::uint64_t size_bytes = 512ULL << 20;
  std::vector<std::uint64_t> depths_mib{0, 64, 256, 1024};
  std::uint64_t depth_records = 2'000'000;
  // wear
  std::vector<std::string> shapes{"http-100", "tcp", "mqtt-1"};
  std::vector<std::string> fsyncs{"always", "interval", "never"};
  double wear_seconds = 60;
  double warmup_seconds = 5;
  std::uint64_t rate = 10'000;
  std::string max_disk = "1GiB";
  bool before = true;  // also each run with TANK_TEST_NO_PIN=1
  std::string perf;    // --perf: the perf binary that traces the block device; "" = not traced
};

// ---------------------------------------------------------------------------------------------
// Records: newline-terminated lines built before the run, each with a tsend field patched in
// just before it is sent.

struct Lines {
  std::string data;
  std::vector<std::size_t> ends;    // offset after each line's newline
  std::vector<std::size_t> stamps;  // offset of each line's tsend digits
  std::size_t size() const { return ends.size(); }
  std::size_t begin_of(std::size_t i) const { return i == 0 ? 0 : ends[i - 1]; }
  void stamp(std::size_t from, std::size_t to, std::uint64_t ns) {
    char digits[kStampDigits + 1];
    fmt::format_to_n(digits, sizeof digits, "{}", kStampBase + ns);
    for (std::size_t i = from; i < to; ++i) std::memcpy(data.data() + stamps[i], digits, kStampDigits);
  }
  void add(const std::string& line) {
    const auto at = line.find(kStampKey);
    stamps.push_back(data.size() + at + kStampKey.size() + 2);
    data += line;
    data += '\n';
    ends.push_back(data.size());
  }
};

// The telemetry record of the earlier benchmarks plus tsend, about 90 bytes:
// {"ts":1700000000123,"id":"s-0042","v":23.517,"n":123,"tsend":100000000000000000}. Event time
// advances 1 s per 10,000 records, so each of the 10,000 ids sends one record per second.
std::string telemetry(std::uint64_t n) {
  return fmt::format(R"({{"ts":{},"id":"s-{:04d}","v":{}.{:03d},"n":{},"tsend":{}}})", 1700000000000ULL + n / 10,
                     n % 10000, n % 97, n % 1000, n, kStampBase);
}

// A record of exactly `size` bytes with its newline: tsend, a counter and words as log text.
std::string sized(std::uint64_t n, std::size_t size) {
  static const char* const kWords[] = {"sensor", "read",  "ok",    "valve", "pressure", "temp", "line",
                                       "hall",   "plant", "alarm", "reset", "cycle",    "flow", "pump"};
  std::string line = fmt::format(R"({{"tsend":{},"n":{},"text":")", kStampBase, n);
  std::uint64_t x = n * 2654435761ULL + 1;
  const std::size_t body = size - 3;  // `"}` and the newline
  while (line.size() < body) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    line += kWords[(x >> 33) % 14];
    line += ' ';
  }
  line.resize(body);
  line += "\"}";
  return line;
}

Lines make_lines(std::uint64_t count, std::size_t size, std::uint64_t first = 0) {
  Lines l;
  l.data.reserve(count * (size == 0 ? 92 : size));
  l.ends.reserve(count);
  l.stamps.reserve(count);
  for (std::uint64_t i = first; i < first + count; ++i) l.add(size == 0 ? telemetry(i) : sized(i, size));
  return l;
}

// Writes lines [from, to) through `write`: flat out in chunks of up to 256 KiB, or paced at `rate`
// records/s in 10 ms steps; each chunk is stamped just before it is written.
void send_lines(Lines& l, std::size_t from, std::size_t to, std::uint64_t rate,
                const std::function<void(std::string_view)>& write) {
  if (rate == 0) {
    for (std::size_t i = from; i < to;) {
      std::size_t j = i + 1;
      while (j < to && l.ends[j] - l.begin_of(i) <= 256 * 1024) ++j;
      l.stamp(i, j, now_ns());
      write(std::string_view(l.data).substr(l.begin_of(i), l.ends[j - 1] - l.begin_of(i)));
      i = j;
    }
    return;
  }
  const double per_step = static_cast<double>(rate) / 100.0;
  double due = 0;
  auto next = Clock::now();
  for (std::size_t i = from; i < to;) {
    due += per_step;
    std::size_t j = i;
    for (; due >= 1 && j < to; due -= 1) ++j;
    if (j > i) {
      l.stamp(i, j, now_ns());
      write(std::string_view(l.data).substr(l.begin_of(i), l.ends[j - 1] - l.begin_of(i)));
    }
    i = j;
    next += std::chrono::milliseconds(10);
    std::this_thread::sleep_until(next);
  }
}

// ---------------------------------------------------------------------------------------------
// Latency: batches received upstream, decoded after the run.

struct Received {
  std::uint64_t arrival_ns = 0;
  bool zstd = false;
  std::string body;
};

std::string unzstd(const std::string& in) {
  std::string out;
  ZSTD_DStream* ds = ZSTD_createDStream();
  ZSTD_initDStream(ds);
  ZSTD_inBuffer input{in.data(), in.size(), 0};
  std::string chunk(1 << 20, '\0');
  while (input.pos < input.size) {
    ZSTD_outBuffer output{chunk.data(), chunk.size(), 0};
    const std::size_t rc = ZSTD_decompressStream(ds, &output, &input);
    if (ZSTD_isError(rc)) die(std::string("zstd: ") + ZSTD_getErrorName(rc));
    out.append(chunk.data(), output.pos);
    if (rc == 0 && input.pos < input.size) ZSTD_initDStream(ds);  // another frame
  }
  ZSTD_freeDStream(ds);
  return out;
}

struct Latency {
  std::uint64_t records = 0;  // tsend fields found upstream
  double p50_ms = -1;
  double p99_ms = -1;
  double max_ms = -1;
};

Latency latency_of(const std::vector<Received>& batches) {
  std::vector<std::uint64_t> ns;
  for (const auto& b : batches) {
    const std::string text = b.zstd ? unzstd(b.body) : std::string();
    const std::string& body = b.zstd ? text : b.body;
    for (std::size_t at = body.find(kStampKey); at != std::string::npos; at = body.find(kStampKey, at + 1)) {
      std::size_t p = at + kStampKey.size();
      while (p < body.size() && p < at + kStampKey.size() + 4 && (body[p] < '0' || body[p] > '9')) ++p;
      std::uint64_t v = 0;
      for (; p < body.size() && body[p] >= '0' && body[p] <= '9'; ++p) v = v * 10 + static_cast<std::uint64_t>(body[p] - '0');
      if (v < kStampBase) continue;
      const std::uint64_t sent = v - kStampBase;
      ns.push_back(b.arrival_ns > sent ? b.arrival_ns - sent : 0);
    }
  }
  Latency l;
  l.records = ns.size();
  if (ns.empty()) return l;
  std::sort(ns.begin(), ns.end());
  auto at = [&](double q) { return static_cast<double>(ns[std::min(ns.size() - 1, static_cast<std::size_t>(q * static_cast<double>(ns.size())))]) / 1e6; };
  l.p50_ms = at(0.50);
  l.p99_ms = at(0.99);
  l.max_ms = static_cast<double>(ns.back()) / 1e6;
  return l;
}

std::vector<Received> from_sink(HttpSink& sink) {
  std::vector<Received> out;
  for (auto& d : sink.take()) out.push_back({d.arrival_ns, d.zstd, std::move(d.body)});
  return out;
}

// ---------------------------------------------------------------------------------------------
// tank

struct Tank : RunningTank {
  double counted(const std::string& metric, const std::vector<std::string>& labels) const {
    return metric_sum(scrape_metrics(metrics_address), metric, labels);
  }
};

Tank start_tank(const Settings& s, const fs::path& dir, const std::string& pipeline) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  return {bench::start_tank(s.tank, dir, dir / "data",
                           bench_config(dir / "data", "interval", pipeline))};
}

std::string http_output(const std::string& url) {
  return fmt::format("\n[[outputs.http]]\nname = \"bench\"\nurl = \"{}\"\nbatch_max_records = 10000\nlinger = \"10ms\"\n"
                     "response_timeout = \"10m\"\n",
                     url);
}

const std::vector<std::string> kDelivered{"output=\"bench\"", "result=\"delivered\""};
const std::vector<std::string> kInput{"input=\"bench\""};
const std::vector<std::string> kProcessor{"processor=\"bench\""};

// Waits until tank's `metric` reaches n (or stops moving for 20 s). Each scrape costs tank about
// 0.3 ms of CPU (1,000 scrapes of a tank with one input and one output: 310 ms), so a scrape
// every 5 ms took some 5 % of tank's CPU in a flat-out run: the wait scrapes every 5-100 ms,
// sleeping half the time the last scrapes' rate says is left, so the end is still seen within 5 ms.
void wait_count(const Tank& t, const std::string& metric, const std::vector<std::string>& labels, double n) {
  double last = -1;
  auto last_change = Clock::now();
  for (;;) {
    const auto now = Clock::now();
    const double c = t.counted(metric, labels);
    if (c >= n) return;
    auto pause = std::chrono::milliseconds(5);
    if (c != last) {
      if (last >= 0) {
        const double rate = (c - last) / std::chrono::duration<double>(now - last_change).count();
        const double half_left_ms = 500.0 * (n - c) / rate;
        pause = std::chrono::milliseconds(static_cast<long>(std::clamp(half_left_ms, 5.0, 100.0)));
      }
      last = c;
      last_change = now;
    } else if (now - last_change > std::chrono::seconds(20)) {
      die(fmt::format("{} stuck at {} of {}; see {}", metric, c, n, (t.dir / "tank.log").string()));
    }
    std::this_thread::sleep_for(pause);
  }
}

struct Result {
  std::uint64_t records = 0;
  std::uint64_t bytes = 0;  // record bytes sent (newlines included)
  double seconds = 0;
  double cpu = 0;  // tank's CPU seconds
  std::uint64_t rss = 0;
  std::uint64_t anon = 0;
  Latency latency;
  double rate() const { return static_cast<double>(records) / seconds; }
  double cpu_per_million() const { return cpu / static_cast<double>(records) * 1e6; }
};

// A run timed from `start` until tank's `metric` counts `n`.
Result measure(const Tank& t, const std::function<void()>& send, const std::string& metric,
               const std::vector<std::string>& labels, std::uint64_t n) {
  Result r;
  const double cpu0 = cpu_seconds(t.process->pid());
  const auto start = Clock::now();
  send();
  wait_count(t, metric, labels, static_cast<double>(n));
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  r.cpu = cpu_seconds(t.process->pid()) - cpu0;
  r.records = n;
  r.rss = status_bytes(t.process->pid(), "VmHWM");
  r.anon = status_bytes(t.process->pid(), "RssAnon");
  return r;
}

// ---------------------------------------------------------------------------------------------
// Scenarios: each runs once with `n` records at `rate` (0: flat out).

Result run_tcp_http(const Settings& s, std::uint64_t n, std::uint64_t rate, std::size_t size,
                    const std::string& extra_input, const std::string& processor) {
  HttpSink sink;
  sink.set_capture(processor != "aggregate");
  std::string pipeline = fmt::format("[[inputs.tcp]]\nname = \"bench\"\nlisten = \"127.0.0.1:0\"\n{}", extra_input);
  if (processor == "validate") {
    std::ofstream(s.dir / "schema.json") << R"({"type": "object", "required": ["ts", "id", "v", "n", "tsend"],
  "additionalProperties": false, "properties": {"ts": {"type": "integer", "minimum": 0},
  "id": {"type": "string", "pattern": "^s-[0-9]{4}$"}, "v": {"type": "number", "minimum": 0, "maximum": 100},
  "n": {"type": "integer", "minimum": 0}, "tsend": {"type": "integer", "minimum": 0}}})";
    pipeline += fmt::format("\n[[processors.validate]]\nname = \"bench\"\nschema = \"{}\"\n", (s.dir / "schema.json").string());
  } else if (processor == "aggregate") {
    pipeline += "\n[[processors.aggregate]]\nname = \"bench\"\nwindow = \"10s\"\ntime_field = \"ts\"\n"
                "time_format = \"unix_ms\"\ngroup_by = [\"id\"]\n"
                "fields = { v = [\"min\", \"max\", \"mean\"], n = [\"min\", \"max\", \"mean\"] }\n";
  }
  if (processor != "aggregate") pipeline += http_output(sink.url());
  Lines lines = make_lines(n, size);
  Tank t = start_tank(s, s.dir / "run", pipeline);
  const int fd = connect_tcp(t.input_address);
  Result r = measure(
      t, [&] { send_lines(lines, 0, n, rate, [&](std::string_view d) { write_all(fd, d); }); },
      processor == "aggregate" ? "tank_processor_records_in_total" : "tank_output_records_total",
      processor == "aggregate" ? kProcessor : kDelivered, n);
  r.bytes = lines.data.size();
  ::close(fd);
  t.process->stop();
  r.latency = latency_of(from_sink(sink));
  return r;
}

// Publishes lines [0, n) as messages on bench/data at QoS 1 with at most 1,000 unacknowledged,
// flat out or paced; each message stamped as it is encoded.
void publish_lines(int port, Lines& l, std::uint64_t rate) {
  MqttConnection c(port, "bench-publisher", true);
  const std::size_t n = l.size();
  std::atomic<std::uint64_t> acked{0};
  std::thread reader = count_pubacks(c, acked, n);
  std::string out;
  std::uint16_t id = 0;
  auto one = [&](std::size_t i) {
    while (i - acked.load() >= 1000) {
      if (!out.empty()) {
        write_all(c.fd(), out);
        out.clear();
      }
      std::this_thread::yield();
    }
    if (++id == 0) id = 1;
    l.stamp(i, i + 1, now_ns());
    const std::string_view payload = std::string_view(l.data).substr(l.begin_of(i), l.ends[i] - l.begin_of(i) - 1);
    out += tank::mqtt::encode_publish("bench/data", payload, 1, id, false, tank::mqtt::kVersion311);
    if (out.size() >= 64 * 1024) {
      write_all(c.fd(), out);
      out.clear();
    }
  };
  if (rate == 0) {
    for (std::size_t i = 0; i < n; ++i) one(i);
  } else {
    const double per_step = static_cast<double>(rate) / 100.0;
    double due = 0;
    auto next = Clock::now();
    for (std::size_t i = 0; i < n;) {
      for (due += per_step; due >= 1 && i < n; due -= 1) one(i++);
      write_all(c.fd(), out);
      out.clear();
      next += std::chrono::milliseconds(10);
      std::this_thread::sleep_until(next);
    }
  }
  write_all(c.fd(), out);
  reader.join();
  write_all(c.fd(), tank::mqtt::encode_disconnect(tank::mqtt::kVersion311));
}

Result run_mqtt_http(const Settings& s, std::uint64_t n, std::uint64_t rate) {
  HttpSink sink;
  sink.set_capture(true);
  Broker broker = start_mosquitto(s.dir / "mosquitto", 20);
  Lines lines = make_lines(n, 0);
  Tank t = start_tank(s, s.dir / "run",
                      fmt::format("[[inputs.mqtt]]\nname = \"bench\"\nservers = [\"tcp://127.0.0.1:{}\"]\n"
                                  "topics = [\"bench/#\"]\nclean_session = true\n{}",
                                  broker.port, http_output(sink.url())));
  if (!wait_for([&] { return t.counted("tank_input_connections", {"input=\"bench\"", "type=\"mqtt\""}) >= 1; },
                std::chrono::seconds(20))) {
    die("tank did not connect to mosquitto; see " + (t.dir / "tank.log").string());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the SUBSCRIBE follows the CONNACK
  Result r = measure(t, [&] { publish_lines(broker.port, lines, rate); }, "tank_output_records_total", kDelivered, n);
  r.bytes = lines.data.size();
  t.process->stop();
  r.latency = latency_of(from_sink(sink));
  return r;
}

// A QoS 1 subscriber to `filter` keeping every message with its arrival time.
class Subscriber {
 public:
  Subscriber(int port, const std::string& filter) : c_(port, "bench-subscriber", true) {
    write_all(c_.fd(), tank::mqtt::encode_subscribe(1, {{filter, 1}}, tank::mqtt::kVersion311));
    auto ack = c_.next();
    if (!ack || ack->first != tank::mqtt::PacketType::suback) die("no SUBACK");
    thread_ = std::thread([this] {
      std::string error;
      for (;;) {
        auto p = c_.next();
        if (!p) return;
        if (p->first != tank::mqtt::PacketType::publish) continue;
        const std::uint64_t arrival = now_ns();
        tank::mqtt::RawPacket raw{p->first, c_.flags(), p->second, 0};
        auto pub = tank::mqtt::parse_publish(raw, tank::mqtt::kVersion311, error);
        if (!pub) die("bad PUBLISH: " + error);
        if (pub->qos == 1) write_all(c_.fd(), tank::mqtt::encode_puback(pub->packet_id));
        std::lock_guard lock(mutex_);
        // outputs.mqtt compresses with zstd (magic 28 b5 2f fd).
        const bool zstd = pub->payload.size() >= 4 && std::memcmp(pub->payload.data(), "\x28\xb5\x2f\xfd", 4) == 0;
        received_.push_back({arrival, zstd, std::string(pub->payload)});
      }
    });
  }
  ~Subscriber() {
    ::shutdown(c_.fd(), SHUT_RDWR);
    thread_.join();
  }
  std::vector<Received> take() {
    std::lock_guard lock(mutex_);
    return std::exchange(received_, {});
  }

 private:
  MqttConnection c_;
  std::thread thread_;
  std::mutex mutex_;
  std::vector<Received> received_;
};

Result run_file_mqtt(const Settings& s, std::uint64_t n, std::uint64_t rate) {
  Broker broker = start_mosquitto(s.dir / "mosquitto", 20);
  std::optional<Subscriber> subscriber(std::in_place, broker.port, "bench/out");
  const fs::path input = s.dir / "input" / "app.log";
  fs::remove_all(input.parent_path());
  fs::create_directories(input.parent_path());
  std::ofstream(input).close();
  Lines lines = make_lines(n, 0);
  Tank t = start_tank(s, s.dir / "run",
                      fmt::format("[[inputs.file]]\nname = \"bench\"\npaths = [\"{}\"]\n\n"
                                  "[[outputs.mqtt]]\nname = \"bench\"\nservers = [\"tcp://127.0.0.1:{}\"]\n"
                                  "topic = \"bench/out\"\nbatch_max_records = 10000\nlinger = \"10ms\"\n",
                                  input.string(), broker.port));
  const int fd = ::open(input.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) die("cannot open " + input.string());
  Result r = measure(
      t, [&] { send_lines(lines, 0, n, rate, [&](std::string_view d) { write_all(fd, d); }); },
      "tank_output_records_total", kDelivered, n);
  r.bytes = lines.data.size();
  ::close(fd);
  t.process->stop();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the last PUBLISH reaches the subscriber
  r.latency = latency_of(subscriber->take());
  subscriber.reset();
  fs::remove_all(input.parent_path());
  return r;
}

// ---------------------------------------------------------------------------------------------
// Flash wear (issue 17): the bytes tank makes the device write per record at a steady rate.

// Calls send(k) every `step` with the k records due since the last call, so that `rate` records
// per second go out on average; with `unit` > 1 only whole multiples of `unit`. A send that is
// slower than the rate is followed at once by the next; the debt is capped at one second of
// records, so a sender that cannot keep up sends what it can (the row shows the rate reached).
void pace(std::uint64_t rate, std::chrono::microseconds step, std::uint64_t unit, const std::atomic<bool>& stop,
          const std::function<void(std::uint64_t)>& send) {
  const auto start = Clock::now();
  std::uint64_t done = 0;
  auto next = start;
  while (!stop) {
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    const auto due = static_cast<std::uint64_t>(elapsed * static_cast<double>(rate)) / unit * unit;
    if (due > done + rate) done = (due - rate) / unit * unit;
    if (due > done) {
      send(due - done);
      done = due;
    }
    next += step;
    if (next < Clock::now() - std::chrono::seconds(1)) next = Clock::now();
    std::this_thread::sleep_until(next);
  }
}

// The lines [from, from + k) of `l`, taken round: at most two pieces.
void for_round(const Lines& l, std::uint64_t from, std::uint64_t k, const std::function<void(std::string_view)>& f) {
  while (k > 0) {
    const std::size_t i = static_cast<std::size_t>(from % l.size());
    const std::size_t j = static_cast<std::size_t>(std::min<std::uint64_t>(l.size(), i + k));
    f(std::string_view(l.data).substr(l.begin_of(i), l.ends[j - 1] - l.begin_of(i)));
    k -= j - i;
    from += j - i;
  }
}

// What the block device receives for tank's queue files: the kernel's block:block_rq_complete
// tracepoint (perf record, system-wide: root only, CLOCK_MONOTONIC timestamps, the steady clock's)
// over the window, each completed write request matched against the sectors the files occupy
// (FIEMAP) at the end of it. Completions, not issues: a request the device cannot take at once
// (virtio's queue full during a large flush) is requeued and issued again, and block_rq_issue
// then counts it twice (measured: a third more during fsync = "never"'s flushes of ~10 MiB). /proc/PID/io write_bytes is not that on current kernels: it charges a whole folio when
// a 4 KiB page of a clean large folio is dirtied (ext4 has large folios since Linux 6.16), while ext4
// writes back only the dirty 4 KiB blocks (docs/BENCHMARKS.md, "Flash wear", has the check). Works
// for a file system on a disk or a partition (not on device-mapper), ext4 or any that writes data
// in place; the journal is not in the files' extents and is not counted.
struct Sectors {
  std::uint64_t begin = 0;  // of the whole disk, 512 B each
  std::uint64_t end = 0;
};

// The disk ("major,minor" as the tracepoint prints it) and the sectors holding `files`.
std::pair<std::string, std::vector<Sectors>> sectors_of(const std::vector<fs::path>& files) {
  std::string disk;
  std::vector<Sectors> out;
  for (const auto& file : files) {
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) die(fmt::format("cannot open {}: {}", file.string(), std::strerror(errno)));
    struct stat st {};
    ::fstat(fd, &st);
    // A partition: its sectors start at /sys/dev/block/M:m/start, and requests name its disk.
    const fs::path sys = fmt::format("/sys/dev/block/{}:{}", major(st.st_dev), minor(st.st_dev));
    std::uint64_t start = 0;
    std::string dev = fmt::format("{},{}", major(st.st_dev), minor(st.st_dev));
    if (fs::exists(sys / "partition")) {
      std::ifstream(sys / "start") >> start;
      std::string parent;
      std::ifstream(fs::canonical(sys).parent_path() / "dev") >> parent;
      std::replace(parent.begin(), parent.end(), ':', ',');
      dev = parent;
    }
    disk = dev;
    constexpr std::uint32_t kExtents = 512;
    std::vector<char> buf(sizeof(fiemap) + kExtents * sizeof(fiemap_extent));
    std::uint64_t from = 0;
    for (bool last = false; !last;) {
      std::fill(buf.begin(), buf.end(), 0);
      auto* fm = reinterpret_cast<fiemap*>(buf.data());
      fm->fm_start = from;
      fm->fm_length = FIEMAP_MAX_OFFSET - from;
      fm->fm_extent_count = kExtents;
      if (::ioctl(fd, FS_IOC_FIEMAP, fm) != 0) die(fmt::format("FIEMAP of {}: {}", file.string(), std::strerror(errno)));
      if (fm->fm_mapped_extents == 0) break;
      for (std::uint32_t i = 0; i < fm->fm_mapped_extents; ++i) {
        const fiemap_extent& e = fm->fm_extents[i];
        last = last || (e.fe_flags & FIEMAP_EXTENT_LAST) != 0;
        from = e.fe_logical + e.fe_length;
        if ((e.fe_flags & (FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_UNKNOWN)) != 0) continue;  // no blocks yet
        out.push_back({start + e.fe_physical / 512, start + (e.fe_physical + e.fe_length) / 512});
      }
    }
    ::close(fd);
  }
  return {disk, out};
}

class DeviceTrace {
 public:
  // Starts perf record into dir/perf.data; returns once it records.
  DeviceTrace(const std::string& perf, const fs::path& dir) : perf_(perf), data_(dir / "perf.data") {
    fs::remove(data_);
    process_ = std::make_unique<Child>(std::vector<std::string>{perf, "record", "-q", "-k", "CLOCK_MONOTONIC", "-e",
                                                                "block:block_rq_complete", "-a", "-o", data_.string()},
                                       dir / "perf.log");
    if (!wait_for([&] { return !process_->running() || (fs::exists(data_) && fs::file_size(data_) > 0); },
                  std::chrono::seconds(20)) ||
        !process_->running()) {
      die("perf record did not start; see " + (dir / "perf.log").string());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // its events are enabled after the file is created
  }
  // Stops perf (SIGTERM: it writes its file and exits) and returns the bytes of the write requests
  // issued between `from` and `to` to the sectors of `files`.
  std::uint64_t written(Clock::time_point from, Clock::time_point to, const std::vector<fs::path>& files) {
    auto [disk, sectors] = sectors_of(files);
    process_->stop();
    std::sort(sectors.begin(), sectors.end(), [](const Sectors& a, const Sectors& b) { return a.begin < b.begin; });
    const fs::path text = data_.parent_path() / "perf.txt";
    const std::string cmd = fmt::format("{} script -i {} -F time,trace --ns > {} 2>/dev/null", perf_, data_.string(), text.string());
    if (std::system(cmd.c_str()) != 0) die("perf script failed: " + cmd);
    const auto ns = [](Clock::time_point t) {
      return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    };
    const std::int64_t lo = ns(from), hi = ns(to);
    std::uint64_t bytes = 0;
    std::ifstream in(text);
    // " 8345.768518251: 254,0 W () 170740768 + 2032 0x2,0,4 [0]": time, disk, kind, command, first
    // sector + sectors, I/O priority, error
    for (std::string line; std::getline(in, line);) {
      std::istringstream f(line);
      std::string time, dev, rwbs, cmd_field, plus, ioprio, error;
      std::uint64_t sector = 0, count = 0;
      if (!(f >> time >> dev >> rwbs >> cmd_field >> sector >> plus >> count >> ioprio >> error) || plus != "+") continue;
      if (dev != disk || rwbs.find('W') == std::string::npos || count == 0 || error != "[0]") continue;
      const auto dot = time.find('.');
      if (dot == std::string::npos) continue;
      const std::int64_t t = std::stoll(time.substr(0, dot)) * 1'000'000'000 + std::stoll(time.substr(dot + 1, 9));
      if (t < lo || t > hi) continue;
      for (const auto& s : sectors) {  // the overlap of [sector, sector + count) with each extent
        if (s.begin >= sector + count) break;
        const std::uint64_t b = std::max(s.begin, sector), e = std::min(s.end, sector + count);
        if (e > b) bytes += (e - b) * 512;
      }
    }
    fs::remove(text);
    fs::remove(data_);
    return bytes;
  }

 private:
  std::string perf_;
  fs::path data_;
  std::unique_ptr<Child> process_;
};

// What tank has done so far: its I/O counters and the queue's metrics.
struct WearSample {
  Clock::time_point at;
  double device_bytes = 0;     // /proc/PID/io write_bytes
  double cancelled_bytes = 0;  // cancelled_write_bytes: dirty pages dropped (truncated) before writeback
  double queue_written = 0;    // tank_queue_written_bytes_total
  double commits = 0;          // tank_queue_commits_total
  double flushes = 0;          // tank_queue_fsyncs_total
  double appended = 0;         // tank_queue_appended_records_total
  double delivered = 0;        // tank_output_records_total{result="delivered"}
  double backlog = 0;          // tank_queue_records
  double file_bytes = 0;       // tank_queue_file_bytes
  std::string load;            // the 1-minute load average
};

WearSample sample_wear(const Tank& t) {
  WearSample w;
  w.at = Clock::now();
  const pid_t pid = t.process->pid();
  w.device_bytes = static_cast<double>(io_bytes(pid, "write_bytes"));
  w.cancelled_bytes = static_cast<double>(io_bytes(pid, "cancelled_write_bytes"));
  const std::string m = scrape_metrics(t.metrics_address);
  w.queue_written = metric_sum(m, "tank_queue_written_bytes_total", {});
  w.commits = metric_sum(m, "tank_queue_commits_total", {});
  w.flushes = metric_sum(m, "tank_queue_fsyncs_total", {});
  w.appended = metric_sum(m, "tank_queue_appended_records_total", {});
  w.delivered = metric_sum(m, "tank_output_records_total", kDelivered);
  w.backlog = metric_sum(m, "tank_queue_records", {});
  w.file_bytes = metric_sum(m, "tank_queue_file_bytes", {});
  std::ifstream loadavg("/proc/loadavg");
  loadavg >> w.load;
  return w;
}

struct WearResult {
  std::string shape;
  std::string fsync;
  bool pinned = true;
  WearSample a, b;          // the start and the end of the steady window
  double block_bytes = -1;  // written to the queue files' sectors in the window (--perf; -1 = not traced)
  double seconds() const { return std::chrono::duration<double>(b.at - a.at).count(); }
  double records() const { return b.appended - a.appended; }
  double rate() const { return records() / seconds(); }
  double block_per_record() const { return block_bytes < 0 ? -1 : block_bytes / records(); }
  double device_per_record() const { return (b.device_bytes - a.device_bytes) / records(); }
  // Device bytes: the block layer's when traced, else write_bytes.
  double best_per_record() const { return block_bytes < 0 ? device_per_record() : block_per_record(); }
  double queue_per_record() const { return (b.queue_written - a.queue_written) / records(); }
  double commits_per_second() const { return (b.commits - a.commits) / seconds(); }
  double flushes_per_second() const { return (b.flushes - a.flushes) / seconds(); }
  double records_per_commit() const { return records() / (b.commits - a.commits); }
  double device_pages_per_commit() const { return best_per_record() * records() / 4096.0 / (b.commits - a.commits); }
};

constexpr std::size_t kWearPayload = 100;  // bytes per record, the newline not counted

// One run: a fresh tank with `shape` in, outputs.http (its defaults) to a receiver here, disk
// queue of --max-disk with `fsync`; `pinned` false sets TANK_TEST_NO_PIN=1 (issue 17's "before").
// Records are sent at --rate from the start; the window starts after --warmup seconds.
WearResult run_wear(const Settings& s, const std::string& shape, const std::string& fsync, bool pinned,
                    const Lines& lines) {
  HttpSink sink;
  std::optional<Broker> broker;
  std::string input;
  if (shape == "http-100" || shape == "tcp") {
    input = fmt::format("[[inputs.{}]]\nname = \"bench\"\nlisten = \"127.0.0.1:0\"\n", shape == "tcp" ? "tcp" : "http");
  } else if (shape == "mqtt-1") {
    // max_inflight_messages 20 is mosquitto's default: at most 20 messages wait for tank's PUBACK.
    broker.emplace(start_mosquitto(s.dir / "mosquitto", 20));
    input = fmt::format("[[inputs.mqtt]]\nname = \"bench\"\nservers = [\"tcp://127.0.0.1:{}\"]\n"
                        "topics = [\"bench/#\"]\nclean_session = true\n",
                        broker->port);
  } else {
    die("--shapes: http-100, tcp or mqtt-1, not " + shape);
  }
  const fs::path dir = s.dir / "run";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::vector<std::pair<std::string, std::string>> env;
  if (!pinned) env.emplace_back("TANK_TEST_NO_PIN", "1");
  const std::string pipeline = fmt::format("{}\n[[outputs.http]]\nname = \"bench\"\nurl = \"{}\"\n", input, sink.url());
  Tank t{bench::start_tank(s.tank, dir, dir / "data", bench_config(dir / "data", fsync, pipeline, s.max_disk), env)};
  if (broker) {
    if (!wait_for([&] { return t.counted("tank_input_connections", {"input=\"bench\"", "type=\"mqtt\""}) >= 1; },
                  std::chrono::seconds(20))) {
      die("tank did not connect to mosquitto; see " + (t.dir / "tank.log").string());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the SUBSCRIBE follows the CONNACK
  }

  std::atomic<bool> stop{false};
  std::thread sender;
  std::optional<MqttConnection> publisher;
  std::thread puback_reader;
  std::atomic<std::uint64_t> acked{0};
  if (shape == "tcp") {
    const int fd = connect_tcp(t.input_address);
    sender = std::thread([&, fd] {
      std::uint64_t next = 0;
      pace(s.rate, std::chrono::milliseconds(1), 1, stop, [&](std::uint64_t k) {
        for_round(lines, next, k, [&](std::string_view d) { write_all(fd, d); });
        next += k;
      });
      ::close(fd);
    });
  } else if (shape == "http-100") {
    sender = std::thread([&] {
      auto [host, port] = host_port(t.input_address);
      boost::asio::io_context io;
      boost::beast::tcp_stream stream(io);
      stream.connect(boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address(host), port));
      stream.socket().set_option(boost::asio::ip::tcp::no_delay(true));
      boost::beast::flat_buffer buffer;
      namespace http = boost::beast::http;
      std::uint64_t next = 0;
      pace(s.rate, std::chrono::milliseconds(10), 100, stop, [&](std::uint64_t k) {
        for (std::uint64_t body = 0; body < k / 100 && !stop; ++body) {
          http::request<http::string_body> req{http::verb::post, "/", 11};
          req.set(http::field::host, "bench");
          req.set(http::field::content_type, "application/x-ndjson");
          for_round(lines, next, 100, [&](std::string_view d) { req.body().append(d); });
          req.prepare_payload();
          for (;;) {
            http::write(stream, req);
            http::response<http::string_body> res;
            http::read(stream, buffer, res);
            if (res.result() == http::status::ok) break;
            if (res.result() != http::status::service_unavailable) die(fmt::format("HTTP {}: {}", res.result_int(), res.body()));
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
          }
          next += 100;
        }
      });
    });
  } else {
    // QoS 1, one record per message; mosquitto acknowledges at once, at most 1,000 unacknowledged.
    publisher.emplace(broker->port, "bench-publisher", true);
    puback_reader = std::thread([&] {
      while (auto p = publisher->next()) {
        if (p->first == tank::mqtt::PacketType::puback) ++acked;
      }
    });
    sender = std::thread([&] {
      std::uint64_t next = 0;
      std::uint16_t id = 0;
      std::string out;
      pace(s.rate, std::chrono::milliseconds(1), 1, stop, [&](std::uint64_t k) {
        for (std::uint64_t m = 0; m < k && !stop; ++m, ++next) {
          while (next - acked.load() >= 1000 && !stop) {
            if (!out.empty()) {
              write_all(publisher->fd(), out);
              out.clear();
            }
            std::this_thread::yield();
          }
          if (++id == 0) id = 1;
          const std::size_t i = static_cast<std::size_t>(next % lines.size());
          const auto payload = std::string_view(lines.data).substr(lines.begin_of(i), lines.ends[i] - lines.begin_of(i) - 1);
          out += tank::mqtt::encode_publish("bench/data", payload, 1, id, false, tank::mqtt::kVersion311);
        }
        write_all(publisher->fd(), out);
        out.clear();
      });
    });
  }

  WearResult r;
  r.shape = shape;
  r.fsync = fsync;
  r.pinned = pinned;
  std::this_thread::sleep_for(std::chrono::duration<double>(s.warmup_seconds));
  std::optional<DeviceTrace> trace;
  if (!s.perf.empty()) trace.emplace(s.perf, s.dir);
  r.a = sample_wear(t);
  std::this_thread::sleep_for(std::chrono::duration<double>(s.wear_seconds));
  r.b = sample_wear(t);
  if (trace) {
    const fs::path queue = dir / "data" / "queue";
    r.block_bytes = static_cast<double>(trace->written(r.a.at, r.b.at, {queue / "data.mdb", queue / "recovery-point"}));
  }
  stop = true;
  sender.join();
  if (publisher) {
    ::shutdown(publisher->fd(), SHUT_RDWR);
    puback_reader.join();
  }
  t.process->stop();
  return r;
}

std::string per_record(double bytes_per_record) {
  if (bytes_per_record < 0) return "-";
  return fmt::format("{:.0f} ({:.1f}x)", bytes_per_record, bytes_per_record / kWearPayload);
}

void print_wear_row(const WearResult& r) {
  fmt::print("| {} | {} | {} | {:.0f} | {:.0f} | {:.1f} | {:.1f} | {} | {} | {} | {:.1f} | {:.0f} | {:.0f} | {} / {} |\n",
             r.shape, r.fsync, r.pinned ? "yes" : "no (before)", r.rate(), r.commits_per_second(), r.records_per_commit(),
             r.flushes_per_second(), per_record(r.block_per_record()),
             r.pinned || r.fsync == "always" ? per_record(r.queue_per_record()) : std::string("-"),
             per_record(r.device_per_record()), r.device_pages_per_commit(), r.b.backlog, r.b.file_bytes / 1048576.0,
             r.a.load, r.b.load);
  std::fflush(stdout);
}

// The table of every run, then pinned against before side by side.
void run_wear_scenario(const Settings& s) {
  const Lines lines = make_lines(100'000, kWearPayload + 1);  // 10 s of records, sent round and round
  fmt::print("Flash wear: {} records/s of {} B, {} s window after {} s of warm-up, disk queue max_disk_bytes {}\n\n",
             s.rate, kWearPayload, s.wear_seconds, s.warmup_seconds, s.max_disk);
  fmt::print("| input | fsync | snapshot pinned | records/s | commits/s | records/commit | flushes/s | "
             "device B/record (x payload) | queue metric B/record (x payload) | write_bytes B/record (x payload) | "
             "device 4 KiB blocks/commit | records queued at end | data.mdb MiB | load 1-min start / end |\n"
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::vector<WearResult> results;
  for (const auto& shape : s.shapes) {
    for (const auto& fsync : s.fsyncs) {
      for (bool pinned : {true, false}) {
        if (!pinned && !s.before) continue;
        results.push_back(run_wear(s, shape, fsync, pinned, lines));
        const WearResult& r = results.back();
        std::cerr << fmt::format("  {} {} pinned={}: {:.0f} records in {:.1f} s, write_bytes {:.0f}, cancelled {:.0f}, "
                                 "block layer {:.0f}, queue metric {:.0f}, commits {:.0f}, flushes {:.0f}, delivered {:.0f}\n",
                                 shape, fsync, pinned, r.records(), r.seconds(), r.b.device_bytes - r.a.device_bytes,
                                 r.b.cancelled_bytes - r.a.cancelled_bytes, r.block_bytes,
                                 r.b.queue_written - r.a.queue_written, r.b.commits - r.a.commits,
                                 r.b.flushes - r.a.flushes, r.b.delivered - r.a.delivered);
        print_wear_row(results.back());
      }
    }
  }
  if (!s.before) return;
  fmt::print("\n| input | fsync | records/s | commits/s | device B/record (x payload) | queue metric B/record | "
             "write_bytes B/record | before: commits/s | before: device B/record (x payload) | before: write_bytes "
             "B/record | device bytes pinned / before |\n"
             "|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (std::size_t i = 0; i + 1 < results.size(); i += 2) {
    const WearResult& p = results[i];
    const WearResult& b = results[i + 1];
    fmt::print("| {} | {} | {:.0f} | {:.0f} | {} | {:.0f} | {:.0f} | {:.0f} | {} | {:.0f} | {:.2f} |\n", p.shape, p.fsync,
               p.rate(), p.commits_per_second(), per_record(p.block_per_record()), p.queue_per_record(),
               p.device_per_record(), b.commits_per_second(), per_record(b.block_per_record()), b.device_per_record(),
               p.best_per_record() / b.best_per_record());
  }
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------------------------
// Report

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string ms(double v) { return v < 0 ? std::string("-") : v < 10 ? fmt::format("{:.2f}", v) : fmt::format("{:.1f}", v); }
double mib(std::uint64_t b) { return static_cast<double>(b) / 1048576.0; }

// Runs `once(n, rate)` --repeat times flat out, then (when `paced`) once at --load % of the
// median rate; prints one row.
void scenario_row(const Settings& s, const std::string& name, std::uint64_t n, bool paced,
                  const std::function<Result(std::uint64_t, std::uint64_t)>& once) {
  std::vector<Result> runs;
  for (int i = 0; i < s.repeat; ++i) {
    runs.push_back(once(n, 0));
    std::cerr << fmt::format("  {} run {}: {:.0f} records/s, {:.2f} CPU-s/M, peak {:.1f} MiB, p50 {} p99 {} ms ({} stamped)\n",
                             name, i + 1, runs.back().rate(), runs.back().cpu_per_million(), mib(runs.back().rss),
                             ms(runs.back().latency.p50_ms), ms(runs.back().latency.p99_ms), runs.back().latency.records);
  }
  std::sort(runs.begin(), runs.end(), [](const Result& a, const Result& b) { return a.rate() < b.rate(); });
  const Result& mid = runs[runs.size() / 2];
  std::string paced_cells = "- | - | -";
  if (paced) {
    const auto rate = static_cast<std::uint64_t>(mid.rate() * s.load_percent / 100.0);
    const auto m = std::max<std::uint64_t>(1000, static_cast<std::uint64_t>(static_cast<double>(rate) * s.paced_seconds));
    Result p = once(m, rate);
    std::cerr << fmt::format("  {} paced at {} records/s: p50 {} p99 {} max {} ms, CPU {:.0f} %\n", name, rate,
                             ms(p.latency.p50_ms), ms(p.latency.p99_ms), ms(p.latency.max_ms), 100 * p.cpu / p.seconds);
    paced_cells = fmt::format("{} | {} | {}", rate, ms(p.latency.p50_ms), ms(p.latency.p99_ms));
  }
  fmt::print("| {} | {} | {:.0f} ({:.0f}-{:.0f}) | {:.1f} | {:.2f} | {:.1f} / {:.1f} | {} | {} | {} |\n", name, n,
             mid.rate(), runs.front().rate(), runs.back().rate(),
             static_cast<double>(mid.bytes) / mid.seconds / 1e6, mid.cpu_per_million(), mib(mid.rss), mib(mid.anon),
             ms(mid.latency.p50_ms), ms(mid.latency.p99_ms), paced_cells);
  std::fflush(stdout);
}

void print_scenario_header() {
  fmt::print("| scenario | records | records/s (range) | MB/s | CPU-s per M | peak RSS / anon MiB | p50 ms | p99 ms | "
             "paced records/s | p50 ms paced | p99 ms paced |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
}

// The depth sweep: one fresh tank per depth and run.
struct DepthResult {
  double depth_bytes = 0;
  Result append;
  Result consume;
};

DepthResult run_depth(const Settings& s, std::uint64_t depth, Lines& filler, Lines& measured) {
  HttpSink sink;
  sink.hold();
  Tank t = start_tank(s, s.dir / "run",
                      "[[inputs.tcp]]\nname = \"bench\"\nlisten = \"127.0.0.1:0\"\n" + http_output(sink.url()));
  const int fd = connect_tcp(t.input_address);
  // Fill: the filler lines again and again until the queue holds `depth` bytes of pages.
  std::uint64_t sent = 0;
  while (t.counted("tank_queue_disk_bytes", {}) < static_cast<double>(depth)) {
    for (std::size_t off = 0; off < filler.data.size(); off += 1 << 20) {
      write_all(fd, std::string_view(filler.data).substr(off, 1 << 20));
    }
    sent += filler.size();
    wait_count(t, "tank_input_records_total", kInput, static_cast<double>(sent));
  }
  DepthResult d;
  d.depth_bytes = t.counted("tank_queue_disk_bytes", {});
  const std::uint64_t n = measured.size();
  d.append = measure(
      t, [&] { send_lines(measured, 0, n, 0, [&](std::string_view x) { write_all(fd, x); }); },
      "tank_input_records_total", kInput, sent + n);
  d.append.records = n;
  // Consume: release the upstream; tank delivers from the head of the queue.
  const double delivered0 = t.counted("tank_output_records_total", kDelivered);
  d.consume = measure(t, [&] { sink.release(); }, "tank_output_records_total", kDelivered,
                      static_cast<std::uint64_t>(delivered0) + n);
  d.consume.records = n;
  ::close(fd);
  t.process->stop();
  return d;
}

[[noreturn]] void usage(int code) {
  std::cerr << "usage: e2e_bench --tank PATH --scenario tcp-http|mqtt-http|file-mqtt|validate-http|aggregate|size|depth|wear\n"
               "  [--dir DIR] [--records N] [--repeat R] [--load PERCENT] [--paced-seconds S]\n"
               "  [--sizes 100,1024,...] [--size-bytes B] [--depths 0,64,...(MiB)] [--depth-records N]\n"
               "  wear: [--shapes http-100,tcp,mqtt-1] [--fsyncs always,interval,never] [--seconds 60] [--warmup 5]\n"
               "        [--rate 10000] [--max-disk 1GiB] [--no-before] [--perf /usr/bin/perf (root)]\n"
               "(see the comment at the top of bench/e2e_bench.cpp)\n";
  std::exit(code);
}

std::vector<std::string> words(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  for (std::string part; std::getline(in, part, ',');) {
    if (!part.empty()) out.push_back(part);
  }
  return out;
}

template <class T>
std::vector<T> numbers(const std::string& list) {
  std::vector<T> out;
  std::stringstream in(list);
  for (std::string part; std::getline(in, part, ',');) {
    if (!part.empty()) out.push_back(static_cast<T>(std::stoull(part)));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  Settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(2);
      return argv[++i];
    };
    if (a == "--tank") s.tank = value();
    else if (a == "--dir") s.dir = value();
    else if (a == "--scenario") s.scenario = value();
    else if (a == "--records") s.records = std::stoull(value());
    else if (a == "--repeat") s.repeat = std::max(1, std::stoi(value()));
    else if (a == "--load") s.load_percent = std::stod(value());
    else if (a == "--paced-seconds") s.paced_seconds = std::stod(value());
    else if (a == "--sizes") s.sizes = numbers<std::size_t>(value());
    else if (a == "--size-bytes") s.size_bytes = std::stoull(value());
    else if (a == "--depths") s.depths_mib = numbers<std::uint64_t>(value());
    else if (a == "--depth-records") s.depth_records = std::stoull(value());
    else if (a == "--shapes") s.shapes = words(value());
    else if (a == "--fsyncs") s.fsyncs = words(value());
    else if (a == "--seconds") s.wear_seconds = std::stod(value());
    else if (a == "--warmup") s.warmup_seconds = std::stod(value());
    else if (a == "--rate") s.rate = std::stoull(value());
    else if (a == "--max-disk") s.max_disk = value();
    else if (a == "--no-before") s.before = false;
    else if (a == "--perf") s.perf = value();
    else if (a == "--help" || a == "-h") usage(0);
    else usage(2);
  }
  if (s.tank.empty() || s.scenario.empty()) usage(2);
  s.tank = fs::absolute(s.tank).string();
  if (!fs::exists(s.tank)) die("no tank binary at " + s.tank);
  fs::create_directories(s.dir);
  auto records = [&](std::uint64_t fallback) { return s.records != 0 ? s.records : fallback; };

  if (s.scenario == "tcp-http" || s.scenario == "validate-http" || s.scenario == "aggregate") {
    const std::string processor = s.scenario == "tcp-http" ? "" : s.scenario == "validate-http" ? "validate" : "aggregate";
    const std::string input = processor.empty() ? "" : "format = \"json\"\n";
    const std::string label = s.scenario == "tcp-http"        ? "TCP -> queue -> HTTP"
                              : s.scenario == "validate-http" ? "TCP -> decode + validate -> queue -> HTTP"
                                                              : "TCP -> queue -> aggregate (committed)";
    print_scenario_header();
    scenario_row(s, label, records(processor.empty() ? 5'000'000 : 3'000'000), processor != "aggregate",
                 [&](std::uint64_t n, std::uint64_t rate) { return run_tcp_http(s, n, rate, 0, input, processor); });
  } else if (s.scenario == "mqtt-http") {
    print_scenario_header();
    scenario_row(s, "MQTT QoS 1 -> queue -> HTTP", records(300'000), true,
                 [&](std::uint64_t n, std::uint64_t rate) { return run_mqtt_http(s, n, rate); });
  } else if (s.scenario == "file-mqtt") {
    print_scenario_header();
    scenario_row(s, "file tail -> queue -> MQTT QoS 1", records(3'000'000), true,
                 [&](std::uint64_t n, std::uint64_t rate) { return run_file_mqtt(s, n, rate); });
  } else if (s.scenario == "size") {
    fmt::print("| record size | records | records/s (range) | MB/s | CPU-s per M | CPU-s per GB | peak RSS / anon MiB | p50 ms | p99 ms |\n"
               "|---|---|---|---|---|---|---|---|---|\n");
    for (std::size_t size : s.sizes) {
      const std::uint64_t n = std::min<std::uint64_t>(5'000'000, s.size_bytes / size);
      const std::string input = size > 32768 ? "max_line_bytes = \"128KiB\"\n" : "";
      std::vector<Result> runs;
      for (int i = 0; i < s.repeat; ++i) runs.push_back(run_tcp_http(s, n, 0, size, input, ""));
      std::sort(runs.begin(), runs.end(), [](const Result& a, const Result& b) { return a.rate() < b.rate(); });
      const Result& m = runs[runs.size() / 2];
      fmt::print("| {} B | {} | {:.0f} ({:.0f}-{:.0f}) | {:.1f} | {:.2f} | {:.2f} | {:.1f} / {:.1f} | {} | {} |\n", size, n,
                 m.rate(), runs.front().rate(), runs.back().rate(), static_cast<double>(m.bytes) / m.seconds / 1e6,
                 m.cpu_per_million(), m.cpu / (static_cast<double>(m.bytes) / 1e9), mib(m.rss), mib(m.anon),
                 ms(m.latency.p50_ms), ms(m.latency.p99_ms));
      std::fflush(stdout);
    }
  } else if (s.scenario == "depth") {
    fmt::print("| backlog | pages held | append records/s | append CPU-s per M | consume records/s | consume CPU-s per M | "
               "peak RSS / anon MiB |\n|---|---|---|---|---|---|---|\n");
    Lines filler = make_lines(500'000, 0, 0);
    Lines measured = make_lines(s.depth_records, 0, 500'000);
    for (std::uint64_t depth : s.depths_mib) {
      std::vector<DepthResult> runs;
      for (int i = 0; i < s.repeat; ++i) {
        runs.push_back(run_depth(s, depth << 20, filler, measured));
        const auto& d = runs.back();
        std::cerr << fmt::format("  depth {} MiB run {}: append {:.0f}/s {:.2f} CPU-s/M, consume {:.0f}/s {:.2f} CPU-s/M, peak {:.1f} MiB\n",
                                 depth, i + 1, d.append.rate(), d.append.cpu_per_million(), d.consume.rate(),
                                 d.consume.cpu_per_million(), mib(std::max(d.append.rss, d.consume.rss)));
      }
      auto med = [&](auto f) {
        std::vector<double> v;
        for (const auto& d : runs) v.push_back(f(d));
        return median(v);
      };
      fmt::print("| {} MiB | {:.0f} MiB | {:.0f} | {:.2f} | {:.0f} | {:.2f} | {:.1f} / {:.1f} |\n", depth,
                 med([](const DepthResult& d) { return d.depth_bytes / 1048576.0; }),
                 med([](const DepthResult& d) { return d.append.rate(); }),
                 med([](const DepthResult& d) { return d.append.cpu_per_million(); }),
                 med([](const DepthResult& d) { return d.consume.rate(); }),
                 med([](const DepthResult& d) { return d.consume.cpu_per_million(); }),
                 med([](const DepthResult& d) { return mib(std::max(d.append.rss, d.consume.rss)); }),
                 med([](const DepthResult& d) { return mib(d.consume.anon); }));
      std::fflush(stdout);
    }
  } else if (s.scenario == "wear") {
    run_wear_scenario(s);
  } else {
    usage(2);
  }
  fs::remove_all(s.dir / "run");
  return 0;
}
