// Queue::open() and open_read_only(): the environment, its databases and consumers, and the checks
// before LMDB opens a file (power-loss rollback, verification, moving a damaged queue aside).

#include "queue/queue_impl.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <random>

#include <fmt/format.h>

#include "common/fs.hpp"
#include "common/units.hpp"
#include "queue/lmdb.hpp"
#include "queue/lmdb_file.hpp"
#include "queue/lmdb_layout.hpp"
#include "queue/queue_config.hpp"
#include "queue/queue_metrics.hpp"
#include "queue/recovery_point.hpp"
#include "queue/verify.hpp"

namespace tank::queue {

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
    lmdb::check(mdb_env_set_maxdbs(env_, 8 + kSegmentSlots), "mdb_env_set_maxdbs");
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
  // A thirty-second of the bound (so that the acknowledged records a segment keeps until it is
  // passed whole are little of it), between 16 pages and 64 MiB (a larger segment gains nothing:
  // emptying it is one mdb_drop either way).
  segment_pages_ = std::clamp<std::uint64_t>(bound_pages_ / 32, 16, (std::uint64_t{64} << 20) / page_size_);
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
      slot_dbis_[0] = records_dbi_;
      for (unsigned slot = 1; slot < kSegmentSlots; ++slot) {
        // A queue written before segments has slot 0 only.
        int orc = mdb_dbi_open(txn.get(), segment_name(slot).c_str(), 0, &slot_dbis_[slot]);
        if (orc == MDB_NOTFOUND) slot_dbis_[slot] = 0;
        else lmdb::check(orc, "mdb_dbi_open");
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
      slot_dbis_[0] = records_dbi_;
      for (unsigned slot = 1; slot < kSegmentSlots; ++slot) {
        lmdb::check(mdb_dbi_open(txn.get(), segment_name(slot).c_str(), MDB_CREATE, &slot_dbis_[slot]),
                    "creating a records segment");
      }
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
      if (stored_format && *stored_format < 2) upgrade_records(*stored_format);
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
  g.txn = g.root = txn.get();
  g.next_seq = next_seq_;
  g.disk_bytes = disk_bytes_;
  g.disk_records = disk_records_;
  g.segments = segments_;
  g.front = front_;
  g.acknowledged_kept = acknowledged_kept_;
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
    if (g.front != front_) put_meta(g.txn, meta_dbi_, "front", g.front);
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
  segments_ = segments_of(t);
  front_ = front_of(t);
  disk_pages_ = used_pages_of(t, segments_);
  // Records stored: all but the acknowledged ones the oldest segment still holds.
  disk_records_ = 0;
  for (const Segment& s : segments_) disk_records_ += stat_of(t, s.dbi).ms_entries;
  acknowledged_kept_ = 0;
  RecordCursor cursor(t, segments_);
  MDB_val k, v;
  for (bool more = cursor.first(k, v); more && lmdb::seq_of(k) <= front_; more = cursor.next(k, v)) ++acknowledged_kept_;
  disk_records_ -= std::min(disk_records_, acknowledged_kept_);
  first_disk_seq_ = disk_records_ > 0 && cursor.seek(front_ + 1, k, v) ? lmdb::seq_of(k) : 0;
  last_disk_seq_ = disk_records_ > 0 ? segments_.back().last : 0;
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

}  // namespace tank::queue
