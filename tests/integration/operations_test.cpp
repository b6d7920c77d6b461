// tank under a service manager: the systemd unit as systemd-analyze judges it, the sd_notify
// messages tank sends (READY, RELOADING, STOPPING, WATCHDOG), the watchdog that stops when a
// thread is wedged but not when an upstream is down, and reloads (SIGHUP) on the same queue.

#include <catch2/catch.hpp>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <csignal>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "support/http_upstream.hpp"
#include "support/input_helpers.hpp"
#include "support/mosquitto.hpp"  // free_tcp_port
#include "support/notify_socket.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

// Replaces a file at once (as configuration management does): a reload never reads half of it.
void replace_file(const std::filesystem::path& path, const std::string& text) {
  write_file(path.string() + ".new", text);
  std::filesystem::rename(path.string() + ".new", path);
}

// A configuration with agent options of the test's own (write_test_config has its own [agent]).
std::filesystem::path write_config(const TempDir& dir, const std::string& agent_extra, const std::string& rest) {
  const auto path = dir / "tank.toml";
  replace_file(path, fmt::format("[agent]\nid = \"ops\"\ndata_dir = \"{}\"\nlog_format = \"text\"\n{}\n\n"
                               "[metrics]\nlisten = \"127.0.0.1:0\"\n\n{}",
                               (dir / "data").string(), agent_extra, rest));
  return path;
}

std::string tcp_input(const std::string& name, int port) {
  return fmt::format("[[inputs.tcp]]\nname = \"{}\"\nlisten = \"127.0.0.1:{}\"\nformat = \"json\"\n\n", name, port);
}

std::string file_output(const TempDir& dir, const std::string& name, int batch_max_records = 50) {
  return fmt::format("[[outputs.file]]\nname = \"{}\"\ndirectory = \"{}\"\ncompression = \"none\"\n"
                     "batch_max_records = {}\nlinger = \"10ms\"\n\n",
                     name, (dir / name).string(), batch_max_records);
}

// An HTTP output to a port where nothing listens: every send fails at once (connection refused).
std::string dead_http_output(const std::string& name, int port) {
  return fmt::format("[[outputs.http]]\nname = \"{}\"\nurl = \"http://127.0.0.1:{}/in\"\nretry_initial = \"50ms\"\n"
                     "retry_max = \"200ms\"\nbreaker_failures = 1000\n\n",
                     name, port);
}

void send_numbers(const std::string& address, int first, int count) {
  std::string text;
  for (int i = first; i < first + count; ++i) text += fmt::format(R"({{"n":{}}})", i) + "\n";
  int fd = -1;
  wait_until([&] { return (fd = tcp_connect(address)) >= 0; }, std::chrono::seconds(5));
  REQUIRE(fd >= 0);
  REQUIRE(send_all(fd, text));
  ::close(fd);
}

// Every "n" in the files of an outputs.file directory, with how often it came.
std::map<int, int> numbers_in(const std::filesystem::path& directory) {
  std::map<int, int> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(directory, ec)) {
    std::istringstream in(read_file(e.path()));
    for (std::string line; std::getline(in, line);) {
      static const std::regex n(R"re("n":(\d+))re");
      std::smatch m;
      if (std::regex_search(line, m, n)) ++out[std::stoi(m[1])];
    }
  }
  return out;
}

double metric(const std::string& address, const std::string& sample) {
  return metric_value(scrape(address), sample).value_or(-1);
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::size_t occurrences(const std::string& text, const std::string& part) {
  std::size_t n = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size())) ++n;
  return n;
}

}  // namespace

