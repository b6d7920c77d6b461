#include "queue/queue.hpp"
#include "queue/queue_impl.hpp"

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <random>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "common/build_info.hpp"
#include "common/fs.hpp"
#include "common/liveness.hpp"
#include "common/units.hpp"
#include "queue/lmdb.hpp"
#include "queue/lmdb_file.hpp"
#include "queue/lmdb_layout.hpp"
#include "queue/queue_config.hpp"
#include "queue/queue_metrics.hpp"
#include "queue/recovery_point.hpp"
#include "queue/verify.hpp"

namespace tank::queue {
namespace {

constexpr const char* kComponent = "queue";
constexpr std::uint64_t kPageHeader = 16;  // LMDB's PAGEHDRSZ
constexpr std::uint64_t kNodeHeader = 8;   // LMDB's NODESIZE
constexpr std::uint64_t kKeyBytes = 8;
// In memory mode, sequence numbers are reserved in LMDB this many at a time, so numbers given
// to records that a crash loses are never given again.
constexpr std::uint64_t kSeqReservation = 1 << 20;
// Per-record bookkeeping of the memory tier (its end offset), counted against max_memory_bytes.
constexpr std::uint64_t kMemoryRecordOverhead = sizeof(std::size_t);
// A page fault maps up to this many pages around the one touched (release_mapped_pages).
constexpr std::uint64_t kFaultAroundPages = 16;

std::string consumer_key(std::string_view name) { return "consumer:" + std::string(name); }

MDB_stat stat_of(MDB_txn* txn, MDB_dbi dbi) {
  MDB_stat st{};
  lmdb::check(mdb_stat(txn, dbi, &st), "mdb_stat");
  return st;
}

std::uint64_t pages_of(const MDB_stat& st) { return st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages; }

void put_meta(MDB_txn* txn, MDB_dbi meta, std::string_view key, std::uint64_t value) {
  std::string encoded = lmdb::encode_u64(value);
  MDB_val k = lmdb::value_of(key);
  MDB_val v = lmdb::value_of(encoded);
  lmdb::check(mdb_put(txn, meta, &k, &v, 0), "writing queue meta");
}

std::optional<std::uint64_t> get_meta(MDB_txn* txn, MDB_dbi meta, std::string_view key) {
  MDB_val k = lmdb::value_of(key);
  MDB_val v;
  int rc = mdb_get(txn, meta, &k, &v);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  lmdb::check(rc, "reading queue meta");
  return lmdb::decode_u64(v);
}

}  // namespace

std::string_view to_string(Mode mode) { return mode == Mode::disk ? "disk" : "memory"; }
std::string_view to_string(Fsync fsync) {
  switch (fsync) {
    case Fsync::always: return "always";
    case Fsync::interval: return "interval";
    case Fsync::never: return "never";
  }
  return "?";
}
std::string_view to_string(Overflow overflow) {
  switch (overflow) {
    case Overflow::block: return "block";
    case Overflow::drop_oldest: return "drop_oldest";
    case Overflow::drop_newest: return "drop_newest";
  }
  return "?";
}
std::string_view to_string(CommitStatus status) {
  switch (status) {
    case CommitStatus::committed: return "committed";
    case CommitStatus::full: return "full";
    case CommitStatus::dropped: return "dropped";
    case CommitStatus::too_large: return "too_large";
    case CommitStatus::failed: return "failed";
  }
  return "?";
}

std::string lmdb_version() { return fmt::format("{}.{}.{}", MDB_VERSION_MAJOR, MDB_VERSION_MINOR, MDB_VERSION_PATCH); }

bool RouteFilter::accepts(std::string_view encoded) const {
  const std::string_view input = peek_input(encoded);
  const bool derived = (peek_flags(encoded) & kRecordDerived) != 0;
  if (origin == Origin::raw && derived) return false;
  if (origin == Origin::derived && !derived) return false;
  if (!inputs.empty() && std::find(inputs.begin(), inputs.end(), input) == inputs.end()) return false;
  if (!derived && std::find(derived_only.begin(), derived_only.end(), input) != derived_only.end()) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Internal structures

struct Queue::Impl::Pending {
  const RecordBatch* records = nullptr;  // the caller's; never modified
  const WriteBatch* batch = nullptr;     // state and acknowledgements, or null
  std::vector<std::string> new_consumers;
  std::vector<std::string> removed_consumers;
  CommitResult result;
  bool done = false;

  const RecordBatch& recs() const {
    static const RecordBatch none;
    return records != nullptr ? *records : none;
  }
};

// Records held in RAM (mode = "memory"): one appended batch, consumed from the front.
struct Queue::Impl::MemoryChunk {
  RecordBatch records;
  std::uint64_t first_seq = 0;
  std::size_t head = 0;  // records before `head` are gone (acknowledged or evicted)

  std::uint64_t seq(std::size_t i) const { return first_seq + i; }
  std::size_t remaining() const { return records.size() - head; }
  std::uint64_t front_seq() const { return first_seq + head; }
  std::uint64_t last_seq() const { return first_seq + records.size() - 1; }
};

// One group transaction: what it changes, applied to the committed state only once LMDB has
// committed it.
struct Queue::Impl::Group {
  MDB_txn* root = nullptr;  // the group's transaction
  MDB_txn* txn = nullptr;   // where batches are applied: `root`, or a nested transaction of it
  bool wrote = false;       // anything put or deleted (a group of RAM-only appends writes nothing)

  std::uint64_t next_seq = 0;
  std::uint64_t seq_reserved = 0;
  std::uint64_t disk_bytes = 0;
  std::map<std::string, std::uint64_t, std::less<>> consumers;
  bool consumers_changed = false;
  // Said in the log once the group is committed (an apply may run more than once).
  std::vector<std::pair<log::Level, std::string>> consumer_news;

  // The disk tier after the transaction (captured before commit).
  std::uint64_t disk_records = 0;
  std::uint64_t disk_pages = 0;
  std::uint64_t first_disk_seq = 0;
  std::uint64_t last_disk_seq = 0;

  // Memory tier changes.
  std::vector<MemoryChunk> memory_added;
  std::uint64_t memory_bytes = 0;    // projected, after this group
  std::uint64_t memory_evicted = 0;  // oldest committed RAM records evicted by drop_oldest

  // Dead letters.
  std::uint64_t next_dead_letter_id = 0;  // 0: not loaded yet in this group
  std::map<std::pair<std::string, std::string>, std::uint64_t> dead_lettered;  // (input, reason) -> count
  std::uint64_t dead_letters_evicted = 0;

  // Counters for metrics.
  std::uint64_t appended_records = 0;
  std::uint64_t appended_bytes = 0;
  std::uint64_t acknowledged_records = 0;
  std::uint64_t evicted_records = 0;
  std::uint64_t evicted_bytes = 0;
  std::uint64_t dropped_newest_records = 0;
  std::uint64_t dropped_newest_bytes = 0;
  std::uint64_t refused_full = 0;
  std::uint64_t refused_too_large = 0;
  bool saw_full = false;
};

// ---------------------------------------------------------------------------------------------
// Sizing

std::uint64_t Queue::max_commit_for(std::uint64_t max_disk_bytes) {
  return std::clamp<std::uint64_t>(max_disk_bytes / 64, 64 << 10, 4 << 20);
}

std::uint64_t Queue::margin_for(std::uint64_t max_disk_bytes) {
  // Copy-on-write pages of the transaction being written, pages freed by the previous one (LMDB
  // reuses a freed page only two transactions later), the free list itself, and slack for a
  // short reader in another process.
  return 4 * max_commit_for(max_disk_bytes) + max_disk_bytes / 128 + (1 << 20);
}

// ---------------------------------------------------------------------------------------------
// Queue's members: each hands the call to Impl (queue_impl.hpp)

void Queue::close() { impl_->close(); }
CommitResult Queue::commit(const WriteBatch& batch) { return impl_->commit(batch); }
CommitResult Queue::append(const RecordBatch& records) { return impl_->append(records); }
CommitResult Queue::ack(const std::string& consumer, std::uint64_t seq) { return impl_->ack(consumer, seq); }
ReadBatch Queue::read(std::uint64_t after, const ReadLimits& limits, const RouteFilter* filter) const {
  return impl_->read(after, limits, filter);
}
std::optional<std::uint64_t> Queue::position(const std::string& consumer) const { return impl_->position(consumer); }
void Queue::add_consumer(const std::string& name) { impl_->add_consumer(name); }
bool Queue::remove_consumer(const std::string& name, std::vector<std::string> state_deletes) {
  return impl_->remove_consumer(name, std::move(state_deletes));
}
std::vector<std::string> Queue::consumer_names() const { return impl_->consumer_names(); }
std::optional<std::string> Queue::state(std::string_view key) const { return impl_->state(key); }
std::vector<std::pair<std::string, std::string>> Queue::state_with_prefix(std::string_view prefix) const {
  return impl_->state_with_prefix(prefix);
}
std::vector<StoredDeadLetter> Queue::dead_letters(const DeadLetterQuery& query) const {
  return impl_->dead_letters(query);
}
std::optional<StoredDeadLetter> Queue::dead_letter(std::uint64_t id) const { return impl_->dead_letter(id); }
DeadLetterStats Queue::dead_letter_stats() const { return impl_->dead_letter_stats(); }
Stats Queue::stats() const { return impl_->stats(); }
std::uint64_t Queue::oldest_seq() const { return impl_->oldest_seq(); }
std::vector<std::uint64_t> Queue::disk_bytes_after(std::span<const std::uint64_t> positions) const {
  return impl_->disk_bytes_after(positions);
}
bool Queue::blocked() const { return impl_->blocked(); }
void Queue::set_pressure_listener(std::function<void(bool)> listener) {
  impl_->set_pressure_listener(std::move(listener));
}
bool Queue::damaged() const { return impl_->damaged(); }
void Queue::sync() { impl_->sync(); }
std::uint64_t Queue::max_commit_bytes() const { return impl_->max_commit_bytes(); }
std::uint64_t Queue::disk_margin_bytes() const { return impl_->disk_margin_bytes(); }
std::uint64_t Queue::file_limit_bytes() const { return impl_->file_limit_bytes(); }
const Options& Queue::options() const { return impl_->options(); }
std::uint64_t Queue::id() const { return impl_->id(); }

// ---------------------------------------------------------------------------------------------
// Open and close

Queue::Queue(const Options& options, const Clock& clock, bool read_only)
    : impl_(std::make_unique<Impl>(options, clock, read_only)) {}

Queue::Impl::Impl(const Options& options, const Clock& clock, bool read_only)
    : options_(options),
      clock_(clock),
      read_only_(read_only),
      full_episode_(kComponent, log::Level::warn),
      map_full_episode_(kComponent, log::Level::error),
      commit_failure_episode_(kComponent, log::Level::error),
      dead_letter_episode_(kComponent, log::Level::warn) {
  auto on = [](const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr && std::string_view(v) == "1";
  };
  test_skip_flush_ = on("TANK_TEST_SKIP_FLUSH");
  test_no_pin_ = on("TANK_TEST_NO_PIN");
  if (test_skip_flush_) log::warn(kComponent, "TANK_TEST_SKIP_FLUSH=1: the queue never flushes (a test of the tests)");
  if (test_no_pin_) log::warn(kComponent, "TANK_TEST_NO_PIN=1: the flushed snapshot is not kept (a test of the tests)");
}

std::unique_ptr<Queue> Queue::open(const Options& options, const Clock& clock, metrics::Registry* metrics,
                                   OpenReport* report) {
  std::unique_ptr<Queue> q(new Queue(options, clock, false));
  q->impl_->open_environment(q.get(), metrics, report);
  return q;
}

std::unique_ptr<Queue> Queue::open_read_only(const std::filesystem::path& dir, const Clock& clock) {
  Options options;
  options.dir = dir;
  std::unique_ptr<Queue> q(new Queue(options, clock, true));
  std::error_code ec;
  if (!std::filesystem::exists(dir / "data.mdb", ec)) {
    throw OpenError(fmt::format("there is no queue in {} (has tank run with this data_dir?)", dir.string()));
  }
  VerifyOptions verify;
  verify.depth = Verification::quick;
  verify.use_lock_file = true;  // tank may be writing it right now
  VerifyResult check = verify_in_child(dir, verify);
  if (check.outcome != VerifyResult::Outcome::ok) {
    throw OpenError(fmt::format("cannot read the queue in {}: {}", dir.string(), check.problem));
  }
  q->impl_->open_environment(q.get(), nullptr, nullptr);
  return q;
}

void Queue::Impl::open_environment(const Queue* owner, metrics::Registry* metrics, OpenReport* report) {
  metrics_ = std::make_unique<QueueMetrics>(metrics);
  const std::filesystem::path& dir = options_.dir;
  page_size_ = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));

  if (!read_only_) {
    if (options_.max_disk_bytes < 16 * page_size_) {
      throw OpenError(fmt::format("queue.max_disk_bytes = {} is too small (at least {})",
                                  units::format_size(options_.max_disk_bytes), units::format_size(16 * page_size_)));
    }
    // A map this platform cannot map (a 32-bit size_t and address space: queue_config.hpp) is
    // refused before anything is touched, never wrapped into a size_t. `tank check` refuses it
    // first; callers that bypass it (tests, `tank dlq`) meet it here.
    if (std::string problem = map_too_large(options_.max_disk_bytes, options_.dead_letter_max_bytes, page_size_);
        !problem.empty()) {
      throw OpenError(fmt::format("cannot open the queue in {}: {}", dir.string(), problem));
    }
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw OpenError(fmt::format("cannot create the queue directory {}: {}", dir.string(), ec.message()));

    check_before_open(report);
  }

