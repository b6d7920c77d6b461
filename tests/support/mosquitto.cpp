#include "support/mosquitto.hpp"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <mqtt/async_client.h>

#include "support/input_helpers.hpp"

namespace tank::test {

int free_tcp_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

Mosquitto::Mosquitto(const std::string& extra, std::optional<Tls> tls) : port_(free_tcp_port()), tls_(tls.has_value()) {
  std::string conf = "listener " + std::to_string(port_) + " 127.0.0.1\n" +
                     "allow_anonymous true\n"
                     "persistence true\n"
                     "persistence_location " + dir_.path().string() + "/\n"
                     "autosave_interval 1\n"
                     "max_queued_messages 0\n"
                     "log_dest file " + (dir_ / "mosquitto.log").string() + "\n"
                     "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n";
  if (::geteuid() == 0) conf += "user root\n";
  if (tls) {
    conf += "cafile " + tls->ca_file.string() + "\ncertfile " + tls->cert_file.string() + "\nkeyfile " +
            tls->key_file.string() + "\n";
    if (tls->require_client_certificate) conf += "require_certificate true\n";
  }
  conf += extra + "\n";
  write_file(dir_ / "mosquitto.conf", conf);
  start();
}

Mosquitto::~Mosquitto() {
  if (process_) process_->signal(SIGKILL);
}

std::string Mosquitto::uri() const {
  return (tls_ ? "ssl://localhost:" : "tcp://127.0.0.1:") + std::to_string(port_);
}

void Mosquitto::start() {
  process_ = std::make_unique<Process>(std::vector<std::string>{"/usr/sbin/mosquitto", "-c",
                                                                (dir_ / "mosquitto.conf").string()});
  const std::string address = "127.0.0.1:" + std::to_string(port_);
  bool up = wait_until([&] {
    if (!process_->running()) return true;
    int fd = tcp_connect(address);
    if (fd < 0) return false;
    ::close(fd);
    return true;
  });
  INFO(log() + process_->err());
  REQUIRE(up);
  REQUIRE(process_->running());
}

void Mosquitto::stop() {
  process_->signal(SIGTERM);
  REQUIRE(process_->wait(std::chrono::seconds(20)).has_value());
  process_.reset();
}

std::string Mosquitto::log() const {
  std::error_code ec;
  if (!std::filesystem::exists(dir_ / "mosquitto.log", ec)) return {};
  return read_file(dir_ / "mosquitto.log");
}

std::size_t publish_all(const std::string& uri, const std::string& topic, const std::vector<std::string>& payloads,
                        int qos, std::chrono::seconds deadline, std::atomic<std::size_t>* progress) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  mqtt::async_client client(uri, "tank-test-publisher-" + std::to_string(::getpid()), nullptr);
  auto options = mqtt::connect_options_builder().clean_session(true).connect_timeout(std::chrono::seconds(2)).finalize();
  std::size_t acknowledged = 0;
  while (acknowledged < payloads.size() && std::chrono::steady_clock::now() < until) {
    try {
      if (!client.is_connected()) client.connect(options)->wait();
      // A window of publications in flight, each waited for in order.
      std::vector<mqtt::delivery_token_ptr> window;
      for (std::size_t i = acknowledged; i < payloads.size() && window.size() < 64; ++i) {
        window.push_back(client.publish(topic, payloads[i].data(), payloads[i].size(), qos, false));
      }
      for (auto& token : window) {
        if (!token->wait_for(std::chrono::seconds(10))) throw std::runtime_error("no PUBACK in time");
        ++acknowledged;
        if (progress) progress->store(acknowledged);
      }
    } catch (const std::exception&) {
      // The broker is away (restarting): try again shortly; unacknowledged ones are sent again.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      try {
        if (client.is_connected()) client.disconnect()->wait_for(std::chrono::seconds(1));
      } catch (const std::exception&) {
      }
    }
  }
  try {
    if (client.is_connected()) client.disconnect()->wait_for(std::chrono::seconds(2));
  } catch (const std::exception&) {
  }
  return acknowledged;
}

}  // namespace tank::test
