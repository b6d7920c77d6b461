#include "modbus_link.hpp"

#include <modbus/modbus.h>

#include <cerrno>
#include <charconv>

#include <fmt/format.h>

namespace tank::modbus {

std::optional<Endpoint> parse_controller(std::string_view uri, std::string& error) {
  Endpoint e;
  if (uri.starts_with("file://")) {
    e.kind = Endpoint::Kind::rtu;
    e.device = std::string(uri.substr(7));
    if (e.device.empty() || e.device.front() != '/') {
      error = fmt::format("\"{}\": a serial controller is file:// and the device's absolute path, e.g. "
                          "\"file:///dev/ttyUSB0\"",
                          uri);
      return std::nullopt;
    }
    return e;
  }
  if (!uri.starts_with("tcp://")) {
    error = fmt::format("\"{}\": expected \"tcp://host:port\" (Modbus TCP) or \"file:///dev/ttyUSB0\" (RTU on a "
                        "serial line)",
                        uri);
    return std::nullopt;
  }
  std::string_view rest = uri.substr(6);
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  std::string_view host = rest;
  std::string_view port;
  if (rest.starts_with("[")) {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) {
      error = fmt::format("\"{}\": an IPv6 address in brackets lacks its ']'", uri);
      return std::nullopt;
    }
    host = rest.substr(1, close - 1);
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':') {
        error = fmt::format("\"{}\": expected ':' and a port after the ']'", uri);
        return std::nullopt;
      }
      port = rest.substr(close + 2);
    }
  } else if (const auto colon = rest.rfind(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (host.empty()) {
    error = fmt::format("\"{}\": no host", uri);
    return std::nullopt;
  }
  e.host = std::string(host);
  if (!port.empty()) {
    int p = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || ptr != port.data() + port.size() || p < 1 || p > 65535) {
      error = fmt::format("\"{}\": the port must be a number from 1 to 65535", uri);
      return std::nullopt;
    }
    e.port = p;
  }
  return e;
}

Failure classify_error(int errnum) {
  Failure f;
  f.message = modbus_strerror(errnum);
  switch (errnum) {
    case ETIMEDOUT: f.reason = "timeout"; return f;
    case EMBXILFUN: f.reason = "exception_illegal_function"; break;
    case EMBXILADD: f.reason = "exception_illegal_data_address"; break;
    case EMBXILVAL: f.reason = "exception_illegal_data_value"; break;
    case EMBXSFAIL: f.reason = "exception_server_device_failure"; break;
    case EMBXACK: f.reason = "exception_acknowledge"; break;
    case EMBXSBUSY: f.reason = "exception_server_device_busy"; break;
    case EMBXNACK: f.reason = "exception_negative_acknowledge"; break;
    case EMBXMEMPAR: f.reason = "exception_memory_parity_error"; break;
    case EMBXGPATH: f.reason = "exception_gateway_path_unavailable"; break;
    case EMBXGTAR: f.reason = "exception_gateway_target_failed_to_respond"; break;
    case EMBUNKEXC: f.reason = "exception_other"; break;
    case EMBBADCRC:
    case EMBBADDATA:
    case EMBBADEXC:
    case EMBMDATA:
    case EMBBADSLAVE: f.reason = "bad_response"; return f;
    default: f.reason = "connection_lost"; return f;
  }
  f.answered = true;
  return f;
}

Link::Link(Endpoint endpoint, SerialSettings serial, std::chrono::milliseconds timeout)
    : endpoint_(std::move(endpoint)), serial_(serial), timeout_(timeout) {}

Link::~Link() {
  close();
  if (ctx_ != nullptr) modbus_free(ctx_);
}

std::optional<Failure> Link::open() {
  if (open_) return std::nullopt;
  if (ctx_ == nullptr) {
    if (endpoint_.kind == Endpoint::Kind::tcp) {
      const std::string service = std::to_string(endpoint_.port);
      ctx_ = modbus_new_tcp_pi(endpoint_.host.c_str(), service.c_str());
    } else {
      ctx_ = modbus_new_rtu(endpoint_.device.c_str(), serial_.baud_rate, serial_.parity, serial_.data_bits,
                            serial_.stop_bits);
    }
    if (ctx_ == nullptr) {
      return Failure{.reason = "connect_failed",
                     .message = fmt::format("libmodbus could not set up {}: {}", describe(), modbus_strerror(errno)),
                     .answered = false};
    }
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(timeout_).count();
    modbus_set_response_timeout(ctx_, static_cast<std::uint32_t>(us / 1'000'000),
                                static_cast<std::uint32_t>(us % 1'000'000));
  }
  if (modbus_connect(ctx_) == -1) {
    return Failure{.reason = "connect_failed",
                   .message = fmt::format("cannot connect to {}: {}", describe(), modbus_strerror(errno)),
                   .answered = false};
  }
  open_ = true;
  return std::nullopt;
}

void Link::close() {
  if (open_ && ctx_ != nullptr) modbus_close(ctx_);
  open_ = false;
}

std::optional<Failure> Link::failure_after_error(int errnum) {
  Failure f = classify_error(errnum);
  if (!f.answered) {
    // A TCP stream after a timeout may still bring the late answer: a new connection starts
    // clean. A serial line has no connection to renew: what arrived is flushed, and a late answer
    // is told apart by its slave id and function code (libmodbus checks both).
    if (endpoint_.kind == Endpoint::Kind::tcp || f.reason == "connection_lost") {
      close();
    } else if (ctx_ != nullptr) {
      modbus_flush(ctx_);
    }
  }
  return f;
}

std::optional<Failure> Link::read_registers(Table table, int slave, unsigned address, unsigned count,
                                            std::span<std::uint16_t> words) {
  if (words.size() < count || is_bit_table(table)) {
    return Failure{.reason = "bad_response", .message = "internal: read_registers on a bit table", .answered = false};
  }
  if (auto f = open()) return f;
  modbus_set_slave(ctx_, slave);
  const int n = table == Table::holding_register
                    ? modbus_read_registers(ctx_, static_cast<int>(address), static_cast<int>(count), words.data())
                    : modbus_read_input_registers(ctx_, static_cast<int>(address), static_cast<int>(count),
                                                  words.data());
  if (n == -1) return failure_after_error(errno);
  if (n != static_cast<int>(count)) {
    return failure_after_error(EMBMDATA);
  }
  return std::nullopt;
}

std::optional<Failure> Link::read_bits(Table table, int slave, unsigned address, unsigned count,
                                       std::span<std::uint8_t> bits) {
  if (bits.size() < count || !is_bit_table(table)) {
    return Failure{.reason = "bad_response", .message = "internal: read_bits on a register table", .answered = false};
  }
  if (auto f = open()) return f;
  modbus_set_slave(ctx_, slave);
  const int n = table == Table::coil
                    ? modbus_read_bits(ctx_, static_cast<int>(address), static_cast<int>(count), bits.data())
                    : modbus_read_input_bits(ctx_, static_cast<int>(address), static_cast<int>(count), bits.data());
  if (n == -1) return failure_after_error(errno);
  if (n != static_cast<int>(count)) return failure_after_error(EMBMDATA);
  return std::nullopt;
}

std::string Link::describe() const {
  if (endpoint_.kind == Endpoint::Kind::rtu) return "rtu " + endpoint_.device;
  if (endpoint_.host.find(':') != std::string::npos) return fmt::format("tcp [{}]:{}", endpoint_.host, endpoint_.port);
  return fmt::format("tcp {}:{}", endpoint_.host, endpoint_.port);
}

}  // namespace tank::modbus
