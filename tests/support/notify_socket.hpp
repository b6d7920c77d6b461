#pragma once

// What systemd sees of tank: a datagram socket standing in for systemd's NOTIFY_SOCKET, which
// collects every sd_notify message tank sends (READY=1, WATCHDOG=1, ...), in order.

#include <chrono>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tank::test {

class NotifySocket {
 public:
  // Binds a socket at `path` (give a short path: at most 107 bytes) and starts collecting.
  explicit NotifySocket(std::filesystem::path path);
  ~NotifySocket();
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  // The value for NOTIFY_SOCKET.
  std::string address() const { return path_.string(); }
  // Every message so far, each one datagram (lines separated by '\n').
  std::vector<std::string> messages() const;
  // How many messages so far contain `line` as one of their lines.
  std::size_t count(const std::string& line) const;
  // The lines of every message so far, in order, without WATCHDOG=1 (the pings) and STATUS=.
  std::vector<std::string> states() const;

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
  mutable std::mutex mutex_;
  std::vector<std::string> messages_;
  std::thread thread_;
};

}  // namespace tank::test
