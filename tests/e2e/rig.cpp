#include "e2e/rig.hpp"

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>

#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <mqtt/async_client.h>

#include "support/input_helpers.hpp"
#include "support/tank_process.hpp"

namespace tank::e2e {

namespace fs = std::filesystem;
using test::wait_until;

Profile Profile::from_environment() {
  const char* p = std::getenv("TANK_E2E_PROFILE");
  return Profile{.long_run = p != nullptr && std::string(p) == "long"};
}

// ---- Ledger ----

void Ledger::add_source(const std::string& name, bool may_repeat) {
  std::lock_guard lock(mutex_);
  sources_[name].may_repeat = may_repeat;
}

void Ledger::attempted(const std::string& source, std::uint64_t n) {
  std::lock_guard lock(mutex_);
  auto& records = sources_[source].records;
  if (records.size() <= n) records.resize(n + 1, State::unsent);
  if (records[n] == State::unsent) records[n] = State::attempted;
}

void Ledger::acknowledged(const std::string& source, std::uint64_t n) {
  std::lock_guard lock(mutex_);
  auto& records = sources_[source].records;
  if (records.size() <= n) records.resize(n + 1, State::unsent);
  records[n] = State::acknowledged;
}

std::size_t Ledger::Source::count(State s) const { return static_cast<std::size_t>(std::count(records.begin(), records.end(), s)); }

std::map<std::string, Ledger::Source> Ledger::snapshot() const {
  std::lock_guard lock(mutex_);
  return sources_;
}

// ---- Generators ----

namespace {

std::string record_line(const std::string& source, std::uint64_t n, std::size_t payload_bytes) {
  std::string line = fmt::format(R"({{"id":"{}-{}","src":"{}","n":{},"pad":")", source, n, source, n);
  const std::size_t want = payload_bytes > line.size() + 2 ? payload_bytes - line.size() - 2 : 1;
  line.append(want, static_cast<char>('a' + n % 26));
  line += "\"}";
  return line;
}

// Every record in an NDJSON body; a line that is not one of the generators' records is reported.
std::vector<RecordId> records_of(const std::string& body, std::vector<std::string>& problems) {
  std::vector<RecordId> out;
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    boost::system::error_code ec;
    auto v = boost::json::parse(line, ec);
    if (ec || !v.is_object() || !v.as_object().contains("src") || !v.as_object().contains("n")) {
      if (problems.size() < 20) problems.push_back("an upstream received a line that is no generator's record: " + line.substr(0, 200));
      continue;
    }
    out.push_back({std::string(v.at("src").as_string()), static_cast<std::uint64_t>(v.at("n").as_int64())});
  }
  return out;
}

// A process's resident memory (/proc/PID/status, bytes): in all, anonymous (heap, stacks) and
// file pages (the binary, the queue's map). Zeros when `pid` is not a tank (gone, or the number
// taken by another process since).
struct Rss {
  std::uint64_t total = 0, anon = 0, file = 0;
};
Rss vm_rss(pid_t pid) {
  if (test::read_file("/proc/" + std::to_string(pid) + "/comm").find("tank") == std::string::npos) return {};
  return {test::status_bytes(pid, "VmRSS"), test::status_bytes(pid, "RssAnon"), test::status_bytes(pid, "RssFile")};
}

}  // namespace

// Sum of every sample of `metric` whose labels contain all of `labels` (e.g. {"result=\"delivered\""}).
double metric_sum(const std::string& exposition, const std::string& metric, const std::vector<std::string>& labels) {
  double sum = 0;
  std::istringstream in(exposition);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(metric, 0) != 0) continue;
    const char next = line.size() > metric.size() ? line[metric.size()] : '\0';
    if (next != '{' && next != ' ') continue;
    auto space = line.rfind(' ');
    const std::string head = line.substr(0, space);
    if (!std::all_of(labels.begin(), labels.end(), [&](const std::string& l) { return head.find(l) != std::string::npos; })) continue;
    sum += std::stod(line.substr(space + 1));
  }
  return sum;
}


struct Rig::Generator {
  std::string name;
  std::atomic<bool> stopping{false};
  std::function<void()> interrupt = [] {};
  std::thread thread;
  std::mutex mutex;
  std::vector<std::string> errors;  // what went wrong on the source side (reported)

