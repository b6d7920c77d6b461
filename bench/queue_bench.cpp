// Benchmark of the write-ahead queue, next to raw LMDB on the same disk.
//
//   queue_bench [--dir DIR] [--quick] [--repeat N] [--only raw|append|pipeline|backlog]
//               [--payload 100|1024] [--batch 1|100|1000] [--fsync always|interval|never]
//
// --payload, --batch and --fsync keep only that row of the append table, --payload and --batch
// that row of the pipeline table (e.g. to profile one).
//
// Every figure is the median of N runs (default 1): this machine's disk and CPU are shared, and
// single runs vary by tens of percent.
// Prints Markdown tables (records/s, MB/s of encoded records, commits/s) for:
//   raw       raw LMDB: 100 B values, cursor + MDB_APPEND + MDB_RESERVE, batches of 1/100/1000, with and without
//             an fsync per commit (the baseline the queue is measured against)
//   append    Queue::append of prebuilt batches: 100 B and 1 KiB payloads, batches of 1/100/1000,
//             fsync always/interval/never
//   pipeline  one producer appending batches of 1000 while one consumer reads and acknowledges
//             batches of 1000 (fsync interval)
//   backlog   the pipeline and plain appends with a 1 GiB backlog in the queue, against an
//             empty queue (the cost must not grow with the backlog)

#include <lmdb.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "queue/queue.hpp"

using namespace tank;
using Steady = std::chrono::steady_clock;

