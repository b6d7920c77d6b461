#pragma once

// Real HTTP intermediaries for the output tests, each on a free loopback port in a directory of
// its own, stopped (SIGKILL) by the destructor:
//   Tinyproxy  a forward proxy (CONNECT tunnels and absolute-form requests), optionally with
//              Basic credentials; its log shows what went through it.
//   Nginx      a reverse proxy in front of one upstream (HTTP/1.1 with keep-alive to it).
// Both fail the test (REQUIRE) when they do not start.

#include <filesystem>
#include <memory>
#include <string>

#include "support/helpers.hpp"

namespace tank::test {

class Tinyproxy {
 public:
  // `credentials`: "user:password" required from clients; empty: none.
  explicit Tinyproxy(const std::string& credentials = "");
  ~Tinyproxy();
  Tinyproxy(const Tinyproxy&) = delete;
  Tinyproxy& operator=(const Tinyproxy&) = delete;

  int port() const { return port_; }
  std::string log() const;  // one line per connection and request (LogLevel Connect)

 private:
  TempDir dir_;
  int port_;
  std::unique_ptr<Process> process_;
};

class Nginx {
 public:
  // Proxies every request to http://127.0.0.1:<upstream_port>.
  explicit Nginx(int upstream_port);
  ~Nginx();
  Nginx(const Nginx&) = delete;
  Nginx& operator=(const Nginx&) = delete;

  std::string url(const std::string& path = "/ingest") const;
  std::string access_log() const;
  std::string error_log() const;

 private:
  TempDir dir_;
  int port_;
  std::unique_ptr<Process> process_;
};

}  // namespace tank::test
