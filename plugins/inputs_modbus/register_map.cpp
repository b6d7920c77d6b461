#include "register_map.hpp"

#include <algorithm>
#include <bit>
#include <cmath>

#include <fmt/format.h>

namespace tank::modbus {

bool is_bit_table(Table table) { return table == Table::coil || table == Table::discrete_input; }

unsigned width_of(const Field& field) {
  switch (field.type) {
    case DataType::int16:
    case DataType::uint16:
    case DataType::boolean: return 1;
    case DataType::int32:
    case DataType::uint32:
    case DataType::float32: return 2;
    case DataType::int64:
    case DataType::uint64:
    case DataType::float64: return 4;
    case DataType::string: return field.length;
  }
  return 1;
}

std::optional<std::string> field_problem(const Field& field) {
  if (is_bit_table(field.table) && field.type != DataType::boolean) {
    return fmt::format("a {} holds one bit: its type must be \"bool\", not \"{}\"", name_of(field.table),
                       name_of(field.type));
  }
  if (!is_bit_table(field.table) && field.type == DataType::boolean) {
    return fmt::format("\"bool\" is for coils and discrete inputs; a {} is a 16-bit number (use \"uint16\")",
                       name_of(field.table));
  }
  if (field.type == DataType::string) {
    if (field.length == 0) return std::string("a string needs its length in registers (two characters each)");
    if (field.length > kMaxRegistersPerRead) {
      return fmt::format("a string of {} registers does not fit one read request (at most {})", field.length,
                         kMaxRegistersPerRead);
    }
  } else if (field.length != 0) {
    return fmt::format("length is for strings only; a {} spans {} register(s) by its type", name_of(field.type),
                       width_of(field));
  }
  if (field.address + width_of(field) > kAddressSpace) {
    return fmt::format("it spans addresses {} to {}, past the last address 65535", field.address,
                       field.address + width_of(field) - 1);
  }
  return std::nullopt;
}

namespace {

// Field indexes sorted by table, then address.
std::vector<std::size_t> by_table_and_address(std::span<const Field> fields) {
  std::vector<std::size_t> order(fields.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    if (fields[a].table != fields[b].table) return fields[a].table < fields[b].table;
    return fields[a].address < fields[b].address;
  });
  return order;
}

}  // namespace

std::optional<std::pair<std::size_t, std::size_t>> first_overlap(std::span<const Field> fields) {
  const auto order = by_table_and_address(fields);
  for (std::size_t k = 1; k < order.size(); ++k) {
    const Field& previous = fields[order[k - 1]];
    const Field& next = fields[order[k]];
    if (previous.table == next.table && previous.address + width_of(previous) > next.address) {
      return std::pair{order[k - 1], order[k]};
    }
  }
  return std::nullopt;
}

std::vector<Request> plan_requests(std::span<const Field> fields) {
  std::vector<Request> requests;
  for (std::size_t i : by_table_and_address(fields)) {
    const Field& f = fields[i];
    const unsigned limit = is_bit_table(f.table) ? kMaxBitsPerRead : kMaxRegistersPerRead;
    if (!requests.empty()) {
      Request& last = requests.back();
      if (last.table == f.table && last.address + last.count == f.address && last.count + width_of(f) <= limit) {
        last.count += width_of(f);
        last.fields.push_back(i);
        continue;
      }
    }
    requests.push_back(Request{.table = f.table, .address = f.address, .count = width_of(f), .fields = {i}});
  }
  return requests;
}

namespace {

bool swaps_bytes(ByteOrder order) { return order == ByteOrder::dcba || order == ByteOrder::badc; }
bool swaps_words(ByteOrder order) { return order == ByteOrder::dcba || order == ByteOrder::cdab; }

std::uint16_t swap_bytes(std::uint16_t w) { return static_cast<std::uint16_t>((w << 8) | (w >> 8)); }

// The big-endian value of up to four registers, after undoing the byte and word order (each
// swap is its own inverse, so applying it to the wire gives the value's order).
std::uint64_t compose(std::span<const std::uint16_t> words, ByteOrder order) {
  std::uint64_t raw = 0;
  const std::size_t n = words.size();
  for (std::size_t k = 0; k < n; ++k) {
    std::uint16_t w = words[swaps_words(order) ? n - 1 - k : k];
    if (swaps_bytes(order)) w = swap_bytes(w);
    raw = (raw << 16) | w;
  }
  return raw;
}

Value scaled_integer(std::int64_t v, const Field& f) {
  if (f.scale == 1.0 && f.offset == 0.0) return v;
  return static_cast<double>(v) * f.scale + f.offset;
}

Value scaled_unsigned(std::uint64_t v, const Field& f) {
  if (f.scale == 1.0 && f.offset == 0.0) return v;
  return static_cast<double>(v) * f.scale + f.offset;
}

}  // namespace

std::optional<Value> decode_registers(const Field& field, std::span<const std::uint16_t> words) {
  if (words.size() != width_of(field)) return std::nullopt;
  if (field.type == DataType::string) {
    std::string text;
    for (std::uint16_t w : words) {
      if (swaps_bytes(field.byte_order)) w = swap_bytes(w);
      text.push_back(static_cast<char>(w >> 8));
      text.push_back(static_cast<char>(w & 0xff));
    }
    while (!text.empty() && (text.back() == '\0' || text.back() == ' ')) text.pop_back();
    for (char& c : text) {
      if (c < 0x20 || c > 0x7e) c = '?';
    }
    return text;
  }
  const std::uint64_t raw = compose(words, field.byte_order);
  switch (field.type) {
    case DataType::int16: return scaled_integer(static_cast<std::int16_t>(raw), field);
    case DataType::uint16: return scaled_unsigned(raw, field);
    case DataType::int32: return scaled_integer(static_cast<std::int32_t>(raw), field);
    case DataType::uint32: return scaled_unsigned(raw, field);
    case DataType::int64: return scaled_integer(static_cast<std::int64_t>(raw), field);
    case DataType::uint64: return scaled_unsigned(raw, field);
    case DataType::float32:
    case DataType::float64: {
      const double v = field.type == DataType::float32
                           ? static_cast<double>(std::bit_cast<float>(static_cast<std::uint32_t>(raw)))
                           : std::bit_cast<double>(raw);
      const double scaled = v * field.scale + field.offset;
      if (!std::isfinite(scaled)) return std::nullopt;
      return scaled;
    }
    case DataType::boolean: return raw != 0;
    case DataType::string: break;
  }
  return std::nullopt;
}

Value decode_bit(std::uint8_t bit) { return bit != 0; }

std::string_view name_of(Table table) {
  switch (table) {
    case Table::holding_register: return "holding register";
    case Table::input_register: return "input register";
    case Table::coil: return "coil";
    case Table::discrete_input: return "discrete input";
  }
  return "?";
}

std::string_view name_of(DataType type) {
  switch (type) {
    case DataType::int16: return "int16";
    case DataType::uint16: return "uint16";
    case DataType::int32: return "int32";
    case DataType::uint32: return "uint32";
    case DataType::int64: return "int64";
    case DataType::uint64: return "uint64";
    case DataType::float32: return "float32";
    case DataType::float64: return "float64";
    case DataType::boolean: return "bool";
    case DataType::string: return "string";
  }
  return "?";
}

}  // namespace tank::modbus
