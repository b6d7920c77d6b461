#pragma once

// One connection to a Modbus controller through libmodbus: a TCP server (a device, or a gateway
// that serves several slave ids) or a serial line in RTU mode. Reads only: tank never writes to a
// device. Not thread-safe: one per poller thread.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "register_map.hpp"

typedef struct _modbus modbus_t;  // NOLINT(modernize-use-using): libmodbus's own declaration

namespace tank::modbus {

// Where the controller is: "tcp://host:port" (port 502 when left out) or "file:///dev/ttyUSB0"
// (a serial device, RTU framing).
struct Endpoint {
  enum class Kind { tcp, rtu } kind = Kind::tcp;
  std::string host;  // tcp
  int port = 502;    // tcp
  std::string device;  // rtu
};

// Parses a controller URI; on failure returns nullopt and says why in `error`.
std::optional<Endpoint> parse_controller(std::string_view uri, std::string& error);

struct SerialSettings {
  int baud_rate = 9600;
  char parity = 'N';  // 'N', 'E' or 'O'
  int data_bits = 8;
  int stop_bits = 1;
};

// Why a read failed, as tank counts it (tank_input_errors_total{reason}).
struct Failure {
  // "timeout", "connect_failed", "connection_lost", "bad_response" (CRC, length, slave id or
  // transaction id wrong), or "exception_<name>" for a Modbus exception response
  // (exception_illegal_function, exception_illegal_data_address, exception_illegal_data_value,
  // exception_server_device_failure, exception_acknowledge, exception_server_device_busy,
  // exception_negative_acknowledge, exception_memory_parity_error,
  // exception_gateway_path_unavailable, exception_gateway_target_failed_to_respond,
  // exception_other).
  std::string reason;
  std::string message;  // libmodbus's words, for the log
  // Whether the device answered: an exception response is an answer (the device is alive, the
  // map is wrong for it); a timeout or a lost connection is not.
  bool answered = false;
};

class Link {
 public:
  // `timeout`: how long a request waits for its response (and a TCP connect for its handshake).
  Link(Endpoint endpoint, SerialSettings serial, std::chrono::milliseconds timeout);
  ~Link();
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  // Opens the connection (TCP connect, or opening and setting up the serial device) unless open.
  // Returns nullopt on success, the failure (reason connect_failed) otherwise.
  std::optional<Failure> open();
  // Closes the connection (the next open() makes a new one). Idempotent.
  void close();
  bool is_open() const { return open_; }

  // Reads `count` registers (holding or input table) from `address` of `slave` into `words`
  // (count of them), or `count` bits (coils or discrete inputs) into `bits`. Opens the connection
  // first when needed, so one call may wait for a connect and then a response: up to twice the
  // timeout. Returns nullopt on success. After a failure that leaves the stream in an
  // unknown state (a timeout, a bad response, a lost connection) the connection is closed, so a
  // late answer cannot be taken for the next request's.
  std::optional<Failure> read_registers(Table table, int slave, unsigned address, unsigned count,
                                        std::span<std::uint16_t> words);
  std::optional<Failure> read_bits(Table table, int slave, unsigned address, unsigned count,
                                   std::span<std::uint8_t> bits);

  // "tcp 127.0.0.1:502" or "rtu /dev/ttyUSB0", for logs.
  std::string describe() const;

 private:
  std::optional<Failure> failure_after_error(int errnum);

  Endpoint endpoint_;
  SerialSettings serial_;
  std::chrono::milliseconds timeout_;
  modbus_t* ctx_ = nullptr;
  bool open_ = false;
};

// The reason for a libmodbus error number (errno after a failed call), as Failure::reason names it.
Failure classify_error(int errnum);

}  // namespace tank::modbus
