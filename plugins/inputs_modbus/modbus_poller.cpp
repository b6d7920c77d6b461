#include "modbus_poller.hpp"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "common/backoff.hpp"
#include "common/fs.hpp"
#include "common/liveness.hpp"
#include "common/log.hpp"
#include "input/queue_side.hpp"

namespace tank::modbus {

std::int64_t next_poll_ns(std::int64_t now_ns, std::int64_t interval_ns) {
  std::int64_t q = now_ns / interval_ns;
  if (now_ns % interval_ns != 0 && now_ns < 0) --q;  // floor for times before the epoch
  return (q + 1) * interval_ns;
}

std::string poll_record(std::int64_t time_ns, const std::string& device, int slave_id, std::span<const Field> fields,
                        std::span<const std::optional<Value>> values) {
  boost::json::object record;
  record.reserve(fields.size() + 3);
  record["time"] = fs::rfc3339_utc(time_ns);
  record["device"] = device;
  record["slave_id"] = slave_id;
  for (std::size_t i = 0; i < fields.size() && i < values.size(); ++i) {
    boost::json::value& slot = record[fields[i].name];
    if (!values[i]) {
      slot = nullptr;
      continue;
    }
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::string>) slot = boost::json::string(v);
          else slot = v;
        },
        *values[i]);
  }
  return boost::json::serialize(record);
}

namespace {

using Clock = std::chrono::steady_clock;

// One device of the input, with its plan and its state between polls.
struct Device {
  DeviceSettings settings;
  std::vector<Field> fields;  // its own, or the input's
  std::vector<Request> requests;
  Backoff backoff;
  std::int64_t skip_until_ns = 0;  // steady clock: backing off until then
  log::Episode failures;
};

class ModbusPoller final : public plugin::Input {
 public:
  ModbusPoller(const PollerSettings& s, Endpoint endpoint, const plugin::InputContext& context)
      : settings_(s),
        side_(context, "modbus", "the poll's records are dropped (Modbus keeps no history to read again)"),
        link_(std::move(endpoint), s.serial, s.timeout) {
    const BackoffPolicy policy{.initial = s.poll_interval, .max = s.backoff_max, .jitter = BackoffPolicy::Jitter::half};
    for (const auto& d : s.devices) {
      // Built in place: a Device holds an Episode, which does not move.
      std::unique_ptr<Device> device(new Device{.settings = d,
                                                .fields = d.fields.empty() ? s.fields : d.fields,
                                                .requests = {},
                                                .backoff = Backoff(policy),
                                                .skip_until_ns = 0,
                                                .failures = log::Episode(side_.component, log::Level::warn)});
      device->requests = plan_requests(device->fields);
      devices_.push_back(std::move(device));
    }
  }

  ~ModbusPoller() override { stop(); }

  void start() override {
    std::size_t requests = 0;
    for (const auto& d : devices_) requests += d->requests.size();
    log::info(side_.component, "polling {} device(s) on {} every {} ({} request(s) a poll)", devices_.size(),
              link_.describe(), units_of(settings_.poll_interval), requests);
    thread_ = std::thread([this] { run(); });
  }

  void stop() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  void set_paused(bool paused) override { side_.set_paused(paused); }

 private:
  static std::string units_of(std::chrono::nanoseconds d) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    return ms % 1000 == 0 ? fmt::format("{}s", ms / 1000) : fmt::format("{}ms", ms);
  }

  void run() {
    liveness::Beat beat(side_.component);
    liveness::ThreadBeat this_thread(beat);
    const std::int64_t interval = settings_.poll_interval.count();
    std::int64_t next = next_poll_ns(side_.clock.wall_ns(), interval);
    while (wait_until_wall(next)) {
      liveness::alive();
      poll(next);
      const std::int64_t following = next_poll_ns(side_.clock.wall_ns(), interval);
      // The instants this poll ran past are skipped, not made up (a wall clock set back skips none).
      const std::int64_t skipped = following > next ? (following - next) / interval - 1 : 0;
      if (skipped > 0) {
        last_overrun_ns_ = side_.clock.steady_ns();
        side_.metrics.dropped("poll_overrun", static_cast<std::uint64_t>(skipped) * devices_.size());
        overruns_.occur(fmt::format("a poll of {} device(s) took longer than poll_interval ({}): {} poll(s) skipped; "
                                    "lengthen poll_interval, shorten timeout or split the devices over inputs",
                                    devices_.size(), units_of(settings_.poll_interval), skipped));
      } else if (overruns_.active() && side_.clock.steady_ns() - last_overrun_ns_ >= kOverrunQuiet) {
        // Ended only after a quiet minute: polls that barely fit would otherwise log every flip.
        overruns_.end("polls have kept to poll_interval for a minute");
      }
      next = following;
    }
    link_.close();
  }

