#include "support/kafka_mock.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <sstream>

// The mock cluster program (tests/support/kafka_mock_cluster.cmake); none in a build without
// outputs_kafka, where no test starts one.
#ifndef KAFKA_MOCK_CLUSTER_PATH
#define KAFKA_MOCK_CLUSTER_PATH ""
#endif

namespace tank::test {
namespace {

std::string unhex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

}  // namespace

KafkaMock::KafkaMock(int brokers, std::vector<std::string> topics) {
  REQUIRE(std::string(KAFKA_MOCK_CLUSTER_PATH) != "");  // built without outputs_kafka
  int in[2], out[2];
  REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
  std::vector<std::string> args{KAFKA_MOCK_CLUSTER_PATH, "--brokers", std::to_string(brokers)};
  for (const auto& t : topics) {
    args.push_back("--topic");
    args.push_back(t);
  }
  pid_ = ::fork();
  REQUIRE(pid_ >= 0);
  if (pid_ == 0) {
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    // Nothing else of the test's: the mock checks that every listening socket it has is its own.
    ::close_range(3, ~0U, 0);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  to_ = in[1];
  from_ = out[0];
  const std::string first = read_line();
  INFO(first);
  REQUIRE(first.rfind("bootstraps=", 0) == 0);
  bootstraps_ = first.substr(11);
}

KafkaMock::~KafkaMock() {
  if (to_ >= 0) {
    const std::string quit = "quit\n";
    (void)!::write(to_, quit.data(), quit.size());
    ::close(to_);
  }
  if (pid_ > 0) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > until) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      ::usleep(10000);  // the child's own exit, which takes a few ms
    }
  }
  if (from_ >= 0) ::close(from_);
}

std::string KafkaMock::brokers_toml() const {
  std::string out = "[";
  std::istringstream in(bootstraps_);
  for (std::string b; std::getline(in, b, ',');) out += (out.size() > 1 ? ", \"" : "\"") + b + "\"";
  return out + "]";
}

std::string KafkaMock::read_line() {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    REQUIRE(left.count() > 0);
    pollfd p{from_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char chunk[65536];
    const ssize_t n = ::read(from_, chunk, sizeof chunk);
    REQUIRE(n > 0);  // the mock exited
    buffer_.append(chunk, static_cast<std::size_t>(n));
  }
}

std::string KafkaMock::command(const std::string& line) {
  const std::string text = line + "\n";
  REQUIRE(::write(to_, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  return read_line();
}

std::vector<KafkaMock::Message> KafkaMock::dump(const std::string& topic) {
  const std::string text = "dump " + topic + "\n";
  REQUIRE(::write(to_, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  std::vector<Message> out;
  for (;;) {
    const std::string line = read_line();
    if (!line.starts_with("msg ")) {
      INFO(line);
      REQUIRE(line.starts_with("ok"));
      return out;
    }
    // msg <partition> <offset> key=<hex|-> headers=<name>=<hex>;...|- value=<hex|->
    std::istringstream in(line.substr(4));
    Message m;
    std::string key, headers, value;
    in >> m.partition >> m.offset >> key >> headers >> value;
    if (key != "key=-") m.key = unhex(key.substr(4));
    if (headers != "headers=-") {
      std::istringstream hs(headers.substr(8));
      for (std::string h; std::getline(hs, h, ';');) {
        const auto eq = h.find('=');
        m.headers[h.substr(0, eq)] = h.substr(eq + 1) == "-" ? "" : unhex(h.substr(eq + 1));
      }
    }
    if (value != "value=-") m.value = unhex(value.substr(6));
    out.push_back(std::move(m));
  }
}

}  // namespace tank::test
