#pragma once

// What the benchmark programs share: a child process (the real tank), its memory and CPU, TCP
// and waiting helpers, a mosquitto of their own, a minimal MQTT client on tank's packet codec, an
// HTTP receiver standing in for the upstream. Header-only; every function is inline.

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
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
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "engine/run_state.hpp"
#include "mqtt/packets.hpp"

namespace bench {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

[[noreturn]] inline void die(const std::string& what) {
  std::cerr << program_invocation_short_name << ": " << what << "\n";
  std::exit(1);
}

inline bool wait_for(const std::function<bool()>& done, std::chrono::seconds deadline) {
  const auto end = Clock::now() + deadline;
  while (Clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

inline std::pair<std::string, unsigned short> host_port(const std::string& where) {
  auto colon = where.rfind(':');
  if (colon == std::string::npos) die("not host:port: " + where);
  std::string host = where.substr(0, colon);
  if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return {host, static_cast<unsigned short>(std::stoi(where.substr(colon + 1)))};
}

inline int connect_tcp(const std::string& where) {
  auto [host, port] = host_port(where);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    die(fmt::format("cannot connect to {}: {}", where, std::strerror(errno)));
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

inline void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) die(fmt::format("write: {}", std::strerror(errno)));
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

inline int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// A child process with stdout and stderr in `log`.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const fs::path& log,
        const std::vector<std::pair<std::string, std::string>>& env = {}) {
    pid_ = ::fork();
    if (pid_ < 0) die("fork failed");
    if (pid_ == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      for (const auto& [name, value] : env) ::setenv(name.c_str(), value.c_str(), 1);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      std::_Exit(127);
    }
  }
  ~Child() { stop(); }
  pid_t pid() const { return pid_; }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  // The caller waited for the process itself: nothing left to stop.
  void reaped() { pid_ = -1; }
  // kill -9, and reaped.
  void kill_hard() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  bool running() const { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }

 private:
  pid_t pid_ = -1;
};

// A field of /proc/PID/status in bytes, e.g. "VmHWM" (peak resident) or "RssAnon" (resident
// memory that is not a mapped file: LMDB's map is file-backed and the kernel reclaims it).
inline std::uint64_t status_bytes(pid_t pid, const std::string& field) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with(field + ":")) return std::stoull(line.substr(field.size() + 1)) * 1024;
  }
  return 0;
}

// A field of /proc/PID/io in bytes, e.g. "write_bytes": the page-cache memory the process made
// dirty (counted when a folio goes from clean to dirty, so once per writeback) and its direct I/O.
// Not exactly what the device receives: a whole large folio is charged when one 4 KiB page of it
// is dirtied, while ext4 writes back only the dirty blocks; the file system's journal is written
// by the kernel and is not in it. Reading another process's io needs the same user (or ptrace).
inline std::uint64_t io_bytes(pid_t pid, const std::string& field) {
  std::ifstream in(fmt::format("/proc/{}/io", pid));
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with(field + ":")) return std::stoull(line.substr(field.size() + 1));
  }
  die(fmt::format("no {} in /proc/{}/io", field, pid));
}

// CPU seconds (user + system) a process has used so far.
inline double cpu_seconds(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string text((std::istreambuf_iterator<char>(in)), {});
  auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);  // utime, stime
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// GET /metrics from tank's metrics listener: the whole exposition text.
inline std::string scrape_metrics(const std::string& metrics_address) {
  int fd = connect_tcp(metrics_address);
  write_all(fd, "GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n");
  std::string text;
  char buf[65536];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) text.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return text;
}

// The sum of the samples of `metric` whose labels contain every one of `labels` (each written
// as in the exposition, e.g. `output="bench"`).
inline double metric_sum(const std::string& text, const std::string& metric, const std::vector<std::string>& labels) {
  double total = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with(metric) || line.size() <= metric.size() ||
        (line[metric.size()] != '{' && line[metric.size()] != ' ')) {
      continue;
    }
    bool all = true;
    for (const auto& l : labels) all = all && line.find(l) != std::string::npos;
    if (all) total += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return total;
}

// A tank started by start_tank(): the process, its metrics listener and the address of the input
// named "bench" (for listening inputs).
struct RunningTank {
  std::unique_ptr<Child> process;
  fs::path dir;
  std::string metrics_address;
  std::string input_address;
};