  void error(const std::string& e) {
    std::lock_guard lock(mutex);
    if (errors.size() < 10) errors.push_back(name + ": " + e);
  }

  // Calls `chunk(count)` every 50 ms with the records due at `rate` per second.
  void run(double rate, const std::function<void(std::size_t)>& chunk) {
    const auto period = std::chrono::milliseconds(50);
    const std::size_t per_chunk = std::max<std::size_t>(1, static_cast<std::size_t>(rate * 0.05));
    auto next = std::chrono::steady_clock::now();
    while (!stopping) {
      chunk(per_chunk);
      next += period;
      const auto now = std::chrono::steady_clock::now();
      if (now > next + std::chrono::seconds(1)) next = now;  // fell behind (blocked): no burst to catch up
      // A load generator's pace, not synchronisation: nothing waits for this sleep.
      std::this_thread::sleep_until(next);
    }
  }
};

class Rig::RssMonitor {
 public:
  RssMonitor() : thread_([this] {
    while (!stop_) {
      if (pid_t p = pid_.load(); p > 0) {
        const Rss r = vm_rss(p);
        std::lock_guard lock(mutex_);
        if (r.total > peak_.total) peak_ = r;
      }
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, std::chrono::milliseconds(100), [&] { return stop_.load(); });
    }
  }) {}
  ~RssMonitor() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  void watch(pid_t pid) { pid_ = pid; }
  Rss peak() {
    std::lock_guard lock(mutex_);
    return peak_;
  }

 private:
  std::atomic<pid_t> pid_{0};
  Rss peak_;  // the sample with the most resident memory (under mutex_)
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  std::thread thread_;
};

// ---- Rig ----

Rig::Rig(std::string scenario, Profile profile, RigOptions options)
    : scenario_(std::move(scenario)), profile_(profile), options_(std::move(options)), rss_(std::make_unique<RssMonitor>()) {
  data_dir_ = options_.data_dir.empty() ? dir_ / "data" : options_.data_dir;
  config_ = dir_ / "tank.toml";
  log_dir_ = dir_ / "logs";
  fs::create_directories(log_dir_);
  tcp_port_ = test::free_tcp_port();
  http_port_ = test::free_tcp_port();
  metrics_port_ = test::free_tcp_port();
  if (options_.mqtt_source) source_broker_ = std::make_unique<test::Mosquitto>();
  if (options_.mqtt_upstream) {
    upstream_broker_ = std::make_unique<test::Mosquitto>();
    collector_ = std::make_unique<test::MqttCollector>(upstream_broker_->uri(), "up/#", 5);
  }
  if (options_.kafka_upstream) {
#ifdef TANK_E2E_KAFKA
    kafka_ = std::make_unique<test::KafkaMock>(3, std::vector<std::string>{"e2e:6:3"});
#else
    FAIL("this build has no outputs.kafka (TANK_PLUGINS)");
#endif
  }
  for (const char* source : {"mqtt", "file", "tcp", "http"}) next_[source] = 0;
  if (options_.mqtt_source) ledger_.add_source("mqtt", true);
  if (options_.file_source) ledger_.add_source("file", false);
  if (options_.tcp_source) ledger_.add_source("tcp", false);
  if (options_.http_source) ledger_.add_source("http", false);
  write_config(config_text());
}

Rig::~Rig() {
  stop_load();
  rss_.reset();
}

std::string Rig::metrics_address() const { return "127.0.0.1:" + std::to_string(metrics_port_); }

