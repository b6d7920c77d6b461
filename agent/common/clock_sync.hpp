#pragma once

// Whether the wall clock can be trusted: gateways without a real-time clock boot in 1970 (or at
// the time they last shut down) and keep that time until NTP answers. Records stamped meanwhile
// carry the attribute clock_unsynced (kUnsyncedAttribute) with what is needed to correct their
// time later, and event-time stages hold or pass them (docs/processing.md, on_unsynced_clock).
//
// The rule (agent.clock; docs/operations.md, "A clock that is not synchronised"):
//   trust  the clock is always trusted.
//   auto   (default) not synchronised while the wall time is before the build's commit time
//          (build::source_epoch_s: a clock that early is certainly unset), or while the kernel
//          says it is not synchronised (adjtimex(2): TIME_ERROR or STA_UNSYNC) AND a time-sync
//          service runs on the host (kSyncServiceMarkers) AND the clock has not been synchronised
//          in this boot yet (seen by this process, or systemd-timesyncd's marker). A host where no
//          NTP daemon runs (containers, CI machines) keeps STA_UNSYNC set for ever: there only the
//          build-time rule applies, so tank never holds data for ever on a good clock. A clock
//          that was synchronised and then lost its server (an uplink down for hours) drifts
//          slowly: it stays trusted.
//   ntp    not synchronised while the wall time is before the build's commit time or the kernel
//          says so (for hosts whose time-sync service tank does not recognise: busybox ntpd, GPS).
// When adjtimex(2) cannot be read (a seccomp filter: systemd's ProtectClock=yes blocks it), only
// the build-time rule applies; the reason says so once in the log.
//
// Thread safety: synchronized() is one relaxed atomic load, for every record an input commits;
// check() may be called from any thread (the agent calls it about once a second).

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.hpp"

namespace tank {

// The attribute a record committed while the clock is not synchronised carries:
// "<boot id>/<CLOCK_BOOTTIME in ns at its commit>".
inline constexpr std::string_view kUnsyncedAttribute = "clock_unsynced";

enum class ClockTrust { automatic, ntp, trust };
// "auto", "ntp", "trust"; nullopt for anything else.
std::optional<ClockTrust> parse_clock_trust(std::string_view text);

// What adjtimex(2) says of the kernel's clock.
struct KernelClock {
  bool readable = false;        // false: adjtimex failed (error says why)
  bool unsynchronized = false;  // TIME_ERROR returned, or STA_UNSYNC set
  std::string error;
};
// From adjtimex's return value (or -1) and timex.status; `error_number` when it returned -1.
KernelClock kernel_clock_from(int adjtimex_result, int status, int error_number = 0);

// Where a ClockSync reads what it needs besides the wall clock; a fake in tests.
class ClockProbe {
 public:
  virtual ~ClockProbe() = default;
  virtual KernelClock kernel() const = 0;
  // A time-sync service runs (or ran) on this host: one of kSyncServiceMarkers exists.
  virtual bool sync_service_present() const = 0;
  // Something says the clock was synchronised in this boot (systemd-timesyncd's marker).
  virtual bool synchronized_this_boot() const = 0;
  // CLOCK_BOOTTIME: counts from boot, across suspend and process restarts, never jumps.
  virtual std::int64_t boottime_ns() const = 0;
  // The kernel's boot id; "" when unknown.
  virtual std::string boot_id() const = 0;
};

// Paths whose existence says a time-sync service runs: systemd-timesyncd's runtime directory,
// chronyd's, ntpd's (and ntpsec's, openntpd's) pid file.
inline constexpr std::string_view kSyncServiceMarkers[] = {
    "/run/systemd/timesync", "/run/chrony", "/var/run/chrony", "/run/chronyd.pid", "/run/ntpd.pid",
    "/var/run/ntpd.pid",
};
inline constexpr std::string_view kTimesyncdSynchronizedMarker = "/run/systemd/timesync/synchronized";

// The probe of this machine: ntp_adjtime(3), the marker paths, clock_gettime(CLOCK_BOOTTIME),
// /proc/sys/kernel/random/boot_id (read once).
std::unique_ptr<ClockProbe> system_clock_probe();

// The probe TANK_TEST_CLOCK_SYNC names, else the system's. The variable is for tests of the real
// binary only: "unsynced" or "synced" (the kernel's answer; a sync service counts as present), or
// "file:<path>" to read one of those words from a file at each check.
std::unique_ptr<ClockProbe> clock_probe_from_environment();

class ClockSync {
 public:
  // `floor_ns`: a wall time before it is certainly wrong (default: the build's commit time).
  // Makes a first check(). `clock` and the probe must outlive it.
  ClockSync(ClockTrust trust, const Clock& clock, std::unique_ptr<ClockProbe> probe,
            std::int64_t floor_ns = default_floor_ns());
  ~ClockSync();
  ClockSync(const ClockSync&) = delete;
  ClockSync& operator=(const ClockSync&) = delete;

  static std::int64_t default_floor_ns();
  // A new rule (agent.clock after a reload); takes effect at the next check().
  void set_trust(ClockTrust trust);

  // Reads the clock and the probe, updates the state and logs a change (a warning when the clock
  // becomes untrusted, with the reason; an info line, with how far the wall clock jumped, when it
  // is trusted again). Returns synchronized(). Thread-safe; cheap (one adjtimex, a few stat()s).
  bool check();
  // Whether the wall clock is trusted, as of the last check(). One atomic load.
  bool synchronized() const { return synchronized_.load(std::memory_order_relaxed); }
  // Why not, as of the last check ("" while synchronized): e.g. "the wall clock (1970-01-01T00:02:10Z) is
  // before this build (2026-12-01T09:00:00Z)".
  std::string reason() const;

  // The value of kUnsyncedAttribute for a record committed now: "<boot id>/<boottime ns>".
  std::string stamp() const;
  // The real wall time of the moment `stamp` was made, from the clock now: now - (boottime now -
  // boottime of the stamp). nullopt when the stamp is of another boot (or malformed, or the boot id
  // is unknown): then its time cannot be corrected.
  std::optional<std::int64_t> real_time_of(std::string_view stamp) const;

 private:
  struct Judgement {
    bool synchronized = true;
    std::string reason;
  };
  Judgement judge();

  ClockTrust trust_;
  const Clock& clock_;
  std::unique_ptr<ClockProbe> probe_;
  std::int64_t floor_ns_;
  std::string boot_id_;
  std::atomic<bool> synchronized_{true};
  mutable std::mutex mutex_;
  std::string reason_;
  bool seen_synchronized_ = false;  // the kernel said synchronised once (auto)
  bool first_ = true;
  std::int64_t unsynced_offset_ns_ = 0;  // wall - boottime at the last check while untrusted
  bool reported_unreadable_ = false;
};

}  // namespace tank
