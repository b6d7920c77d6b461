// tank's life cycle as an operator sees it: memory when idle, time from exec to READY=1 (the
// moment systemd considers the service started), and time from SIGTERM to exit under load.
//
//   lifecycle_bench --tank build/agent/tank --dir /work/lbench [--queue-gib 1] [--repeat 3]
//
// idle       the embedded default configuration (tank run with no -c: inputs.http on
//            127.0.0.1:9880, outputs.file, metrics on 127.0.0.1:9464; those ports must be free),
//            STATE_DIRECTORY in --dir; VmRSS, RssAnon and threads after 5 s of idling.
// start      exec -> READY=1 on a NOTIFY_SOCKET of this program's, with a TCP input and an
//            outputs.file: an empty queue; then a queue holding --queue-gib GiB (filled through
//            the TCP input, nothing consuming it), after a clean stop, after a kill -9 (a quick
//            check), and after a kill -9 with run.json naming another boot (power lost: every page
//            and record is read; the page cache is dropped first when run as root).
// shutdown   4 TCP connections sending flat out into tank (TCP input -> queue -> outputs.file)
//            for 3 s, then SIGTERM: time to exit, its exit code, and the records in the queue
//            afterwards (tank queue stats).

#include <sys/un.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <thread>

#include "bench_support.hpp"
#include "engine/run_state.hpp"

using namespace bench;

namespace {

// systemd's side of sd_notify: a datagram socket; waits for a message holding `line`.
class NotifySocket {
 public:
  explicit NotifySocket(const fs::path& path) : path_(path) {
    fs::remove(path_);
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("cannot bind " + path_.string());
    timeval tv{0, 100000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~NotifySocket() {
    ::close(fd_);
    fs::remove(path_);
  }
  // The time the message arrived, or nullopt after `deadline`.
  std::optional<Clock::time_point> wait(const std::string& line, std::chrono::seconds deadline) {
    const auto end = Clock::now() + deadline;
    char buf[4096];
    while (Clock::now() < end) {
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) continue;
      const std::string m(buf, static_cast<std::size_t>(n));
      if (("\n" + m + "\n").find("\n" + line + "\n") != std::string::npos) return Clock::now();
    }
    return std::nullopt;
  }
  std::string address() const { return path_.string(); }

 private:
  fs::path path_;
  int fd_ = -1;
};

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::string g_tank;

fs::path write_config(const fs::path& dir, int port) {
  const auto config = dir / "tank.toml";
  std::ofstream(config) << fmt::format(
      "[agent]\nid = \"bench\"\ndata_dir = \"{}\"\nlog_format = \"text\"\n\n"
      "[queue]\nmax_disk_bytes = \"4GiB\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n"
      "[[inputs.tcp]]\nname = \"bench\"\nlisten = \"127.0.0.1:{}\"\n\n"
      "[[outputs.file]]\nname = \"archive\"\ndirectory = \"{}\"\nmax_file_bytes = \"256MiB\"\nmax_files = 2\n",
      (dir / "data").string(), port, (dir / "archive").string());
  return config;
}

// exec -> READY=1, in ms; the child keeps running.
double start_to_ready(std::unique_ptr<Child>& child, const std::vector<std::string>& argv, const fs::path& log,
                      std::vector<std::pair<std::string, std::string>> env, NotifySocket& notify) {
  env.emplace_back("NOTIFY_SOCKET", notify.address());
  const auto t0 = Clock::now();
  child = std::make_unique<Child>(argv, log, env);
  auto ready = notify.wait("READY=1", std::chrono::seconds(600));
  if (!ready) die("no READY=1 within 600 s; see " + log.string());
  return ms(*ready - t0);
}

void send_flat_out(int port, std::atomic<bool>& stop, std::atomic<std::uint64_t>& sent) {
  const int fd = connect_tcp(fmt::format("127.0.0.1:{}", port));
  std::string chunk;
  for (int i = 0; i < 1000; ++i) {
    chunk += fmt::format(R"({{"ts":1700000000123,"id":"s-{:04d}","v":23.517,"n":{}}})", i, i) + "\n";
  }
  while (!stop) {
    const ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL);
    if (n <= 0) break;  // tank closed the connection (stopping)
    sent += static_cast<std::uint64_t>(n) == chunk.size() ? 1000 : 0;
    if (static_cast<std::size_t>(n) < chunk.size()) {
      // A partial write: finish the chunk so that lines stay whole.
      std::string_view rest(chunk);
      rest.remove_prefix(static_cast<std::size_t>(n));
      while (!rest.empty()) {
        const ssize_t m = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
        if (m <= 0) break;
        rest.remove_prefix(static_cast<std::size_t>(m));
      }
    }
  }
  ::close(fd);
}

void fill_queue(int port, std::uint64_t bytes) {
  // ~60 B payloads; the queue stores ~100 B per record with its fields.
  const std::uint64_t records = bytes / 100;
  std::string chunk;
  for (int i = 0; i < 10000; ++i) {
    chunk += fmt::format(R"({{"ts":1700000000123,"id":"s-{:04d}","v":23.517,"n":{}}})", i, i) + "\n";
  }
  const int fd = connect_tcp(fmt::format("127.0.0.1:{}", port));
  for (std::uint64_t sent = 0; sent < records; sent += 10000) write_all(fd, chunk);
  ::close(fd);
}

std::uint64_t queue_records(const fs::path& data_dir) {
  const fs::path out = data_dir.parent_path() / "stats.json";
  Child stats({g_tank, "queue", "stats", "--data-dir", data_dir.string(), "--json"}, out);
  int status = 0;
  ::waitpid(stats.pid(), &status, 0);
  std::ifstream in(out);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto at = text.find("\"records\":");
  return at == std::string::npos ? 0 : std::stoull(text.substr(at + 10));
}

}  // namespace