TEST_CASE("systemd unit: systemd-analyze verify passes and security rates its exposure 2.0 or lower",
          "[integration][operations][systemd]") {
  TempDir dir;
  // verify checks that the commands exist: point them at the binary under test.
  std::string unit = read_file(std::filesystem::path(TANK_SOURCE_DIR) / "systemd" / "tank.service");
  std::string::size_type at = 0;
  while ((at = unit.find("/usr/bin/tank", at)) != std::string::npos) {
    unit.replace(at, 13, tank_binary());
    at += tank_binary().size();
  }
  write_file(dir / "tank.service", unit);
  auto verify = run({"/usr/bin/systemd-analyze", "verify", (dir / "tank.service").string()});
  INFO(verify.out << verify.err);
  CHECK(verify.exit_code == 0);
  CHECK(verify.err.empty());

  auto security = run({"/usr/bin/systemd-analyze", "security", "--offline=true", "--no-pager", (dir / "tank.service").string()});
  INFO(security.out << security.err);
  CHECK(security.exit_code == 0);
  std::smatch m;
  static const std::regex overall(R"(Overall exposure level for tank\.service: ([0-9.]+))");
  REQUIRE(std::regex_search(security.out, m, overall));
  CHECK(std::stod(m[1]) <= 2.0);
  // The settings the issue names are there.
  for (const char* line : {"Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=tank",
                           "ConfigurationDirectory=tank", "DynamicUser=yes", "NoNewPrivileges=yes",
                           "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "RestrictAddressFamilies=",
                           "SystemCallFilter=@system-service", "CapabilityBoundingSet=\n", "MemoryDenyWriteExecute=yes",
                           "ExecReload="}) {
    INFO(line);
    CHECK(has(unit, line));
  }
}

TEST_CASE("sd_notify: READY once the pipeline is up, WATCHDOG while it works, RELOADING then READY around a "
          "reload, STOPPING on SIGTERM",
          "[integration][operations][systemd]") {
  TempDir dir;
  NotifySocket notify(dir / "notify");
  const int port = free_tcp_port();
  const auto config = write_config(dir, "", tcp_input("plant", port) + file_output(dir, "archive"));
  TankProcess tank(config, {{"NOTIFY_SOCKET", notify.address()}, {"WATCHDOG_USEC", "200000"}});
  tank.wait_running(dir / "data");
  REQUIRE(wait_until([&] { return notify.count("READY=1") == 1; }));
  // READY comes once the inputs listen: a record sent now is taken.
  send_numbers(fmt::format("127.0.0.1:{}", port), 0, 10);
  CHECK(wait_until([&] { return numbers_in(dir / "archive").size() == 10; }));
  // Pinged at half of WATCHDOG_USEC.
  CHECK(wait_until([&] { return notify.count("WATCHDOG=1") >= 5; }));

  tank.process().signal(SIGHUP);
  CHECK(wait_until([&] { return notify.count("READY=1") == 2; }));
  CHECK(wait_until([&] { return has(tank.process().err(), "configuration reloaded"); }));
  send_numbers(fmt::format("127.0.0.1:{}", port), 10, 10);
  CHECK(wait_until([&] { return numbers_in(dir / "archive").size() == 20; }));
  CHECK(tank.stop() == 0);
  const std::vector<std::string> expected{"READY=1", "RELOADING=1", "READY=1", "STOPPING=1"};
  CHECK(notify.states() == expected);
  // RELOADING=1 carries the monotonic time (systemd's Type=notify-reload wants it).
  bool monotonic = false;
  for (const auto& m : notify.messages()) monotonic = monotonic || (has(m, "RELOADING=1") && has(m, "MONOTONIC_USEC="));
  CHECK(monotonic);
}

TEST_CASE("watchdog: a wedged delivery thread stops the pings and tank names it", "[integration][operations][watchdog]") {
  TempDir dir;
  NotifySocket notify(dir / "notify");
  const int port = free_tcp_port();
  const auto config = write_config(dir, "stall_timeout = \"1s\"", tcp_input("plant", port) + file_output(dir, "archive"));
  // The first send wedges its thread for ever.
  TankProcess tank(config, {{"NOTIFY_SOCKET", notify.address()},
                            {"WATCHDOG_USEC", "200000"},
                            {"TANK_FAILPOINTS", "output.send=1:hang"}});
  const std::string metrics = tank.wait_running(dir / "data");
  CHECK(wait_until([&] { return notify.count("WATCHDOG=1") >= 3; }));
  CHECK(metric(metrics, "tank_threads_stuck") == 0);
  send_numbers(fmt::format("127.0.0.1:{}", port), 0, 10);
  REQUIRE(wait_until([&] { return has(tank.process().err(), "stuck: \"output archive sender 0\""); }));
  CHECK(has(tank.process().err(), "the systemd watchdog is no longer pinged"));
  CHECK(metric(metrics, "tank_threads_stuck") == 1);
  // No ping after the stall was seen: systemd would restart tank after WatchdogSec.
  const std::size_t pings = notify.count("WATCHDOG=1");
  CHECK_FALSE(wait_until([&] { return notify.count("WATCHDOG=1") > pings; }, std::chrono::milliseconds(1500)));
  // The queue still holds the records (nothing acknowledged).
  tank.process().signal(SIGKILL);
  tank.process().wait();
}