  max_commit_bytes_ = max_commit_for(options_.max_disk_bytes);
  margin_bytes_ = margin_for(options_.max_disk_bytes);
  // With the dead-letter store's own bound; within platform_map_limit() when writable (above).
  map_bytes_ = map_bytes_for(options_.max_disk_bytes, options_.dead_letter_max_bytes, page_size_);

  auto open_env = [&]() -> int {
    if (env_ != nullptr) {
      mdb_env_close(env_);
      env_ = nullptr;
    }
    lmdb::check(mdb_env_create(&env_), "mdb_env_create");
    lmdb::check(mdb_env_set_maxdbs(env_, 8), "mdb_env_set_maxdbs");
    unsigned flags = MDB_NOTLS;
    if (read_only_) {
      flags |= MDB_RDONLY;
    } else {
      lmdb::check(mdb_env_set_mapsize(env_, static_cast<std::size_t>(map_bytes_)), "mdb_env_set_mapsize");
      if (options_.fsync != Fsync::always || test_skip_flush_) flags |= MDB_NOSYNC;
    }
    return mdb_env_open(env_, dir.c_str(), flags, 0640);
  };
  int rc = open_env();
  if (rc != 0 && !read_only_ && lmdb::is_damage(rc)) {
    // The data file passed verification, so the lock file is the culprit. Nothing else uses it:
    // tank holds the data directory's lock. Recreate it.
    log::warn(kComponent, "the queue's lock file {} is unusable ({}); recreating it", (dir / "lock.mdb").string(),
              mdb_strerror(rc));
    std::error_code ec;
    std::filesystem::remove(dir / "lock.mdb", ec);
    rc = open_env();
  }
  if (rc != 0) {
    mdb_env_close(env_);
    env_ = nullptr;
    throw OpenError(fmt::format("cannot open the queue in {}: {}", dir.string(), mdb_strerror(rc)));
  }
  // An existing file keeps the page size it was created with (a data directory moved between
  // machines with 4 KiB and 16 KiB pages): size everything from the file's.
  MDB_stat st{};
  mdb_env_stat(env_, &st);
  page_size_ = st.ms_psize;
  bound_pages_ = options_.max_disk_bytes / page_size_;
  dead_letter_bound_pages_ = std::max<std::uint64_t>(options_.dead_letter_max_bytes / page_size_, 4);
  node_max_ = (((page_size_ - kPageHeader) / 2) & ~std::uint64_t{1}) - 2;

  try {
    if (read_only_) {
      lmdb::Txn txn(env_, MDB_RDONLY);
      // Queues from before the dead-letter store have no such database: read as empty.
      int drc = mdb_dbi_open(txn.get(), "dead_letters", 0, &dead_letters_dbi_);
      if (drc == MDB_NOTFOUND) dead_letters_dbi_ = 0;
      else lmdb::check(drc, "mdb_dbi_open");
      for (auto [name, dbi] : {std::pair{"records", &records_dbi_}, {"meta", &meta_dbi_}, {"state", &state_dbi_}}) {
        int orc = mdb_dbi_open(txn.get(), name, 0, dbi);
        if (orc == MDB_NOTFOUND) {
          throw OpenError(fmt::format("the queue in {} has not been initialised yet (start tank once)", dir.string()));
        }
        lmdb::check(orc, "mdb_dbi_open");
      }
      txn.commit();  // keeps the database handles
      load_state();
    } else {
      int dead = 0;
      mdb_reader_check(env_, &dead);
      if (dead > 0) log::info(kComponent, "cleared {} stale reader slot(s) left by processes that died", dead);
      // The names of the queue's directory and of data.mdb (LMDB may just have created them) on
      // stable storage: a power cut must not lose the file that holds acknowledged records.
      for (const std::filesystem::path& d : {dir, dir.parent_path()}) {
        if (std::string error = fs::sync_directory(d); !error.empty()) {
          throw OpenError(fmt::format("cannot open the queue in {}: {}", dir.string(), error));
        }
      }
      // Before this run writes anything: make the newest state durable and the recovery point (a
      // power cut from here on falls back to it, and the previous run's pin is gone).
      try {
        recovery_file_ = std::make_unique<RecoveryPointFile>(dir);
      } catch (const lmdb_file::IoError& e) {
        throw OpenError(fmt::format("cannot open the queue in {}: {}", dir.string(), e.what()));
      }
      if (std::string error = flush(0); !error.empty()) {
        throw OpenError(fmt::format("cannot open the queue in {}: {}", dir.string(), error));
      }
      lmdb::Txn txn(env_, 0);
      lmdb::check(mdb_dbi_open(txn.get(), "records", MDB_CREATE, &records_dbi_), "creating the records database");
      lmdb::check(mdb_dbi_open(txn.get(), "meta", MDB_CREATE, &meta_dbi_), "creating the meta database");
      lmdb::check(mdb_dbi_open(txn.get(), "state", MDB_CREATE, &state_dbi_), "creating the state database");
      lmdb::check(mdb_dbi_open(txn.get(), "dead_letters", MDB_CREATE, &dead_letters_dbi_),
                  "creating the dead-letter database");
      const std::optional<std::uint64_t> stored_format = get_meta(txn.get(), meta_dbi_, "format");
      if (!stored_format || *stored_format < kQueueFormat) put_meta(txn.get(), meta_dbi_, "format", kQueueFormat);
      if (rolled_back_next_seq_ != 0) {
        // Sequence numbers never repeat: skip every number the undone commits may have given
        // (they lived in pages written after the recovery point: at most the map's pages full of
        // the smallest records, and in memory mode a reservation per commit).
        const std::uint64_t per_page = (page_size_ - kPageHeader) / (kNodeHeader + kKeyBytes + kRecordHeaderBytes + 2);
        std::uint64_t skip = (map_bytes_ / page_size_) * per_page;
        if (options_.mode == Mode::memory) skip += (map_bytes_ / page_size_) * kSeqReservation;
        const std::uint64_t floor = rolled_back_next_seq_ + skip;
        if (get_meta(txn.get(), meta_dbi_, "next_seq").value_or(1) < floor) put_meta(txn.get(), meta_dbi_, "next_seq", floor);
        log::info(kComponent, "sequence numbers go on from {} (past any number the undone commits gave)", floor);
      }
      if (!get_meta(txn.get(), meta_dbi_, "queue_id")) {
        // Random, never 0; sequence numbers of another queue (one moved aside) never meet it.
        std::random_device entropy;
        std::uint64_t id = 0;
        while (id == 0) id = (static_cast<std::uint64_t>(entropy()) << 32) ^ entropy();
        put_meta(txn.get(), meta_dbi_, "queue_id", id);
      }
      txn.commit();
      if (stored_format && *stored_format < kQueueFormat) upgrade_records(*stored_format);
      load_state();
      register_consumers();
    }
  } catch (const lmdb::Error& e) {
    mdb_env_close(env_);
    env_ = nullptr;
    throw OpenError(fmt::format("cannot open the queue in {}: {}", dir.string(), e.what()));
  }

  if (!read_only_) {
    if (report != nullptr) report->records = disk_records_;
    blocked_ = disk_pages_ > bound_pages_;
    start_sync_thread();
    log::info(kComponent, "opened {} ({} records; {} of {} on disk; mode {}, fsync {}, overflow {})", dir.string(),
              disk_records_, units::human_size(disk_pages_ * page_size_), units::human_size(options_.max_disk_bytes),
              to_string(options_.mode), to_string(options_.fsync), to_string(options_.overflow));
  }
  metrics_->attach(owner);
}

void Queue::Impl::register_consumers() {
  // Keep the configured consumers, start new ones after the newest record, forget the ones no
  // longer configured (they would hold records forever), and delete what every remaining
  // consumer has passed.
  Group g;
  lmdb::Txn txn(env_, 0);
  g.txn = txn.get();
  g.next_seq = next_seq_;
  g.disk_bytes = disk_bytes_;
  std::map<std::string, std::uint64_t, std::less<>> wanted;
  for (const auto& name : options_.consumers) {
    auto it = consumers_.find(name);
    if (it != consumers_.end()) {
      wanted.insert(*it);
      continue;
    }
    wanted.emplace(name, next_seq_ - 1);
    put_meta(g.txn, meta_dbi_, consumer_key(name), next_seq_ - 1);
    log::info(kComponent, "new consumer \"{}\" starts after record {}", name, next_seq_ - 1);
  }
  for (const auto& [name, pos] : consumers_) {
    if (wanted.contains(name)) continue;
    const std::string key = consumer_key(name);
    MDB_val k = lmdb::value_of(key);
    lmdb::check(mdb_del(g.txn, meta_dbi_, &k, nullptr), "removing a consumer");
    log::warn(kComponent, "consumer \"{}\" is no longer configured; forgot its position (record {})", name, pos);
  }
  if (!wanted.empty()) {
    std::uint64_t min_pos = UINT64_MAX;
    for (const auto& [n, pos] : wanted) min_pos = std::min(min_pos, pos);
    delete_through(g, min_pos);
    put_meta(g.txn, meta_dbi_, "bytes", g.disk_bytes);
  }
  txn.commit();
  load_state();
}

void Queue::Impl::load_state() {
  lmdb::Txn txn(env_, MDB_RDONLY);
  MDB_txn* t = txn.get();
  std::uint64_t stored_next = get_meta(t, meta_dbi_, "next_seq").value_or(1);
  queue_id_ = get_meta(t, meta_dbi_, "queue_id").value_or(0);
  seq_reserved_ = get_meta(t, meta_dbi_, "seq_reserved").value_or(0);
  disk_bytes_ = get_meta(t, meta_dbi_, "bytes").value_or(0);
  MDB_stat rs = stat_of(t, records_dbi_);
  disk_records_ = rs.ms_entries;
  disk_pages_ = pages_of(rs) + pages_of(stat_of(t, meta_dbi_)) + pages_of(stat_of(t, state_dbi_));
  lmdb::Cursor cursor(t, records_dbi_);
  MDB_val k, v;
  first_disk_seq_ = cursor.get(k, v, MDB_FIRST) ? lmdb::seq_of(k) : 0;
  last_disk_seq_ = cursor.get(k, v, MDB_LAST) ? lmdb::seq_of(k) : 0;
  // Numbers reserved by a memory-mode run that crashed are skipped, never reused.
  next_seq_ = std::max({stored_next, seq_reserved_, last_disk_seq_ + 1, std::uint64_t{1}});
  consumers_.clear();
  lmdb::Cursor meta(t, meta_dbi_);
  std::string prefix = consumer_key("");
  MDB_val mk = lmdb::value_of(prefix);
  MDB_val mv;
  bool more = meta.get(mk, mv, MDB_SET_RANGE);
  while (more) {
    std::string_view key = lmdb::view_of(mk);
    if (!key.starts_with(prefix)) break;
    consumers_.emplace(std::string(key.substr(prefix.size())), lmdb::decode_u64(mv));
    more = meta.get(mk, mv, MDB_NEXT);
  }
}

// ---------------------------------------------------------------------------------------------
// Checks before opening: power-loss rollback, verification, moving aside

namespace {

// Sentences for the log: a recovery point's flush time and what it held.
std::string describe_point(const RecoveryPoint& point) {
  return fmt::format("the flush at {} (transaction {}, {} records, next sequence number {})",
                     fs::rfc3339_utc(point.pinned_wall_ns), point.txnid, point.records, point.next_seq);
}

}  // namespace

