#pragma once

// What payload_decode.cpp and payload_encode.cpp share (internal to the Sparkplug codec): the value
// fields of one Metric, PropertyValue, Template.Parameter or DataSetValue as they were sent, their
// reading as JSON by data type (payload.hpp says how each type reads), and the packing of the
// array types (Sparkplug 3.0 section 6.4.17).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <boost/json/value.hpp>

#include "payload.hpp"

namespace tank::sparkplug::detail {

// The value fields of sparkplug_b.proto's oneofs, one bit each in ValueFields::set.
enum ValueField : unsigned {
  kIntValue = 1u << 0,
  kLongValue = 1u << 1,
  kFloatValue = 1u << 2,
  kDoubleValue = 1u << 3,
  kBooleanValue = 1u << 4,
  kStringValue = 1u << 5,
  kBytesValue = 1u << 6,
  kDatasetValue = 1u << 7,
  kTemplateValue = 1u << 8,
  kPropertysetValue = 1u << 9,
  kPropertysetsValue = 1u << 10,
};

// The value fields of one message, as sent. A oneof holds one field; a message that sets more
// (possible on the wire) is a value error, not a guess at which was meant.
struct ValueFields {
  unsigned set = 0;  // ValueField bits
  std::uint32_t int_value = 0;
  std::uint64_t long_value = 0;
  float float_value = 0;
  double double_value = 0;
  bool boolean_value = false;
  std::string string_value;  // as sent: not yet checked for UTF-8
  std::string bytes_value;
  // A DataSet, Template, PropertySet or PropertySetList, already read into JSON; or, when it
  // could not be read, why (its value error).
  boost::json::value nested;
  std::string nested_error;

  // Copies the scalar value fields a nanopb struct of the four messages has (has_int_value, ...).
  template <class Message>
  void take_scalars(const Message& m) {
    if (m.has_int_value) set |= kIntValue, int_value = m.int_value;
    if (m.has_long_value) set |= kLongValue, long_value = m.long_value;
    if (m.has_float_value) set |= kFloatValue, float_value = m.float_value;
    if (m.has_double_value) set |= kDoubleValue, double_value = m.double_value;
    if (m.has_boolean_value) set |= kBooleanValue, boolean_value = m.boolean_value;
  }
};

// Reads `fields` as a value of `datatype` (absent: by the one field that was set), as payload.hpp's
// Metric::value says. Returns the value error ("" when there is none); `out` is null then, and
// when no value field was set.
std::string read_value(std::optional<std::uint32_t> datatype, const ValueFields& fields, boost::json::value& out);

// `bytes` as a JSON string: UTF-8 kept, each byte that is not part of valid UTF-8 replaced by U+FFFD.
std::string utf8_or_replaced(std::string_view bytes);

// The low bits of an integer value of `type` (Int8..UInt64, DateTime): two's complement for the
// signed types; throws std::invalid_argument when `v` is not an integer in the type's range.
std::uint64_t integer_bits(DataType type, const boost::json::value& v);

// A Float or Double value: a number, or "NaN", "Infinity", "-Infinity"; throws
// std::invalid_argument for anything else, and for a finite number out of a Float's range.
double float_of(DataType type, const boost::json::value& v);

// The bytes_value of an array type (22..34) holding `array`'s elements; throws
// std::invalid_argument when an element does not fit the type.
std::string pack_array(std::uint32_t datatype, const boost::json::value& array);

// RFC 4648 base64, padding required; nullopt when `text` is not base64.
std::optional<std::string> from_base64(std::string_view text);

}  // namespace tank::sparkplug::detail
