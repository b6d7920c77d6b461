#pragma once

// Helpers shared by tank's tests: temporary directories, waiting on a condition with a
// deadline (never a bare sleep), child processes with captured output, a minimal HTTP GET.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tank::test {

// A fresh directory under $TMPDIR, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// A TCP port on 127.0.0.1 that was free a moment ago, drawn at random below the kernel's
// ephemeral port range (net.ipv4.ip_local_port_range): no outgoing connection is given it, so a
// server that stops and starts again (tank killed, a broker restarted, an upstream down) finds
// it free again.
int free_tcp_port();

// Polls `condition` until it holds or `deadline` passes; returns whether it held.
bool wait_until(const std::function<bool()>& condition,
                std::chrono::milliseconds deadline = std::chrono::seconds(20));

void write_file(const std::filesystem::path& path, const std::string& content);
// Appends `content` to the end of `path` (created if missing); throws if it cannot.
void append_file(const std::filesystem::path& path, const std::string& content);
std::string read_file(const std::filesystem::path& path);

// A field of /proc/PID/status in bytes, e.g. "VmRSS" or "RssAnon"; 0 when the process or the
// field is not there.
std::uint64_t status_bytes(pid_t pid, const std::string& field);

// A child process with stdout and stderr captured into files.
class Process {
 public:
  // Starts argv[0] (a path) with `argv` and extra environment variables.
  explicit Process(std::vector<std::string> argv, std::map<std::string, std::string> env = {});
  ~Process();  // kills (SIGKILL) and reaps the child if it still runs
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int sig) const;
  // Waits for the exit; returns the exit code (128+N when killed by signal N), or nullopt when
  // it is still running at the deadline.
  std::optional<int> wait(std::chrono::milliseconds deadline = std::chrono::seconds(30));
  bool running();
  std::string out() const;
  std::string err() const;

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::filesystem::path out_path_;
  std::filesystem::path err_path_;
};

struct ProcessResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs a command to completion (`deadline` at most, then it is killed and run() throws).
ProcessResult run(std::vector<std::string> argv, std::map<std::string, std::string> env = {},
                  std::chrono::seconds deadline = std::chrono::seconds(30));

// The tank binary under test (set by CMake).
std::string tank_binary();

struct HttpReply {
  int status = 0;
  std::string body;
};
// GET http://<address><path> with a fresh connection; nullopt when it cannot connect.
std::optional<HttpReply> http_get(const std::string& address, const std::string& path);

struct HttpExchange {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};
// One request on a fresh connection (Connection: close); nullopt when it cannot connect or the
// answer is not HTTP.
std::optional<HttpExchange> http_request(const std::string& address, const std::string& method,
                                         const std::string& path, const std::string& body = "",
                                         const std::map<std::string, std::string>& headers = {});

// The value of a sample in Prometheus text format, e.g. metric_value(text,
// "tank_queue_dropped_records_total{policy=\"drop_oldest\"}"); nullopt when absent.
std::optional<double> metric_value(const std::string& exposition, const std::string& sample);

}  // namespace tank::test
