// inputs.modbus against pymodbus (issue 21's figure): device polls per second that tank commits,
// with the server's own ceiling measured in the same run by a bare libmodbus client that reads
// the same registers of the same devices as fast as it can, one request after the other (as one
// tank input does) and from several connections at once.
//
//   modbus_bench --tank build/agent/tank --server tests/support/modbus_server.py --dir /tmp/mbench
//     [--devices 50] [--registers 40] [--seconds 10] [--interval 10ms] [--inputs 1] [--clients 4]
//
// The server: one pymodbus 3.0 process (a single asyncio thread) serving slave ids 1..devices,
// each with holding registers 0..registers-1. tank: `inputs` inputs.modbus (each its own TCP
// connection), the devices split among them, each device's map `registers`/2 float32 fields
// (one request a device), poll_interval `interval` (shorter than a poll takes: tank polls flat
// out, skipped instants counted as poll_overrun), a disk queue with fsync "never" and no output.
// Output: Markdown rows (polls/s, registers/s, tank's CPU-s per 1000 polls).

#include <modbus/modbus.h>

#include <atomic>
#include <thread>

#include "bench_support.hpp"

using namespace bench;

namespace {

struct Settings {
  std::string tank, server;
  fs::path dir;
  int devices = 50;
  int registers = 40;
  int seconds = 10;
  std::string interval = "10ms";
  int inputs = 1;
  int clients = 4;
};

// The bare client: `connections` threads, each reading its share of the devices in turn for
// `seconds`; returns reads per second (each read is one device's `registers` registers).
double ceiling(const Settings& s, int port, int connections) {
  std::atomic<std::uint64_t> reads{0};
  std::atomic<std::uint64_t> failures{0};
  const auto end = Clock::now() + std::chrono::seconds(s.seconds);
  std::vector<std::thread> threads;
  for (int c = 0; c < connections; ++c) {
    threads.emplace_back([&, c] {
      modbus_t* ctx = modbus_new_tcp("127.0.0.1", port);
      if (ctx == nullptr || modbus_connect(ctx) != 0) die("the bare client cannot connect to pymodbus");
      std::vector<std::uint16_t> words(static_cast<std::size_t>(s.registers));
      while (Clock::now() < end) {
        for (int d = 1 + c; d <= s.devices && Clock::now() < end; d += connections) {
          modbus_set_slave(ctx, d);
          if (modbus_read_registers(ctx, 0, s.registers, words.data()) == s.registers) ++reads;
          else ++failures;
        }
      }
      modbus_close(ctx);
      modbus_free(ctx);
    });
  }
  for (auto& t : threads) t.join();
  if (failures > 0) std::cerr << "bare client: " << failures << " failed reads\n";
  return static_cast<double>(reads) / s.seconds;
}

std::string tank_pipeline(const Settings& s, int port) {
  std::string out;
  std::string fields;
  for (int r = 0; r + 1 < s.registers; r += 2) {
    fields += fmt::format("[[inputs.modbus.fields]]\nname = \"f{}\"\naddress = {}\ntype = \"float32\"\n\n", r, r);
  }
  for (int i = 0; i < s.inputs; ++i) {
    out += fmt::format("[[inputs.modbus]]\nname = \"bench{}\"\ncontroller = \"tcp://127.0.0.1:{}\"\n"
                       "poll_interval = \"{}\"\ntimeout = \"2s\"\n\n",
                       i, port, s.interval);
    for (int d = 1 + i; d <= s.devices; d += s.inputs) {
      out += fmt::format("[[inputs.modbus.devices]]\nslave_id = {}\n\n", d);
    }
    out += fields;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value for " + a);
      return argv[++i];
    };
    if (a == "--tank") s.tank = value();
    else if (a == "--server") s.server = value();
    else if (a == "--dir") s.dir = value();
    else if (a == "--devices") s.devices = std::stoi(value());
    else if (a == "--registers") s.registers = std::stoi(value());
    else if (a == "--seconds") s.seconds = std::stoi(value());
    else if (a == "--interval") s.interval = value();
    else if (a == "--inputs") s.inputs = std::stoi(value());
    else if (a == "--clients") s.clients = std::stoi(value());
    else die("unknown argument " + a);
  }
  if (s.tank.empty() || s.server.empty() || s.dir.empty()) {
    die("usage: modbus_bench --tank PATH --server modbus_server.py --dir DIR [--devices N] [--registers N] "
        "[--seconds N] [--interval D] [--inputs N] [--clients N]");
  }
  if (s.registers < 2 || s.registers > 125) die("--registers: 2 to 125 (one request a device)");
  fs::remove_all(s.dir);
  fs::create_directories(s.dir);

