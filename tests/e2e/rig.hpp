#pragma once

// The end-to-end fault harness (issue 7): the real tank binary between real peers -- mosquitto
// as the source broker and as an upstream broker, an HTTP upstream that records idempotency
// keys and fails on command -- fed by generators that send records with unique ids through
// MQTT QoS 1, file appends with logrotate rotations, TCP and HTTP ingest. A scenario disturbs
// the run (kill -9, upstream down, a full disk...) and then asks the rig for its verdict, which
// is computed from what the upstreams received:
//
//   - no record a source had acknowledged is lost (MQTT: the broker's PUBACK; file: the line
//     written; HTTP ingest: tank's 200; TCP: no acknowledgement exists, so TCP records count
//     only in runs where tank was never killed: a reload keeps the connection open);
//   - a batch that arrives twice carries the same idempotency key with identical content, and
//     a record arrives under a second key only when its source may deliver it twice (MQTT QoS 1
//     after a lost PUBACK);
//   - tank's metrics balance: records in = delivered + dropped by policy, dead letters as sent;
//   - tank's resident memory stays within max_memory_bytes + kRssOverhead;
//   - no tank process crashed or printed a sanitizer report.
//
// Profiles: short (the default, run by ctest in CI) and long (TANK_E2E_PROFILE=long, see
// tests/e2e/run-long.sh): the same scenarios with more kills, longer outages, more records.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/helpers.hpp"
#include "support/kafka_mock.hpp"
#include "support/http_upstream.hpp"
#include "support/mosquitto.hpp"
#include "support/small_filesystem.hpp"

namespace tank::e2e {

using namespace std::chrono_literals;

struct Profile {
  bool long_run = false;
  // Picks the short or the long value.
  template <class T>
  T pick(T short_value, T long_value) const { return long_run ? long_value : short_value; }
  static Profile from_environment();  // TANK_E2E_PROFILE=long
};

// Resident memory allowed beyond the queue's max_memory_bytes (mode = "memory"; 0 with "disk"): thread stacks, LMDB pages in
// the resident set (released every 4 MiB read or written), Paho's and OpenSSL's state, the
// allocator's caches. docs/reliability.md explains the figure.
constexpr std::uint64_t kRssOverhead = 48ull << 20;

// What the sources sent, record by record.
class Ledger {
 public:
  enum class State : std::uint8_t { unsent, attempted, acknowledged };
  // Registers a generator; `may_repeat`: its transport may deliver a record twice (MQTT QoS 1).
  void add_source(const std::string& name, bool may_repeat);
  void attempted(const std::string& source, std::uint64_t n);
  void acknowledged(const std::string& source, std::uint64_t n);
  void bad_line_written() { ++bad_lines_; }  // a line that is not JSON (a dead letter to be)
  struct Source {
    bool may_repeat = false;
    std::vector<State> records;  // by n
    std::size_t count(State s) const;
  };
  std::map<std::string, Source> snapshot() const;
  std::uint64_t bad_lines() const { return bad_lines_; }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, Source> sources_;
  std::atomic<std::uint64_t> bad_lines_{0};
};

// A record's identity, parsed from what an upstream received.
struct RecordId {
  std::string source;
  std::uint64_t n = 0;
  auto operator<=>(const RecordId&) const = default;
};

// One batch as an upstream saw it.
struct ArrivedBatch {
  std::string key;
  std::string body;            // decompressed
  bool delivered = false;      // acknowledged by the upstream (HTTP 200, MQTT PUBACK)
  std::vector<RecordId> records;
};

// The sum of every sample of `metric` in a Prometheus exposition whose labels contain all of
// `labels` (e.g. {"result=\"delivered\""}); 0 when there is none.
double metric_sum(const std::string& exposition, const std::string& metric, const std::vector<std::string>& labels = {});

struct RigOptions {
  bool mqtt_source = true, file_source = true, tcp_source = true, http_source = true;
  bool mqtt_upstream = false;  // a second output: outputs.mqtt to an upstream mosquitto
  // A further output: outputs.kafka to librdkafka's mock cluster (tests/support/kafka_mock.hpp);
  // only in builds with outputs_kafka (TANK_E2E_KAFKA).
  bool kafka_upstream = false;
  double rate = 300;           // records per second per generator
  std::size_t payload_bytes = 120;
  std::string queue_toml = "[queue]\nmax_disk_bytes = \"128MiB\"\n";
  std::string http_output_toml = {};  // extra lines for the [[outputs.http]] table
  std::string http_input_toml = {};   // extra lines for the [[inputs.http]] table
  std::filesystem::path data_dir = {};  // empty: a directory of the rig's own
  // The queue's max_memory_bytes with mode = "memory" (0 with mode = "disk": no records in RAM).
  std::uint64_t rss_budget_memory_bytes = 0;
  int bad_line_every = 500;  // the file generator writes a line that is not JSON this often
};

// Verdict figures of a run (printed, and kept in the long profile's summary).
struct Verdict {
  std::string scenario;
  std::uint64_t acknowledged = 0, delivered = 0, unconfirmed_lost = 0, lost = 0;
  std::uint64_t repeated_batches = 0, key_conflicts = 0, repeats_by_source = 0, repeats_new_key = 0;
  std::uint64_t peak_rss = 0;
  std::uint64_t tank_starts = 0;
  std::vector<std::string> problems;
  std::string summary() const;
};

class Rig {
 public:
  Rig(std::string scenario, Profile profile, RigOptions options);
  ~Rig();
  Rig(const Rig&) = delete;
  Rig& operator=(const Rig&) = delete;