void Queue::Impl::check_before_open(OpenReport* report) {
  const std::filesystem::path& dir = options_.dir;
  const std::filesystem::path data = dir / "data.mdb";
  auto transient = [&](const std::string& what) {
    return OpenError(fmt::format("cannot read the queue in {}: {}. The queue was left as it is (this is not damage); "
                                 "tank will try again when it is restarted (systemd does so by itself)",
                                 dir.string(), what));
  };
  // systemd's start timeout is extended while a large file is read (about once a second).
  auto last_wait = std::chrono::steady_clock::now();
  lmdb_file::CheckOptions check_options;
  check_options.progress = [&] {
    if (options_.on_verification_wait && std::chrono::steady_clock::now() - last_wait > std::chrono::seconds(1)) {
      last_wait = std::chrono::steady_clock::now();
      options_.on_verification_wait();
    }
  };
  // Whether the recovery point's snapshot is whole in the file: a rollback to it is taken only then
  // (it rewrites the meta pages; the newest state is then gone).
  auto snapshot_problem = [&](const RecoveryPoint& point) {
    lmdb_file::File file(data);
    const lmdb_file::Meta meta = lmdb_file::parse_meta(point.meta_page, static_cast<int>(point.txnid % 2));
    const lmdb_file::CheckResult r = lmdb_file::check_structure(file, meta, check_options);
    return r.ok() ? std::string() : r.problem;
  };

  Verification depth = options_.verification;
  std::optional<RecoveryPoint> point;  // usable for a rollback
  bool rolled_back = false;
  std::error_code ec;
  try {
    if (std::filesystem::exists(data, ec) && never_committed(lmdb_file::File(data).read_metas())) {
      // LMDB creates the file with two meta pages and nothing else: a power cut (or a full disk)
      // during that leaves a file holding no commit at all. Nothing to keep: start it again.
      log::warn(kComponent, "{} holds no commit (its creation was cut short); creating it again", data.string());
      std::filesystem::remove(data);
      std::filesystem::remove(dir / "lock.mdb", ec);
      if (std::string error = fs::sync_directory(dir); !error.empty()) throw lmdb_file::IoError(EIO, error);
    }
  } catch (const lmdb_file::IoError& e) {
    throw transient(e.what());
  } catch (const std::filesystem::filesystem_error& e) {
    throw transient(e.what());
  }
  if (std::filesystem::exists(data, ec)) {
    try {
      std::string why;
      point = read_recovery_point(dir, &why);
      const lmdb_file::File file(data);
      const lmdb_file::Metas metas = file.read_metas();
      // With fsync = "always" every commit was durable, and after a clean close nothing came after
      // the recovery point: the newest state is the one to trust.
      if (point && (point->every_commit_durable() || point->closed_cleanly())) point.reset();
      if (point && point->meta_page.size() != lmdb_layout::kMetaPageBytes) point.reset();
      const int newest = metas.newest();
      const std::string boot = fs::boot_id();
      const bool rebooted = point && !boot.empty() && !point->boot_id.empty() && point->boot_id != boot;
      if (rebooted && (newest < 0 || metas.slots[newest].txnid != point->txnid)) {
        // The machine went down while tank ran with commits after its last flush: their pages may
        // have reached the disk in any order, or not at all. LMDB cannot tell (no checksums on
        // pages), so they are undone -- if the flushed snapshot is whole, as it is unless the
        // device lost synced writes.
        if (std::string problem = snapshot_problem(*point); !problem.empty()) {
          log::error(kComponent,
                     "the queue in {} was not flushed cleanly before the machine restarted, and its last flushed "
                     "snapshot is damaged too ({}): the storage lost writes it had confirmed. Checking the newest "
                     "state in full instead",
                     dir.string(), problem);
          point.reset();
        } else {
          std::string newer = "its meta pages are unreadable";
          std::uint64_t lost = 0;
          if (newest >= 0) {
            newer = fmt::format("{} commit(s) after it, up to transaction {}, may be incomplete",
                                metas.slots[newest].txnid > point->txnid ? metas.slots[newest].txnid - point->txnid : 0,
                                metas.slots[newest].txnid);
            lost = appended_after(file, metas.slots[newest], point->next_seq);
          }
          roll_back(*point,
                    fmt::format("the machine restarted while tank was running (power cut or system crash): {}", newer),
                    lost, report);
          rolled_back = true;
        }
        depth = Verification::full;
      }
    } catch (const lmdb_file::IoError& e) {
      throw transient(e.what());
    }
  }

  VerifyOptions verify;
  verify.depth = depth;
  verify.on_wait = options_.on_verification_wait;
  VerifyResult check = verify_in_child(dir, verify);
  if (check.outcome == VerifyResult::Outcome::damaged && point && !rolled_back) {
    // The newest state is damaged but the last flush's snapshot was kept intact (its pages were
    // pinned until the previous tank ended, and nothing was written since): go back to it.
    try {
      if (std::string problem = snapshot_problem(*point); problem.empty()) {
        roll_back(*point, fmt::format("its newest state is damaged ({})", check.problem), 0, report);
        rolled_back = true;
        verify.depth = Verification::full;
        check = verify_in_child(dir, verify);
      } else {
        log::error(kComponent, "the last flushed snapshot of the queue in {} is damaged too ({})", dir.string(), problem);
      }
    } catch (const lmdb_file::IoError& e) {
      throw transient(e.what());
    }
  }
  switch (check.outcome) {
    case VerifyResult::Outcome::ok:
      break;
    case VerifyResult::Outcome::inaccessible:
      throw transient(check.problem);
    case VerifyResult::Outcome::newer_format:
      throw OpenError(fmt::format("cannot open the queue in {}: {}. Run the newer tank, or move the directory "
                                  "aside to start with an empty queue.",
                                  dir.string(), check.problem));
    case VerifyResult::Outcome::damaged: {
      std::vector<std::filesystem::path> pruned;
      std::filesystem::path moved = move_aside(dir, clock_.wall_ns(), options_.keep_damaged, &pruned);
      metrics_->damaged_recoveries.Increment();
      log::error(kComponent,
                 "the queue in {} is damaged ({}); moved it to {} and started with an empty queue. Its records "
                 "were not delivered: `tank queue salvage {}` recovers every intact one (docs/operations.md)",
                 dir.string(), check.problem, moved.string(), moved.string());
      for (const auto& p : pruned) {
        log::warn(kComponent, "deleted the older damaged queue {} (it held no records to salvage)", p.string());
      }
      if (report != nullptr) {
        report->recovered = true;
        report->moved_to = moved;
        report->problem = check.problem;
        report->pruned = pruned;
      }
      std::filesystem::create_directories(dir, ec);
      if (ec) throw OpenError(fmt::format("cannot create the queue directory {}: {}", dir.string(), ec.message()));
      rolled_back_next_seq_ = 0;
      break;
    }
  }
}

// Whether a data file is what LMDB writes when it creates one, cut short, and nothing more: no meta
// page names a transaction or a page of a tree (an empty file included).
bool Queue::Impl::never_committed(const lmdb_file::Metas& metas) {
  if (metas.file_bytes == 0) return true;
  bool any_valid = false;
  for (const lmdb_file::Meta& m : metas.slots) {
    if (!m.valid) continue;
    any_valid = true;
    if (m.txnid != 0 || m.free_db.root != lmdb_layout::kInvalidPage || m.main_db.root != lmdb_layout::kInvalidPage) {
      return false;
    }
  }
  return any_valid && metas.file_bytes <= 2 * static_cast<std::uint64_t>(metas.slots[0].valid ? metas.slots[0].page_size
                                                                                              : metas.slots[1].page_size);
}

// Records the newest state appended after `next_seq`, as far as its meta database still says
// (0 when it cannot be read: a power cut may have left it half-written).
std::uint64_t Queue::Impl::appended_after(const lmdb_file::File& file, const lmdb_file::Meta& newest, std::uint64_t next_seq) {
  std::uint64_t newest_next = 0;
  try {
    lmdb_file::for_each_entry(file, newest, "meta", [&](std::string_view key, std::string_view value) {
      if (key == "next_seq" && value.size() == 8) {
        MDB_val v{value.size(), const_cast<char*>(value.data())};
        newest_next = lmdb::decode_u64(v);
        return false;
      }
      return true;
    });
  } catch (const std::exception&) {
    return 0;
  }
  return newest_next > next_seq ? newest_next - next_seq : 0;
}

void Queue::Impl::roll_back(const RecoveryPoint& point, const std::string& why, std::uint64_t lost, OpenReport* report) {
  const std::filesystem::path& dir = options_.dir;
  roll_back_to(dir / "data.mdb", point);
  // LMDB's lock file remembers the newest transaction; it is rebuilt from the meta pages.
  std::error_code ec;
  std::filesystem::remove(dir / "lock.mdb", ec);
  metrics_->power_loss_rollbacks.Increment();
  metrics_->power_loss_lost_records.Increment(static_cast<double>(lost));
  rolled_back_next_seq_ = std::max<std::uint64_t>(point.next_seq, 1);
  const std::string text = fmt::format(
      "rolled the queue in {} back to its last flush, {}, because {}. Records acknowledged to their sources after that "
      "flush{} are lost (at most fsync_interval = {} of them with fsync = \"interval\"); outputs send again what they "
      "delivered after it, under the same idempotency keys",
      dir.string(), describe_point(point), why,
      lost > 0 ? fmt::format(" ({} record(s) by the newest meta page, sequence numbers {} to {})", lost, point.next_seq,
                             point.next_seq + lost - 1)
               : std::string(),
      units::format_duration(options_.fsync_interval));
  log::error(kComponent, "{}", text);
  if (report != nullptr) {
    report->rolled_back = true;
    report->rollback = text;
  }
}

// Format 1 records (no check) are rewritten in format 2, oldest first, in transactions of at most
// max_commit_bytes; records of both formats read the same meanwhile, so a crash half-way only
// leaves the rest for the next start. The meta format was set to 2 first: an older tank refuses
// the queue from then on instead of misreading it.
void Queue::Impl::upgrade_records(std::uint64_t from_format) {
  std::uint64_t upgraded = 0;
  std::uint64_t next = 0;  // the first sequence number not yet looked at
  for (bool more = true; more;) {
    lmdb::Txn txn(env_, 0);
    std::uint64_t bytes = 0;
    while (bytes < max_commit_bytes_) {
      // Looked up afresh each time: a record that grows may split its page under a cursor.
      std::optional<std::pair<std::uint64_t, std::string>> old;
      {
        lmdb::Cursor cursor(txn.get(), records_dbi_);
        lmdb::SeqKey start(next);
        MDB_val k = start.val();
        MDB_val v;
        if (cursor.get(k, v, MDB_SET_RANGE)) old.emplace(lmdb::seq_of(k), std::string(lmdb::view_of(v)));
      }
      if (!old) {
        more = false;
        break;
      }
      next = old->first + 1;
      if (old->second.empty() || static_cast<unsigned char>(old->second[0]) != 1) continue;
      std::optional<std::string> v2 = upgrade_record_v1(old->first, old->second);
      if (!v2) continue;  // does not decode: left for the checks to report
      lmdb::SeqKey key(old->first);
      MDB_val k = key.val();
      MDB_val nv = lmdb::value_of(*v2);
      lmdb::check(mdb_put(txn.get(), records_dbi_, &k, &nv, 0), "upgrading a record");
      bytes += v2->size();
      ++upgraded;
    }
    txn.commit();
  }
  log::info(kComponent, "upgraded the queue in {} from format {} to {}: {} records now carry a checksum",
            options_.dir.string(), from_format, kQueueFormat, upgraded);
}

// ---------------------------------------------------------------------------------------------
// Flushing and the recovery point (recovery_point.hpp)

namespace {

// How often the flushing thread looks whether the pinned snapshot holds too many pages.
constexpr std::chrono::milliseconds kPinCheckEvery{50};

}  // namespace

void Queue::Impl::start_sync_thread() {
  if (options_.fsync == Fsync::always) return;
  // fsync = "interval": a flush every fsync_interval (fixed rate: the loss window after a power cut
  // is at most one interval plus one flush). fsync = "never": no periodic flush. In both, the
  // pinned snapshot keeps every page freed since it from being reused (each small commit frees
  // some 6-8 pages: the last leaf, its branches, the meta and free-page trees), so once those pages
  // would take half of the disk margin the thread flushes early: the fallback never takes room from
  // the queue, and the file stays within its limit (a group that finds the map full anyway flushes
  // at once, see run_group).
  const bool interval = options_.fsync == Fsync::interval;
  const auto period = interval ? options_.fsync_interval : std::chrono::nanoseconds(std::chrono::hours(24 * 365));
  const auto look = std::min<std::chrono::nanoseconds>(period, kPinCheckEvery);
  sync_thread_ = std::thread([this, interval, period, look] {
    auto next_flush = std::chrono::steady_clock::now() + period;
    std::unique_lock lock(sync_mutex_);
    while (!stop_sync_) {
      sync_cv_.wait_for(lock, look, [this] { return stop_sync_; });
      if (stop_sync_) break;
      const auto now = std::chrono::steady_clock::now();
      const bool scheduled = interval && now >= next_flush;
      if (scheduled) next_flush = std::max(next_flush + period, now);  // fixed rate, never a burst
      lock.unlock();
      const bool due = (scheduled && unsynced_.exchange(false)) || pinned_free_pages() * page_size_ > margin_bytes_ / 2;
      if (due) {
        if (std::string error = flush(0); !error.empty()) {
          commit_failure_episode_.occur(fmt::format("flushing the queue to disk failed: {}; the previous flush stays "
                                                    "the point a power cut falls back to",
                                                    error));
          unsynced_ = true;
        }
      }
      lock.lock();
    }
  });
}

// Pages of the pinned snapshot freed since: LMDB keeps them until the pin moves. Those the patch
// already holds apart, plus the free-page entries since the pin not looked at yet.
std::uint64_t Queue::Impl::pinned_free_pages() const {
  std::uint64_t pinned = 0;
  {
    std::lock_guard flush_lock(flush_mutex_);
    if (pinned_ == nullptr) return 0;
    pinned = pinned_txnid_;
  }
  std::size_t held = 0;
  mdb_env_protected_pages(env_, static_cast<std::size_t>(pinned), nullptr, &held);
  try {
    lmdb::Txn txn(env_, MDB_RDONLY);
    lmdb::Cursor cursor(txn.get(), 0);
    std::size_t from = static_cast<std::size_t>(pinned);
    MDB_val k{sizeof from, &from};
    MDB_val v;
    std::uint64_t pages = 0;
    for (bool more = cursor.get(k, v, MDB_SET_RANGE); more; more = cursor.get(k, v, MDB_NEXT)) {
      std::size_t count = 0;
      if (v.mv_size >= sizeof count) std::memcpy(&count, v.mv_data, sizeof count);
      pages += count;
    }
    return pages + held;
  } catch (const lmdb::Error&) {
    return held;
  }
}