TEST_CASE("watchdog: a wedged file input thread stops the pings", "[integration][operations][watchdog]") {
  TempDir dir;
  NotifySocket notify(dir / "notify");
  write_file(dir / "in.log", "{\"n\":1}\n");
  const auto config = write_config(
      dir, "stall_timeout = \"1s\"",
      fmt::format("[[inputs.file]]\nname = \"logs\"\npaths = [\"{}\"]\nformat = \"json\"\nread_from = \"beginning\"\n"
                  "poll_interval = \"50ms\"\n\n",
                  (dir / "in.log").string()) +
          file_output(dir, "archive"));
  TankProcess tank(config, {{"NOTIFY_SOCKET", notify.address()},
                            {"WATCHDOG_USEC", "200000"},
                            {"TANK_FAILPOINTS", "input.file.round=5:hang"}});
  tank.wait_running(dir / "data");
  REQUIRE(wait_until([&] { return has(tank.process().err(), "stuck: \"input logs\""); }));
  const std::size_t pings = notify.count("WATCHDOG=1");
  CHECK_FALSE(wait_until([&] { return notify.count("WATCHDOG=1") > pings; }, std::chrono::milliseconds(1500)));
  tank.process().signal(SIGKILL);
  tank.process().wait();
}

TEST_CASE("watchdog: an upstream that is down is not a stall and the pings go on", "[integration][operations][watchdog]") {
  TempDir dir;
  NotifySocket notify(dir / "notify");
  const int port = free_tcp_port();
  const auto config =
      write_config(dir, "stall_timeout = \"1s\"", tcp_input("plant", port) + dead_http_output("cloud", free_tcp_port()));
  TankProcess tank(config, {{"NOTIFY_SOCKET", notify.address()}, {"WATCHDOG_USEC", "200000"}});
  const std::string metrics = tank.wait_running(dir / "data");
  send_numbers(fmt::format("127.0.0.1:{}", port), 0, 10);
  CHECK(wait_until([&] {
    return metric(metrics, R"(tank_output_batches_total{output="cloud",result="retried",type="http"})") >= 5;
  }));
  // Three seconds of retries (three stall timeouts): pinged all along.
  const std::size_t before = notify.count("WATCHDOG=1");
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  wait_until([&] { return std::chrono::steady_clock::now() >= until; }, std::chrono::seconds(4));
  CHECK(notify.count("WATCHDOG=1") >= before + 10);
  CHECK_FALSE(has(tank.process().err(), "stuck:"));
  CHECK(tank.stop() == 0);
}