// The configuration the benchmarks run: agent "bench" with its data in data_dir, a disk queue of
// `max_disk_bytes` (16 GiB unless given) with `fsync` and overflow "block", metrics on a free
// port, then `pipeline` (the inputs, processors and outputs).
inline std::string bench_config(const fs::path& data_dir, const std::string& fsync, const std::string& pipeline,
                                const std::string& max_disk_bytes = "16GiB") {
  return fmt::format("[agent]\nid = \"bench\"\ndata_dir = \"{}\"\nlog_format = \"text\"\n\n"
                     "[queue]\nmode = \"disk\"\nmax_disk_bytes = \"{}\"\nfsync = \"{}\"\noverflow = \"block\"\n\n"
                     "[metrics]\nlisten = \"127.0.0.1:0\"\n\n{}",
                     data_dir.string(), max_disk_bytes, fsync, pipeline);
}

// Writes `config` to dir/tank.toml, starts `binary run -c` on it (output in dir/tank.log, `env`
// added to its environment) and waits until data_dir/run.json says it runs.
inline RunningTank start_tank(const std::string& binary, const fs::path& dir, const fs::path& data_dir,
                              const std::string& config,
                              const std::vector<std::pair<std::string, std::string>>& env = {}) {
  std::ofstream(dir / "tank.toml") << config;
  RunningTank t;
  t.dir = dir;
  t.process = std::make_unique<Child>(std::vector<std::string>{binary, "run", "-c", (dir / "tank.toml").string()},
                                      dir / "tank.log", env);
  const pid_t pid = t.process->pid();
  bool up = wait_for([&] {
    if (!t.process->running()) return true;
    std::string error;
    auto s = tank::engine::read_run_state(data_dir / "run.json", &error);
    if (!s || s->state != "running" || s->pid != pid) return false;
    t.metrics_address = s->metrics_address;
    for (const auto& [name, where] : s->inputs) {
      if (name == "bench") t.input_address = where;
    }
    return true;
  }, std::chrono::seconds(30));
  if (!up || t.metrics_address.empty()) die("tank did not start; see " + (dir / "tank.log").string());
  return t;
}

// ---------------------------------------------------------------------------------------------
// MQTT: a mosquitto of the benchmark's own, and a client speaking MQTT 3.1.1 with tank's codec.

class MqttConnection {
 public:
  MqttConnection(int port, const std::string& client_id, bool clean) {
    fd_ = connect_tcp(fmt::format("127.0.0.1:{}", port));
    tank::mqtt::ConnectOptions o;
    o.client_id = client_id;
    o.clean_start = clean;
    o.keep_alive_seconds = 600;
    write_all(fd_, tank::mqtt::encode_connect(o));
    auto p = next();
    if (!p || p->first != tank::mqtt::PacketType::connack) die("no CONNACK from mosquitto");
  }
  ~MqttConnection() { ::close(fd_); }
  MqttConnection(const MqttConnection&) = delete;
  MqttConnection& operator=(const MqttConnection&) = delete;
  int fd() const { return fd_; }

  // The next packet: type and body; nullopt at the end of the stream.
  std::optional<std::pair<tank::mqtt::PacketType, std::string>> next() {
    for (;;) {
      auto f = tank::mqtt::frame(std::string_view(buf_).substr(pos_));
      if (!f.error.empty()) die("MQTT: " + f.error);
      if (f.packet) {
        std::pair<tank::mqtt::PacketType, std::string> out{f.packet->type, std::string(f.packet->body)};
        flags_ = f.packet->flags;
        pos_ += f.packet->size;
        return out;
      }
      buf_.erase(0, pos_);
      pos_ = 0;
      char tmp[65536];
      ssize_t n = ::read(fd_, tmp, sizeof tmp);
      if (n <= 0) return std::nullopt;
      buf_.append(tmp, static_cast<std::size_t>(n));
    }
  }
  std::uint8_t flags() const { return flags_; }

 private:
  int fd_ = -1;
  std::string buf_;
  std::size_t pos_ = 0;
  std::uint8_t flags_ = 0;
};

// A thread that counts the PUBACKs a publisher's connection receives, until there are n.
inline std::thread count_pubacks(MqttConnection& c, std::atomic<std::uint64_t>& acked, std::uint64_t n) {
  return std::thread([&c, &acked, n] {
    while (acked < n) {
      auto p = c.next();
      if (!p) die("mosquitto closed the publisher's connection");
      if (p->first == tank::mqtt::PacketType::puback) ++acked;
    }
  });
}