std::string Queue::Impl::flush(std::uint32_t flags) {
  // 1. Pin the newest snapshot while no group is being written, so that the meta page in the file
  //    is the snapshot's and no commit is half-way: every commit acknowledged before `pinned_mono`
  //    is in it.
  //    The flush goes before any batch that has not started: a producer that commits back to back
  //    would otherwise take the leadership again every time before this thread wakes, and keep
  //    the flush (and the loss window) waiting while every commit woke this thread in vain.
  {
    std::unique_lock lock(mutex_);
    ++flushes_waiting_;
    cv_.wait(lock, [this] { return !leader_active_; });
    --flushes_waiting_;
    leader_active_ = true;
  }
  std::lock_guard flush_lock(flush_mutex_);
  return flush_locked(flags, false);
}

std::string Queue::Impl::flush_locked(std::uint32_t flags, bool keep_leading) {
  bool leading = !keep_leading;
  auto step_down = [&] {
    if (!leading) return;
    leading = false;
    {
      std::lock_guard lock(mutex_);
      leader_active_ = false;
    }
    cv_.notify_all();
  };
  struct StepDown {
    decltype(step_down)& f;
    ~StepDown() { f(); }
  } step_down_at_exit{step_down};

  const std::filesystem::path data = options_.dir / "data.mdb";
  RecoveryPoint point;
  point.flags = flags | (options_.fsync == Fsync::always ? RecoveryPoint::kEveryCommitDurable : 0);
  point.pinned_mono_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::steady_clock::now().time_since_epoch())
                             .count();
  point.pinned_wall_ns = clock_.wall_ns();
  MDB_txn* pin = nullptr;
  bool pin_protected = false;
  if (int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &pin); rc != 0) {
    return fmt::format("cannot begin a read transaction: {}", mdb_strerror(rc));
  }
  struct PinGuard {
    MDB_env* env;
    MDB_txn*& txn;
    bool& is_protected;
    ~PinGuard() {
      if (txn == nullptr) return;
      const std::size_t txnid = mdb_txn_id(txn);
      mdb_txn_abort(txn);
      if (is_protected) mdb_env_unprotect(env, txnid);
    }
  } pin_guard{env_, pin, pin_protected};
  point.txnid = mdb_txn_id(pin);
  {
    std::lock_guard lock(mutex_);
    point.next_seq = std::max(next_seq_, seq_reserved_);
    point.records = disk_records_ + memory_records_;
  }
  try {
    const lmdb_file::Metas metas = lmdb_file::read_metas(data);
    const int newest = metas.newest();
    if (newest < 0 || metas.slots[newest].txnid != point.txnid) {
      return fmt::format("the meta page of transaction {} is not in {} (newest: {})", point.txnid, data.string(),
                         newest < 0 ? std::string("none valid") : std::to_string(metas.slots[newest].txnid));
    }
    point.meta_page = metas.slots[newest].raw;
    point.page_size = metas.slots[newest].page_size;
  } catch (const lmdb_file::IoError& e) {
    return e.what();
  }
  // What this flush writes: every page the commits since the previous flush wrote (counted by
  // third_party/lmdb's patch while the previous snapshot was protected), each once.
  std::optional<std::size_t> written_pages;
  if (pinned_ != nullptr) {
    std::size_t pages = 0;
    if (mdb_env_protected_pages(env_, pinned_txnid_, &pages, nullptr) == 0) written_pages = pages;
  }
  // Keep the snapshot's own pages from being overwritten until the next flush has replaced it;
  // pages written and freed again after it are reused (third_party/lmdb/README.md).
  if (options_.fsync != Fsync::always && !test_no_pin_) {
    if (int rc = mdb_env_protect(env_, pin); rc != 0) {
      return fmt::format("cannot keep the snapshot of transaction {}: {}", point.txnid, mdb_strerror(rc));
    }
    pin_protected = true;
  }
  step_down();  // commits go on while the file is flushed
  if (test_no_pin_) {
    mdb_txn_abort(pin);
    pin = nullptr;
  }

  // 2. The snapshot's pages on stable storage (and everything written before them).
  if (!test_skip_flush_) {
    if (int rc = mdb_env_sync(env_, 1); rc != 0) return fmt::format("fdatasync of {}: {}", data.string(), mdb_strerror(rc));
  }
  // 3. The recovery point naming it, on stable storage.
  struct stat st {};
  if (::stat(data.c_str(), &st) != 0) return fmt::format("cannot stat {}: {}", data.string(), std::strerror(errno));
  point.data_device = static_cast<std::uint64_t>(st.st_dev);
  point.data_inode = static_cast<std::uint64_t>(st.st_ino);
  point.boot_id = fs::boot_id();
  if (std::string error = recovery_file_->write(point); !error.empty()) return error;
  metrics_->fsyncs.Increment();

  // 4. What this flush wrote, then the new pin replaces the previous one.
  if (written_pages) {
    // Plus the meta pages: at most the two (the page cache keeps only their last content).
    const std::uint64_t commits = point.txnid > pinned_txnid_ ? point.txnid - pinned_txnid_ : 0;
    metrics_->written_bytes.Increment(
        static_cast<double>((*written_pages + std::min<std::uint64_t>(commits, 2)) * page_size_));
    accounted_txnid_ = 0;  // account_written() starts afresh if it is ever used again
  } else if (pin != nullptr) {
    try {
      account_written(pin);
    } catch (const lmdb::Error& e) {
      log::debug(kComponent, "counting the pages written failed: {}", e.what());
    }
  }
  release_pin_locked();
  pinned_txnid_ = point.txnid;
  // With fsync = "always" every commit is durable: nothing to fall back to, nothing to keep.
  if (options_.fsync != Fsync::always) {
    std::swap(pinned_, pin);
    pin_protected = false;  // pinned_ owns it now
  }
  return {};
}

void Queue::Impl::release_pin_locked() {
  if (pinned_ == nullptr) return;
  mdb_txn_abort(pinned_);
  mdb_env_unprotect(env_, static_cast<std::size_t>(pinned_txnid_));
  pinned_ = nullptr;
}

// Pages written by the commits since the last accounting, up to `txn`'s snapshot: every page a
// commit wrote was allocated (from the free list or the end of the file) and is now in use or
// freed again, and no page freed after the last accounting has been reused (with fsync =
// "interval" or "never" the last flush's snapshot is pinned; with "always" every commit is
// accounted right after it), so each page was written once: allocated = (pages in use now - then)
// + pages freed in between (the free-page tree's entries, keyed by the freeing transaction). Plus
// the meta pages: one per commit with "always" (each is written with O_DSYNC), at most the two
// per flush otherwise (the page cache keeps only their last content).
void Queue::Impl::account_written(MDB_txn* txn) {
  if (records_dbi_ == 0) return;  // the flush at open, before the databases are opened
  std::uint64_t used = 0;
  for (MDB_dbi dbi : {MDB_dbi{0}, MDB_dbi{1}, records_dbi_, meta_dbi_, state_dbi_, dead_letters_dbi_}) {
    used += pages_of(stat_of(txn, dbi));
  }
  const std::uint64_t txnid = mdb_txn_id(txn);
  if (accounted_txnid_ == 0 || txnid <= accounted_txnid_) {
    accounted_pages_ = used;
    accounted_txnid_ = txnid;
    return;
  }
  std::uint64_t freed = 0;
  lmdb::Cursor cursor(txn, 0);
  std::size_t from = static_cast<std::size_t>(accounted_txnid_ + 1);
  MDB_val k{sizeof from, &from};
  MDB_val v;
  for (bool more = cursor.get(k, v, MDB_SET_RANGE); more; more = cursor.get(k, v, MDB_NEXT)) {
    std::size_t key = 0;
    if (k.mv_size == sizeof key) std::memcpy(&key, k.mv_data, sizeof key);
    if (key > txnid) break;
    std::size_t count = 0;
    if (v.mv_size >= sizeof count) std::memcpy(&count, v.mv_data, sizeof count);
    freed += count;
  }
  const std::uint64_t allocated = used + freed > accounted_pages_ ? used + freed - accounted_pages_ : 0;
  const std::uint64_t commits = txnid - accounted_txnid_;
  const std::uint64_t meta_pages = options_.fsync == Fsync::always ? commits : std::min<std::uint64_t>(commits, 2);
  metrics_->written_bytes.Increment(static_cast<double>((allocated + meta_pages) * page_size_));
  accounted_pages_ = used;
  accounted_txnid_ = txnid;
}

Queue::~Queue() {
  try {
    impl_->close();
  } catch (const std::exception& e) {
    log::error(kComponent, "closing the queue failed: {}", e.what());
  }
}

void Queue::Impl::close() {
  {
    std::unique_lock lock(mutex_);
    if (closed_) return;
    // Let a group being written finish; later commit() calls are refused.
    closed_ = true;
    cv_.wait(lock, [this] { return !leader_active_; });
  }
  if (metrics_) metrics_->detach();
  {
    std::lock_guard lock(sync_mutex_);
    stop_sync_ = true;
  }
  sync_cv_.notify_all();
  if (sync_thread_.joinable()) sync_thread_.join();
  std::unique_lock env_lock(env_mutex_);  // waits for readers in progress
  if (env_ == nullptr) return;
  if (!read_only_ && !memory_.empty()) save_memory_tier();
  if (!read_only_ && recovery_file_) {
    if (std::string error = flush(RecoveryPoint::kClosedCleanly); !error.empty()) {
      log::error(kComponent, "the last flush of the queue failed: {}; the previous flush stays the point a power cut "
                 "falls back to", error);
    }
  }
  {
    std::lock_guard flush_lock(flush_mutex_);
    release_pin_locked();
  }
  mdb_env_close(env_);
  env_ = nullptr;
}

// Writes the RAM tier to LMDB at close, oldest first, in transactions of at most
// max_commit_bytes, as far as the disk bound allows; what does not fit is counted as dropped.
void Queue::Impl::save_memory_tier() {
  std::uint64_t saved = 0;
  std::uint64_t lost = 0;
  std::uint64_t lost_bytes = 0;
  std::vector<std::pair<std::uint64_t, std::string_view>> records;
  for (const MemoryChunk& chunk : memory_) {
    for (std::size_t i = chunk.head; i < chunk.records.size(); ++i) records.emplace_back(chunk.seq(i), chunk.records.encoded(i));
  }
  std::size_t next = 0;
  int attempts = 0;
  while (next < records.size()) {
    std::size_t end = next;
    std::uint64_t bytes = 0;
    while (end < records.size() && (end == next || bytes + records[end].second.size() <= max_commit_bytes_)) {
      bytes += records[end].second.size();
      ++end;
    }
    try {
      lmdb::Txn txn(env_, 0);
      std::uint64_t stored = 0;
      std::uint64_t stored_bytes = 0;
      bool full = false;
      {
        // LMDB frees a write transaction's cursors when it commits: this one must go first.
        lmdb::Cursor cursor(txn.get(), records_dbi_);
        for (std::size_t i = next; i < end; ++i) {
          std::string_view rec = records[i].second;
          const std::uint64_t need = (kNodeHeader + kKeyBytes + rec.size()) / page_size_ + 2;
          if (used_pages(txn.get()) + need > bound_pages_) {
            full = true;
            break;
          }
          lmdb::SeqKey key(records[i].first);
          MDB_val k = key.val();
          MDB_val v{rec.size(), nullptr};
          lmdb::check(mdb_cursor_put(cursor.get(), &k, &v, MDB_RESERVE), "saving the memory tier");
          std::memcpy(v.mv_data, rec.data(), rec.size());
          seal_stored_record(records[i].first, static_cast<char*>(v.mv_data), rec.size());
          ++stored;
          stored_bytes += rec.size();
        }
      }
      put_meta(txn.get(), meta_dbi_, "bytes", disk_bytes_ + stored_bytes);
      put_meta(txn.get(), meta_dbi_, "next_seq", next_seq_);
      txn.commit();
      disk_bytes_ += stored_bytes;
      saved += stored;
      next += stored;
      if (full) break;
    } catch (const lmdb::Error& e) {
      // MDB_MAP_FULL right after large deletions: pages freed by the last transactions become
      // reusable two transactions later. Commit empty transactions and try again, a few times.
      if (e.code() == MDB_MAP_FULL && ++attempts <= 3) {
        // The snapshot kept for a power cut holds the pages freed since the last flush: move it on.
        if (std::string error = flush(0); !error.empty()) log::warn(kComponent, "flushing the queue failed: {}", error);
        for (int i = 0; i < 2; ++i) {
          lmdb::Txn empty(env_, 0);
          put_meta(empty.get(), meta_dbi_, "next_seq", next_seq_);
          empty.commit();
        }
        continue;
      }
      log::error(kComponent, "saving the records held in memory failed: {}", e.what());
      break;
    }
  }
  for (std::size_t i = next; i < records.size(); ++i) {
    ++lost;
    lost_bytes += records[i].second.size();
  }
  if (lost > 0) {
    if (metrics_) metrics_->dropped_newest_records.Increment(static_cast<double>(lost));
    log::error(kComponent,
               "dropped {} records ({}) held in memory at shutdown: the disk tier (max_disk_bytes = {}) had no room "
               "for them",
               lost, units::human_size(lost_bytes), units::format_size(options_.max_disk_bytes));
  }
  if (saved > 0) log::info(kComponent, "saved the {} records held in memory to disk", saved);
  memory_.clear();
  memory_records_ = 0;
  memory_bytes_ = 0;
  memory_encoded_bytes_ = 0;
}