TEST_CASE("reload: a valid configuration is applied on the same queue with nothing lost or repeated and an invalid "
          "one is refused while the running one goes on",
          "[integration][operations][reload]") {
  TempDir dir;
  const int port = free_tcp_port();
  const std::string address = fmt::format("127.0.0.1:{}", port);
  // A file input too: a file keeps what arrives while the inputs restart (a TCP sender's bytes
  // in flight are the sender's to resend), so records written during a reload all arrive.
  write_file(dir / "in.log", "");
  const std::string file_input = fmt::format(
      "[[inputs.file]]\nname = \"logs\"\npaths = [\"{}\"]\nformat = \"json\"\nread_from = \"beginning\"\n"
      "poll_interval = \"20ms\"\n\n",
      (dir / "in.log").string());
  const auto config = write_config(dir, "", tcp_input("plant", port) + file_input + file_output(dir, "archive"));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  send_numbers(address, 0, 1000);
  CHECK(wait_until([&] { return numbers_in(dir / "archive").size() == 1000; }));

  // A second output, another batch size, and a log level: applied.
  write_config(dir, "log_level = \"debug\"",
               tcp_input("plant", port) + file_input + file_output(dir, "archive", 7) +
                   file_output(dir, "copy"));
  tank.process().signal(SIGHUP);
  const bool reloaded = wait_until([&] { return has(tank.process().err(), "configuration reloaded"); });
  INFO(tank.process().err());
  REQUIRE(reloaded);
  send_numbers(address, 1000, 1000);
  CHECK(wait_until([&] { return numbers_in(dir / "archive").size() == 2000; }));
  CHECK(wait_until([&] { return numbers_in(dir / "copy").size() == 1000; }));

  // Records written to the file while two reloads happen.
  std::atomic<bool> writing{true};
  std::thread writer([&] {
    for (int i = 10000; i < 12000; ++i) {
      append_file(dir / "in.log", fmt::format(R"({{"n":{}}})", i) + "\n");
      if (i % 100 == 0) std::this_thread::yield();
    }
    writing = false;
  });
  const std::size_t reloads = occurrences(tank.process().err(), "configuration reloaded from");
  tank.process().signal(SIGHUP);
  CHECK(wait_until([&] { return occurrences(tank.process().err(), "configuration reloaded from") == reloads + 1; }));
  tank.process().signal(SIGHUP);
  writer.join();
  // Handled before the file changes again (a late SIGHUP would read the empty file below).
  CHECK(wait_until([&] { return occurrences(tank.process().err(), "configuration reloaded from") == reloads + 2; }));

  // Empty (a file being written in place): refused, and the running configuration goes on.
  const std::string valid = read_file(config);
  replace_file(config, "");
  tank.process().signal(SIGHUP);
  REQUIRE(wait_until([&] { return has(tank.process().err(), "has no inputs and no outputs"); }));
  replace_file(config, valid);

  // Invalid: refused, said why, and the running configuration goes on.
  replace_file(config, read_file(config) + "[[outputs.file]]\nname = \"broken\"\ndirectory = \"/x\"\nno_such_option = 1\n");
  tank.process().signal(SIGHUP);
  REQUIRE(wait_until([&] { return has(tank.process().err(), "outputs.file[2].no_such_option: unknown option"); }));
  CHECK(wait_until([&] {
    return has(tank.process().err(), "the new configuration has 1 error; it was not applied and the running one goes on");
  }));
  send_numbers(address, 2000, 500);
  CHECK(wait_until([&] { return numbers_in(dir / "archive").size() == 4500; }, std::chrono::seconds(30)));
  CHECK(wait_until([&] { return numbers_in(dir / "copy").size() == 3500; }, std::chrono::seconds(30)));
  CHECK(wait_until([&] { return metric(metrics, "tank_queue_records") == 0; }));
  CHECK(metric(metrics, R"(tank_reloads_total{result="applied"})") == 3);
  CHECK(metric(metrics, R"(tank_reloads_total{result="refused"})") == 2);
  CHECK(metric(metrics, R"(tank_reloads_total{result="undone"})") == 0);
  CHECK(tank.stop() == 0);
  INFO(tank.process().err());
  const auto archive = numbers_in(dir / "archive");
  CHECK(archive.size() == 4500);
  CHECK(std::all_of(archive.begin(), archive.end(), [](const auto& e) { return e.second == 1; }));
  const auto copy = numbers_in(dir / "copy");
  CHECK(copy.size() == 3500);
  CHECK(copy.begin()->first == 1000);
  CHECK(std::all_of(copy.begin(), copy.end(), [](const auto& e) { return e.second == 1; }));
}

