#pragma once

// Polling Modbus devices on a clock-aligned schedule and committing one record per device per
// poll.
//
// Schedule. Polls fall on multiples of poll_interval since the Unix epoch (a 10 s interval polls
// at :00, :10, :20...), so gateways with the same interval sample at the same instants. A poll
// that runs past the next instant skips it: the skipped polls are counted in
// tank_input_dropped_records_total{reason="poll_overrun"} (one per device), never made up later.
//
// One poll. The devices are read one after the other over the input's one connection (a serial
// bus carries one request at a time; a TCP gateway usually serialises them too). A device's
// fields are read in as few requests as the protocol allows (register_map.hpp); if every request
// is answered, the device gives one JSON record:
//   {"time": "2026-11-21T23:19:10.000Z", "device": "meter-1", "slave_id": 1,
//    "voltage": 230.1, "energy_total": 123456, "breaker_closed": true, "serial": "EM-0042"}
// with `time` the poll's scheduled instant. A device whose poll fails gives no record for it:
// the failure is counted in tank_input_errors_total{reason} (modbus_link.hpp names the reasons)
// and logged once per episode (with the reason; the end of the episode is logged too). A device
// that did not answer (timeout, lost connection) backs off: it is skipped for a jittered,
// doubling number of polls up to backoff_max, each skipped poll counted as
// dropped{reason="device_backoff"}, so it costs the other devices one timeout per backoff, not
// one per poll. A device that answered with an exception response is polled again next time.
//
// Commit. The records of all the devices of one poll are committed in one queue transaction.
// Modbus has no acknowledgement and no history: a poll the queue refuses (overflow = "block"
// while it is full: held; or a failed commit) cannot be offered again later as the same
// reading, so its records are dropped and counted (dropped{reason="queue_full"} or
// {reason="commit_failed"}); while the queue says it refuses records (paused) the devices are not
// read at all and each missed poll is counted as dropped{reason="queue_full"}.
//
// Threads: one per input. stop() returns after the request in flight ends (at most twice `timeout`:
// a connect, then the response).

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "modbus_link.hpp"
#include "plugin/input.hpp"
#include "register_map.hpp"

namespace tank::modbus {

struct DeviceSettings {
  std::string name;  // the record's "device"
  int slave_id = 1;
  std::vector<Field> fields;  // empty: the input's fields
};

struct PollerSettings {
  std::string controller;  // tcp://host:port or file:///dev/ttyX
  SerialSettings serial;
  std::chrono::milliseconds timeout{1000};
  std::chrono::nanoseconds poll_interval = std::chrono::seconds(10);
  std::chrono::nanoseconds backoff_max = std::chrono::minutes(5);
  std::vector<DeviceSettings> devices;
  std::vector<Field> fields;  // the register map of devices without their own
};

// The first poll instant strictly after `now_ns`: the next multiple of `interval_ns` since the
// epoch. `interval_ns` must be positive.
std::int64_t next_poll_ns(std::int64_t now_ns, std::int64_t interval_ns);

// The record of one device's poll: `values[i]` is fields[i]'s value (nullopt: a float that was
// NaN or infinite, written as null).
std::string poll_record(std::int64_t time_ns, const std::string& device, int slave_id, std::span<const Field> fields,
                        std::span<const std::optional<Value>> values);

// Names a record uses itself, which no field may take.
inline constexpr std::string_view kRecordKeys[] = {"time", "device", "slave_id"};

// Throws plugin::StartError when the controller URI does not parse (the configuration check
// refuses such a URI first).
std::unique_ptr<plugin::Input> make_modbus_poller(const PollerSettings& settings, const plugin::InputContext& context);

}  // namespace tank::modbus