std::string Rig::config_text(const std::string& extra_http) const {
  std::string t = fmt::format(
      "[agent]\nid = \"e2e\"\ndata_dir = \"{}\"\nlog_format = \"text\"\n\n[metrics]\nlisten = \"{}\"\n\n{}\n",
      data_dir_.string(), metrics_address(), options_.queue_toml);
  if (options_.mqtt_source) {
    t += fmt::format(
        "[[inputs.mqtt]]\nname = \"mqtt\"\nservers = [\"{}\"]\ntopics = [\"e2e/#\"]\nclient_id = \"tank-e2e-source\"\n"
        "reconnect_min = \"100ms\"\nreconnect_max = \"1s\"\nconnect_timeout = \"2s\"\nkeep_alive = \"5s\"\n\n",
        source_broker_->uri());
  }
  if (options_.file_source) {
    t += fmt::format(
        "[[inputs.file]]\nname = \"file\"\npaths = [\"{}/app.log*\"]\nformat = \"json\"\npoll_interval = \"100ms\"\n"
        "rotate_wait = \"30s\"\n\n",
        log_dir_.string());
  }
  if (options_.tcp_source) t += fmt::format("[[inputs.tcp]]\nname = \"tcp\"\nformat = \"json\"\nlisten = \"127.0.0.1:{}\"\n\n", tcp_port_);
  if (options_.http_source) {
    t += fmt::format("[[inputs.http]]\nname = \"http\"\nlisten = \"127.0.0.1:{}\"\nretry_after = \"1s\"\n{}\n", http_port_,
                     options_.http_input_toml);
  }
  t += fmt::format(
      "[[outputs.http]]\nname = \"cloud\"\nurl = \"{}\"\nbatch_max_records = 500\nlinger = \"50ms\"\n"
      "retry_initial = \"50ms\"\nretry_max = \"1s\"\nbreaker_failures = 20\nbreaker_cooldown = \"1s\"\n"
      "connect_timeout = \"1s\"\n{}{}{}\n",
      upstream_.url(),
      options_.http_output_toml.find("response_timeout") == std::string::npos ? "response_timeout = \"4s\"\n" : "",
      options_.http_output_toml, extra_http);
  if (upstream_broker_) {
    t += fmt::format(
        "[[outputs.mqtt]]\nname = \"broker\"\nservers = [\"{}\"]\ntopic = \"up/{{agent_id}}/{{output}}\"\n"
        "batch_max_records = 500\nlinger = \"50ms\"\nretry_initial = \"50ms\"\nretry_max = \"1s\"\n"
        "breaker_failures = 20\nbreaker_cooldown = \"1s\"\nconnect_timeout = \"2s\"\npublish_timeout = \"4s\"\n\n",
        upstream_broker_->uri());
  }
  if (kafka_) {
    t += fmt::format(
        "[[outputs.kafka]]\nname = \"kafka\"\nbrokers = {}\ntopic = \"e2e\"\nkey_field = \"src\"\n"
        "batch_max_records = 500\nlinger = \"50ms\"\nretry_initial = \"50ms\"\nretry_max = \"1s\"\n"
        "breaker_failures = 20\nbreaker_cooldown = \"1s\"\ndelivery_timeout = \"3s\"\n\n",
        kafka_->brokers_toml());
  }
  return t;
}

void Rig::write_config(const std::string& text) {
  test::write_file(config_.string() + ".new", text);
  fs::rename(config_.string() + ".new", config_);
}

void Rig::start_tank() {
  if (tank_) logs_ += tank_->err();
  tank_ = std::make_unique<test::Process>(std::vector<std::string>{test::tank_binary(), "run", "-c", config_.string()});
  ++starts_;
  rss_->watch(tank_->pid());
  bool up = wait_until(
      [&] {
        if (!tank_->running()) return true;
        auto r = test::http_get(metrics_address(), "/readyz");
        return r && r->status == 200;
      },
      std::chrono::seconds(60));
  INFO("tank stderr:\n" << tank_->err());
  REQUIRE(up);
  REQUIRE(tank_->running());
}

void Rig::kill_tank() {
  REQUIRE(tank_);
  tank_->signal(SIGKILL);
  auto code = tank_->wait(std::chrono::seconds(30));
  INFO("tank stderr:\n" << tank_->err());
  REQUIRE(code == 128 + SIGKILL);
  disrupted_ = true;
}

void Rig::stop_tank() {
  REQUIRE(tank_);
  tank_->signal(SIGTERM);
  auto code = tank_->wait(std::chrono::seconds(60));
  INFO("tank stderr:\n" << tank_->err());
  REQUIRE(code == 0);
}

void Rig::signal_tank(int signal) {
  REQUIRE(tank_);
  tank_->signal(signal);
}

bool Rig::tank_running() { return tank_ && tank_->running(); }

std::string Rig::tank_log() const { return logs_ + (tank_ ? tank_->err() : std::string()); }

std::string Rig::scrape() { return test::scrape(metrics_address()); }

