#include "common/clock_sync.hpp"

#include <sys/stat.h>
#include <sys/timex.h>
#include <time.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "common/build_info.hpp"
#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/units.hpp"

namespace tank {
namespace {

constexpr const char* kComponent = "clock";

bool exists(std::string_view path) {
  struct stat st{};
  return ::stat(std::string(path).c_str(), &st) == 0;
}

std::int64_t boottime_now() {
  timespec ts{};
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

class SystemProbe : public ClockProbe {
 public:
  KernelClock kernel() const override {
    timex t{};  // modes 0: read only (no CAP_SYS_TIME needed)
    const int r = ::ntp_adjtime(&t);
    return kernel_clock_from(r, t.status, r < 0 ? errno : 0);
  }
  bool sync_service_present() const override {
    for (std::string_view marker : kSyncServiceMarkers) {
      if (exists(marker)) return true;
    }
    return false;
  }
  bool synchronized_this_boot() const override { return exists(kTimesyncdSynchronizedMarker); }
  std::int64_t boottime_ns() const override { return boottime_now(); }
  std::string boot_id() const override { return fs::boot_id(); }
};

// TANK_TEST_CLOCK_SYNC: the kernel's answer from the variable or a file; the rest of this machine.
class TestProbe final : public SystemProbe {
 public:
  explicit TestProbe(std::string spec) : spec_(std::move(spec)) {}
  KernelClock kernel() const override {
    std::string word = spec_;
    if (word.starts_with("file:")) {
      std::ifstream in(word.substr(5));
      word.clear();
      in >> word;
    }
    KernelClock k;
    k.readable = true;
    k.unsynchronized = word == "unsynced";
    return k;
  }
  bool sync_service_present() const override { return true; }
  bool synchronized_this_boot() const override { return false; }

 private:
  std::string spec_;
};

std::string signed_duration(std::int64_t ns) {
  const auto magnitude = std::chrono::milliseconds(ns < 0 ? -(ns / 1'000'000) : ns / 1'000'000);
  return fmt::format("{}{}", ns < 0 ? "back by " : "forward by ", units::format_duration(magnitude));
}

}  // namespace

std::optional<ClockTrust> parse_clock_trust(std::string_view text) {
  if (text == "auto") return ClockTrust::automatic;
  if (text == "ntp") return ClockTrust::ntp;
  if (text == "trust") return ClockTrust::trust;
  return std::nullopt;
}

KernelClock kernel_clock_from(int adjtimex_result, int status, int error_number) {
  KernelClock k;
  if (adjtimex_result < 0) {
    k.error = fmt::format("adjtimex: {}", std::strerror(error_number));
    return k;
  }
  k.readable = true;
  k.unsynchronized = adjtimex_result == TIME_ERROR || (status & STA_UNSYNC) != 0;
  return k;
}

std::unique_ptr<ClockProbe> system_clock_probe() { return std::make_unique<SystemProbe>(); }

std::unique_ptr<ClockProbe> clock_probe_from_environment() {
  const char* spec = std::getenv("TANK_TEST_CLOCK_SYNC");
  if (spec == nullptr || *spec == '\0') return system_clock_probe();
  log::warn(kComponent, "TANK_TEST_CLOCK_SYNC=\"{}\": the kernel's clock state is taken from it (for tests only)",
            spec);
  return std::make_unique<TestProbe>(spec);
}

std::int64_t ClockSync::default_floor_ns() { return static_cast<std::int64_t>(build::source_epoch_s) * 1'000'000'000; }

ClockSync::ClockSync(ClockTrust trust, const Clock& clock, std::unique_ptr<ClockProbe> probe, std::int64_t floor_ns)
    : trust_(trust), clock_(clock), probe_(std::move(probe)), floor_ns_(floor_ns), boot_id_(probe_->boot_id()) {
  check();
}

ClockSync::~ClockSync() = default;

ClockSync::Judgement ClockSync::judge() {
  if (trust_ == ClockTrust::trust) return {};
  const std::int64_t wall = clock_.wall_ns();
  if (wall < floor_ns_) {
    return {false, fmt::format("the wall clock ({}) is before this build ({})", fs::rfc3339_utc(wall),
                               fs::rfc3339_utc(floor_ns_))};
  }
  const KernelClock kernel = probe_->kernel();
  if (!kernel.readable) {
    if (!reported_unreadable_) {
      reported_unreadable_ = true;
      log::warn(kComponent, "cannot read the kernel's clock state ({}): only a wall clock before this build counts as "
                            "not synchronized (under systemd, ProtectClock=yes blocks adjtimex: see docs/operations.md)",
                kernel.error);
    }
    return {};
  }
  if (!kernel.unsynchronized) {
    seen_synchronized_ = true;
    return {};
  }
  const std::string says = "the kernel says the clock is not synchronized (adjtimex: STA_UNSYNC)";
  if (trust_ == ClockTrust::ntp) return {false, says};
  // auto: a host without a time-sync service keeps STA_UNSYNC for ever; a clock synchronised once
  // in this boot only drifts after it lost its server.
  if (seen_synchronized_ || probe_->synchronized_this_boot() || !probe_->sync_service_present()) return {};
  return {false, says + " and a time-sync service has not synchronized it yet in this boot"};
}

bool ClockSync::check() {
  std::lock_guard lock(mutex_);
  Judgement j = judge();
  const bool was = synchronized_.load(std::memory_order_relaxed);
  const std::int64_t offset = clock_.wall_ns() - probe_->boottime_ns();
  if (!j.synchronized) {
    if (was || first_) {
      log::warn(kComponent, "the system clock is not synchronized: {}. Records committed meanwhile carry the attribute "
                            "{}; event-time stages hold them until it is (on_unsynced_clock)",
                j.reason, kUnsyncedAttribute);
    } else if (j.reason != reason_) {
      log::info(kComponent, "the system clock is still not synchronized: {}", j.reason);
    }
    unsynced_offset_ns_ = offset;
  } else if (!was && !first_) {
    log::info(kComponent, "the system clock is synchronized again: it moved {} while it was not",
              signed_duration(offset - unsynced_offset_ns_));
  }
  first_ = false;
  reason_ = std::move(j.reason);
  synchronized_.store(j.synchronized, std::memory_order_relaxed);
  return j.synchronized;
}

void ClockSync::set_trust(ClockTrust trust) {
  std::lock_guard lock(mutex_);
  trust_ = trust;
}

std::string ClockSync::reason() const {
  std::lock_guard lock(mutex_);
  return reason_;
}

std::string ClockSync::stamp() const { return fmt::format("{}/{}", boot_id_, probe_->boottime_ns()); }

std::optional<std::int64_t> ClockSync::real_time_of(std::string_view stamp) const {
  const auto slash = stamp.rfind('/');
  if (slash == std::string_view::npos || boot_id_.empty() || stamp.substr(0, slash) != boot_id_) return std::nullopt;
  const std::string_view digits = stamp.substr(slash + 1);
  std::int64_t then = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), then);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return clock_.wall_ns() - (probe_->boottime_ns() - then);
}

}  // namespace tank
