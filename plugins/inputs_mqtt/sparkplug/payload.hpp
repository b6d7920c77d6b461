#pragma once

// Sparkplug B payloads (Eclipse Sparkplug 3.0, chapter 6: the protobuf message
// org.eclipse.tahu.protobuf.Payload of sparkplug_b.proto), decoded with nanopb into what
// inputs.mqtt's `format = "sparkplug_b"` makes records of.
//
// Decoding is bounded: nanopb streams the repeated fields through callbacks, so a payload costs
// memory in proportion to its size (the metrics and their strings), never to counts it claims; a
// nesting deeper than kMaxDepth (Templates within Templates, PropertySets within PropertySets) is
// an error, not a stack overflow. Any byte string is safe to give to decode() (fuzzed:
// fuzz/sparkplug_fuzz.cpp).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/value.hpp>

namespace tank::sparkplug {

// The Sparkplug 3.0 data types (the DataType enum of sparkplug_b.proto), by their numbers.
enum class DataType : std::uint32_t {
  unknown = 0,
  int8 = 1, int16 = 2, int32 = 3, int64 = 4,
  uint8 = 5, uint16 = 6, uint32 = 7, uint64 = 8,
  float32 = 9, float64 = 10, boolean = 11, string = 12, datetime = 13, text = 14, uuid = 15,
  dataset = 16, bytes = 17, file = 18, template_ = 19,
  property_set = 20, property_set_list = 21,
  int8_array = 22, int16_array = 23, int32_array = 24, int64_array = 25,
  uint8_array = 26, uint16_array = 27, uint32_array = 28, uint64_array = 29,
  float_array = 30, double_array = 31, boolean_array = 32, string_array = 33, datetime_array = 34,
};

// The name the specification gives a type: "Int8", "UInt32", "Float", "Double", "Boolean",
// "String", "DateTime", "DataSet", "Template", "Int8Array", ... ; "Unknown" for 0 and for a
// number the specification does not define.
std::string_view to_string(DataType type);
// Whether `number` is a data type of the specification (0 excluded).
bool is_known(std::uint32_t number);

// One metric of a payload.
struct Metric {
  std::optional<std::string> name;    // absent in NDATA/DDATA that use an alias
  std::optional<std::uint64_t> alias;
  std::optional<std::uint64_t> timestamp_ms;  // the metric's own (ms since the Unix epoch, UTC)
  std::optional<std::uint32_t> datatype;      // as sent; absent is allowed in data messages
  bool is_historical = false;
  bool is_transient = false;
  bool is_null = false;
  // The value, as JSON, interpreted by `datatype` (or, when that is absent, by the value field
  // that was set: int_value as a uint32, long_value as a uint64, ...):
  //   Int8..Int64: a signed number; the value field's low 8/16/32/64 bits, two's complement, from
  //     int_value or long_value (encoders differ: either is accepted for every integer type,
  //     e.g. the Tahu JS 1.0.3 encoder puts UInt32 in long_value);
  //   UInt8..UInt64: an unsigned number, likewise; DateTime: ms since the epoch, a number;
  //   Float, Double: a number (NaN and infinities: the strings "NaN", "Infinity", "-Infinity");
  //   Boolean: true/false; String, Text, UUID: a string (invalid UTF-8 replaced by U+FFFD);
  //   Bytes, File: base64 (RFC 4648) of the bytes in a string;
  //   arrays (Int8Array..DateTimeArray, Sparkplug 3.0 section 6.4.17: little-endian, packed,
  //     BooleanArray a 4-byte count and then bits MSB first (no bytes at all: empty), StringArray
  //     NUL-terminated strings): a JSON array of the element values as above;
  //   DataSet: {"columns": [...], "types": ["Int32", ...], "rows": [[...], ...]};
  //   Template: {"version", "template_ref", "is_definition", "metrics": [metric objects as
  //     to_json(Metric) gives], "parameters": [{"name", "type", "value"}]};
  //   PropertySet / PropertySetList: {"key": value, ...} / [ {...}, ... ];
  //   null when is_null, or when no value field was set.
  // `value_error` says why the value could not be read (an array whose length is not a multiple
  // of its element size, a value field that does not fit the data type: a string in an Int32,
  // a datatype the specification does not define, more than one value field set, a property or a
  // Template or DataSet member that cannot be read); the value is then null. The caller
  // dead-letters such a metric with reason `sparkplug_bad_value`.
  boost::json::value value;
  std::string value_error;
  // The metric's properties (PropertySet), as a JSON object; null when it had none.
  boost::json::value properties;
};

struct Payload {
  std::optional<std::uint64_t> timestamp_ms;
  std::optional<std::uint64_t> seq;
  std::vector<Metric> metrics;
  std::optional<std::string> uuid;
  std::optional<std::string> body;  // bytes, kept as they are
};

inline constexpr int kMaxDepth = 16;

// Decodes one payload. Returns nullopt and sets `error` (a sentence saying what is wrong and
// where, metrics counted from 0, e.g. "metric 3: invalid wire type for field 15 (at byte 112 of
// 240)") when `bytes` is not a well-formed Payload message, or nests deeper than kMaxDepth. A value
// that cannot be interpreted does not fail the payload: it fails only its metric
// (Metric::value_error).
std::optional<Payload> decode(std::string_view bytes, std::string& error);

// A metric as a JSON object {"name", "alias", "timestamp", "datatype" (the type's name),
// "value", "is_null", "is_historical", "is_transient", "properties"}: members that are absent in
// the metric are left out. Used for metrics inside Templates.
boost::json::object to_json(const Metric& metric);

// Encodes a payload (the inverse of decode for the scalar and array types): for tank's own NCMD
// ("Node Control/Rebirth") and for tests. `metrics[i].value` must match its datatype as above
// (integers within the type's range); throws std::invalid_argument when it does not, for a value
// without a datatype, for properties, and for DataSet, Template, PropertySet and PropertySetList
// values (tank never sends those). Integer types go where the specification puts them: Int8..Int32
// and UInt8..UInt32 in int_value (signed ones as 32-bit two's complement), Int64, UInt64 and
// DateTime in long_value.
std::string encode(const Payload& payload);

}  // namespace tank::sparkplug