void Rig::start_load() {
  const double rate = options_.rate;
  const std::size_t bytes = options_.payload_bytes;
  if (options_.mqtt_source) {
    auto g = std::make_unique<Generator>();
    g->name = "mqtt";
    const std::string uri = source_broker_->uri();
    g->thread = std::thread([this, g = g.get(), uri, rate, bytes] {
      mqtt::async_client client(uri, "e2e-publisher", nullptr);
      auto options = mqtt::connect_options_builder().clean_session(true).connect_timeout(std::chrono::seconds(2)).finalize();
      std::uint64_t n = next_.at(g->name);
      g->run(rate, [&](std::size_t count) {
        try {
          if (!client.is_connected()) client.connect(options)->wait();
          std::vector<std::pair<std::uint64_t, mqtt::delivery_token_ptr>> tokens;
          for (std::size_t i = 0; i < count; ++i, ++n) {
            ledger_.attempted("mqtt", n);
            std::string line = record_line("mqtt", n, bytes);
            tokens.emplace_back(n, client.publish("e2e/data", line.data(), line.size(), 1, false));
          }
          for (auto& [id, token] : tokens) {
            if (!token->wait_for(std::chrono::seconds(5))) throw std::runtime_error("no PUBACK within 5 s");
            ledger_.acknowledged("mqtt", id);
          }
        } catch (const std::exception& e) {
          // The broker is away (restarting): these records stay unacknowledged; reconnect next time.
          try {
            if (client.is_connected()) client.disconnect()->wait_for(std::chrono::seconds(1));
          } catch (const std::exception&) {
          }
        }
      });
      next_.at(g->name) = n;  // the next run goes on with new ids
      try {
        if (client.is_connected()) client.disconnect()->wait_for(std::chrono::seconds(2));
      } catch (const std::exception&) {
      }
    });
    generators_.push_back(std::move(g));
  }
  if (options_.file_source) {
    auto g = std::make_unique<Generator>();
    g->name = "file";
    const fs::path log = log_dir_ / "app.log";
    const fs::path conf = dir_ / "logrotate.conf", state = dir_ / "logrotate.state";
    test::write_file(conf, fmt::format("{} {{\n  rotate 1000\n  missingok\n  nocompress\n  create 0644\n}}\n", log.string()));
    const auto rotate_every = profile_.pick(std::chrono::seconds(2), std::chrono::seconds(5));
    g->thread = std::thread([this, g = g.get(), log, conf, state, rate, bytes, rotate_every] {
      std::uint64_t n = next_.at(g->name), lines = 0;
      auto last_rotation = std::chrono::steady_clock::now();
      g->run(rate, [&](std::size_t count) {
        std::string text;
        std::vector<std::uint64_t> ids;
        std::size_t bad = 0;
        for (std::size_t i = 0; i < count; ++i) {
          if (options_.bad_line_every > 0 && ++lines % static_cast<std::uint64_t>(options_.bad_line_every) == 0) {
            text += "not json: line " + std::to_string(lines) + "\n";
            ++bad;
          }
          ids.push_back(n);
          text += record_line("file", n++, bytes) + "\n";
        }
        for (auto id : ids) ledger_.attempted("file", id);
        try {
          test::append_file(log, text);
        } catch (const std::exception& e) {
          g->error(std::string("cannot append: ") + e.what());
          return;
        }
        for (auto id : ids) ledger_.acknowledged("file", id);
        for (std::size_t i = 0; i < bad; ++i) ledger_.bad_line_written();
        if (std::chrono::steady_clock::now() - last_rotation >= rotate_every) {
          last_rotation = std::chrono::steady_clock::now();
          test::Process rotate({"/usr/sbin/logrotate", "-f", "-s", state.string(), conf.string()});
          auto code = rotate.wait(std::chrono::seconds(30));
          if (code != 0) g->error("logrotate failed: " + rotate.err());
        }
      });
      next_.at(g->name) = n;  // the next run goes on with new ids
    });
    generators_.push_back(std::move(g));
  }
  if (options_.tcp_source) {
    auto g = std::make_unique<Generator>();
    g->name = "tcp";
    auto fd = std::make_shared<std::atomic<int>>(-1);
    g->interrupt = [fd] {
      if (int f = fd->load(); f >= 0) ::shutdown(f, SHUT_RDWR);
    };
    const std::string address = "127.0.0.1:" + std::to_string(tcp_port_);
    g->thread = std::thread([this, g = g.get(), fd, address, rate, bytes] {
      std::uint64_t n = next_.at(g->name);
      g->run(rate, [&](std::size_t count) {
        if (fd->load() < 0) {
          int f = test::tcp_connect(address);
          if (f < 0) return;  // tank is away: records are generated when it listens again
          fd->store(f);
        }
        std::string text;
        std::vector<std::uint64_t> ids;
        for (std::size_t i = 0; i < count; ++i, ++n) {
          ledger_.attempted("tcp", n);
          ids.push_back(n);
          text += record_line("tcp", n, bytes) + "\n";
        }
        if (!test::send_all(fd->load(), text)) {
          int f = fd->exchange(-1);
          ::close(f);
          return;
        }
        for (auto id : ids) ledger_.acknowledged("tcp", id);  // counted only while tank was never disrupted
      });
      next_.at(g->name) = n;  // the next run goes on with new ids
      if (int f = fd->exchange(-1); f >= 0) {
        ::shutdown(f, SHUT_WR);  // tank reads to the end
        test::wait_closed(f, std::chrono::seconds(10));
        ::close(f);
      }
    });
    generators_.push_back(std::move(g));
  }
  if (options_.http_source) {
    auto g = std::make_unique<Generator>();
    g->name = "http";
    const std::string address = "127.0.0.1:" + std::to_string(http_port_);
    g->thread = std::thread([this, g = g.get(), address, rate, bytes] {
      std::uint64_t n = next_.at(g->name);
      g->run(rate, [&](std::size_t count) {
        std::string body;
        std::vector<std::uint64_t> ids;
        for (std::size_t i = 0; i < count; ++i, ++n) {
          ledger_.attempted("http", n);
          ids.push_back(n);
          body += record_line("http", n, bytes) + "\n";
        }
        auto r = test::http_request(address, "POST", "/", body, {{"Content-Type", "application/x-ndjson"}});
        if (r && r->status == 200) {
          for (auto id : ids) ledger_.acknowledged("http", id);
        }
      });
      next_.at(g->name) = n;  // the next run goes on with new ids
    });
    generators_.push_back(std::move(g));
  }
}

