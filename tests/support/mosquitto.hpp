#pragma once

// A real mosquitto broker for tests, on a free loopback port, in a directory of its own, with
// persistence (a restart keeps sessions and queued QoS 1 messages); and a QoS 1 publisher that
// keeps publishing across broker restarts.

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/helpers.hpp"

namespace tank::test {

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_tcp_port();

class Mosquitto {
 public:
  struct Tls {
    std::filesystem::path ca_file, cert_file, key_file;
    bool require_client_certificate = false;
  };
  // Starts mosquitto; `extra` is appended to its configuration.
  explicit Mosquitto(const std::string& extra = "", std::optional<Tls> tls = std::nullopt);
  ~Mosquitto();

  std::string uri() const;  // tcp://127.0.0.1:PORT, or ssl://localhost:PORT with TLS
  int port() const { return port_; }
  void stop();   // SIGTERM (mosquitto saves its persistence file), waits for the exit
  void start();  // on the same port, with the saved state
  std::string log() const;

 private:
  TempDir dir_;
  int port_;
  bool tls_;
  std::unique_ptr<Process> process_;
};

// Publishes every payload to `topic` at `qos`, each until the broker acknowledged it, waiting
// through broker restarts (up to `deadline` in total). Returns how many were acknowledged.
// `progress`, when given, counts acknowledged publications as they happen.
std::size_t publish_all(const std::string& uri, const std::string& topic, const std::vector<std::string>& payloads,
                        int qos = 1, std::chrono::seconds deadline = std::chrono::seconds(120),
                        std::atomic<std::size_t>* progress = nullptr);

}  // namespace tank::test
