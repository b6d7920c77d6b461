#include "support/proxies.hpp"

#include <unistd.h>

#include <chrono>
#include <csignal>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "support/input_helpers.hpp"
#include "support/mosquitto.hpp"

namespace tank::test {
namespace {

void wait_listening(Process& process, int port, const std::string& what, const std::string& log) {
  const bool up = wait_until([&] {
    if (!process.running()) return true;
    const int fd = tcp_connect("127.0.0.1:" + std::to_string(port));
    if (fd < 0) return false;
    ::close(fd);
    return true;
  });
  INFO(what << " did not start: " << process.err() << log);
  REQUIRE(up);
  REQUIRE(process.running());
}

}  // namespace

Tinyproxy::Tinyproxy(const std::string& credentials) : port_(free_tcp_port()) {
  std::string conf = fmt::format(
      "Port {}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 64\nAllow 127.0.0.1\n"
      "DisableViaHeader Yes\n",
      port_, (dir_ / "tinyproxy.log").string());
  if (const auto colon = credentials.find(':'); colon != std::string::npos) {
    conf += fmt::format("BasicAuth {} {}\n", credentials.substr(0, colon), credentials.substr(colon + 1));
  }
  write_file(dir_ / "tinyproxy.conf", conf);
  process_ = std::make_unique<Process>(
      std::vector<std::string>{"/usr/bin/tinyproxy", "-d", "-c", (dir_ / "tinyproxy.conf").string()});
  wait_listening(*process_, port_, "tinyproxy", log());
}

Tinyproxy::~Tinyproxy() { process_->signal(SIGKILL); }

std::string Tinyproxy::log() const {
  std::error_code ec;
  return std::filesystem::exists(dir_ / "tinyproxy.log", ec) ? read_file(dir_ / "tinyproxy.log") : "";
}

Nginx::Nginx(int upstream_port) : port_(free_tcp_port()) {
  const std::string d = dir_.path().string();
  std::string conf = fmt::format(R"(master_process off;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream receiver {{
    server 127.0.0.1:{up};
    keepalive 4;
  }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 64m;
    location / {{
      proxy_pass http://receiver;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_read_timeout 30s;
    }}
  }}
}}
)",
                      fmt::arg("d", d), fmt::arg("up", upstream_port), fmt::arg("port", port_));
  write_file(dir_ / "nginx.conf", conf);
  process_ = std::make_unique<Process>(
      std::vector<std::string>{"/usr/sbin/nginx", "-p", d, "-e", d + "/error.log", "-c", d + "/nginx.conf"});
  wait_listening(*process_, port_, "nginx", error_log());
}

Nginx::~Nginx() {
  process_->signal(SIGTERM);
  if (!process_->wait(std::chrono::seconds(10))) process_->signal(SIGKILL);
}

std::string Nginx::url(const std::string& path) const { return fmt::format("http://127.0.0.1:{}{}", port_, path); }

std::string Nginx::access_log() const {
  std::error_code ec;
  return std::filesystem::exists(dir_ / "access.log", ec) ? read_file(dir_ / "access.log") : "";
}

std::string Nginx::error_log() const {
  std::error_code ec;
  return std::filesystem::exists(dir_ / "error.log", ec) ? read_file(dir_ / "error.log") : "";
}

}  // namespace tank::test