struct Broker {
  std::unique_ptr<Child> process;
  int port = 0;
};

// mosquitto on a free loopback port, persistence off, no queue limits; its files in `dir`.
inline Broker start_mosquitto(const fs::path& dir, int max_inflight) {
  fs::create_directories(dir);
  Broker b;
  b.port = free_port();
  std::ofstream(dir / "mosquitto.conf") << fmt::format(
      "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages {}\n"
      "max_queued_messages 0\nmax_queued_bytes 0\n{}",
      b.port, max_inflight, ::geteuid() == 0 ? "user root\n" : "");
  b.process = std::make_unique<Child>(
      std::vector<std::string>{"/usr/sbin/mosquitto", "-c", (dir / "mosquitto.conf").string()}, dir / "mosquitto.log");
  bool up = wait_for([&] {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<unsigned short>(b.port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
  }, std::chrono::seconds(10));
  if (!up) die("mosquitto did not start; see " + (dir / "mosquitto.log").string());
  return b;
}

// ---------------------------------------------------------------------------------------------
// The upstream of outputs.http: a Beast HTTP/1.1 server on 127.0.0.1 that reads each request and
// answers 200 (at once, or `delay_ms` late; while held, not before release()). It counts requests
// and body bytes, and with capture on keeps each body with its arrival time (steady clock, ns)
// and whether it is zstd, to be decoded after the run (decoding during the run would take CPU
// from tank).
class HttpSink {
 public:
  struct Delivery {
    std::uint64_t arrival_ns = 0;
    bool zstd = false;
    std::string body;
  };

  HttpSink() : acceptor_(io_, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0)) {
    thread_ = std::thread([this] {
      for (;;) {
        auto socket = std::make_shared<boost::asio::ip::tcp::socket>(io_);
        boost::system::error_code ec;
        acceptor_.accept(*socket, ec);
        if (ec || stopping_) return;
        std::thread([this, socket] { serve(*socket); }).detach();
      }
    });
  }
  ~HttpSink() {
    stopping_ = true;
    held_ = false;
    boost::system::error_code ec;
    boost::asio::ip::tcp::socket poke(io_);
    poke.connect(acceptor_.local_endpoint(), ec);
    thread_.join();
  }
  HttpSink(const HttpSink&) = delete;
  HttpSink& operator=(const HttpSink&) = delete;

  std::string url() const { return fmt::format("http://127.0.0.1:{}/ingest", acceptor_.local_endpoint().port()); }
  std::uint64_t bytes() const { return bytes_; }
  std::uint64_t requests() const { return requests_; }
  void set_delay_ms(unsigned ms) { delay_ms_ = ms; }
  void set_capture(bool on) { capture_ = on; }
  // While held, requests are read but not answered: the output waits and the queue fills.
  void hold() { held_ = true; }
  void release() { held_ = false; }
  // The bodies captured since the last call.
  std::vector<Delivery> take() {
    std::lock_guard lock(mutex_);
    return std::exchange(deliveries_, {});
  }

 private:
  void serve(boost::asio::ip::tcp::socket& socket) {
    namespace http = boost::beast::http;
    boost::beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(1ULL << 30);
      boost::system::error_code ec;
      http::read(socket, buffer, parser, ec);
      if (ec) return;
      const auto arrival = static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
      bytes_ += parser.get().body().size();
      ++requests_;
      if (capture_) {
        auto& req = parser.get();
        const bool zstd = req[http::field::content_encoding] == "zstd";
        std::lock_guard lock(mutex_);
        deliveries_.push_back({arrival, zstd, std::move(req.body())});
      }
      if (delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
      while (held_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      http::response<http::empty_body> res{http::status::ok, 11};
      res.keep_alive(true);
      res.prepare_payload();
      http::write(socket, res, ec);
      if (ec) return;
    }
  }
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> held_{false};
  std::atomic<bool> capture_{false};
  std::atomic<unsigned> delay_ms_{0};
  std::atomic<std::uint64_t> bytes_{0};
  std::atomic<std::uint64_t> requests_{0};
  std::mutex mutex_;
  std::vector<Delivery> deliveries_;
};

}  // namespace bench