void Queue::Impl::require_writable() const {
  if (read_only_) throw std::logic_error("the queue was opened read-only");
}

// ---------------------------------------------------------------------------------------------
// Commit

namespace {

// Thrown inside a group when a batch applied without a nested transaction turned out not to fit
// after all (the page estimates are upper bounds, so this is not expected): the group is then
// written again with every batch in a nested transaction of its own.
struct RetryCarefully {};

}  // namespace

CommitResult Queue::Impl::append(const RecordBatch& records) {
  require_writable();
  Pending p;
  p.records = &records;
  submit(p);
  return std::move(p.result);
}

CommitResult Queue::Impl::ack(const std::string& consumer, std::uint64_t seq) {
  WriteBatch batch;
  batch.acks.emplace_back(consumer, seq);
  return commit(batch);
}

void Queue::Impl::add_consumer(const std::string& name) {
  require_writable();
  {
    std::lock_guard lock(mutex_);
    if (consumers_.contains(name)) return;
  }
  Pending p;
  p.new_consumers.push_back(name);
  submit(p);
}

bool Queue::Impl::remove_consumer(const std::string& name, std::vector<std::string> state_deletes) {
  require_writable();
  {
    std::lock_guard lock(mutex_);
    if (!consumers_.contains(name)) return true;
  }
  WriteBatch batch;
  batch.state_deletes = std::move(state_deletes);
  Pending p;
  p.batch = &batch;
  p.removed_consumers.push_back(name);
  submit(p);
  return p.result.ok();
}

std::vector<std::string> Queue::Impl::consumer_names() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [name, pos] : consumers_) out.push_back(name);
  return out;
}

CommitResult Queue::Impl::commit(const WriteBatch& batch) {
  require_writable();
  Pending p;
  p.records = &batch.records;
  p.batch = &batch;
  submit(p);
  return std::move(p.result);
}

void Queue::Impl::submit(Pending& p) {
  std::unique_lock lock(mutex_);
  if (closed_) throw std::logic_error("the queue is closed");
  pending_.push_back(&p);
  while (!p.done) {
    if (leader_active_ || flushes_waiting_ > 0) {
      // Another thread writes this batch with its group: this one waits (only the writer is
      // judged by the watchdog: a slow disk shows there once).
      liveness::Waiting waiting;
      cv_.wait(lock);
      continue;
    }
    if (closed_) {
      // close() ran while this batch waited: it was not written.
      pending_.erase(std::remove(pending_.begin(), pending_.end(), &p), pending_.end());
      p.result = CommitResult{CommitStatus::failed, 0, 0, "the queue is closed (tank is stopping)"};
      return;
    }
    // Become the leader: take the oldest waiting batches, up to max_commit_bytes of records
    // (at least one), and write them in one transaction.
    leader_active_ = true;
    std::vector<Pending*> group;
    std::uint64_t bytes = 0;
    std::size_t taken = 0;
    while (taken < pending_.size()) {
      std::uint64_t b = pending_[taken]->recs().bytes();
      if (taken > 0 && bytes + b > max_commit_bytes_) break;
      bytes += b;
      group.push_back(pending_[taken]);
      ++taken;
    }
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(taken));
    lock.unlock();
    run_group(group);
    lock.lock();
  }
}

// Runs with leader_active_ set and mutex_ released; returns with leader_active_ cleared and
// every batch of the group done.
void Queue::Impl::run_group(std::vector<Pending*>& group) {
  auto started = std::chrono::steady_clock::now();
  Group g;
  try {
    bool written = write_group(group, g, true);
    if (!written) {
      // A reader whose process died without ending its transaction pins pages until its slot
      // is cleared: always clear dead readers first.
      int dead = 0;
      mdb_reader_check(env_, &dead);
      if (dead > 0) written = write_group(group, g, true);
    }
    if (!written && options_.fsync != Fsync::always && !test_no_pin_) {
      // The snapshot kept for a power cut (the last flush) holds every page freed since: flush now
      // to move it on. Commits wait meanwhile (this thread leads the group), once.
      std::lock_guard flush_lock(flush_mutex_);
      if (pinned_ != nullptr) {
        if (std::string error = flush_locked(0, true); error.empty()) {
          written = write_group(group, g, true);
        } else {
          log::warn(kComponent, "flushing the queue to make room failed: {}", error);
        }
      }
    }
    // MDB_MAP_FULL: the file reached the map size because freed pages could not be reused while
    // a reader held an older snapshot. A reader of this process (an output copying a batch) is
    // done within milliseconds even when the scheduler pauses it, so wait a little for it to
    // move on, clearing the slots of readers whose process died. While an episode is known to
    // be going on (a reader that stays), do not wait again for every group.
    for (int attempt = 0; !written && !map_full_episode_.active() && attempt < 8; ++attempt) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1 << attempt));
      int dead = 0;
      mdb_reader_check(env_, &dead);
      written = write_group(group, g, true);
    }
    if (!written) {
      // A reader in another process holds an old snapshot. Write the group without its
      // records, which count as a full queue.
      map_full_episode_.occur(fmt::format(
          "the queue file reached its size limit ({}) because another process holds an old read transaction (see "
          "`mdb_stat -r {}`); refusing records until it ends",
          units::human_size(map_bytes_), options_.dir.string()));
      write_group(group, g, false);
    } else if (g.appended_records > 0) {
      map_full_episode_.end("the queue file has room again");
    }
  } catch (const std::exception& e) {
    // write_group handles LMDB errors; anything else is a bug, but must not leave waiters hanging.
    log::error(kComponent, "internal error while writing to the queue: {}", e.what());
    for (Pending* p : group) p->result = CommitResult{CommitStatus::failed, 0, 0, e.what()};
  }
  metrics_->commit_seconds.Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  {
    std::lock_guard lock(mutex_);
    for (Pending* p : group) p->done = true;
    update_pressure_locked();
    leader_active_ = false;
  }
  cv_.notify_all();
  notify_pressure();
}

void Queue::Impl::reset_group(Group& g) const {
  g = Group{};
  g.next_seq = next_seq_;
  g.disk_bytes = disk_bytes_;
  g.consumers = consumers_;
  g.memory_bytes = memory_bytes_;
}

// Writes one group transaction. Returns false (nothing applied) on MDB_MAP_FULL when records
// were allowed, so the caller can retry; true otherwise, with each batch's result set and the
// committed state updated.
bool Queue::Impl::write_group(std::vector<Pending*>& group, Group& g, bool allow_records) {
  for (bool careful : {false, true}) {
    reset_group(g);
    for (Pending* p : group) p->result = CommitResult{};
    std::optional<lmdb::Txn> txn;
    try {
      txn.emplace(env_, 0);
      g.txn = g.root = txn->get();
      for (Pending* p : group) apply_batch(g, *p, allow_records, careful);
      if (g.consumers_changed) {
        for (const auto& [name, pos] : g.consumers) {
          auto it = consumers_.find(name);
          if (it == consumers_.end() || it->second != pos) put_meta(g.txn, meta_dbi_, consumer_key(name), pos);
        }
        g.wrote = true;
      }
      if (g.seq_reserved != 0) {
        put_meta(g.txn, meta_dbi_, "seq_reserved", g.seq_reserved);
        g.wrote = true;
      }
      if (g.wrote) {
        put_meta(g.txn, meta_dbi_, "next_seq", std::max(g.next_seq, g.seq_reserved));
        put_meta(g.txn, meta_dbi_, "bytes", g.disk_bytes);
        capture_disk_shape(g);
      }
      // In memory mode a reader takes its disk snapshot and its copy of the RAM tier under
      // mutex_; committing and updating the RAM tier under it too means a reader sees both
      // before or both after, never a disk batch without the RAM records older than it.
      std::unique_lock lock(mutex_, std::defer_lock);
      if (options_.mode == Mode::memory) lock.lock();
      if (g.wrote) {
        txn->commit();
        metrics_->commits.Increment();
        if (options_.fsync == Fsync::interval) unsynced_ = true;
        if (options_.fsync == Fsync::always) {
          try {
            lmdb::Txn snapshot(env_, MDB_RDONLY);
            account_written(snapshot.get());
          } catch (const lmdb::Error& e) {
            log::debug(kComponent, "counting the pages written failed: {}", e.what());
          }
        }
      } else {
        txn->abort();
      }
      if (!lock.owns_lock()) lock.lock();
      finish_group_locked(g, true);
      lock.unlock();
      if (g.wrote) commit_failure_episode_.end("writing to the queue works again");
      return true;
    } catch (const RetryCarefully&) {
      txn.reset();
      continue;
    } catch (const lmdb::Error& e) {
      txn.reset();  // aborts
      if (e.code() == MDB_MAP_FULL && allow_records) return false;
      metrics_->commit_failures.Increment();
      std::string reason = e.what();
      if (e.code() == ENOSPC || e.code() == EIO || e.code() == EFBIG || e.code() == EDQUOT) {
        // LMDB reports a short write on a full device as EIO: ask the device.
        struct statvfs fs {};
        if (e.code() == ENOSPC ||
            (::statvfs(options_.dir.c_str(), &fs) == 0 &&
             static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize < max_commit_bytes_ + 4 * page_size_)) {
          reason = "no space left on the device holding the queue";
        }
      }
      if (lmdb::is_damage(e.code())) note_damage(e.what());
      commit_failure_episode_.occur(fmt::format("writing to the queue failed: {}; the records were refused and stay "
                                                "with their sources",
                                                reason));
      for (Pending* p : group) {
        if (p->result.status == CommitStatus::committed || p->result.status == CommitStatus::dropped) {
          p->result = CommitResult{CommitStatus::failed, 0, 0, reason};
        }
      }
      std::lock_guard lock(mutex_);
      finish_group_locked(g, false);
      return true;
    }
  }
  return true;
}

void Queue::Impl::apply_batch(Group& g, Pending& p, bool allow_records, bool careful) {
  static const WriteBatch kNothing;
  const WriteBatch& b = p.batch != nullptr ? *p.batch : kNothing;
  const RecordBatch& records = p.recs();

  // Checks first: a batch that fails one has nothing applied.
  for (const auto& [name, seq] : b.acks) {
    if (!g.consumers.contains(name)) {
      p.result = {CommitStatus::failed, 0, 0, fmt::format("unknown consumer \"{}\"", name)};
      return;
    }
    if (seq >= g.next_seq) {
      p.result = {CommitStatus::failed, 0, 0,
                  fmt::format("consumer \"{}\" acknowledged record {} but the newest record is {}", name, seq,
                              g.next_seq - 1)};
      return;
    }
  }
  std::uint64_t state_bytes = 0;
  for (const auto& [key, value] : b.state_puts) {
    if (key.empty() || key.size() > 511) {
      p.result = {CommitStatus::failed, 0, 0, "state keys must be 1 to 511 bytes"};
      return;
    }
    state_bytes += key.size() + value.size();
  }
  for (const DeadLetter& d : b.dead_letters) state_bytes += commit_bytes(d);
  if (records.bytes() + state_bytes > max_commit_bytes_) {
    ++g.refused_too_large;
    p.result = {CommitStatus::too_large, 0, 0,
                fmt::format("a batch of {} exceeds the largest commit, {} (max_disk_bytes / 64, at most 4 MiB); "
                            "split it",
                            units::human_size(records.bytes() + state_bytes), units::human_size(max_commit_bytes_))};
    return;
  }
  const std::uint64_t record_pages = records.empty() ? 0 : estimate_pages(records);
  const bool fits_in_memory =
      options_.mode == Mode::memory && memory_cost(records) <= options_.max_memory_bytes;
  if (record_pages > bound_pages_ && !fits_in_memory) {
    ++g.refused_too_large;
    p.result = {CommitStatus::too_large, 0, 0,
                fmt::format("a batch of {} does not fit in a queue of {}", units::human_size(records.bytes()),
                            units::human_size(options_.max_disk_bytes))};
    return;
  }

  if (!p.removed_consumers.empty() && records.empty() && b.state_puts.empty() && b.dead_letters.empty()) {
    // Forgetting a consumer only frees: never refused for room (the queue may be over a lowered
    // bound, and this is what brings it down).
    apply_parts(g, p, true);
    return;
  }
  const std::uint64_t estimate = record_pages + estimate_state_pages(b);
  const bool mixed = !b.acks.empty() && !records.empty();
  const bool tight = used_pages(g.txn) + estimate > bound_pages_;
  const bool refuse_records = !allow_records && !records.empty();
  if (!careful && !mixed && !tight && !refuse_records) {
    apply_parts(g, p, true);
    if (used_pages(g.txn) > bound_pages_) throw RetryCarefully{};
    return;
  }

  // All or nothing, in a nested transaction: the batch's acknowledgements and (drop_oldest)
  // evictions free room for its records; if it still does not fit, none of it happened.
  if (!refuse_records && try_nested(g, p, true)) return;
  std::string why = refuse_records ? std::string("the queue file is at its size limit")
                                   : fmt::format("the queue is full ({} of {})",
                                                 units::human_size(used_pages(g.txn) * page_size_),
                                                 units::human_size(options_.max_disk_bytes));
  if (records.empty()) {
    // State and acknowledgements alone do not fit.
    g.saw_full = true;
    ++g.refused_full;
    p.result = {CommitStatus::full, 0, 0, why + ": no room for the component state"};
    return;
  }
  if (options_.overflow == Overflow::drop_newest && try_nested(g, p, false)) {
    // The records are dropped; the source's state and the acknowledgements still apply.
    refuse_by_policy(g, p, why);
    return;
  }
  g.saw_full = true;
  ++g.refused_full;
  p.result = {CommitStatus::full, 0, 0, why};
}

