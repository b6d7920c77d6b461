// encode(): a Payload through nanopb, for tank's own NCMD and for tests. Each metric is first made
// into a nanopb struct with the bytes its callbacks write (so every value is checked, and can throw,
// before a byte is written), then the payload is encoded in one pass.
//
// Where a value goes follows the specification (Sparkplug 3.0 section 6.4.16): Int8..Int32, UInt8..
// UInt32 in int_value (the signed ones as 32-bit two's complement, as Tahu's Java encoder writes a
// Java int), Int64, UInt64 and DateTime in long_value. (Tahu's encoders put UInt32 in long_value;
// decode() reads either.)

#include <stdexcept>
#include <vector>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>
#include <pb_encode.h>

#include "payload.hpp"
#include "sparkplug_b.pb.h"
#include "values.hpp"

namespace tank::sparkplug {
namespace {

namespace json = boost::json;
using PbPayload = org_eclipse_tahu_protobuf_Payload;
using PbMetric = org_eclipse_tahu_protobuf_Payload_Metric;

struct EncodedMetric {
  PbMetric message = org_eclipse_tahu_protobuf_Payload_Metric_init_zero;
  std::optional<std::string> name;
  std::optional<std::string> string_value;
  std::optional<std::string> bytes_value;
};

bool encode_bytes(pb_ostream_t* stream, const pb_field_t* field, void* const* arg) {
  const auto& s = *static_cast<const std::string*>(*arg);
  return pb_encode_tag_for_field(stream, field) &&
         pb_encode_string(stream, reinterpret_cast<const pb_byte_t*>(s.data()), s.size());
}

bool encode_metrics(pb_ostream_t* stream, const pb_field_t* field, void* const* arg) {
  for (const EncodedMetric& m : *static_cast<const std::vector<EncodedMetric>*>(*arg)) {
    if (!pb_encode_tag_for_field(stream, field) ||
        !pb_encode_submessage(stream, org_eclipse_tahu_protobuf_Payload_Metric_fields, &m.message)) {
      return false;
    }
  }
  return true;
}

pb_callback_t bytes_callback(const std::optional<std::string>& s) {
  pb_callback_t c{};
  if (s) {
    c.funcs.encode = &encode_bytes;
    c.arg = const_cast<std::string*>(&*s);
  }
  return c;
}

bool write_string(pb_ostream_t* stream, const pb_byte_t* buf, std::size_t count) {
  static_cast<std::string*>(stream->state)->append(reinterpret_cast<const char*>(buf), count);
  return true;
}

// Sets the value fields of `m` from `value`, a value of `datatype` as decode() gives it.
void set_value(EncodedMetric& m, std::uint32_t datatype, const json::value& value) {
  const auto type = static_cast<DataType>(datatype);
  PbMetric& pb = m.message;
  auto wrong = [&](std::string_view what) {
    return std::invalid_argument(fmt::format("a {} value is {}, not {}", to_string(type), what, json::serialize(value)));
  };
  switch (type) {
    case DataType::int8:
    case DataType::int16:
    case DataType::int32:
    case DataType::uint8:
    case DataType::uint16:
    case DataType::uint32:
      pb.has_int_value = true;
      pb.int_value = static_cast<std::uint32_t>(detail::integer_bits(type, value));
      return;
    case DataType::int64:
    case DataType::uint64:
    case DataType::datetime:
      pb.has_long_value = true;
      pb.long_value = detail::integer_bits(type, value);
      return;
    case DataType::float32:
      pb.has_float_value = true;
      pb.float_value = static_cast<float>(detail::float_of(type, value));
      return;
    case DataType::float64:
      pb.has_double_value = true;
      pb.double_value = detail::float_of(type, value);
      return;
    case DataType::boolean:
      if (!value.is_bool()) throw wrong("true or false");
      pb.has_boolean_value = true;
      pb.boolean_value = value.get_bool();
      return;
    case DataType::string:
    case DataType::text:
    case DataType::uuid:
      if (!value.is_string()) throw wrong("a string");
      m.string_value.emplace(value.get_string().data(), value.get_string().size());
      return;
    case DataType::bytes:
    case DataType::file: {
      std::optional<std::string> bytes;
      if (value.is_string()) bytes = detail::from_base64(value.get_string());
      if (!bytes) throw wrong("base64 in a string");
      m.bytes_value = std::move(bytes);
      return;
    }
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
      m.bytes_value = detail::pack_array(datatype, value);
      return;
    case DataType::dataset:
    case DataType::template_:
    case DataType::property_set:
    case DataType::property_set_list:
      throw std::invalid_argument(fmt::format("encode() does not write {} values", to_string(type)));
    case DataType::unknown: break;
  }
  throw std::invalid_argument(fmt::format("datatype {} is not a Sparkplug data type", datatype));
}

EncodedMetric prepare(const Metric& metric) {
  EncodedMetric m;
  PbMetric& pb = m.message;
  m.name = metric.name;
  pb.has_alias = metric.alias.has_value();
  pb.alias = metric.alias.value_or(0);
  pb.has_timestamp = metric.timestamp_ms.has_value();
  pb.timestamp = metric.timestamp_ms.value_or(0);
  pb.has_datatype = metric.datatype.has_value();
  pb.datatype = metric.datatype.value_or(0);
  // The flags only when true: absent reads as false.
  pb.has_is_historical = pb.is_historical = metric.is_historical;
  pb.has_is_transient = pb.is_transient = metric.is_transient;
  pb.has_is_null = pb.is_null = metric.is_null;
  if (!metric.properties.is_null()) throw std::invalid_argument("encode() does not write properties");
  if (!metric.is_null && !metric.value.is_null()) {
    if (!metric.datatype) throw std::invalid_argument("a metric with a value needs its datatype");
    set_value(m, *metric.datatype, metric.value);
  }
  return m;
}

}  // namespace

std::string encode(const Payload& payload) {
  std::vector<EncodedMetric> metrics;
  metrics.reserve(payload.metrics.size());
  for (std::size_t i = 0; i < payload.metrics.size(); ++i) {
    try {
      metrics.push_back(prepare(payload.metrics[i]));
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(fmt::format("metric {}: {}", i, e.what()));
    }
  }
  // The callbacks point into `metrics`, which no longer moves.
  for (EncodedMetric& m : metrics) {
    m.message.name = bytes_callback(m.name);
    m.message.string_value = bytes_callback(m.string_value);
    m.message.bytes_value = bytes_callback(m.bytes_value);
  }
  PbPayload message = org_eclipse_tahu_protobuf_Payload_init_zero;
  message.has_timestamp = payload.timestamp_ms.has_value();
  message.timestamp = payload.timestamp_ms.value_or(0);
  message.has_seq = payload.seq.has_value();
  message.seq = payload.seq.value_or(0);
  message.uuid = bytes_callback(payload.uuid);
  message.body = bytes_callback(payload.body);
  if (!metrics.empty()) {
    message.metrics.funcs.encode = &encode_metrics;
    message.metrics.arg = &metrics;
  }
  std::string out;
  pb_ostream_t stream{};
  stream.callback = &write_string;
  stream.state = &out;
  stream.max_size = SIZE_MAX;
  if (!pb_encode(&stream, org_eclipse_tahu_protobuf_Payload_fields, &message)) {
    // Only a bug can get here: every value was checked above.
    throw std::logic_error(fmt::format("Sparkplug payload encoding failed: {}", PB_GET_ERROR(&stream)));
  }
  return out;
}

}  // namespace tank::sparkplug
