#pragma once

// A device's register map: what each field is (where it lives, how many registers or bits it
// takes, how its bytes are ordered), the read requests that cover a map, and how the words a
// device answered become a field's value. No I/O, no clock, no locks: the poller
// (modbus_poller.hpp) does the reading.
//
// Byte and word order, as Telegraf's modbus input means them. A value's bytes from the most
// significant, A B C D (E F G H for 64 bits), sit on the wire (register 0's high byte first) as:
//   ABCD  A B C D            big-endian (Motorola)
//   DCBA  D C B A            little-endian (Intel)
//   BADC  B A D C            big-endian words, bytes swapped within each register
//   CDAB  C D A B            little-endian word order, big-endian bytes within each register
// A 64-bit value extends the same pattern over four registers (CDAB: G H E F C D A B); a 16-bit
// value only sees the byte swap (ABCD and CDAB: A B; DCBA and BADC: B A); a string's characters
// are read two per register, high byte first unless the bytes are swapped.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace tank::modbus {

// The four Modbus data tables, each with its own read function.
enum class Table { holding_register, input_register, coil, discrete_input };

enum class DataType { int16, uint16, int32, uint32, int64, uint64, float32, float64, boolean, string };

enum class ByteOrder { abcd, dcba, badc, cdab };

// The protocol's limits for one read request (Modbus application protocol v1.1b3, 6.1-6.4).
inline constexpr unsigned kMaxRegistersPerRead = 125;
inline constexpr unsigned kMaxBitsPerRead = 2000;
inline constexpr unsigned kAddressSpace = 65536;

struct Field {
  std::string name;
  Table table = Table::holding_register;
  unsigned address = 0;  // 0-based protocol address (register 40001 of a data sheet is 0)
  DataType type = DataType::uint16;
  ByteOrder byte_order = ByteOrder::abcd;
  double scale = 1.0;
  double offset = 0.0;
  unsigned length = 0;  // registers of a string (two characters each); unused by other types
};

// Whether a table holds single bits (coils, discrete inputs) rather than 16-bit registers.
bool is_bit_table(Table table);

// How many registers (or bits, in a bit table) `field` spans: 1, 2 or 4 for numbers, `length`
// for a string, 1 for a bool.
unsigned width_of(const Field& field);

// What is wrong with `field` on its own, or nullopt: a bool outside a bit table or another type in
// one, a string without a length or a length beyond one request (125 registers), a length on a
// type other than string, a field that runs past address 65535.
std::optional<std::string> field_problem(const Field& field);

// The first pair of fields of `fields` that share a register or bit of the same table, as
// indexes into `fields` (first < second in address order), or nullopt when none overlap.
std::optional<std::pair<std::size_t, std::size_t>> first_overlap(std::span<const Field> fields);

// One read request: `count` registers (or bits) of `table` from `address`, and the fields it
// covers (indexes into the map, each wholly inside the request).
struct Request {
  Table table = Table::holding_register;
  unsigned address = 0;
  unsigned count = 0;
  std::vector<std::size_t> fields;
};

// The fewest requests that read every field of `fields` (which must have no field_problem and no
// overlap): fields of a table whose registers follow each other without a gap are read together,
// up to 125 registers or 2000 bits a request. Gaps are never read (a device may answer an
// unmapped address with an exception). Requests come in table order, then address order.
std::vector<Request> plan_requests(std::span<const Field> fields);

// A field's value: an integer when the type is an integer and scale and offset leave it alone,
// a double when they do not or the type is a float, a bool, a string.
using Value = std::variant<std::int64_t, std::uint64_t, double, bool, std::string>;

// The value of `field` from `words`, the registers it spans as they came from the device
// (width_of(field) of them). For a string: two characters per register, trailing NUL bytes and
// spaces removed, bytes outside printable ASCII replaced by '?', so the record stays valid JSON.
// For a float that is NaN or infinite, nullopt (JSON has no such number; the poller reports it).
std::optional<Value> decode_registers(const Field& field, std::span<const std::uint16_t> words);

// The value of a bool field from the bit the device answered (0 or 1).
Value decode_bit(std::uint8_t bit);

// The names used in configuration and messages.
std::string_view name_of(Table table);
std::string_view name_of(DataType type);

}  // namespace tank::modbus