bool Queue::Impl::try_nested(Group& g, Pending& p, bool with_records) {
  Group saved = g;
  MDB_txn* child = nullptr;
  lmdb::check(mdb_txn_begin(env_, g.root, 0, &child), "beginning a nested transaction");
  g.txn = child;
  bool fits = false;
  try {
    apply_parts(g, p, with_records);
    fits = used_pages(child) <= bound_pages_;
  } catch (...) {
    mdb_txn_abort(child);
    g = std::move(saved);
    throw;
  }
  if (!fits) {
    mdb_txn_abort(child);
    g = std::move(saved);
    p.result = CommitResult{};
    return false;
  }
  int rc = mdb_txn_commit(child);
  g.txn = g.root;
  lmdb::check(rc, "committing a nested transaction");
  return true;
}

// Applies a batch in g.txn: acknowledgements first (the records they free make room), then the
// records (unless `with_records` is false), then the component state.
void Queue::Impl::apply_parts(Group& g, Pending& p, bool with_records) {
  static const WriteBatch kNothing;
  const WriteBatch& b = p.batch != nullptr ? *p.batch : kNothing;
  bool moved = false;
  for (const auto& [name, seq] : b.acks) {
    auto& pos = g.consumers[name];
    if (seq > pos) {
      pos = seq;
      g.consumers_changed = true;
      moved = true;
    }
  }
  if (moved) {
    std::uint64_t min_pos = UINT64_MAX;
    for (const auto& [name, pos] : g.consumers) min_pos = std::min(min_pos, pos);
    delete_through(g, min_pos);  // the RAM tier is trimmed in finish_group_locked()
  }
  for (const auto& name : p.new_consumers) {
    if (g.consumers.emplace(name, g.next_seq - 1).second) {
      g.consumers_changed = true;
      g.consumer_news.emplace_back(log::Level::info,
                                   fmt::format("new consumer \"{}\" starts after record {}", name, g.next_seq - 1));
    }
  }
  bool removed = false;
  for (const auto& name : p.removed_consumers) {
    auto it = g.consumers.find(name);
    if (it == g.consumers.end()) continue;
    g.consumer_news.emplace_back(
        log::Level::warn,
        fmt::format("consumer \"{}\" is no longer configured; forgot its position (record {})", name, it->second));
    g.consumers.erase(it);
    const std::string key = consumer_key(name);
    MDB_val k = lmdb::value_of(key);
    const int rc = mdb_del(g.txn, meta_dbi_, &k, nullptr);
    if (rc != MDB_NOTFOUND) lmdb::check(rc, "removing a consumer");
    g.consumers_changed = true;
    g.wrote = true;
    removed = true;
  }
  if (removed && !g.consumers.empty()) {
    std::uint64_t min_pos = UINT64_MAX;
    for (const auto& [name, pos] : g.consumers) min_pos = std::min(min_pos, pos);
    delete_through(g, min_pos);
  }
  if (with_records && !p.recs().empty()) {
    const std::uint64_t reserve = estimate_state_pages(b);
    if (options_.mode == Mode::disk) {
      apply_records_disk(g, p, reserve);
    } else {
      apply_records_memory(g, p, reserve);
    }
  }
  for (const auto& [key, value] : b.state_puts) {
    MDB_val k = lmdb::value_of(key);
    MDB_val v = lmdb::value_of(value);
    lmdb::check(mdb_put(g.txn, state_dbi_, &k, &v, 0), "writing component state");
    g.wrote = true;
  }
  for (const auto& key : b.state_deletes) {
    MDB_val k = lmdb::value_of(key);
    int rc = mdb_del(g.txn, state_dbi_, &k, nullptr);
    if (rc != MDB_NOTFOUND) lmdb::check(rc, "deleting component state");
    g.wrote = true;
  }
  // Dead letters a replay turns back into records leave the store only with those records: when
  // the records are dropped (drop_newest) the entries stay, and so does the rest of the replay's
  // change to the store (the entries that failed again are still the old ones).
  const bool replay_dropped = !with_records && !p.recs().empty() && !b.dead_letter_deletes.empty();
  if (replay_dropped) return;
  for (std::uint64_t id : b.dead_letter_deletes) {
    if (dead_letters_dbi_ == 0) break;
    lmdb::SeqKey key(id);
    MDB_val k = key.val();
    int rc = mdb_del(g.txn, dead_letters_dbi_, &k, nullptr);
    if (rc != MDB_NOTFOUND) lmdb::check(rc, "deleting a dead letter");
    g.wrote = true;
  }
  if (!b.dead_letters.empty()) put_dead_letters(g, b);
}

// Stores the batch's dead letters, then evicts the oldest entries while the store is over its
// bound (a dead letter is never refused: the newest evidence is kept).
void Queue::Impl::put_dead_letters(Group& g, const WriteBatch& batch) {
  if (g.next_dead_letter_id == 0) {
    g.next_dead_letter_id = get_meta(g.txn, meta_dbi_, "dlq_next_id").value_or(1);
  }
  {
    lmdb::Cursor cursor(g.txn, dead_letters_dbi_);
    for (const DeadLetter& d : batch.dead_letters) {
      std::string encoded = encode_dead_letter(d, build::version);
      lmdb::SeqKey key(g.next_dead_letter_id++);
      MDB_val k = key.val();
      MDB_val v = lmdb::value_of(encoded);
      lmdb::check(mdb_cursor_put(cursor.get(), &k, &v, MDB_APPEND), "storing a dead letter");
      ++g.dead_lettered[{d.input, d.reason}];
    }
  }
  put_meta(g.txn, meta_dbi_, "dlq_next_id", g.next_dead_letter_id);
  g.wrote = true;
  lmdb::Cursor cursor(g.txn, dead_letters_dbi_);
  MDB_val k, v;
  while (pages_of(stat_of(g.txn, dead_letters_dbi_)) > dead_letter_bound_pages_ && cursor.get(k, v, MDB_FIRST)) {
    lmdb::check(mdb_cursor_del(cursor.get(), 0), "evicting a dead letter");
    ++g.dead_letters_evicted;
  }
}

std::uint64_t Queue::Impl::used_pages(MDB_txn* txn) const {
  return pages_of(stat_of(txn, records_dbi_)) + pages_of(stat_of(txn, meta_dbi_)) +
         pages_of(stat_of(txn, state_dbi_));
}

std::uint64_t Queue::Impl::estimate_pages(const RecordBatch& records) const {
  // An upper bound of the pages `records` add when appended: leaf pages filled in order (an
  // append split leaves the previous page full), overflow pages for large records, and the
  // branch entries of the new leaves.
  const std::uint64_t usable = page_size_ - kPageHeader;
  std::uint64_t inline_bytes = 0;
  std::uint64_t overflow = 0;
  std::uint64_t largest = 0;
  for (std::size_t i = 0; i < records.size(); ++i) {
    std::uint64_t size = records.encoded(i).size();
    std::uint64_t node = kNodeHeader + kKeyBytes + size;
    if (node > node_max_) {
      inline_bytes += kNodeHeader + kKeyBytes + sizeof(std::uint64_t) + 2;
      overflow += (size + kPageHeader + page_size_ - 1) / page_size_;
    } else {
      std::uint64_t n = ((node + 1) & ~std::uint64_t{1}) + 2;
      inline_bytes += n;
      largest = std::max(largest, n);
    }
  }
  std::uint64_t leaves = inline_bytes == 0 ? 0 : (inline_bytes + usable - largest - 1) / (usable - largest) + 1;
  std::uint64_t branches = leaves / 100 + 2;
  return leaves + overflow + branches;
}

std::uint64_t Queue::Impl::estimate_state_pages(const WriteBatch& batch) const {
  // State keys are not appended in order: each put may split a page in two.
  if (batch.state_puts.empty()) return 0;
  const std::uint64_t half = (page_size_ - kPageHeader) / 2;
  std::uint64_t inline_bytes = 0;
  std::uint64_t pages = batch.state_puts.size();
  for (const auto& [key, value] : batch.state_puts) {
    std::uint64_t node = kNodeHeader + key.size() + value.size();
    if (node > node_max_) {
      pages += (value.size() + kPageHeader + page_size_ - 1) / page_size_;
      inline_bytes += kNodeHeader + key.size() + sizeof(std::uint64_t) + 2;
    } else {
      inline_bytes += ((node + 1) & ~std::uint64_t{1}) + 2;
    }
  }
  return pages + (inline_bytes + half - 1) / half;
}

void Queue::Impl::put_records(Group& g, const RecordBatch& records, std::uint64_t first_seq) {
  lmdb::Cursor cursor(g.txn, records_dbi_);
  for (std::size_t i = 0; i < records.size(); ++i) {
    std::string_view rec = records.encoded(i);
    lmdb::SeqKey key(first_seq + i);
    MDB_val k = key.val();
    MDB_val v{rec.size(), nullptr};
    lmdb::check(mdb_cursor_put(cursor.get(), &k, &v, MDB_APPEND | MDB_RESERVE), "appending records");
    std::memcpy(v.mv_data, rec.data(), rec.size());
    seal_stored_record(first_seq + i, static_cast<char*>(v.mv_data), rec.size());
  }
  g.disk_bytes += records.bytes();
  g.wrote = true;
  // Appending reads pages through the map as well: each transaction copies the pages the one
  // before wrote (the last leaf, its branches, the main, state and free-page trees' pages: up to 8)
  // from the map before it adds to them -- fresh pages every time while a flushed snapshot is
  // pinned (nothing freed since is reused). They lie next to each other at the end of the used
  // pages, so fault-around maps little else: they count once.
  release_mapped_pages(records.bytes() + 8 * page_size_);
}

// Deletes acknowledged records: from the oldest up to and including `seq`.
void Queue::Impl::delete_through(Group& g, std::uint64_t seq) {
  lmdb::Cursor cursor(g.txn, records_dbi_);
  MDB_val k, v;
  bool more = cursor.get(k, v, MDB_FIRST);
  std::uint64_t deleted = 0;
  // Deleting reads the records' pages through the map too.
  struct Release {
    const Impl& q;
    std::uint64_t& bytes;
    ~Release() { q.release_mapped_pages(bytes * kFaultAroundPages); }
  } release{*this, deleted};
  while (more && lmdb::seq_of(k) <= seq) {
    std::uint64_t size = v.mv_size;
    deleted += size;
    lmdb::check(mdb_cursor_del(cursor.get(), 0), "deleting records");
    g.disk_bytes -= std::min(g.disk_bytes, size);
    ++g.acknowledged_records;
    g.wrote = true;
    // After a delete the cursor stands on the next record.
    int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_GET_CURRENT);
    if (rc == MDB_NOTFOUND || rc == EINVAL) break;
    lmdb::check(rc, "reading records");
  }
}

// Deletes the oldest records with sequence numbers below `below_seq` (drop_oldest) until the
// pages in use drop to `target_pages` or no such record is left.
void Queue::Impl::evict_oldest_disk(Group& g, std::uint64_t target_pages, std::uint64_t below_seq) {
  lmdb::Cursor cursor(g.txn, records_dbi_);
  MDB_val k, v;
  bool more = cursor.get(k, v, MDB_FIRST);
  while (more && lmdb::seq_of(k) < below_seq && used_pages(g.txn) > target_pages) {
    std::uint64_t size = v.mv_size;
    lmdb::check(mdb_cursor_del(cursor.get(), 0), "evicting records");
    g.disk_bytes -= std::min(g.disk_bytes, size);
    ++g.evicted_records;
    g.evicted_bytes += size;
    g.wrote = true;
    int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_GET_CURRENT);
    more = !(rc == MDB_NOTFOUND || rc == EINVAL);
    if (more) lmdb::check(rc, "reading records");
  }
}

void Queue::Impl::refuse_by_policy(Group& g, Pending& p, std::string why) const {
  g.saw_full = true;
  const RecordBatch& records = p.recs();
  if (options_.overflow == Overflow::drop_newest) {
    g.dropped_newest_records += records.size();
    g.dropped_newest_bytes += records.bytes();
    p.result = {CommitStatus::dropped, 0, 0, std::move(why)};
  } else {
    ++g.refused_full;
    p.result = {CommitStatus::full, 0, 0, std::move(why)};
  }
}

// Appends the batch's records to LMDB. With drop_oldest, first evicts the oldest records so that
// they and `reserve_pages` more (the batch's state) fit under the bound. Whether the batch fits
// is judged by the caller.
void Queue::Impl::apply_records_disk(Group& g, Pending& p, std::uint64_t reserve_pages) {
  const RecordBatch& records = p.recs();
  if (options_.overflow == Overflow::drop_oldest) {
    const std::uint64_t need = estimate_pages(records) + reserve_pages;
    const std::uint64_t target = need >= bound_pages_ ? 0 : bound_pages_ - need;
    if (used_pages(g.txn) > target) evict_oldest_disk(g, target, g.next_seq);
  }
  const std::uint64_t first = g.next_seq;
  put_records(g, records, first);
  g.next_seq += records.size();
  g.appended_records += records.size();
  g.appended_bytes += records.bytes();
  p.result.first_seq = first;
  p.result.last_seq = g.next_seq - 1;
}