  // Waits until the wall clock reaches `instant_ns`; false when stopped first. The wait is
  // re-checked at least once a second, so a wall clock that is set moves the poll with it.
  bool wait_until_wall(std::int64_t instant_ns) {
    liveness::Waiting waiting;
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      const std::int64_t left = instant_ns - side_.clock.wall_ns();
      if (left <= 0) return true;
      wake_.wait_for(lock, std::chrono::nanoseconds(std::min<std::int64_t>(left, 1'000'000'000)));
    }
    return false;
  }

  bool stopping() {
    std::lock_guard lock(mutex_);
    return stopping_;
  }

  void poll(std::int64_t time_ns) {
    if (side_.paused) {
      side_.metrics.dropped("queue_full", devices_.size());
      return;
    }
    input::PendingBatch batch = side_.batch();
    for (auto& device : devices_) {
      if (stopping()) return;
      liveness::alive();
      if (side_.clock.steady_ns() < device->skip_until_ns) {
        side_.metrics.dropped("device_backoff", 1);
        continue;
      }
      std::vector<std::optional<Value>> values(device->fields.size());
      if (auto failure = read(*device, values)) {
        fail(*device, *failure);
        continue;
      }
      if (device->backoff.attempts() > 0 || device->failures.active()) {
        device->failures.end(fmt::format("device {} (slave {}) answers again", device->settings.name,
                                         device->settings.slave_id));
      }
      device->backoff.reset();
      device->skip_until_ns = 0;
      const std::string record =
          poll_record(time_ns, device->settings.name, device->settings.slave_id, device->fields, values);
      batch.add(record, time_ns);
    }
    if (batch.empty()) return;
    switch (side_.committer.commit(batch).settlement) {
      case input::Settlement::stored:
      case input::Settlement::dropped:
        return;
      case input::Settlement::held:
        input::drop_records(side_.queue, side_.metrics, side_.component, batch, "queue_full");
        return;
      case input::Settlement::failed:
        input::drop_records(side_.queue, side_.metrics, side_.component, batch, "commit_failed");
        return;
    }
  }

  // Reads every request of `device` into `values`; the first failure ends the device's poll.
  std::optional<Failure> read(Device& device, std::vector<std::optional<Value>>& values) {
    for (const Request& r : device.requests) {
      liveness::blocking(settings_.timeout * 2);
      if (is_bit_table(r.table)) {
        bits_.assign(r.count, 0);
        if (auto f = link_.read_bits(r.table, device.settings.slave_id, r.address, r.count, bits_)) return f;
        for (std::size_t i : r.fields) values[i] = decode_bit(bits_[device.fields[i].address - r.address]);
      } else {
        words_.assign(r.count, 0);
        if (auto f = link_.read_registers(r.table, device.settings.slave_id, r.address, r.count, words_)) return f;
        for (std::size_t i : r.fields) {
          const Field& field = device.fields[i];
          values[i] = decode_registers(
              field, std::span<const std::uint16_t>(words_).subspan(field.address - r.address, width_of(field)));
        }
      }
    }
    return std::nullopt;
  }

  void fail(Device& device, const Failure& failure) {
    side_.metrics.error(failure.reason);
    std::string what = fmt::format("device {} (slave {}) on {}: {} ({})", device.settings.name,
                                   device.settings.slave_id, link_.describe(), failure.reason, failure.message);
    if (!failure.answered) {
      const auto delay = device.backoff.next();
      device.skip_until_ns = side_.clock.steady_ns() + delay.count();
      what += "; it is polled less often until it answers, up to every backoff_max";
    } else {
      what += "; the device answered with an exception: check the register map against its documentation";
    }
    device.failures.occur(what);
  }

  PollerSettings settings_;
  input::QueueSide side_;
  Link link_;
  std::vector<std::unique_ptr<Device>> devices_;
  std::vector<std::uint16_t> words_;
  std::vector<std::uint8_t> bits_;
  log::Episode overruns_{side_.component, log::Level::warn};
  static constexpr std::int64_t kOverrunQuiet = 60'000'000'000;
  std::int64_t last_overrun_ns_ = 0;

  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace

std::unique_ptr<plugin::Input> make_modbus_poller(const PollerSettings& settings, const plugin::InputContext& context) {
  std::string error;
  auto endpoint = parse_controller(settings.controller, error);
  if (!endpoint) throw plugin::StartError(error);
  return std::make_unique<ModbusPoller>(settings, std::move(*endpoint), context);
}

}  // namespace tank::modbus