  const int port = free_port();
  Child server({"/usr/bin/python3", s.server, "--tcp", std::to_string(port), "--slaves", std::to_string(s.devices),
                "--registers", std::to_string(s.registers)},
               s.dir / "server.log");
  if (!wait_for([&] {
        std::ifstream in(s.dir / "server.log");
        std::string text((std::istreambuf_iterator<char>(in)), {});
        return text.find("ready") != std::string::npos;
      }, std::chrono::seconds(30))) {
    die("pymodbus did not start; see " + (s.dir / "server.log").string());
  }
  const pid_t server_pid = server.pid();

  std::cout << fmt::format("{} devices of {} registers, pymodbus 3.0 on 127.0.0.1, {} s per run\n\n", s.devices,
                           s.registers, s.seconds);
  std::cout << "| who | connections | device reads/s | registers/s | CPU-s per 1000 reads (tank / pymodbus) |\n";
  std::cout << "|---|---|---|---|---|\n";
  for (int connections : {1, s.clients}) {
    const double server_cpu0 = cpu_seconds(server_pid);
    const double rate = ceiling(s, port, connections);
    const double server_cpu = cpu_seconds(server_pid) - server_cpu0;
    std::cout << fmt::format("| bare libmodbus client (pymodbus's ceiling) | {} | {:.0f} | {:.0f} | - / {:.2f} |\n",
                             connections, rate, rate * s.registers, server_cpu / (rate * s.seconds) * 1000);
  }

  const fs::path data = s.dir / "data";
  auto tank = start_tank(s.tank, s.dir, data, bench_config(data, "never", tank_pipeline(s, port)));
  auto polls = [&] {
    return metric_sum(scrape_metrics(tank.metrics_address), "tank_input_records_total", {"type=\"modbus\""});
  };
  // Warm-up: every device answered once.
  if (!wait_for([&] { return polls() >= s.devices; }, std::chrono::seconds(30))) {
    die("tank committed no polls; see " + (s.dir / "tank.log").string());
  }
  const double p0 = polls();
  const double tank_cpu0 = cpu_seconds(tank.process->pid());
  const double server_cpu0 = cpu_seconds(server_pid);
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(s.seconds));
  const double p1 = polls();
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  const double tank_cpu = cpu_seconds(tank.process->pid()) - tank_cpu0;
  const double server_cpu = cpu_seconds(server_pid) - server_cpu0;
  const std::string text = scrape_metrics(tank.metrics_address);
  const double errors = metric_sum(text, "tank_input_errors_total", {"type=\"modbus\""});
  const double rate = (p1 - p0) / elapsed;
  std::cout << fmt::format("| tank, {} inputs.modbus, poll_interval {} | {} | {:.0f} | {:.0f} | {:.2f} / {:.2f} |\n",
                           s.inputs, s.interval, s.inputs, rate, rate * s.registers,
                           tank_cpu / (p1 - p0) * 1000, server_cpu / (p1 - p0) * 1000);
  std::cout << fmt::format("\ntank: {:.0f} polls committed in {:.1f} s, {:.0f} errors, peak RSS {:.1f} MiB\n", p1 - p0,
                           elapsed, errors, static_cast<double>(status_bytes(tank.process->pid(), "VmHWM")) / 1048576);
  tank.process->stop();
  return 0;
}