void Rig::stop_load() {
  for (auto& g : generators_) g->stopping = true;
  for (auto& g : generators_) g->interrupt();
  for (auto& g : generators_) {
    if (g->thread.joinable()) g->thread.join();
    for (const auto& e : g->errors) WARN(e);
  }
  generators_.clear();
}

std::uint64_t Rig::acknowledged_total() const {
  std::uint64_t total = 0;
  for (const auto& [name, s] : ledger_.snapshot()) total += s.count(Ledger::State::acknowledged);
  return total;
}

bool Rig::wait_for_progress(std::uint64_t records, std::chrono::milliseconds deadline) {
  const auto target = acknowledged_total() + records;
  return wait_until([&] { return acknowledged_total() >= target; }, deadline);
}

std::vector<ArrivedBatch> Rig::http_batches() const {
  std::vector<ArrivedBatch> out;
  std::vector<std::string> ignored;
  for (const auto& r : upstream_.received()) {
    ArrivedBatch b;
    b.key = r.key;
    b.body = r.body;
    b.delivered = r.answered == 200;
    b.records = records_of(r.body, ignored);
    out.push_back(std::move(b));
  }
  return out;
}

std::vector<ArrivedBatch> Rig::mqtt_batches() const {
  std::vector<ArrivedBatch> out;
  if (!collector_) return out;
  std::vector<std::string> ignored;
  for (const auto& m : collector_->messages()) {
    ArrivedBatch b;
    b.key = m.user_property("idempotency-key");
    try {
      b.body = test::decompress_body(m.user_property("content-encoding"), m.payload);
    } catch (const std::exception& e) {
      b.body = std::string("UNREADABLE: ") + e.what();
    }
    b.delivered = true;
    b.records = records_of(b.body, ignored);
    out.push_back(std::move(b));
  }
  return out;
}

std::vector<ArrivedBatch> Rig::kafka_batches() const {
  std::vector<ArrivedBatch> out;
  if (!kafka_) return out;
  std::vector<std::string> ignored;
  for (const auto& m : kafka_->dump("e2e")) {
    ArrivedBatch b;
    auto id = m.headers.find("tank-record");
    b.key = id == m.headers.end() ? std::string("(no tank-record header)") : id->second;
    b.body = m.value;
    b.delivered = true;
    b.records = records_of(m.value + "\n", ignored);
    out.push_back(std::move(b));
  }
  return out;
}