namespace {

struct Settings {
  std::filesystem::path dir = std::filesystem::temp_directory_path() / "tank-queue-bench";
  bool quick = false;
  int repeat = 1;
  std::string only;
  std::size_t payload = 0;  // 0: every payload size of the append table
  std::size_t batch = 0;    // 0: every batch size
  std::string fsync;        // "": every mode
};

// The median of `runs` results of `measure` (each a records/s figure).
template <class F>
double median_of(int runs, F&& measure) {
  std::vector<double> v;
  for (int i = 0; i < runs; ++i) v.push_back(measure());
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// CPU seconds (user + system) of this process so far: every thread, the queue's flush thread too.
double process_cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Peak resident memory of this process so far, MiB.
double peak_rss_mib() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

double seconds_since(Steady::time_point start) {
  return std::chrono::duration<double>(Steady::now() - start).count();
}

void fresh(const std::filesystem::path& dir) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
}

void check(int rc, const char* what) {
  if (rc != 0) {
    std::fprintf(stderr, "%s: %s\n", what, mdb_strerror(rc));
    std::exit(1);
  }
}

// Raw LMDB: records/s appending `value_size` values in transactions of `batch`.
double raw_lmdb(const Settings& s, std::size_t value_size, std::size_t batch, bool sync, double budget) {
  auto dir = s.dir / "raw";
  fresh(dir);
  MDB_env* env = nullptr;
  check(mdb_env_create(&env), "create");
  check(mdb_env_set_mapsize(env, 8ULL << 30), "mapsize");
  check(mdb_env_open(env, dir.c_str(), MDB_NOTLS | (sync ? 0 : MDB_NOSYNC), 0644), "open");
  MDB_txn* txn = nullptr;
  MDB_dbi dbi;
  check(mdb_txn_begin(env, nullptr, 0, &txn), "begin");
  check(mdb_dbi_open(txn, nullptr, 0, &dbi), "dbi");
  check(mdb_txn_commit(txn), "commit");
  std::string value(value_size, 'v');
  std::uint64_t seq = 0;
  auto start = Steady::now();
  const std::uint64_t cap = (3ULL << 30) / (value_size + 24);
  while (seconds_since(start) < budget && seq < cap) {
    // LMDB's fastest append: one cursor per transaction, MDB_APPEND, MDB_RESERVE + memcpy.
    check(mdb_txn_begin(env, nullptr, 0, &txn), "begin");
    MDB_cursor* cursor = nullptr;
    check(mdb_cursor_open(txn, dbi, &cursor), "cursor");
    for (std::size_t i = 0; i < batch; ++i) {
      unsigned char key[8];
      std::uint64_t k = ++seq;
      for (int b = 7; b >= 0; --b) {
        key[b] = static_cast<unsigned char>(k & 0xff);
        k >>= 8;
      }
      MDB_val kv{8, key};
      MDB_val vv{value.size(), nullptr};
      check(mdb_cursor_put(cursor, &kv, &vv, MDB_APPEND | MDB_RESERVE), "put");
      std::memcpy(vv.mv_data, value.data(), value.size());
    }
    mdb_cursor_close(cursor);
    check(mdb_txn_commit(txn), "commit");
  }
  double elapsed = seconds_since(start);
  mdb_env_close(env);
  std::filesystem::remove_all(dir);
  return static_cast<double>(seq) / elapsed;
}

queue::EncodedRecords make_batch(std::size_t n, std::size_t payload_size) {
  queue::EncodedRecords b;
  std::string payload(payload_size, 'p');
  b.reserve(n, n * (payload_size + 24));
  for (std::size_t i = 0; i < n; ++i) b.add("bench", system_clock().wall_ns(), payload);
  return b;
}

queue::Options options_for(const std::filesystem::path& dir, queue::Fsync fsync, std::uint64_t max_disk) {
  queue::Options o;
  o.dir = dir;
  o.max_disk_bytes = max_disk;
  o.fsync = fsync;
  o.consumers = {"bench"};
  o.verification = queue::Verification::none;
  return o;
}

struct Rate {
  double records_per_s = 0;
  double mb_per_s = 0;
  double commits_per_s = 0;
  double cpu_per_million = 0;  // process CPU seconds per million records (pipeline only)
};

// Appends prebuilt batches for `budget` seconds (or until ~2 GiB are stored).
Rate append_only(queue::Queue& q, std::size_t payload_size, std::size_t batch, double budget,
                 std::uint64_t byte_cap) {
  auto records = make_batch(batch, payload_size);
  std::uint64_t count = 0;
  std::uint64_t commits = 0;
  std::uint64_t bytes = 0;
  auto start = Steady::now();
  while (seconds_since(start) < budget && bytes < byte_cap) {
    auto r = q.append(records);
    if (!r.ok()) {
      std::fprintf(stderr, "append: %s %s\n", std::string(queue::to_string(r.status)).c_str(), r.error.c_str());
      break;
    }
    count += batch;
    bytes += records.bytes();
    ++commits;
  }
  double elapsed = seconds_since(start);
  return {count / elapsed, bytes / elapsed / 1e6, commits / elapsed};
}

// One producer appending `total` records while one consumer reads and acknowledges `total`
// records from the head of the queue. With a backlog the consumer works on the oldest records
// while the producer adds new ones, so the backlog stays the same size throughout.
Rate pipeline(queue::Queue& q, std::size_t payload_size, std::size_t batch, std::uint64_t total) {
  auto records = make_batch(batch, payload_size);
  std::uint64_t position = q.position("bench").value_or(0);
  std::uint64_t consumed = 0;
  const double cpu0 = process_cpu_seconds();
  auto start = Steady::now();
  std::thread producer([&] {
    std::uint64_t produced = 0;
    while (produced < total) {
      auto r = q.append(records);
      if (r.status == queue::CommitStatus::full) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        continue;
      }
      if (!r.ok()) {
        std::fprintf(stderr, "append: %s\n", r.error.c_str());
        std::exit(1);
      }
      produced += batch;
    }
  });
  queue::ReadLimits limits{batch, 64 << 20};
  queue::ReadBatch b;  // read into again and again, as outputs do (its memory is kept)
  while (consumed < total) {
    q.read(position, limits, nullptr, b);
    if (b.empty()) {
      std::this_thread::yield();
      continue;
    }
    position = b.scanned_to();
    consumed += b.size();
    auto r = q.ack("bench", position);
    if (!r.ok()) {
      std::fprintf(stderr, "ack: %s\n", r.error.c_str());
      std::exit(1);
    }
  }
  producer.join();
  double elapsed = seconds_since(start);
  return {consumed / elapsed, consumed * (payload_size + 21.0) / elapsed / 1e6, 0,
          (process_cpu_seconds() - cpu0) / static_cast<double>(consumed) * 1e6};
}