TEST_CASE("reload: socket inputs keep their sockets and connections, so a TCP sender writing through three reloads "
          "and a UDP sender lose nothing and a line cut by a reload arrives whole",
          "[integration][operations][reload]") {
  TempDir dir;
  const int port = free_tcp_port();
  const int udp_port = free_tcp_port();
  const std::string address = fmt::format("127.0.0.1:{}", port);
  const std::string udp_address = fmt::format("127.0.0.1:{}", udp_port);
  auto inputs = [&] {
    return tcp_input("plant", port) +
           fmt::format("[[inputs.udp]]\nname = \"dgram\"\nlisten = \"{}\"\nformat = \"json\"\n\n", udp_address);
  };
  const auto config = write_config(dir, "", inputs() + file_output(dir, "archive"));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  int fd = -1;
  REQUIRE(wait_until([&] { return (fd = tcp_connect(address)) >= 0; }, std::chrono::seconds(5)));

  // One TCP connection and one UDP sender, writing all through the reloads.
  std::atomic<bool> reloading{true};
  std::atomic<bool> tcp_failed{false};
  int tcp_sent = 0;
  int udp_sent = 0;
  std::thread tcp_writer([&] {
    for (int i = 0; reloading || i < 2000; ++i) {
      if (!send_all(fd, fmt::format(R"({{"n":{}}})", i) + "\n")) {
        tcp_failed = true;
        return;
      }
      tcp_sent = i + 1;
      if (i % 20 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));  // pacing, not waiting
    }
  });
  std::thread udp_writer([&] {
    for (int i = 0; reloading || i < 1000; ++i) {
      udp_send(udp_address, fmt::format(R"({{"n":{}}})", 1'000'000 + i));
      udp_sent = i + 1;
      std::this_thread::sleep_for(std::chrono::microseconds(300));  // pacing: the socket buffer never fills
    }
  });
  // The connection is accepted and read from before the first reload.
  REQUIRE(wait_until([&] { return metric(metrics, R"(tank_input_records_total{input="plant",type="tcp"})") > 0; }));
  for (int round = 1; round <= 3; ++round) {
    // A change each time (the batch size), and the same inputs.
    write_config(dir, "", inputs() + file_output(dir, "archive", 50 + round));
    tank.process().signal(SIGHUP);
    REQUIRE(wait_until([&] {
      return occurrences(tank.process().err(), "configuration reloaded from") == static_cast<std::size_t>(round);
    }));
  }
  reloading = false;
  tcp_writer.join();
  udp_writer.join();
  INFO(tank.process().err());
  CHECK_FALSE(tcp_failed);
  CHECK(occurrences(tank.process().err(), "(kept across the reload, with 1 open connection)") == 3);

  // A line cut in two by a reload: its first part read before, the rest after.
  // Every record written so far is in the queue (the reloads lost nothing the senders wrote).
  auto missing = [&] {
    const auto seen = numbers_in(dir / "archive");
    std::vector<int> out;
    for (int i = 0; i < tcp_sent; ++i) {
      if (!seen.contains(i)) out.push_back(i);
    }
    for (int i = 0; i < udp_sent; ++i) {
      if (!seen.contains(1'000'000 + i)) out.push_back(1'000'000 + i);
    }
    return out;
  };
  CHECK(wait_until([&] { return missing().empty(); }, std::chrono::seconds(60)));
  INFO("missing: " << fmt::format("{}", fmt::join(missing(), " ")));
  CHECK(missing().empty());
  CHECK(metric(metrics, R"(tank_input_records_total{input="plant",type="tcp"})") == tcp_sent);
  CHECK(metric(metrics, R"(tank_input_records_total{input="dgram",type="udp"})") == udp_sent);
  CHECK_FALSE(has(scrape(metrics), "tank_dead_letters_total{"));  // no line was cut into pieces
  REQUIRE(send_all(fd, R"({"n":)"));
  write_config(dir, "", inputs() + file_output(dir, "archive", 60));
  tank.process().signal(SIGHUP);
  REQUIRE(wait_until([&] { return occurrences(tank.process().err(), "configuration reloaded from") == 4; }));
  REQUIRE(send_all(fd, "777777}\n"));
  ::close(fd);

  CHECK(wait_until([&] { return numbers_in(dir / "archive").size() == static_cast<std::size_t>(tcp_sent + udp_sent + 1); },
                   std::chrono::seconds(60)));
  CHECK(tank.stop() == 0);
  const auto archive = numbers_in(dir / "archive");
  CHECK(archive.size() == static_cast<std::size_t>(tcp_sent + udp_sent + 1));
  CHECK(std::all_of(archive.begin(), archive.end(), [](const auto& e) { return e.second == 1; }));
  CHECK(archive.contains(777777));
  CHECK(archive.contains(tcp_sent - 1));
  CHECK(archive.contains(1'000'000 + udp_sent - 1));
}