namespace {

// The acknowledged records that have not arrived delivered in `batches`.
std::uint64_t missing(const std::map<std::string, Ledger::Source>& ledger, const std::vector<ArrivedBatch>& batches,
                      bool count_tcp) {
  std::map<std::string, std::vector<bool>> arrived;
  for (const auto& b : batches) {
    if (!b.delivered) continue;
    for (const auto& r : b.records) {
      auto& v = arrived[r.source];
      if (v.size() <= r.n) v.resize(r.n + 1, false);
      v[r.n] = true;
    }
  }
  std::uint64_t count = 0;
  for (const auto& [name, s] : ledger) {
    if (name == "tcp" && !count_tcp) continue;
    const auto& v = arrived[name];
    for (std::size_t n = 0; n < s.records.size(); ++n) {
      if (s.records[n] == Ledger::State::acknowledged && (n >= v.size() || !v[n])) ++count;
    }
  }
  return count;
}

}  // namespace

bool Rig::wait_delivered(std::chrono::milliseconds deadline) {
  return wait_until(
      [&] {
        const auto ledger = ledger_.snapshot();
        if (missing(ledger, http_batches(), !disrupted_) != 0) return false;
        if (kafka_ && missing(ledger, kafka_batches(), !disrupted_) != 0) return false;
        return !collector_ || missing(ledger, mqtt_batches(), !disrupted_) == 0;
      },
      deadline);
}

std::string Verdict::summary() const {
  std::string s = fmt::format(
      "{}: acknowledged {}, delivered {} distinct, lost {}, TCP records unconfirmed and lost {}, batches repeated {} "
      "(key conflicts {}), records repeated by the source {}, under a new key {}, tank started {} times, peak RSS {:.1f} MiB",
      scenario, acknowledged, delivered, lost, unconfirmed_lost, repeated_batches, key_conflicts, repeats_by_source,
      repeats_new_key, tank_starts, static_cast<double>(peak_rss) / (1 << 20));
  for (const auto& p : problems) s += "\n  PROBLEM: " + p;
  return s;
}

void Rig::check_sanitizers(Verdict& v) const {
  const std::string log = tank_log();
  for (const char* marker : {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "Segmentation fault",
                             "terminate called"}) {
    auto at = log.find(marker);
    if (at != std::string::npos) {
      v.problems.push_back(fmt::format("tank printed \"{}\": {}", marker, log.substr(at, 2000)));
    }
  }
}