int main(int argc, char** argv) {
  fs::path dir;
  double queue_gib = 1;
  int repeat = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--tank") g_tank = argv[i + 1];
    else if (a == "--dir") dir = argv[i + 1];
    else if (a == "--queue-gib") queue_gib = std::stod(argv[i + 1]);
    else if (a == "--repeat") repeat = std::stoi(argv[i + 1]);
    else die("unknown option " + a);
  }
  if (g_tank.empty() || dir.empty()) die("usage: lifecycle_bench --tank BIN --dir DIR [--queue-gib N] [--repeat N]");
  g_tank = fs::absolute(g_tank).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  NotifySocket notify(dir / "notify");

  // Idle, on the embedded default configuration.
  for (int r = 0; r < repeat; ++r) {
    fs::remove_all(dir / "default");
    fs::create_directories(dir / "default");
    std::unique_ptr<Child> tank;
    const double ready = start_to_ready(tank, {g_tank, "run"}, dir / "default.log",
                                        {{"STATE_DIRECTORY", (dir / "default").string()}}, notify);
    std::this_thread::sleep_for(std::chrono::seconds(5));  // idling is what is measured
    std::ifstream status(fmt::format("/proc/{}/status", tank->pid()));
    std::string threads;
    for (std::string line; std::getline(status, line);) {
      if (line.starts_with("Threads:")) threads = line.substr(8);
    }
    fmt::print("idle (embedded default)   READY after {:7.1f} ms   VmRSS {:6.2f} MiB   RssAnon {:6.2f} MiB   "
               "threads{}\n",
               ready, static_cast<double>(status_bytes(tank->pid(), "VmRSS")) / (1 << 20),
               static_cast<double>(status_bytes(tank->pid(), "RssAnon")) / (1 << 20), threads);
  }

  const int port = free_port();
  const fs::path config = write_config(dir, port);
  const std::vector<std::string> run{g_tank, "run", "-c", config.string()};

  // Start-up with an empty queue.
  for (int r = 0; r < repeat; ++r) {
    fs::remove_all(dir / "data");
    std::unique_ptr<Child> tank;
    const double ready = start_to_ready(tank, run, dir / "tank.log", {}, notify);
    fmt::print("start, empty queue        READY after {:7.1f} ms\n", ready);
  }

  // Start-up with a full queue: filled with nothing consuming it (outputs.file is removed for the
  // fill: a config of its own).
  {
    fs::remove_all(dir / "data");
    const auto fill_config = dir / "fill.toml";
    std::ofstream(fill_config) << fmt::format(
        "[agent]\nid = \"bench\"\ndata_dir = \"{}\"\nlog_format = \"text\"\n\n"
        "[queue]\nmax_disk_bytes = \"4GiB\"\nfsync = \"never\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n"
        "[[inputs.tcp]]\nname = \"bench\"\nlisten = \"127.0.0.1:{}\"\n",
        (dir / "data").string(), port);
    std::unique_ptr<Child> tank;
    start_to_ready(tank, {g_tank, "run", "-c", fill_config.string()}, dir / "fill.log", {}, notify);
    const auto t0 = Clock::now();
    fill_queue(port, static_cast<std::uint64_t>(queue_gib * (1ULL << 30)));
    // Wait until tank has committed what was sent (its metrics would tell; the queue's size is
    // enough: the file stops growing).
    std::uintmax_t last = 0;
    for (;;) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      const auto size = fs::file_size(dir / "data" / "queue" / "data.mdb");
      if (size == last) break;
      last = size;
    }
    tank->stop();
    fmt::print("filled the queue: {} records, data.mdb {:.2f} GiB, in {:.1f} s\n", queue_records(dir / "data"),
               static_cast<double>(fs::file_size(dir / "data" / "queue" / "data.mdb")) / (1ULL << 30),
               ms(Clock::now() - t0) / 1000);
  }
  // The file output would drain the queue once started: start with the fill configuration
  // (TCP input only, nothing consuming), which opens the same queue.
  const std::vector<std::string> run_full{g_tank, "run", "-c", (dir / "fill.toml").string()};
  for (int r = 0; r < repeat; ++r) {
    std::unique_ptr<Child> tank;
    const double ready = start_to_ready(tank, run_full, dir / "full.log", {}, notify);
    const auto t0 = Clock::now();
    tank->stop();
    fmt::print("start, full queue         READY after {:7.1f} ms   (clean stop before; stop took {:.1f} ms)\n", ready,
               ms(Clock::now() - t0));
  }
  for (int r = 0; r < repeat; ++r) {
    std::unique_ptr<Child> tank;
    start_to_ready(tank, run_full, dir / "full.log", {}, notify);
    tank->kill_hard();
    const double ready = start_to_ready(tank, run_full, dir / "full.log", {}, notify);
    fmt::print("start, full queue         READY after {:7.1f} ms   (after kill -9, same boot: quick check)\n", ready);
  }
  for (int r = 0; r < repeat; ++r) {
    // Power lost: killed, and run.json names another boot, so the start reads every page and
    // record of the queue (docs/queue.md). The page cache is dropped first, as after a reboot.
    std::unique_ptr<Child> tank;
    start_to_ready(tank, run_full, dir / "full.log", {}, notify);
    tank->kill_hard();
    const fs::path state = dir / "data" / "run.json";
    std::ifstream in(state);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto at = text.find("\"boot_id\":\"");
    if (at == std::string::npos) die("no boot_id in " + state.string());
    text.replace(at + 11, 36, "00000000-0000-0000-0000-000000000000");
    std::ofstream(state, std::ios::trunc) << text;
    ::sync();
    std::ofstream("/proc/sys/vm/drop_caches") << "3\n";  // as root; otherwise the cache stays warm
    const double ready = start_to_ready(tank, run_full, dir / "full.log", {}, notify);
    fmt::print("start, full queue         READY after {:7.1f} ms   (after kill -9 and a reboot: full check, cold cache)\n",
               ready);
  }

  // Shutdown under load.
  for (int r = 0; r < repeat; ++r) {
    fs::remove_all(dir / "data");
    fs::remove_all(dir / "archive");
    std::unique_ptr<Child> tank;
    start_to_ready(tank, run, dir / "tank.log", {}, notify);
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> sent{0};
    std::vector<std::thread> senders;
    for (int c = 0; c < 4; ++c) senders.emplace_back([&] { send_flat_out(port, stop, sent); });
    std::this_thread::sleep_for(std::chrono::seconds(3));  // the load is what is measured
    const pid_t pid = tank->pid();
    const auto t0 = Clock::now();
    ::kill(pid, SIGTERM);
    int status = 0;
    ::waitpid(pid, &status, 0);
    const double took = ms(Clock::now() - t0);
    stop = true;
    for (auto& t : senders) t.join();
    fmt::print("shutdown under load       exit {} after {:7.1f} ms   ({:.2f}M records sent in 3 s, {} left in the "
               "queue for the next start)\n",
               WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), took,
               static_cast<double>(sent.load()) / 1e6, queue_records(dir / "data"));
    tank->reaped();
  }
  return 0;
}