TEST_CASE("reload: an output removed by a reload no longer holds records and a restart-only change is named",
          "[integration][operations][reload]") {
  TempDir dir;
  const int port = free_tcp_port();
  const int dead = free_tcp_port();
  const auto config =
      write_config(dir, "", tcp_input("plant", port) + file_output(dir, "archive") + dead_http_output("cloud", dead));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  send_numbers(fmt::format("127.0.0.1:{}", port), 0, 100);
  CHECK(wait_until([&] { return numbers_in(dir / "archive").size() == 100; }));
  // The dead output holds every record.
  CHECK(wait_until([&] { return metric(metrics, "tank_queue_records") == 100; }));

  const std::string text = read_file(config);
  std::string without = text.substr(0, text.find("[[outputs.http]]"));
  // A queue bound cannot change while the queue is open: named, not applied.
  without += "[queue]\nmax_disk_bytes = \"512MiB\"\n";
  replace_file(config, without);
  tank.process().signal(SIGHUP);
  REQUIRE(wait_until([&] { return has(tank.process().err(), "configuration reloaded"); }));
  CHECK(has(tank.process().err(), "consumer \"output/cloud\" is no longer configured"));
  CHECK(has(tank.process().err(), "[queue] changed: a reload cannot apply it"));
  CHECK(wait_until([&] { return metric(metrics, "tank_queue_records") == 0; }));
  CHECK(metric(metrics, "tank_queue_disk_limit_bytes") == 1024.0 * 1024 * 1024);
  // Still not applied: the next reload says so again.
  tank.process().signal(SIGHUP);
  CHECK(wait_until([&] { return occurrences(tank.process().err(), "[queue] changed: a reload cannot apply it") == 2; }));
  CHECK(tank.stop() == 0);
  auto stats = run({tank_binary(), "queue", "stats", "--data-dir", (dir / "data").string(), "--json"});
  CHECK(has(stats.out, "output/archive"));
  CHECK_FALSE(has(stats.out, "output/cloud"));
}