  const Profile& profile() const { return profile_; }
  const RigOptions& options() const { return options_; }
  test::HttpUpstream& upstream() { return upstream_; }
  test::Mosquitto& source_broker() { return *source_broker_; }
  test::Mosquitto* upstream_broker() { return upstream_broker_.get(); }
  test::KafkaMock* kafka() { return kafka_.get(); }
  const std::filesystem::path& config_path() const { return config_; }
  const std::filesystem::path& data_dir() const { return data_dir_; }
  std::string metrics_address() const;

  // The configuration the rig writes (also to rewrite it for a reload).
  std::string config_text(const std::string& extra_http = "") const;
  // Replaces the configuration file atomically (write + rename).
  void write_config(const std::string& text);

  // Starts tank and waits until it runs (fails the test with its stderr otherwise).
  void start_tank();
  void kill_tank();                 // SIGKILL; expects it to die of it
  void stop_tank();                 // SIGTERM; expects exit 0
  void signal_tank(int signal);
  bool tank_running();
  std::string tank_log() const;     // stderr of every tank process so far
  std::string scrape();             // /metrics of the running tank
  void note_disruption() { disrupted_ = true; }  // TCP records no longer count as acknowledged

  void start_load();
  void stop_load();
  // Waits until the running load acknowledged at least `records` more records in total.
  bool wait_for_progress(std::uint64_t records, std::chrono::milliseconds deadline = 60s);
  std::uint64_t acknowledged_total() const;

  // Waits until every acknowledged record has arrived delivered at every upstream (the HTTP
  // upstream, and the upstream broker when there is one); returns whether it did.
  bool wait_delivered(std::chrono::milliseconds deadline);
  // The verdict (with `check_metrics`: the accounting identity against tank's counters, for
  // runs where the running process saw every record), printed and returned; problems fail the
  // test. `dropped_by_policy`: how many acknowledged records an overflow policy may have
  // dropped (from tank's counter).
  Verdict verdict(bool check_metrics, std::uint64_t dropped_by_policy = 0);
  // What the HTTP upstream received, as batches.
  std::vector<ArrivedBatch> http_batches() const;
  std::vector<ArrivedBatch> mqtt_batches() const;
  // What the Kafka cluster holds: one "batch" per message, keyed by its tank-record header, so
  // that a record sent again must come with the same tank-record and the same content.
  std::vector<ArrivedBatch> kafka_batches() const;

 private:
  struct Generator;
  class RssMonitor;
  void check_sanitizers(Verdict& v) const;

  std::string scenario_;
  Profile profile_;
  RigOptions options_;
  test::TempDir dir_;
  std::filesystem::path data_dir_, config_, log_dir_;
  int tcp_port_ = 0, http_port_ = 0, metrics_port_ = 0;
  std::unique_ptr<test::Mosquitto> source_broker_, upstream_broker_;
  std::unique_ptr<test::MqttCollector> collector_;
  std::unique_ptr<test::KafkaMock> kafka_;
  test::HttpUpstream upstream_;
  Ledger ledger_;
  std::unique_ptr<test::Process> tank_;
  std::string logs_;
  std::uint64_t starts_ = 0;
  bool disrupted_ = false;
  std::vector<std::unique_ptr<Generator>> generators_;
  std::map<std::string, std::uint64_t> next_;  // each source's next record number
  std::unique_ptr<RssMonitor> rss_;
};

}  // namespace tank::e2e
