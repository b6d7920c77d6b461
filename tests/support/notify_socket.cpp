#include "support/notify_socket.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <sstream>
#include <stdexcept>

namespace tank::test {

NotifySocket::NotifySocket(std::filesystem::path path) : path_(std::move(path)) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string p = path_.string();
  if (p.size() >= sizeof addr.sun_path) throw std::runtime_error("notify socket path too long: " + p);
  std::memcpy(addr.sun_path, p.c_str(), p.size());
  std::filesystem::remove(path_);
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::pipe(stop_pipe_) != 0) {
    throw std::runtime_error("cannot bind the notify socket " + p + ": " + std::strerror(errno));
  }
  thread_ = std::thread([this] {
    char buf[4096];
    for (;;) {
      pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) continue;
      if (fds[1].revents != 0) return;
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) continue;
      std::lock_guard lock(mutex_);
      messages_.emplace_back(buf, static_cast<std::size_t>(n));
    }
  });
}

NotifySocket::~NotifySocket() {
  if (stop_pipe_[1] >= 0) (void)!::write(stop_pipe_[1], "x", 1);
  if (thread_.joinable()) thread_.join();
  for (int fd : {fd_, stop_pipe_[0], stop_pipe_[1]}) {
    if (fd >= 0) ::close(fd);
  }
  std::error_code ec;
  std::filesystem::remove(path_, ec);
}

std::vector<std::string> NotifySocket::messages() const {
  std::lock_guard lock(mutex_);
  return messages_;
}

namespace {
std::vector<std::string> lines_of(const std::string& message) {
  std::vector<std::string> out;
  std::istringstream in(message);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}
}  // namespace

std::size_t NotifySocket::count(const std::string& line) const {
  std::size_t n = 0;
  for (const auto& m : messages()) {
    for (const auto& l : lines_of(m)) n += l == line ? 1 : 0;
  }
  return n;
}

std::vector<std::string> NotifySocket::states() const {
  std::vector<std::string> out;
  for (const auto& m : messages()) {
    for (auto& l : lines_of(m)) {
      if (l == "WATCHDOG=1" || l.starts_with("STATUS=") || l.starts_with("MONOTONIC_USEC=") ||
          l.starts_with("EXTEND_TIMEOUT_USEC=")) {
        continue;
      }
      out.push_back(std::move(l));
    }
  }
  return out;
}

}  // namespace tank::test