Verdict Rig::verdict(bool check_metrics, std::uint64_t dropped_by_policy) {
  Verdict v;
  v.scenario = scenario_;
  v.tank_starts = starts_;
  const auto ledger = ledger_.snapshot();
  for (const auto& [name, s] : ledger) {
    if (name != "tcp" || !disrupted_) v.acknowledged += s.count(Ledger::State::acknowledged);
  }

  auto judge = [&](const std::string& upstream, const std::vector<ArrivedBatch>& batches) {
    std::map<std::string, std::string> body_of_key;
    std::map<RecordId, std::set<std::string>> keys_of_record;
    for (const auto& b : batches) {
      auto [it, fresh] = body_of_key.emplace(b.key, b.body);
      if (!fresh) {
        ++v.repeated_batches;
        if (it->second != b.body) {
          ++v.key_conflicts;
          if (v.problems.size() < 20) v.problems.push_back(upstream + ": key " + b.key + " arrived again with other content");
        }
      }
      if (!b.delivered) continue;
      for (const auto& r : b.records) keys_of_record[r].insert(b.key);
    }
    for (const auto& [id, keys] : keys_of_record) {
      auto s = ledger.find(id.source);
      if (s == ledger.end() || id.n >= s->second.records.size() || s->second.records[id.n] == Ledger::State::unsent) {
        if (v.problems.size() < 20) v.problems.push_back(fmt::format("{}: {}-{} arrived but was never sent", upstream, id.source, id.n));
        continue;
      }
      if (keys.size() > 1) {
        if (s->second.may_repeat) {
          ++v.repeats_by_source;
        } else {
          ++v.repeats_new_key;
          if (v.problems.size() < 20) {
            v.problems.push_back(fmt::format("{}: {}-{} arrived under {} different keys", upstream, id.source, id.n, keys.size()));
          }
        }
      }
    }
    v.delivered = std::max<std::uint64_t>(v.delivered, keys_of_record.size());
    const auto lost = missing(ledger, batches, !disrupted_);
    v.lost += lost;
    if (lost > dropped_by_policy) {
      // Name a few.
      std::set<RecordId> arrived;
      for (const auto& [id, keys] : keys_of_record) arrived.insert(id);
      std::string names;
      int shown = 0;
      for (const auto& [name, s] : ledger) {
        if (name == "tcp" && disrupted_) continue;
        for (std::size_t n = 0; n < s.records.size() && shown < 10; ++n) {
          if (s.records[n] == Ledger::State::acknowledged && !arrived.contains(RecordId{name, n})) {
            names += fmt::format(" {}-{}", name, n);
            ++shown;
          }
        }
      }
      v.problems.push_back(fmt::format("{}: {} acknowledged records never arrived ({} dropped by the overflow policy), e.g.{}",
                                       upstream, lost, dropped_by_policy, names));
    }
    if (disrupted_ && ledger.contains("tcp")) {
      v.unconfirmed_lost += missing({{"tcp", ledger.at("tcp")}}, batches, true);
    }
  };
  judge("HTTP upstream", http_batches());
  if (collector_) judge("upstream broker", mqtt_batches());
  if (kafka_) judge("Kafka", kafka_batches());

  const Rss peak = rss_->peak();
  v.peak_rss = peak.total;
#if !defined(__SANITIZE_ADDRESS__)
  if (v.peak_rss > options_.rss_budget_memory_bytes + kRssOverhead) {
    v.problems.push_back(fmt::format("tank's peak RSS {:.1f} MiB ({:.1f} anonymous, {:.1f} file pages) exceeds the "
                                     "queue's memory {:.1f} MiB + {:.0f} MiB",
                                     static_cast<double>(v.peak_rss) / (1 << 20),
                                     static_cast<double>(peak.anon) / (1 << 20),
                                     static_cast<double>(peak.file) / (1 << 20),
                                     static_cast<double>(options_.rss_budget_memory_bytes) / (1 << 20),
                                     static_cast<double>(kRssOverhead) / (1 << 20)));
  }
#endif

  if (check_metrics && tank_running()) {
    // Records in = delivered + dropped (the queue empty), dead letters as written. "In" is what
    // the inputs took from their sources: committed (tank_input_records_total) or dropped at once
    // by overflow = "drop_newest" (tank_input_dropped_records_total); the queue evicts committed
    // ones with "drop_oldest" (tank_queue_dropped_records_total{policy="drop_oldest"}).
    std::string why;
    bool balanced = wait_until(
        [&] {
          const auto m = scrape();
          const double committed = metric_sum(m, "tank_input_records_total");
          const double dropped_in = metric_sum(m, "tank_input_dropped_records_total");
          const double delivered = metric_sum(m, "tank_output_records_total", {"output=\"cloud\"", "result=\"delivered\""});
          const double evicted = metric_sum(m, "tank_queue_dropped_records_total", {"policy=\"drop_oldest\""});
          const double letters = metric_sum(m, "tank_dead_letters_total");
          why = fmt::format("records in {} (committed {} + dropped by the input {}), delivered {}, evicted {}, dead letters {} "
                            "(bad lines written {})",
                            committed + dropped_in, committed, dropped_in, delivered, evicted, letters, ledger_.bad_lines());
          return committed == delivered + evicted && letters == static_cast<double>(ledger_.bad_lines());
        },
        std::chrono::seconds(15));
    if (!balanced) v.problems.push_back("metrics do not balance: " + why);
  }

  if (tank_ && !tank_->running()) {
    // Only kill_tank/stop_tank end tank, and they check how; a tank that ended otherwise crashed.
    auto code = tank_->wait(std::chrono::milliseconds(0));
    if (code != 0 && code != 128 + SIGKILL) v.problems.push_back(fmt::format("tank ended by itself with {}", code.value_or(-1)));
  }
  check_sanitizers(v);

  std::cout << "e2e verdict: " << v.summary() << std::endl;
  if (const char* summary = std::getenv("TANK_E2E_SUMMARY")) {
    std::ofstream(summary, std::ios::app) << v.summary() << "\n";
  }
  INFO(v.summary());
  CHECK(v.problems.empty());
  return v;
}

}  // namespace tank::e2e
