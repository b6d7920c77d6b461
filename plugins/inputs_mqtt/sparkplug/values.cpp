// The reading of Sparkplug B values by data type (payload.hpp, Metric::value), and the packing of
// the array types: Sparkplug 3.0 section 6.4.17, checked against Eclipse Tahu's Java encoder
// (SparkplugBPayloadEncoder: ByteBuffer little-endian; BooleanArray's bits `128 >> bit`, so the
// first element is the most significant bit; StringArray each string followed by a NUL).

#include "values.hpp"

#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include <boost/json/array.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>
#include <fmt/format.h>

#include "common/strings.hpp"
#include "payload.hpp"

namespace tank::sparkplug {

namespace {

constexpr std::array<std::string_view, 35> kTypeNames = {
    "Unknown",     "Int8",         "Int16",       "Int32",        "Int64",         "UInt8",         "UInt16",
    "UInt32",      "UInt64",       "Float",       "Double",       "Boolean",       "String",        "DateTime",
    "Text",        "UUID",         "DataSet",     "Bytes",        "File",          "Template",      "PropertySet",
    "PropertySetList", "Int8Array", "Int16Array", "Int32Array",   "Int64Array",    "UInt8Array",    "UInt16Array",
    "UInt32Array", "UInt64Array",  "FloatArray",  "DoubleArray",  "BooleanArray",  "StringArray",   "DateTimeArray",
};

}  // namespace

std::string_view to_string(DataType type) {
  const auto n = static_cast<std::uint32_t>(type);
  return n < kTypeNames.size() ? kTypeNames[n] : kTypeNames[0];
}

bool is_known(std::uint32_t number) { return number >= 1 && number < kTypeNames.size(); }

namespace detail {
namespace {

using boost::json::value;

std::string_view type_name(std::uint32_t datatype) { return to_string(static_cast<DataType>(datatype)); }

// The names of the fields set in `set`, e.g. "int_value and string_value".
std::string field_names(unsigned set) {
  static constexpr std::array<std::string_view, 11> kNames = {
      "int_value",     "long_value",   "float_value",    "double_value",      "boolean_value",     "string_value",
      "bytes_value",   "dataset_value", "template_value", "propertyset_value", "propertysets_value"};
  std::string out;
  for (std::size_t i = 0; i < kNames.size(); ++i) {
    if ((set & (1u << i)) == 0) continue;
    if (!out.empty()) out += (set >> (i + 1)) == 0 ? " and " : ", ";
    out += kNames[i];
  }
  return out;
}

// A float or double as JSON: a number; NaN and the infinities as the strings JavaScript writes.
value json_number(double d) {
  if (std::isnan(d)) return value("NaN");
  if (std::isinf(d)) return value(d > 0 ? "Infinity" : "-Infinity");
  return value(d);
}

std::uint64_t load_le(const unsigned char* p, std::size_t width) {
  std::uint64_t v = 0;
  for (std::size_t i = width; i-- > 0;) v = (v << 8) | p[i];
  return v;
}

// An integer type's value from the low bits of `raw`: signed two's complement or unsigned.
value integer(DataType type, std::uint64_t raw) {
  switch (type) {
    case DataType::int8: return value(std::int64_t{static_cast<std::int8_t>(static_cast<std::uint8_t>(raw))});
    case DataType::int16: return value(std::int64_t{static_cast<std::int16_t>(static_cast<std::uint16_t>(raw))});
    case DataType::int32: return value(std::int64_t{static_cast<std::int32_t>(static_cast<std::uint32_t>(raw))});
    case DataType::int64: return value(static_cast<std::int64_t>(raw));
    case DataType::uint8: return value(std::uint64_t{static_cast<std::uint8_t>(raw)});
    case DataType::uint16: return value(std::uint64_t{static_cast<std::uint16_t>(raw)});
    case DataType::uint32: return value(std::uint64_t{static_cast<std::uint32_t>(raw)});
    default: return value(raw);  // UInt64, DateTime
  }
}

// An array type's bytes_value as a JSON array, or the reason it cannot be one.
std::string read_array(DataType type, std::string_view bytes, value& out) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t n = bytes.size();
  boost::json::array a;
  auto fixed = [&](std::size_t width, auto element) -> std::string {
    if (n % width != 0) {
      return fmt::format("a {} of {} bytes: not a multiple of its {}-byte elements", to_string(type), n, width);
    }
    a.reserve(n / width);
    for (std::size_t i = 0; i < n; i += width) a.push_back(element(load_le(p + i, width)));
    return {};
  };
  auto as = [](DataType element_type) { return [element_type](std::uint64_t raw) { return integer(element_type, raw); }; };
  std::string error;
  switch (type) {
    case DataType::int8_array: error = fixed(1, as(DataType::int8)); break;
    case DataType::int16_array: error = fixed(2, as(DataType::int16)); break;
    case DataType::int32_array: error = fixed(4, as(DataType::int32)); break;
    case DataType::int64_array: error = fixed(8, as(DataType::int64)); break;
    case DataType::uint8_array: error = fixed(1, as(DataType::uint8)); break;
    case DataType::uint16_array: error = fixed(2, as(DataType::uint16)); break;
    case DataType::uint32_array: error = fixed(4, as(DataType::uint32)); break;
    case DataType::uint64_array: error = fixed(8, as(DataType::uint64)); break;
    case DataType::datetime_array: error = fixed(8, as(DataType::datetime)); break;
    case DataType::float_array:
      error = fixed(4, [](std::uint64_t raw) {
        return json_number(std::bit_cast<float>(static_cast<std::uint32_t>(raw)));
      });
      break;
    case DataType::double_array:
      error = fixed(8, [](std::uint64_t raw) { return json_number(std::bit_cast<double>(raw)); });
      break;
    case DataType::boolean_array: {
      // A 4-byte little-endian count, then the bits, most significant first, the last byte padded.
      // No bytes at all is read as an empty array too.
      if (n == 0) break;
      if (n < 4) return fmt::format("a BooleanArray of {} bytes: shorter than its 4-byte count", n);
      const std::uint64_t count = load_le(p, 4);
      if ((count + 7) / 8 != n - 4) {
        return fmt::format("a BooleanArray of {} elements needs {} bytes after its count, not {}", count,
                           (count + 7) / 8, n - 4);
      }
      a.reserve(count);
      for (std::uint64_t i = 0; i < count; ++i) a.push_back(value((p[4 + i / 8] & (0x80u >> (i % 8))) != 0));
      break;
    }
    case DataType::string_array: {
      // Each string followed by a NUL.
      std::size_t start = 0;
      while (start < n) {
        const std::size_t end = bytes.find('\0', start);
        if (end == std::string_view::npos) {
          return fmt::format("a StringArray whose last string (from byte {}) has no terminating NUL", start);
        }
        a.push_back(value(utf8_or_replaced(bytes.substr(start, end - start))));
        start = end + 1;
      }
      break;
    }
    default: return fmt::format("{} is not an array type", to_string(type));
  }
  if (!error.empty()) return error;
  out = std::move(a);
  return {};
}

}  // namespace

std::string utf8_or_replaced(std::string_view bytes) {
  std::string out;
  std::optional<std::size_t> bad = strings::invalid_utf8_at(bytes);
  if (!bad) return std::string(bytes);
  out.reserve(bytes.size() + 8);
  while (bad) {
    out.append(bytes.substr(0, *bad));
    out.append("\xEF\xBF\xBD");  // U+FFFD
    bytes.remove_prefix(*bad + 1);
    bad = strings::invalid_utf8_at(bytes);
  }
  out.append(bytes);
  return out;
}

std::string read_value(std::optional<std::uint32_t> datatype, const ValueFields& fields, value& out) {
  out = nullptr;
  if (datatype && !is_known(*datatype)) {
    return fmt::format("datatype {} is not a Sparkplug data type", *datatype);
  }
  if (fields.set == 0) return {};
  if ((fields.set & (fields.set - 1)) != 0) {
    return fmt::format("{} are all set: a value has one field", field_names(fields.set));
  }
  const unsigned set = fields.set;
  auto nested = [&]() -> std::string {
    if (!fields.nested_error.empty()) return fields.nested_error;
    out = fields.nested;
    return {};
  };
  if (!datatype) {
    // A data message may leave the type out (the birth gave it): read the field as it is.
    switch (set) {
      case kIntValue: out = value(std::uint64_t{fields.int_value}); return {};
      case kLongValue: out = value(fields.long_value); return {};
      case kFloatValue: out = json_number(fields.float_value); return {};
      case kDoubleValue: out = json_number(fields.double_value); return {};
      case kBooleanValue: out = value(fields.boolean_value); return {};
      case kStringValue: out = value(utf8_or_replaced(fields.string_value)); return {};
      case kBytesValue: out = value(strings::base64(fields.bytes_value)); return {};
      default: return nested();
    }
  }
  const auto type = static_cast<DataType>(*datatype);
  auto needs = [&](std::string_view what) {
    return fmt::format("a {} value is read from {}, but {} was set", type_name(*datatype), what, field_names(set));
  };
  switch (type) {
    case DataType::int8:
    case DataType::int16:
    case DataType::int32:
    case DataType::int64:
    case DataType::uint8:
    case DataType::uint16:
    case DataType::uint32:
    case DataType::uint64:
    case DataType::datetime:
      // Encoders differ (Tahu puts UInt32 in long_value, the specification says int_value): both
      // are read for every integer type.
      if (set == kIntValue) out = integer(type, fields.int_value);
      else if (set == kLongValue) out = integer(type, fields.long_value);
      else return needs("int_value or long_value");
      return {};
    case DataType::float32:
      if (set != kFloatValue) return needs("float_value");
      out = json_number(fields.float_value);
      return {};
    case DataType::float64:
      if (set != kDoubleValue) return needs("double_value");
      out = json_number(fields.double_value);
      return {};
    case DataType::boolean:
      if (set != kBooleanValue) return needs("boolean_value");
      out = value(fields.boolean_value);
      return {};
    case DataType::string:
    case DataType::text:
    case DataType::uuid:
      if (set != kStringValue) return needs("string_value");
      out = value(utf8_or_replaced(fields.string_value));
      return {};
    case DataType::bytes:
    case DataType::file:
      if (set != kBytesValue) return needs("bytes_value");
      out = value(strings::base64(fields.bytes_value));
      return {};
    case DataType::dataset: return set == kDatasetValue ? nested() : needs("dataset_value");
    case DataType::template_: return set == kTemplateValue ? nested() : needs("template_value");
    case DataType::property_set: return set == kPropertysetValue ? nested() : needs("propertyset_value");
    case DataType::property_set_list: return set == kPropertysetsValue ? nested() : needs("propertysets_value");
    case DataType::int8_array:
    case DataType::int16_array:
    case DataType::int32_array:
    case DataType::int64_array:
    case DataType::uint8_array:
    case DataType::uint16_array:
    case DataType::uint32_array:
    case DataType::uint64_array:
    case DataType::float_array:
    case DataType::double_array:
    case DataType::boolean_array:
    case DataType::string_array:
    case DataType::datetime_array:
      if (set != kBytesValue) return needs("bytes_value");
      return read_array(type, fields.bytes_value, out);
    case DataType::unknown: break;
  }
  return fmt::format("datatype {} is not a Sparkplug data type", *datatype);
}

// An integer element of type `type`, as its low bits (two's complement for the signed types);
// throws when the JSON value is not an integer in the type's range.
std::uint64_t integer_bits(DataType type, const value& v) {
  std::int64_t min = 0;
  std::uint64_t max = 0;
  switch (type) {
    case DataType::int8: min = INT8_MIN, max = INT8_MAX; break;
    case DataType::int16: min = INT16_MIN, max = INT16_MAX; break;
    case DataType::int32: min = INT32_MIN, max = INT32_MAX; break;
    case DataType::int64: min = INT64_MIN, max = INT64_MAX; break;
    case DataType::uint8: max = UINT8_MAX; break;
    case DataType::uint16: max = UINT16_MAX; break;
    case DataType::uint32: max = UINT32_MAX; break;
    default: max = UINT64_MAX; break;  // UInt64, DateTime
  }
  if (v.is_int64() && v.get_int64() >= min && (v.get_int64() < 0 || static_cast<std::uint64_t>(v.get_int64()) <= max)) {
    return static_cast<std::uint64_t>(v.get_int64());
  }
  if (v.is_uint64() && v.get_uint64() <= max) return v.get_uint64();
  throw std::invalid_argument(fmt::format("{} is not a {} value", boost::json::serialize(v), to_string(type)));
}

double float_of(DataType type, const value& v) {
  if (v.is_number()) {
    const double d = v.to_number<double>();
    if (type == DataType::float32 && std::isfinite(d) && std::fabs(d) > std::numeric_limits<float>::max()) {
      throw std::invalid_argument(fmt::format("{} is out of a Float's range", boost::json::serialize(v)));
    }
    return d;
  }
  if (v.is_string()) {
    if (v.get_string() == "NaN") return std::numeric_limits<double>::quiet_NaN();
    if (v.get_string() == "Infinity") return std::numeric_limits<double>::infinity();
    if (v.get_string() == "-Infinity") return -std::numeric_limits<double>::infinity();
  }
  throw std::invalid_argument(fmt::format("{} is not a {} value", boost::json::serialize(v), to_string(type)));
}

namespace {

void store_le(std::string& out, std::uint64_t v, std::size_t width) {
  for (std::size_t i = 0; i < width; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

}  // namespace

std::string pack_array(std::uint32_t datatype, const value& array) {
  const auto type = static_cast<DataType>(datatype);
  if (!array.is_array()) {
    throw std::invalid_argument(fmt::format("a {} value is a JSON array, not {}", to_string(type), boost::json::serialize(array)));
  }
  const boost::json::array& a = array.get_array();
  std::string out;
  auto each_integer = [&](DataType element_type, std::size_t width) {
    for (const value& v : a) store_le(out, integer_bits(element_type, v), width);
  };
  switch (type) {
    case DataType::int8_array: each_integer(DataType::int8, 1); break;
    case DataType::int16_array: each_integer(DataType::int16, 2); break;
    case DataType::int32_array: each_integer(DataType::int32, 4); break;
    case DataType::int64_array: each_integer(DataType::int64, 8); break;
    case DataType::uint8_array: each_integer(DataType::uint8, 1); break;
    case DataType::uint16_array: each_integer(DataType::uint16, 2); break;
    case DataType::uint32_array: each_integer(DataType::uint32, 4); break;
    case DataType::uint64_array: each_integer(DataType::uint64, 8); break;
    case DataType::datetime_array: each_integer(DataType::datetime, 8); break;
    case DataType::float_array:
      for (const value& v : a) {
        store_le(out, std::bit_cast<std::uint32_t>(static_cast<float>(float_of(DataType::float32, v))), 4);
      }
      break;
    case DataType::double_array:
      for (const value& v : a) store_le(out, std::bit_cast<std::uint64_t>(float_of(DataType::float64, v)), 8);
      break;
    case DataType::boolean_array: {
      if (a.size() > UINT32_MAX) throw std::invalid_argument("a BooleanArray has at most 2^32 - 1 elements");
      store_le(out, a.size(), 4);
      out.resize(4 + (a.size() + 7) / 8, '\0');
      for (std::size_t i = 0; i < a.size(); ++i) {
        if (!a[i].is_bool()) {
          throw std::invalid_argument(fmt::format("{} is not a Boolean value", boost::json::serialize(a[i])));
        }
        if (a[i].get_bool()) out[4 + i / 8] = static_cast<char>(out[4 + i / 8] | (0x80 >> (i % 8)));
      }
      break;
    }
    case DataType::string_array:
      for (const value& v : a) {
        if (!v.is_string() || v.get_string().find('\0') != boost::json::string::npos) {
          throw std::invalid_argument(fmt::format("{} is not a StringArray element (a string without NUL)",
                                                  boost::json::serialize(v)));
        }
        out.append(v.get_string().data(), v.get_string().size());
        out.push_back('\0');
      }
      break;
    default: throw std::invalid_argument(fmt::format("{} is not an array type", to_string(type)));
  }
  return out;
}

std::optional<std::string> from_base64(std::string_view text) {
  auto sextet = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    const int pad = last ? (text[i + 3] == '=') + (text[i + 2] == '=' && text[i + 3] == '=') : 0;
    std::uint32_t group = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      const int s = k >= 4 - static_cast<std::size_t>(pad) ? 0 : sextet(text[i + k]);
      if (s < 0) return std::nullopt;
      group = (group << 6) | static_cast<std::uint32_t>(s);
    }
    out.push_back(static_cast<char>(group >> 16));
    if (pad < 2) out.push_back(static_cast<char>((group >> 8) & 0xFF));
    if (pad < 1) out.push_back(static_cast<char>(group & 0xFF));
  }
  return out;
}

}  // namespace detail
}  // namespace tank::sparkplug