TEST_CASE("reload: a configuration that cannot start (its port is taken) is undone and the running one goes on",
          "[integration][operations][reload]") {
  TempDir dir;
  const int port = free_tcp_port();
  const auto config = write_config(dir, "", tcp_input("plant", port) + file_output(dir, "archive"));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  // Another program holds this port.
  const int holder = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  REQUIRE(::bind(holder, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(holder, 1) == 0);
  REQUIRE(::getsockname(holder, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  const int taken = ntohs(addr.sin_port);
  // A new output too: it must not stay behind in the queue when the reload is undone.
  write_config(dir, "", tcp_input("plant", port) + tcp_input("other", taken) + file_output(dir, "archive") +
                            file_output(dir, "extra"));
  tank.process().signal(SIGHUP);
  REQUIRE(wait_until([&] { return has(tank.process().err(), "going back to the running one"); }));
  CHECK(has(tank.process().err(), fmt::format("cannot listen on 127.0.0.1:{}", taken)));
  send_numbers(fmt::format("127.0.0.1:{}", port), 0, 100);
  CHECK(wait_until([&] { return numbers_in(dir / "archive").size() == 100; }));
  CHECK(wait_until([&] { return metric(metrics, "tank_queue_records") == 0; }));
  CHECK(metric(metrics, R"(tank_reloads_total{result="undone"})") == 1);
  CHECK(tank.stop() == 0);
  ::close(holder);
  auto stats = run({tank_binary(), "queue", "stats", "--data-dir", (dir / "data").string(), "--json"});
  CHECK(has(stats.out, "output/archive"));
  CHECK_FALSE(has(stats.out, "output/extra"));
}

TEST_CASE("logs: log_format json gives one object per line and bad input is described without its content",
          "[integration][operations][log]") {
  TempDir dir;
  const int port = free_tcp_port();
  const auto config = write_config(dir, "", tcp_input("plant", port) + file_output(dir, "archive"));
  std::string text = read_file(config);
  text.replace(text.find("log_format = \"text\""), 19, "log_format = \"json\"");
  replace_file(config, text);
  TankProcess tank(config);
  tank.wait_running(dir / "data");
  // Not JSON, and a secret in it: dead-lettered, and the log does not repeat it.
  send_numbers(fmt::format("127.0.0.1:{}", port), 0, 3);
  {
    const int fd = tcp_connect(fmt::format("127.0.0.1:{}", port));
    REQUIRE(fd >= 0);
    REQUIRE(send_all(fd, "password=hunter2-secret {not json\n"));
    ::close(fd);
  }
  CHECK(wait_until([&] { return dead_letters_in(dir / "data").size() == 1; }));
  CHECK(wait_until([&] { return numbers_in(dir / "archive").size() == 3; }));
  CHECK(tank.stop() == 0);
  const std::string err = tank.process().err();
  CHECK_FALSE(has(err, "hunter2"));
  std::istringstream in(err);
  std::size_t lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    INFO(line);
    const auto v = boost::json::parse(line).as_object();
    CHECK(v.contains("ts"));
    CHECK(v.contains("level"));
    CHECK(v.contains("component"));
    CHECK(v.contains("msg"));
  }
  CHECK(lines > 5);
}

TEST_CASE("package: the .deb installs with dpkg, its configuration is a conffile that passes tank check, and it "
          "removes and purges cleanly",
          "[integration][operations][package]") {
  if (::geteuid() != 0) FAIL("dpkg -i needs root: run the package test as root (CI does)");
  auto installed = run({"/usr/bin/dpkg-query", "-W", "-f=${Status}", "tank"});
  if (installed.out.find("installed") != std::string::npos && installed.out.find("not-installed") == std::string::npos) {
    FAIL("a tank package is installed on this machine; this test installs and purges its own: remove it first "
         "(dpkg -P tank)");
  }
  TempDir dir;
  auto pack = run({"/usr/bin/cpack", "-G", "DEB", "-B", dir.path().string(), "--config",
                   std::string(TANK_BUILD_DIR) + "/CPackConfig.cmake"},
                  {}, std::chrono::seconds(600));  // compresses the binary: slow for the sanitizer build under load
  INFO(pack.out << pack.err);
  REQUIRE(pack.exit_code == 0);
  std::filesystem::path deb;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    if (e.path().extension() == ".deb") deb = e.path();
  }
  REQUIRE(!deb.empty());
  CHECK(deb.filename().string().ends_with("_amd64.deb"));

  auto contents = run({"/usr/bin/dpkg-deb", "-c", deb.string()});
  for (const char* path : {"./usr/bin/tank", "./etc/tank/tank.toml", "./lib/systemd/system/tank.service",
                           "./usr/share/doc/tank/operations.md"}) {
    INFO(path);
    CHECK(has(contents.out, path));
  }
  auto control = run({"/usr/bin/dpkg-deb", "-I", deb.string()});
  CHECK(has(control.out, "conffiles"));
  CHECK(has(control.out, "postinst"));
  CHECK(has(control.out, "Package: tank"));

  struct Purge {
    ~Purge() { run({"/usr/bin/dpkg", "-P", "tank"}); }
  } purge_at_the_end;
  auto install = run({"/usr/bin/dpkg", "-i", deb.string()});
  INFO(install.out << install.err);
  REQUIRE(install.exit_code == 0);
  CHECK(run({"/usr/bin/dpkg-query", "-W", "-f=${Conffiles}", "tank"}).out.find("/etc/tank/tank.toml") !=
        std::string::npos);
  auto check = run({"/usr/bin/tank", "check", "-c", "/etc/tank/tank.toml"});
  INFO(check.out << check.err);
  CHECK(check.exit_code == 0);
  auto version = run({"/usr/bin/tank", "version"});
  CHECK(version.exit_code == 0);

  // An edited configuration survives a reinstall (kept, as Debian does with conffiles) and a
  // remove; purge deletes it.
  write_file("/etc/tank/tank.toml", read_file("/etc/tank/tank.toml") + "# edited by the admin\n");
  auto again = run({"/usr/bin/dpkg", "-i", "--force-confold", deb.string()});
  INFO(again.out << again.err);
  CHECK(again.exit_code == 0);
  CHECK(has(read_file("/etc/tank/tank.toml"), "# edited by the admin"));
  auto remove = run({"/usr/bin/dpkg", "-r", "tank"});
  CHECK(remove.exit_code == 0);
  CHECK_FALSE(std::filesystem::exists("/usr/bin/tank"));
  CHECK(std::filesystem::exists("/etc/tank/tank.toml"));
  auto purge = run({"/usr/bin/dpkg", "-P", "tank"});
  CHECK(purge.exit_code == 0);
  CHECK_FALSE(std::filesystem::exists("/etc/tank/tank.toml"));
  CHECK_FALSE(std::filesystem::exists("/lib/systemd/system/tank.service"));
}