// Appends 100 B records until the queue's LMDB pages reach `bytes`.
void fill_backlog(queue::Queue& q, std::uint64_t bytes) {
  auto records = make_batch(1000, 100);
  while (q.stats().disk_used_bytes < bytes) {
    for (int i = 0; i < 100; ++i) {
      auto r = q.append(records);
      if (!r.ok()) {
        std::fprintf(stderr, "backlog: %s\n", r.error.c_str());
        std::exit(1);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--dir" && i + 1 < argc) s.dir = argv[++i];
    else if (a == "--quick") s.quick = true;
    else if (a == "--only" && i + 1 < argc) s.only = argv[++i];
    else if (a == "--repeat" && i + 1 < argc) s.repeat = std::max(1, std::atoi(argv[++i]));
    else if (a == "--payload" && i + 1 < argc) s.payload = static_cast<std::size_t>(std::atoll(argv[++i]));
    else if (a == "--batch" && i + 1 < argc) s.batch = static_cast<std::size_t>(std::atoll(argv[++i]));
    else if (a == "--fsync" && i + 1 < argc) s.fsync = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: queue_bench [--dir DIR] [--quick] [--repeat N] [--only raw|append|pipeline|backlog]\n"
                   "                   [--payload 100|1024] [--batch 1|100|1000] [--fsync always|interval|never]\n");
      return 2;
    }
  }
  log::configure({log::Level::warn, log::Format::text});
  const double budget = s.quick ? 0.5 : 2.0;
  auto wants = [&](const char* what) { return s.only.empty() || s.only == what; };

  if (wants("raw")) {
    std::printf("\n### Raw LMDB, 100 B values (cursor, MDB_APPEND, MDB_RESERVE)\n\n| batch | fsync per commit | records/s |\n|---|---|---|\n");
    for (std::size_t batch : {1, 100, 1000}) {
      for (bool sync : {false, true}) {
        double rate = median_of(s.repeat, [&] {
          return raw_lmdb(s, 100, batch, sync, sync && batch == 1 ? budget / 2 : budget);
        });
        std::printf("| %zu | %s | %.0f |\n", batch, sync ? "yes" : "no", rate);
        std::fflush(stdout);
      }
    }
  }

  if (wants("append")) {
    std::printf("\n### Queue::append (mode disk)\n\n| payload | batch | fsync | records/s | MB/s | commits/s |\n"
                "|---|---|---|---|---|---|\n");
    for (std::size_t payload : {100, 1024}) {
      for (std::size_t batch : {1, 100, 1000}) {
        for (auto fsync : {queue::Fsync::always, queue::Fsync::interval, queue::Fsync::never}) {
          if ((s.payload != 0 && s.payload != payload) || (s.batch != 0 && s.batch != batch) ||
              (!s.fsync.empty() && s.fsync != queue::to_string(fsync))) {
            continue;
          }
          auto dir = s.dir / "append";
          double bytes_per_record = 0;
          double rate = median_of(s.repeat, [&] {
            fresh(dir);
            auto q = queue::Queue::open(options_for(dir, fsync, 8ULL << 30), system_clock(), nullptr);
            Rate r = append_only(*q, payload, batch, budget, 2ULL << 30);
            bytes_per_record = r.mb_per_s * 1e6 / r.records_per_s;
            return r.records_per_s;
          });
          std::printf("| %zu B | %zu | %s | %.0f | %.1f | %.0f |\n", payload, batch,
                      std::string(queue::to_string(fsync)).c_str(), rate, rate * bytes_per_record / 1e6,
                      rate / static_cast<double>(batch));
          std::fflush(stdout);
        }
      }
    }
    std::filesystem::remove_all(s.dir / "append");
  }

  if (wants("pipeline")) {
    std::printf("\n### Append + read + acknowledge (one producer, one consumer, fsync interval)\n\n"
                "| payload | batch | records | records/s | CPU-s per M (both threads) |\n|---|---|---|---|---|\n");
    for (std::size_t payload : {100, 1024}) {
      for (std::size_t batch : {100, 1000}) {
        if ((s.payload != 0 && s.payload != payload) || (s.batch != 0 && s.batch != batch)) continue;
        auto dir = s.dir / "pipeline";
        std::uint64_t total = s.quick ? 1'000'000 : (payload == 100 ? 10'000'000 : 3'000'000);
        std::vector<Rate> runs;
        for (int i = 0; i < s.repeat; ++i) {
          fresh(dir);
          auto q = queue::Queue::open(options_for(dir, queue::Fsync::interval, 1ULL << 30), system_clock(), nullptr);
          runs.push_back(pipeline(*q, payload, batch, total));
        }
        std::sort(runs.begin(), runs.end(), [](const Rate& a, const Rate& b) { return a.records_per_s < b.records_per_s; });
        const Rate& mid = runs[runs.size() / 2];
        std::printf("| %zu B | %zu | %llu | %.0f | %.2f |\n", payload, batch, static_cast<unsigned long long>(total),
                    mid.records_per_s, mid.cpu_per_million);
        std::fflush(stdout);
      }
    }
    std::filesystem::remove_all(s.dir / "pipeline");
    std::printf("\npeak RSS of the process: %.1f MiB\n", peak_rss_mib());
  }

  if (wants("backlog")) {
    // An empty queue and one holding a 1 GiB backlog, measured alternately so that the shared
    // machine's ups and downs fall on both alike.
    std::printf("\n### Backlog: 100 B payloads, batches of 1000, fsync interval\n\n"
                "| backlog | append records/s | append + read + ack records/s |\n|---|---|---|\n");
    auto open_queue = [&](const std::filesystem::path& dir) {
      return queue::Queue::open(options_for(dir, queue::Fsync::interval, 3ULL << 30), system_clock(), nullptr);
    };
    fresh(s.dir / "empty");
    fresh(s.dir / "backlog");
    auto empty = open_queue(s.dir / "empty");
    auto loaded = open_queue(s.dir / "backlog");
    fill_backlog(*loaded, 1ULL << 30);
    // Appends, after which as many records are acknowledged from the head: sizes stay put.
    auto append_run = [&](queue::Queue& q) {
      std::uint64_t before = q.stats().next_seq;
      double rate = append_only(q, 100, 1000, budget, 256ULL << 20).records_per_s;
      std::uint64_t appended = q.stats().next_seq - before;
      if (!q.ack("bench", q.position("bench").value_or(0) + appended).ok()) std::exit(1);
      return rate;
    };
    std::vector<double> append_empty, append_loaded, pipe_empty, pipe_loaded;
    const std::uint64_t pipeline_records = s.quick ? 1'000'000 : 5'000'000;
    for (int i = 0; i < s.repeat; ++i) {
      append_empty.push_back(append_run(*empty));
      append_loaded.push_back(append_run(*loaded));
      pipe_empty.push_back(pipeline(*empty, 100, 1000, pipeline_records).records_per_s);
      pipe_loaded.push_back(pipeline(*loaded, 100, 1000, pipeline_records).records_per_s);
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    std::printf("| empty | %.0f | %.0f |\n", median(append_empty), median(pipe_empty));
    std::printf("| 1 GiB | %.0f | %.0f |\n", median(append_loaded), median(pipe_loaded));
    empty.reset();
    loaded.reset();
  }
  std::filesystem::remove_all(s.dir);
  return 0;
}