std::uint64_t Queue::Impl::memory_cost(const RecordBatch& records) {
  return records.bytes() + kMemoryRecordOverhead * records.size();
}

void Queue::Impl::apply_records_memory(Group& g, Pending& p, std::uint64_t reserve_pages) {
  const RecordBatch& records = p.recs();
  const std::uint64_t cost = memory_cost(records);
  bool fits = g.memory_bytes + cost <= options_.max_memory_bytes;
  if (!fits && options_.overflow == Overflow::drop_oldest && cost <= options_.max_memory_bytes &&
      used_pages(g.txn) + estimate_pages(records) + reserve_pages > bound_pages_) {
    // Both tiers are full. Evict from RAM when RAM holds the oldest records.
    std::uint64_t skip = g.memory_evicted;
    std::uint64_t oldest_in_memory = 0;
    for (const MemoryChunk& c : memory_) {
      if (skip >= c.remaining()) {
        skip -= c.remaining();
        continue;
      }
      oldest_in_memory = c.front_seq() + skip;
      break;
    }
    std::uint64_t oldest_on_disk = 0;
    {
      lmdb::Cursor cursor(g.txn, records_dbi_);
      MDB_val k, v;
      if (cursor.get(k, v, MDB_FIRST)) oldest_on_disk = lmdb::seq_of(k);
    }
    if (oldest_in_memory != 0 && (oldest_on_disk == 0 || oldest_in_memory < oldest_on_disk)) {
      std::uint64_t to_skip = g.memory_evicted;
      for (const MemoryChunk& c : memory_) {
        for (std::size_t i = c.head; i < c.records.size() && g.memory_bytes + cost > options_.max_memory_bytes; ++i) {
          if (to_skip > 0) {
            --to_skip;
            continue;
          }
          std::uint64_t b = c.records.encoded(i).size();
          g.memory_bytes -= std::min(g.memory_bytes, b + kMemoryRecordOverhead);
          ++g.memory_evicted;
          ++g.evicted_records;
          g.evicted_bytes += b;
        }
      }
      fits = g.memory_bytes + cost <= options_.max_memory_bytes;
    }
  }
  if (!fits) {
    // RAM is full: the batch goes to the disk tier.
    apply_records_disk(g, p, reserve_pages);
    return;
  }
  if (g.next_seq + records.size() > std::max(g.seq_reserved, seq_reserved_)) {
    // Reserve sequence numbers in LMDB before handing them out from RAM, so a crash that loses
    // these records never lets their numbers be given to other records.
    g.seq_reserved = g.next_seq + records.size() + kSeqReservation;
  }
  MemoryChunk chunk;
  chunk.records = records;  // a copy: the batch stays the caller's
  chunk.first_seq = g.next_seq;
  p.result.first_seq = g.next_seq;
  p.result.last_seq = g.next_seq + chunk.records.size() - 1;
  g.next_seq += chunk.records.size();
  g.memory_bytes += cost;
  g.appended_records += chunk.records.size();
  g.appended_bytes += chunk.records.bytes();
  g.memory_added.push_back(std::move(chunk));
}

void Queue::Impl::capture_disk_shape(Group& g) const {
  MDB_stat rs = stat_of(g.txn, records_dbi_);
  g.disk_records = rs.ms_entries;
  g.disk_pages = used_pages(g.txn);
  lmdb::Cursor cursor(g.txn, records_dbi_);
  MDB_val k, v;
  g.first_disk_seq = cursor.get(k, v, MDB_FIRST) ? lmdb::seq_of(k) : 0;
  g.last_disk_seq = cursor.get(k, v, MDB_LAST) ? lmdb::seq_of(k) : 0;
}

void Queue::Impl::finish_group_locked(Group& g, bool committed) {
  if (committed) {
    for (const auto& [level, line] : g.consumer_news) log::emit(level, kComponent, line);
    next_seq_ = g.next_seq;
    if (g.seq_reserved != 0) seq_reserved_ = g.seq_reserved;
    consumers_ = g.consumers;
    if (g.wrote) {
      disk_bytes_ = g.disk_bytes;
      disk_records_ = g.disk_records;
      disk_pages_ = g.disk_pages;
      first_disk_seq_ = g.first_disk_seq;
      last_disk_seq_ = g.last_disk_seq;
    }
    // RAM tier: evictions from the front, then what every consumer has passed, then additions.
    std::uint64_t evict = g.memory_evicted;
    std::uint64_t min_pos = 0;
    if (!consumers_.empty()) {
      min_pos = UINT64_MAX;
      for (const auto& [n, pos] : consumers_) min_pos = std::min(min_pos, pos);
    }
    while (!memory_.empty()) {
      MemoryChunk& c = memory_.front();
      while (c.head < c.records.size() && (evict > 0 || c.front_seq() <= min_pos)) {
        std::uint64_t b = c.records.encoded(c.head).size();
        memory_bytes_ -= std::min(memory_bytes_, b + kMemoryRecordOverhead);
        memory_encoded_bytes_ -= std::min(memory_encoded_bytes_, b);
        memory_records_ -= 1;
        if (evict > 0) {
          --evict;
        } else {
          ++g.acknowledged_records;
        }
        ++c.head;
      }
      if (c.head < c.records.size()) break;
      memory_.pop_front();
    }
    for (MemoryChunk& c : g.memory_added) {
      memory_records_ += c.records.size();
      memory_bytes_ += memory_cost(c.records);
      memory_encoded_bytes_ += c.records.bytes();
      memory_.push_back(std::move(c));
    }

    metrics_->appended_records.Increment(static_cast<double>(g.appended_records));
    metrics_->appended_bytes.Increment(static_cast<double>(g.appended_bytes));
    metrics_->acknowledged_records.Increment(static_cast<double>(g.acknowledged_records));
    metrics_->dropped_oldest_records.Increment(static_cast<double>(g.evicted_records));
    metrics_->dropped_oldest_bytes.Increment(static_cast<double>(g.evicted_bytes));
    metrics_->dropped_newest_records.Increment(static_cast<double>(g.dropped_newest_records));
    metrics_->dropped_newest_bytes.Increment(static_cast<double>(g.dropped_newest_bytes));
    for (const auto& [key, n] : g.dead_lettered) {
      metrics_->dead_letters.Add({{"input", key.first}, {"reason", key.second}}).Increment(static_cast<double>(n));
    }
    if (g.dead_letters_evicted > 0) {
      metrics_->dead_letters_evicted.Increment(static_cast<double>(g.dead_letters_evicted));
      dead_letter_episode_.occur(fmt::format("the dead-letter store is full (dead_letter.max_bytes = {}): evicting the "
                                             "oldest entries (counted in tank_dead_letter_evicted_total)",
                                             units::format_size(options_.dead_letter_max_bytes)));
    }
    if (g.evicted_records > 0) g.saw_full = true;
  }
  metrics_->refused_full.Increment(static_cast<double>(g.refused_full));
  metrics_->refused_too_large.Increment(static_cast<double>(g.refused_too_large));
  if (g.saw_full) {
    std::string_view what = options_.overflow == Overflow::block
                                ? "refuses records; inputs pause until it drains below the low watermark"
                            : options_.overflow == Overflow::drop_newest
                                ? "drops incoming records (counted in tank_queue_dropped_records_total)"
                                : "evicts the oldest records (counted in tank_queue_dropped_records_total)";
    full_episode_.occur(fmt::format("queue full ({} of {}): overflow = \"{}\" {}",
                                    units::human_size(disk_pages_ * page_size_),
                                    units::human_size(options_.max_disk_bytes), to_string(options_.overflow), what));
    if (options_.overflow == Overflow::block) blocked_pending_ = true;
  }
}

void Queue::Impl::update_pressure_locked() {
  const bool below_low =
      static_cast<double>(disk_pages_) <= options_.low_watermark * static_cast<double>(bound_pages_);
  if (blocked_pending_) {
    blocked_ = true;
    blocked_pending_ = false;
  } else if (blocked_ && below_low) {
    blocked_ = false;
  }
  if (full_episode_.active() && below_low && !blocked_) {
    full_episode_.end(fmt::format("queue below its low watermark ({} of {}): {}",
                                  units::human_size(disk_pages_ * page_size_),
                                  units::human_size(options_.max_disk_bytes),
                                  options_.overflow == Overflow::block ? "accepting records again"
                                                                       : "no longer dropping records"));
  }
}

void Queue::Impl::notify_pressure() {
  // One notification at a time, each telling the state as it is now: a leader delayed between
  // its commit and this call cannot deliver a stale "blocked" after a newer "accepting".
  std::lock_guard notify_lock(notify_mutex_);
  bool now = false;
  std::function<void(bool)> listener;
  {
    std::lock_guard lock(mutex_);
    now = blocked_;
    listener = pressure_listener_;
  }
  if (now == notified_blocked_) return;
  notified_blocked_ = now;
  if (listener) listener(now);
}

void Queue::Impl::note_damage(const std::string& what) const {
  if (!damaged_.exchange(true)) {
    log::error(kComponent, "the queue in {} is damaged ({}); it will be checked in full at the next start",
               options_.dir.string(), what);
  }
}

// ---------------------------------------------------------------------------------------------
// Reading

ReadBatch Queue::Impl::read(std::uint64_t after, const ReadLimits& limits, const RouteFilter* filter) const {
  std::shared_lock env_lock(env_mutex_);
  if (env_ == nullptr) throw std::logic_error("the queue is closed");
  try {
    return read_records(after, limits, filter);
  } catch (const lmdb::Error& e) {
    if (lmdb::is_damage(e.code())) note_damage(e.what());
    throw std::runtime_error(fmt::format("reading the queue failed: {}", e.what()));
  }
}

ReadBatch Queue::Impl::read_records(std::uint64_t after, const ReadLimits& limits, const RouteFilter* filter) const {
  ReadBatch out;
  if (after == UINT64_MAX || limits.max_records == 0) return out;
  std::size_t count = 0;
  std::size_t bytes = 0;
  std::uint64_t scanned = 0;
  bool stop = false;
  auto take = [&](std::uint64_t seq, std::string_view encoded) {
    if (filter != nullptr && !filter->accepts(encoded)) {
      scanned = seq;
      return;
    }
    if (count > 0 && bytes + encoded.size() > limits.max_bytes) {
      stop = true;  // not taken: the next read starts here
      return;
    }
    scanned = seq;
    out.append(seq, encoded);
    ++count;
    bytes += encoded.size();
    if (count >= limits.max_records || bytes >= limits.max_bytes) stop = true;
  };

  // In memory mode the disk snapshot and the copy of the RAM tier are taken under mutex_, which
  // write_group() holds while it commits and updates the RAM tier.
  std::unique_lock lock(mutex_, std::defer_lock);
  if (options_.mode == Mode::memory) lock.lock();
  lmdb::Txn txn(env_, MDB_RDONLY);
  // A copy of the RAM tier's records after `after`, as many as the limits could take. When it
  // stops short of the tier's end, nothing after the last record it examined may be returned
  // (the records in between were not copied).
  std::string memory_copy;
  std::vector<std::pair<std::uint64_t, std::pair<std::size_t, std::size_t>>> memory_index;
  bool memory_cut = false;
  std::uint64_t memory_cut_seq = 0;
  if (options_.mode == Mode::memory) {
    std::size_t accepted = 0;
    for (const MemoryChunk& c : memory_) {
      if (c.last_seq() <= after) continue;
      for (std::size_t i = c.head; i < c.records.size(); ++i) {
        if (c.seq(i) <= after) continue;
        if (accepted >= limits.max_records || memory_copy.size() >= limits.max_bytes) {
          memory_cut = true;
          break;
        }
        std::string_view enc = c.records.encoded(i);
        memory_index.emplace_back(c.seq(i), std::pair{memory_copy.size(), enc.size()});
        memory_copy.append(enc);
        memory_cut_seq = c.seq(i);
        if (filter == nullptr || filter->accepts(enc)) ++accepted;
      }
      if (memory_cut) break;
    }
    lock.unlock();
  }

  lmdb::Cursor cursor(txn.get(), records_dbi_);
  lmdb::SeqKey start(after + 1);
  MDB_val k = start.val();
  MDB_val v;
  bool more = cursor.get(k, v, MDB_SET_RANGE);
  std::size_t mi = 0;
  while (!stop) {
    bool have_mem = mi < memory_index.size();
    if (!more && !have_mem) break;
    std::uint64_t disk_seq = more ? lmdb::seq_of(k) : 0;
    if (more && (!have_mem || disk_seq <= memory_index[mi].first)) {
      if (memory_cut && disk_seq > memory_cut_seq) break;
      if (have_mem && disk_seq == memory_index[mi].first) ++mi;  // in both tiers: once
      take(disk_seq, lmdb::view_of(v));
      if (!stop) more = cursor.get(k, v, MDB_NEXT);
    } else {
      auto [seq, span] = memory_index[mi++];
      take(seq, std::string_view(memory_copy).substr(span.first, span.second));
    }
  }
  txn.abort();
  release_mapped_pages(bytes * kFaultAroundPages);
  out.set_scanned_to(scanned);
  std::vector<std::pair<std::uint64_t, std::string>> bad;
  out.finish(&bad);
  for (const auto& [seq, error] : bad) log::error(kComponent, "skipping an unreadable record: {}", error);
  return out;
}

