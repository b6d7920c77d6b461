#pragma once

// A real mosquitto broker for tests, on a free loopback port, in a directory of its own, with
// persistence (a restart keeps sessions and queued QoS 1 messages); and a QoS 1 publisher that
// keeps publishing across broker restarts.

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "support/helpers.hpp"

namespace tank::test {

class Mosquitto {
 public:
  struct Tls {
    std::filesystem::path ca_file, cert_file, key_file;
    bool require_client_certificate = false;
  };
  // Starts mosquitto; `extra` is appended to its configuration (after the main listener's
  // settings, so listener options such as require_certificate apply to it).
  explicit Mosquitto(const std::string& extra = "", std::optional<Tls> tls = std::nullopt);
  ~Mosquitto();

  std::string uri() const;  // tcp://127.0.0.1:PORT, or ssl://localhost:PORT with TLS
  int port() const { return port_; }
  // A plain listener for test publishers: with TLS a second listener on 127.0.0.1 (same broker,
  // same users and ACLs), else uri().
  std::string plain_uri() const;
  const std::filesystem::path& dir() const { return dir_.path(); }
  void stop();   // SIGTERM (mosquitto saves its persistence file), waits for the exit
  void start();  // on the same port, with the saved state
  // SIGSTOP: the broker stops answering while its connections stay open (the kernel still
  // accepts and acknowledges TCP), like a hung broker or a link that silently drops packets.
  void pause();
  void resume();  // SIGCONT
  std::string log() const;

 private:
  TempDir dir_;
  int port_;
  int plain_port_ = 0;  // with TLS only
  bool tls_;
  bool paused_ = false;
  std::unique_ptr<Process> process_;
};

// Resumes a paused broker when it leaves its scope, whatever way the test ends.
class PausedBroker {
 public:
  explicit PausedBroker(Mosquitto& broker) : broker_(broker) { broker_.pause(); }
  ~PausedBroker() { broker_.resume(); }
  PausedBroker(const PausedBroker&) = delete;
  PausedBroker& operator=(const PausedBroker&) = delete;

 private:
  Mosquitto& broker_;
};

// A certificate authority for TLS tests, made with the openssl command line in `dir`: EC P-256
// keys, certificates valid for a day. Fails the test (REQUIRE) when openssl fails.
class TestCa {
 public:
  struct Issued {
    std::filesystem::path cert_file, key_file;
  };
  TestCa(const std::filesystem::path& dir, const std::string& name);
  const std::filesystem::path& ca_file() const { return ca_file_; }
  // A server certificate; `alt_names` is its subjectAltName, e.g. {"DNS:localhost", "IP:127.0.0.1"}.
  Issued issue_server(const std::string& name, const std::vector<std::string>& alt_names);
  Issued issue_client(const std::string& name);

 private:
  Issued issue(const std::string& name, const std::string& extensions);
  std::filesystem::path dir_;
  std::string name_;
  std::filesystem::path ca_file_, ca_key_;
  int serial_ = 1;
};

// Publishes every payload to `topic` at `qos`, each until the broker acknowledged it, waiting
// through broker restarts (up to `deadline` in total). Returns how many were acknowledged.
// `progress`, when given, counts acknowledged publications as they happen.
std::size_t publish_all(const std::string& uri, const std::string& topic, const std::vector<std::string>& payloads,
                        int qos = 1, std::chrono::seconds deadline = std::chrono::seconds(120),
                        std::atomic<std::size_t>* progress = nullptr);

struct PublishOptions {
  int qos = 1;
  std::chrono::seconds deadline{120};
  std::atomic<std::size_t>* progress = nullptr;
  std::string username, password;  // empty: anonymous
};
std::size_t publish_all(const std::string& uri, const std::string& topic, const std::vector<std::string>& payloads,
                        const PublishOptions& options);

// Subscribes to `filter` at QoS 1 on a persistent session (MQTT 5 with a session expiry, or
// 3.1.1 with clean_session = false) and records every message, reconnecting by itself through
// broker restarts: the broker keeps what arrives for it meanwhile. Like a cloud consumer.
class MqttCollector {
 public:
  struct Message {
    std::string topic;
    std::string payload;
    std::string content_type;  // MQTT 5 Content Type
    std::vector<std::pair<std::string, std::string>> user_properties;
    std::string user_property(const std::string& name) const;
  };
  MqttCollector(const std::string& uri, const std::string& filter, int version = 5);
  ~MqttCollector();
  MqttCollector(const MqttCollector&) = delete;
  MqttCollector& operator=(const MqttCollector&) = delete;
  std::vector<Message> messages() const;
  bool connected() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tank::test