// Records are read through LMDB's read-only shared map of data.mdb. The pages touched stay in
// this process's resident set (as file pages) until the kernel needs the memory, so draining a
// backlog once would leave its whole size resident: a 5M-record burst showed 400+ MiB RSS of
// which 6 MiB were tank's own (docs/BENCHMARKS.md); appending alone (each commit copies the
// last leaf page from the map) left 150 MiB resident after 3M records. So the map's pages are
// dropped from this process with MADV_DONTNEED every so often. On a shared, read-only file
// mapping that loses nothing: the data stays in the page cache and on disk, and the next access
// faults it in again (LMDB never writes through this map: MDB_WRITEMAP is not used). Callers
// holding pointers into the map (a cursor inside a transaction elsewhere) still read the same
// bytes after the fault. RSS then follows the working set, not the backlog.
//
// How often: a fault maps not only the page touched but up to 16 pages around it that are in the
// page cache (the kernel's fault_around_bytes, 64 KiB), and the pages of a queue whose flushed
// snapshot is pinned are scattered among pages of no use (a commit never reuses a page freed after
// the pin): reading 150 KB of records was measured to map 1-2.5 MiB. So the bytes read or deleted
// count 16 times (kFaultAroundPages), and the release comes every 4 MiB of the callers' count:
// every 256 KiB of records read or deleted, or every 4 MiB appended (with the pages each commit
// copies: every 128 commits of one small record). Every release is one madvise over the whole map
// and a TLB shootdown: counting appends 16 times too made one every 16 single-record commits and
// cost a third of the append rate (queue_bench, docs/BENCHMARKS.md).
//
// LMDB does not tell where its map is (mdb_env_info's me_mapaddr is only set with MDB_FIXEDMAP),
// so the mapping of data.mdb is looked up in /proc/self/maps once (LMDB maps the file once, at
// open, for the whole map size) and then only one madvise call is made. Measured cost and effect:
// docs/BENCHMARKS.md.
void Queue::Impl::release_mapped_pages(std::size_t bytes) const {
  constexpr std::uint64_t kReleaseEvery = 4 << 20;
  if (touched_since_release_.fetch_add(bytes) + bytes < kReleaseEvery) return;
  touched_since_release_ = 0;
  std::uintptr_t start = map_start_.load();
  std::uintptr_t end = map_end_.load();
  if (start == 0) {
    std::error_code ec;
    const std::string data_file = std::filesystem::weakly_canonical(options_.dir / "data.mdb", ec).string();
    std::ifstream maps("/proc/self/maps");
    for (std::string line; std::getline(maps, line);) {
      if (!line.ends_with(data_file)) continue;
      if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR, &start, &end) != 2 || end <= start) continue;
      break;
    }
    if (start == 0 || end <= start) return;
    map_end_ = end;
    map_start_ = start;
  }
  ::madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED);
}

std::optional<std::uint64_t> Queue::Impl::position(const std::string& consumer) const {
  if (read_only_) {
    std::shared_lock env_lock(env_mutex_);
    if (env_ == nullptr) throw std::logic_error("the queue is closed");
    lmdb::Txn txn(env_, MDB_RDONLY);
    return get_meta(txn.get(), meta_dbi_, consumer_key(consumer));
  }
  std::lock_guard lock(mutex_);
  auto it = consumers_.find(consumer);
  if (it == consumers_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> Queue::Impl::state(std::string_view key) const {
  std::shared_lock env_lock(env_mutex_);
  if (env_ == nullptr) throw std::logic_error("the queue is closed");
  lmdb::Txn txn(env_, MDB_RDONLY);
  MDB_val k = lmdb::value_of(key);
  MDB_val v;
  int rc = mdb_get(txn.get(), state_dbi_, &k, &v);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  lmdb::check(rc, "reading component state");
  return std::string(lmdb::view_of(v));
}

std::vector<std::pair<std::string, std::string>> Queue::Impl::state_with_prefix(std::string_view prefix) const {
  std::shared_lock env_lock(env_mutex_);
  if (env_ == nullptr) throw std::logic_error("the queue is closed");
  std::vector<std::pair<std::string, std::string>> out;
  lmdb::Txn txn(env_, MDB_RDONLY);
  lmdb::Cursor cursor(txn.get(), state_dbi_);
  MDB_val k = lmdb::value_of(prefix);
  MDB_val v;
  bool more = prefix.empty() ? cursor.get(k, v, MDB_FIRST) : cursor.get(k, v, MDB_SET_RANGE);
  while (more) {
    std::string_view key = lmdb::view_of(k);
    if (!key.starts_with(prefix)) break;
    out.emplace_back(std::string(key), std::string(lmdb::view_of(v)));
    more = cursor.get(k, v, MDB_NEXT);
  }
  return out;
}

bool Queue::Impl::blocked() const {
  std::lock_guard lock(mutex_);
  return blocked_;
}

void Queue::Impl::set_pressure_listener(std::function<void(bool)> listener) {
  std::lock_guard notify_lock(notify_mutex_);
  std::lock_guard lock(mutex_);
  pressure_listener_ = std::move(listener);
  notified_blocked_ = blocked_;
}

void Queue::Impl::sync() {
  std::shared_lock env_lock(env_mutex_);
  if (read_only_ || env_ == nullptr || !recovery_file_) return;
  unsynced_ = false;
  if (std::string error = flush(0); !error.empty()) {
    unsynced_ = true;
    throw std::runtime_error("flushing the queue to disk failed: " + error);
  }
}

std::uint64_t Queue::Impl::file_size() const {
  struct stat st {};
  if (::stat((options_.dir / "data.mdb").c_str(), &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_size);
}

std::vector<std::uint64_t> Queue::Impl::disk_bytes_after(std::span<const std::uint64_t> positions) const {
  std::shared_lock env_lock(env_mutex_);
  if (env_ == nullptr) throw std::logic_error("the queue is closed");
  std::vector<std::uint64_t> out(positions.size(), 0);
  if (positions.empty()) return out;
  // Walk backwards from the last record: each record adds its size to every position before it.
  std::vector<std::size_t> order(positions.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return positions[a] > positions[b]; });
  lmdb::Txn txn(env_, MDB_RDONLY);
  lmdb::Cursor cursor(txn.get(), records_dbi_);
  MDB_val k;
  MDB_val v;
  std::uint64_t suffix = 0;
  std::size_t next = 0;  // positions (largest first) not yet passed
  for (bool more = cursor.get(k, v, MDB_LAST); more; more = cursor.get(k, v, MDB_PREV)) {
    const std::uint64_t seq = lmdb::seq_of(k);
    while (next < order.size() && positions[order[next]] >= seq) out[order[next++]] = suffix;
    if (next == order.size()) break;
    suffix += v.mv_size;
  }
  while (next < order.size()) out[order[next++]] = suffix;
  return out;
}

std::uint64_t Queue::Impl::oldest_seq() const {
  std::lock_guard lock(mutex_);
  std::uint64_t oldest = next_seq_;
  if (first_disk_seq_ != 0) oldest = std::min(oldest, first_disk_seq_);
  if (!memory_.empty()) oldest = std::min(oldest, memory_.front().front_seq());
  return oldest;
}

Stats Queue::Impl::stats() const {
  std::shared_lock env_lock(env_mutex_);
  Stats s;
  std::map<std::string, std::uint64_t, std::less<>> consumers;
  std::uint64_t mem_front_seq = 0;
  std::int64_t mem_front_ns = 0;
  {
    std::lock_guard lock(mutex_);
    if (env_ == nullptr) throw std::logic_error("the queue is closed");
    if (read_only_) const_cast<Impl*>(this)->load_state();  // another process writes it
    s.mode = options_.mode;
    s.disk_records = disk_records_;
    s.disk_bytes = disk_bytes_;
    s.disk_used_bytes = disk_pages_ * page_size_;
    s.disk_limit_bytes = read_only_ ? 0 : options_.max_disk_bytes;
    s.file_limit_bytes = read_only_ ? 0 : map_bytes_;
    s.memory_records = memory_records_;
    s.memory_bytes = memory_bytes_;
    s.memory_limit_bytes = options_.mode == Mode::memory ? options_.max_memory_bytes : 0;
    s.records = disk_records_ + memory_records_;
    s.bytes = disk_bytes_ + memory_encoded_bytes_;
    s.next_seq = next_seq_;
    s.blocked = blocked_;
    consumers = consumers_;
    s.first_seq = first_disk_seq_;
    s.last_seq = last_disk_seq_;
    if (!memory_.empty()) {
      const MemoryChunk& front = memory_.front();
      mem_front_seq = front.front_seq();
      auto view = decode_record(mem_front_seq, front.records.encoded(front.head));
      mem_front_ns = view ? view->ingest_ns : 0;
      if (s.first_seq == 0 || mem_front_seq < s.first_seq) s.first_seq = mem_front_seq;
      s.last_seq = std::max(s.last_seq, memory_.back().last_seq());
    }
  }
  s.file_bytes = file_size();
  lmdb::Txn txn(env_, MDB_RDONLY);
  lmdb::Cursor cursor(txn.get(), records_dbi_);
  // The ingest time of the first record after `pos`, in either tier (0 when none).
  auto oldest_after = [&](std::uint64_t pos) -> std::int64_t {
    lmdb::SeqKey key(pos + 1);
    MDB_val k = key.val();
    MDB_val v;
    std::uint64_t disk_seq = 0;
    std::int64_t disk_ns = 0;
    if (cursor.get(k, v, MDB_SET_RANGE)) {
      disk_seq = lmdb::seq_of(k);
      auto view = decode_record(disk_seq, lmdb::view_of(v));
      disk_ns = view ? view->ingest_ns : 0;
    }
    if (mem_front_seq != 0 && mem_front_seq > pos && (disk_seq == 0 || mem_front_seq < disk_seq)) return mem_front_ns;
    return disk_ns;
  };
  s.oldest_ingest_ns = s.records > 0 ? oldest_after(0) : 0;
  for (const auto& [name, pos] : consumers) {
    ConsumerStats c;
    c.name = name;
    c.acked = pos;
    if (s.records > 0 && s.last_seq > pos) {
      // Sequence numbers of stored records are contiguous (records leave only from the front).
      c.lag_records = std::min(s.records, s.last_seq - std::max(pos, s.first_seq - 1));
    }
    c.oldest_unacked_ns = c.lag_records > 0 ? oldest_after(pos) : 0;
    s.consumers.push_back(std::move(c));
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Dead letters

std::vector<StoredDeadLetter> Queue::Impl::dead_letters(const DeadLetterQuery& query) const {
  std::shared_lock env_lock(env_mutex_);
  if (env_ == nullptr) throw std::logic_error("the queue is closed");
  std::vector<StoredDeadLetter> out;
  if (dead_letters_dbi_ == 0 || query.limit == 0) return out;
  try {
    lmdb::Txn txn(env_, MDB_RDONLY);
    lmdb::Cursor cursor(txn.get(), dead_letters_dbi_);
    lmdb::SeqKey start(query.after_id + 1);
    MDB_val k = start.val();
    MDB_val v;
    bool more = cursor.get(k, v, MDB_SET_RANGE);
    while (more && out.size() < query.limit) {
      std::string error;
      std::uint64_t id = lmdb::seq_of(k);
      if (auto d = decode_dead_letter(id, lmdb::view_of(v), &error)) {
        bool match = (query.input.empty() || d->letter.input == query.input) &&
                     (query.reason.empty() || d->letter.reason == query.reason) &&
                     d->letter.time_ns >= query.since_ns;
        if (match) out.push_back(std::move(*d));
      } else {
        log::error(kComponent, "skipping an unreadable dead letter: {}", error);
      }
      more = cursor.get(k, v, MDB_NEXT);
    }
  } catch (const lmdb::Error& e) {
    if (lmdb::is_damage(e.code())) note_damage(e.what());
    throw std::runtime_error(fmt::format("reading the dead letters failed: {}", e.what()));
  }
  return out;
}

std::optional<StoredDeadLetter> Queue::Impl::dead_letter(std::uint64_t id) const {
  DeadLetterQuery q;
  q.after_id = id - 1;
  q.limit = 1;
  if (id == 0) return std::nullopt;
  auto found = dead_letters(q);
  if (found.empty() || found.front().id != id) return std::nullopt;
  return std::move(found.front());
}

DeadLetterStats Queue::Impl::dead_letter_stats() const {
  std::shared_lock env_lock(env_mutex_);
  if (env_ == nullptr) throw std::logic_error("the queue is closed");
  DeadLetterStats s;
  s.limit_bytes = read_only_ ? 0 : options_.dead_letter_max_bytes;
  if (dead_letters_dbi_ == 0) return s;
  lmdb::Txn txn(env_, MDB_RDONLY);
  MDB_stat st = stat_of(txn.get(), dead_letters_dbi_);
  s.entries = st.ms_entries;
  s.disk_bytes = pages_of(st) * page_size_;
  lmdb::Cursor cursor(txn.get(), dead_letters_dbi_);
  MDB_val k, v;
  if (cursor.get(k, v, MDB_FIRST)) s.first_id = lmdb::seq_of(k);
  if (cursor.get(k, v, MDB_LAST)) s.last_id = lmdb::seq_of(k);
  return s;
}

}  // namespace tank::queue
