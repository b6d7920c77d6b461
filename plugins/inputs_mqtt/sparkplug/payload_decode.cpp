// decode(): a Sparkplug B payload through nanopb (sparkplug_b.proto, sparkplug_b.options).
//
// Every string, bytes, repeated and nested field is a nanopb callback (pb_callback_t) that reads the
// field's bytes into tank's own objects as nanopb meets it: nothing is allocated but what the
// bytes hold, and a nested message is decoded from a substream bounded by its length. Each
// message's value is read (values.hpp) when the message is complete, since protobuf fields may come
// in any order (the datatype after the value). The depth of Templates and PropertySets is counted
// and bounded by kMaxDepth, which bounds the recursion, and with it the stack.

#include <cstring>
#include <utility>
#include <vector>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <fmt/format.h>
#include <pb_decode.h>

#include "payload.hpp"
#include "sparkplug_b.pb.h"
#include "values.hpp"

namespace tank::sparkplug {
namespace {

namespace json = boost::json;
using detail::ValueFields;

using PbPayload = org_eclipse_tahu_protobuf_Payload;
using PbMetric = org_eclipse_tahu_protobuf_Payload_Metric;
using PbTemplate = org_eclipse_tahu_protobuf_Payload_Template;
using PbParameter = org_eclipse_tahu_protobuf_Payload_Template_Parameter;
using PbDataSet = org_eclipse_tahu_protobuf_Payload_DataSet;
using PbRow = org_eclipse_tahu_protobuf_Payload_DataSet_Row;
using PbDataSetValue = org_eclipse_tahu_protobuf_Payload_DataSet_DataSetValue;
using PbPropertyValue = org_eclipse_tahu_protobuf_Payload_PropertyValue;
using PbPropertySet = org_eclipse_tahu_protobuf_Payload_PropertySet;
using PbPropertySetList = org_eclipse_tahu_protobuf_Payload_PropertySetList;

// The input, read by nanopb through read_input(). A length-delimited field's substream reads
// through it too, while a callback field sent with another wire type is handed to its callback in
// a stream of nanopb's own (pb_decode.c, decode_callback_field): so a callback knows whether its
// field came length-delimited by the stream's read function.
struct Input {
  const char* data;
  std::size_t size;
  std::size_t pos = 0;
};

bool read_input(pb_istream_t* stream, pb_byte_t* buf, std::size_t count) {
  auto* in = static_cast<Input*>(stream->state);
  if (count > in->size - in->pos) return false;
  std::memcpy(buf, in->data + in->pos, count);
  in->pos += count;
  return true;
}

// The state of one decode(): the nesting depth and the first error with where it happened.
class Decoder {
 public:
  // Records a failure at this level (the first one only) and returns false for nanopb.
  bool fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }

  // Whether the field whose callback reads `stream` came length-delimited; records the error if not.
  bool length_delimited(const pb_istream_t* stream, const pb_field_t* field) {
    if (stream->callback == &read_input) return true;
    return fail(fmt::format("invalid wire type for field {}", field->tag));
  }

  // Decodes a nested message from `stream` (its field's bytes) into `message`, whose callbacks are
  // set; a failure inside it is prefixed with `where`. `recursive`: a Template or PropertySet,
  // counted against kMaxDepth.
  bool nested(pb_istream_t* stream, const pb_field_t* field, const pb_msgdesc_t* fields, void* message,
              std::string_view where, bool recursive) {
    if (!length_delimited(stream, field)) return false;
    if (recursive && depth_ == kMaxDepth) {
      return fail(fmt::format("{}: nested deeper than {} Templates and PropertySets", where, kMaxDepth));
    }
    depth_ += recursive ? 1 : 0;
    const bool ok = pb_decode(stream, fields, message);
    depth_ -= recursive ? 1 : 0;
    if (!ok) {
      error_ = fmt::format("{}: {}", where, error_.empty() ? PB_GET_ERROR(stream) : error_);
    }
    return ok;
  }

  std::string take_error(const pb_istream_t* stream) {
    return error_.empty() ? std::string(PB_GET_ERROR(stream)) : std::move(error_);
  }

 private:
  int depth_ = 0;
  std::string error_;
};

// What a pb_callback_t's arg points to: the decoder and where the field goes.
template <class Out>
struct Sink {
  Decoder* decoder;
  Out* out;
};

template <class Out>
pb_callback_t callback(bool (*decode)(pb_istream_t*, const pb_field_t*, void**), Sink<Out>& sink) {
  pb_callback_t c;
  c.funcs.decode = decode;
  c.arg = &sink;
  return c;
}

template <class Out>
Sink<Out>& sink_of(void** arg) {
  return *static_cast<Sink<Out>*>(*arg);
}

bool read_bytes(pb_istream_t* stream, std::string& out) {
  out.resize(stream->bytes_left);
  return pb_read(stream, reinterpret_cast<pb_byte_t*>(out.data()), out.size());
}

// string or bytes, optional: the last one sent counts.
bool decode_optional_string(pb_istream_t* stream, const pb_field_t* field, void** arg) {
  auto& s = sink_of<std::optional<std::string>>(arg);
  if (!s.decoder->length_delimited(stream, field)) return false;
  return read_bytes(stream, s.out->emplace());
}

bool decode_repeated_string(pb_istream_t* stream, const pb_field_t* field, void** arg) {
  auto& s = sink_of<std::vector<std::string>>(arg);
  if (!s.decoder->length_delimited(stream, field)) return false;
  return read_bytes(stream, s.out->emplace_back());
}

// A value field's string_value or bytes_value.
template <unsigned kField>
bool decode_value_bytes(pb_istream_t* stream, const pb_field_t* field, void** arg) {
  auto& s = sink_of<ValueFields>(arg);
  if (!s.decoder->length_delimited(stream, field)) return false;
  s.out->set |= kField;
  return read_bytes(stream, kField == detail::kStringValue ? s.out->string_value : s.out->bytes_value);
}

// DataSet.types: repeated uint32, packed (one call per element) or not.
bool decode_types(pb_istream_t* stream, const pb_field_t*, void** arg) {
  auto& s = sink_of<std::vector<std::uint32_t>>(arg);
  std::uint32_t type = 0;
  if (!pb_decode_varint32(stream, &type)) return false;
  s.out->push_back(type);
  return true;
}

// --- PropertySet, PropertySetList -------------------------------------------------------------

// A PropertySet read: its JSON object, or why it cannot be one.
struct PropertySetRead {
  json::value value;
  std::string error;
};

bool decode_property_set(pb_istream_t* stream, const pb_field_t* field, void** arg);

bool decode_property_list(pb_istream_t* stream, const pb_field_t* field, void** arg) {
  auto& s = sink_of<ValueFields>(arg);
  std::vector<PropertySetRead> sets;
  PbPropertySetList message = org_eclipse_tahu_protobuf_Payload_PropertySetList_init_zero;
  Sink<std::vector<PropertySetRead>> sets_sink{s.decoder, &sets};
  message.propertyset = callback(+[](pb_istream_t* st, const pb_field_t* f, void** a) {
    auto& list = sink_of<std::vector<PropertySetRead>>(a);
    Sink<PropertySetRead> one{list.decoder, &list.out->emplace_back()};
    void* one_arg = &one;
    return decode_property_set(st, f, &one_arg);
  }, sets_sink);
  if (!s.decoder->nested(stream, field, org_eclipse_tahu_protobuf_Payload_PropertySetList_fields, &message,
                         "propertysets_value", false)) {
    return false;
  }
  s.out->set |= detail::kPropertysetsValue;
  json::array list;
  s.out->nested_error.clear();
  for (std::size_t i = 0; i < sets.size(); ++i) {
    if (!sets[i].error.empty()) {
      s.out->nested_error = fmt::format("property set {}: {}", i, sets[i].error);
      break;
    }
    list.push_back(std::move(sets[i].value));
  }
  s.out->nested = s.out->nested_error.empty() ? json::value(std::move(list)) : json::value(nullptr);
  return true;
}

bool decode_property_set_value(pb_istream_t* stream, const pb_field_t* field, void** arg) {
  auto& s = sink_of<ValueFields>(arg);
  PropertySetRead read;
  Sink<PropertySetRead> one{s.decoder, &read};
  void* one_arg = &one;
  if (!decode_property_set(stream, field, &one_arg)) return false;
  s.out->set |= detail::kPropertysetValue;
  s.out->nested = std::move(read.value);
  s.out->nested_error = std::move(read.error);
  return true;
}

bool decode_property_value(pb_istream_t* stream, const pb_field_t* field, void** arg) {
  auto& s = sink_of<std::vector<PropertySetRead>>(arg);
  ValueFields fields;
  Sink<ValueFields> fields_sink{s.decoder, &fields};
  PbPropertyValue message = org_eclipse_tahu_protobuf_Payload_PropertyValue_init_zero;
  message.string_value = callback(&decode_value_bytes<detail::kStringValue>, fields_sink);
  message.propertyset_value = callback(&decode_property_set_value, fields_sink);
  message.propertysets_value = callback(&decode_property_list, fields_sink);
  const std::string where = fmt::format("property value {}", s.out->size());
  if (!s.decoder->nested(stream, field, org_eclipse_tahu_protobuf_Payload_PropertyValue_fields, &message, where,
                         false)) {
    return false;
  }
  fields.take_scalars(message);
  PropertySetRead& read = s.out->emplace_back();
  const std::optional<std::uint32_t> type = message.has_type ? std::optional(message.type) : std::nullopt;
  read.error = detail::read_value(type, fields, read.value);
  if (message.has_is_null && message.is_null && read.error.empty()) read.value = nullptr;
  return true;
}

bool decode_property_set(pb_istream_t* stream, const pb_field_t* field, void** arg) {
  auto& s = sink_of<PropertySetRead>(arg);
  std::vector<std::string> keys;
  std::vector<PropertySetRead> values;
  Sink<std::vector<std::string>> keys_sink{s.decoder, &keys};
  Sink<std::vector<PropertySetRead>> values_sink{s.decoder, &values};
  PbPropertySet message = org_eclipse_tahu_protobuf_Payload_PropertySet_init_zero;
  message.keys = callback(&decode_repeated_string, keys_sink);
  message.values = callback(&decode_property_value, values_sink);
  if (!s.decoder->nested(stream, field, org_eclipse_tahu_protobuf_Payload_PropertySet_fields, &message,
                         "property set", true)) {
    return false;
  }
  if (keys.size() != values.size()) {
    s.out->error = fmt::format("a PropertySet of {} keys and {} values", keys.size(), values.size());
    return true;
  }
  json::object object;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    std::string key = detail::utf8_or_replaced(keys[i]);
    if (!values[i].error.empty()) {
      s.out->error = fmt::format("property \"{}\": {}", key, values[i].error);
      return true;
    }
    object[key] = std::move(values[i].value);
  }
  s.out->value = std::move(object);
  return true;
}

// --- DataSet ----------------------------------------------------------------------------------

using Rows = std::vector<std::vector<ValueFields>>;

bool decode_dataset_value(pb_istream_t* stream, const pb_field_t* field, void** arg) {
  auto& s = sink_of<std::vector<ValueFields>>(arg);
  ValueFields& fields = s.out->emplace_back();
  Sink<ValueFields> fields_sink{s.decoder, &fields};
  PbDataSetValue message = org_eclipse_tahu_protobuf_Payload_DataSet_DataSetValue_init_zero;
  message.string_value = callback(&decode_value_bytes<detail::kStringValue>, fields_sink);
  if (!s.decoder->nested(stream, field, org_eclipse_tahu_protobuf_Payload_DataSet_DataSetValue_fields, &message,
                         fmt::format("element {}", s.out->size() - 1), false)) {
    return false;
  }
  fields.take_scalars(message);
  return true;
}

bool decode_row(pb_istream_t* stream, const pb_field_t* field, void** arg) {
  auto& s = sink_of<Rows>(arg);
  Sink<std::vector<ValueFields>> row_sink{s.decoder, &s.out->emplace_back()};
  PbRow message = org_eclipse_tahu_protobuf_Payload_DataSet_Row_init_zero;
  message.elements = callback(&decode_dataset_value, row_sink);
  return s.decoder->nested(stream, field, org_eclipse_tahu_protobuf_Payload_DataSet_Row_fields, &message,
                           fmt::format("row {}", s.out->size() - 1), false);
}

// The DataSet's JSON, or why it cannot be read.
std::string read_dataset(std::optional<std::uint64_t> columns_claimed, const std::vector<std::string>& columns,
                         const std::vector<std::uint32_t>& types, const Rows& rows, json::value& out) {
  if (columns.size() != types.size() || (columns_claimed && *columns_claimed != columns.size())) {
    return fmt::format("a DataSet of {} columns with {} types{}", columns.size(), types.size(),
                       columns_claimed ? fmt::format(" claims {} columns", *columns_claimed) : "");
  }
  // (Members are added last: a reference into a json::object does not outlive an insertion.)
  json::array names, type_names, json_rows;
  for (std::size_t i = 0; i < columns.size(); ++i) {
    names.push_back(json::value(detail::utf8_or_replaced(columns[i])));
    type_names.push_back(json::value(to_string(static_cast<DataType>(types[i]))));
  }
  json_rows.reserve(rows.size());
  for (std::size_t r = 0; r < rows.size(); ++r) {
    if (rows[r].size() != types.size()) {
      return fmt::format("DataSet row {} has {} values for {} columns", r, rows[r].size(), types.size());
    }
    json::array& row = json_rows.emplace_back(json::array()).get_array();
    row.reserve(types.size());
    for (std::size_t c = 0; c < types.size(); ++c) {
      json::value v;
      std::string error = detail::read_value(types[c], rows[r][c], v);
      if (!error.empty()) return fmt::format("DataSet row {} column {}: {}", r, c, error);
      row.push_back(std::move(v));
    }
  }
  out = json::object{{"columns", std::move(names)}, {"types", std::move(type_names)}, {"rows", std::move(json_rows)}};
  return {};
}

bool decode_dataset(pb_istream_t* stream, const pb_field_t* field, void** arg) {
  auto& s = sink_of<ValueFields>(arg);
  std::vector<std::string> columns;
  std::vector<std::uint32_t> types;
  Rows rows;
  Sink<std::vector<std::string>> columns_sink{s.decoder, &columns};
  Sink<std::vector<std::uint32_t>> types_sink{s.decoder, &types};
  Sink<Rows> rows_sink{s.decoder, &rows};
  PbDataSet message = org_eclipse_tahu_protobuf_Payload_DataSet_init_zero;
  message.columns = callback(&decode_repeated_string, columns_sink);
  message.types = callback(&decode_types, types_sink);
  message.rows = callback(&decode_row, rows_sink);
  if (!s.decoder->nested(stream, field, org_eclipse_tahu_protobuf_Payload_DataSet_fields, &message, "dataset_value",
                         false)) {
    return false;
  }
  s.out->set |= detail::kDatasetValue;
  s.out->nested = nullptr;
  s.out->nested_error = read_dataset(message.has_num_of_columns ? std::optional(message.num_of_columns) : std::nullopt,
                                     columns, types, rows, s.out->nested);
  return true;
}

// --- Metric, Template -------------------------------------------------------------------------

// The metrics of a Payload or a Template, with how to name one in an error ("metric 3").
struct MetricList {
  std::vector<Metric>* metrics;
  std::string_view noun;
};

bool decode_metric(pb_istream_t* stream, const pb_field_t* field, void** arg);

struct Parameter {
  std::optional<std::string> name;
  std::optional<std::uint32_t> type;
  ValueFields fields;
};

bool decode_parameter(pb_istream_t* stream, const pb_field_t* field, void** arg) {
  auto& s = sink_of<std::vector<Parameter>>(arg);
  Parameter& p = s.out->emplace_back();
  Sink<std::optional<std::string>> name_sink{s.decoder, &p.name};
  Sink<ValueFields> fields_sink{s.decoder, &p.fields};
  PbParameter message = org_eclipse_tahu_protobuf_Payload_Template_Parameter_init_zero;
  message.name = callback(&decode_optional_string, name_sink);
  message.string_value = callback(&decode_value_bytes<detail::kStringValue>, fields_sink);
  if (!s.decoder->nested(stream, field, org_eclipse_tahu_protobuf_Payload_Template_Parameter_fields, &message,
                         fmt::format("parameter {}", s.out->size() - 1), false)) {
    return false;
  }
  if (message.has_type) p.type = message.type;
  p.fields.take_scalars(message);
  return true;
}

bool decode_template(pb_istream_t* stream, const pb_field_t* field, void** arg) {
  auto& s = sink_of<ValueFields>(arg);
  std::optional<std::string> version, template_ref;
  std::vector<Metric> metrics;
  std::vector<Parameter> parameters;
  Sink<std::optional<std::string>> version_sink{s.decoder, &version};
  Sink<std::optional<std::string>> ref_sink{s.decoder, &template_ref};
  MetricList list{&metrics, "metric"};
  Sink<MetricList> metrics_sink{s.decoder, &list};
  Sink<std::vector<Parameter>> parameters_sink{s.decoder, &parameters};
  PbTemplate message = org_eclipse_tahu_protobuf_Payload_Template_init_zero;
  message.version = callback(&decode_optional_string, version_sink);
  message.template_ref = callback(&decode_optional_string, ref_sink);
  message.metrics = callback(&decode_metric, metrics_sink);
  message.parameters = callback(&decode_parameter, parameters_sink);
  if (!s.decoder->nested(stream, field, org_eclipse_tahu_protobuf_Payload_Template_fields, &message,
                         "template_value", true)) {
    return false;
  }
  s.out->set |= detail::kTemplateValue;
  s.out->nested = nullptr;
  s.out->nested_error.clear();
  json::object object;
  if (version) object["version"] = detail::utf8_or_replaced(*version);
  if (template_ref) object["template_ref"] = detail::utf8_or_replaced(*template_ref);
  object["is_definition"] = message.has_is_definition && message.is_definition;
  json::array json_metrics, json_parameters;
  for (std::size_t i = 0; i < metrics.size(); ++i) {
    if (!metrics[i].value_error.empty()) {
      s.out->nested_error = fmt::format("template metric {}: {}", i, metrics[i].value_error);
      return true;
    }
    json_metrics.push_back(to_json(metrics[i]));
  }
  for (std::size_t i = 0; i < parameters.size(); ++i) {
    json::object p;
    if (parameters[i].name) p["name"] = detail::utf8_or_replaced(*parameters[i].name);
    if (parameters[i].type) p["type"] = to_string(static_cast<DataType>(*parameters[i].type));
    std::string error = detail::read_value(parameters[i].type, parameters[i].fields, p["value"]);
    if (!error.empty()) {
      s.out->nested_error = fmt::format("template parameter {}: {}", i, error);
      return true;
    }
    json_parameters.push_back(std::move(p));
  }
  object["metrics"] = std::move(json_metrics);
  object["parameters"] = std::move(json_parameters);
  s.out->nested = std::move(object);
  return true;
}

bool decode_metric(pb_istream_t* stream, const pb_field_t* field, void** arg) {
  auto& s = sink_of<MetricList>(arg);
  Decoder& decoder = *s.decoder;
  const std::size_t index = s.out->metrics->size();
  Metric metric;
  ValueFields fields;
  PropertySetRead properties;
  bool has_properties = false;
  Sink<std::optional<std::string>> name_sink{&decoder, &metric.name};
  Sink<ValueFields> fields_sink{&decoder, &fields};
  struct Properties {
    PropertySetRead* read;
    bool* present;
  } props{&properties, &has_properties};
  Sink<Properties> properties_sink{&decoder, &props};
  PbMetric message = org_eclipse_tahu_protobuf_Payload_Metric_init_zero;
  message.name = callback(&decode_optional_string, name_sink);
  message.string_value = callback(&decode_value_bytes<detail::kStringValue>, fields_sink);
  message.bytes_value = callback(&decode_value_bytes<detail::kBytesValue>, fields_sink);
  message.dataset_value = callback(&decode_dataset, fields_sink);
  message.template_value = callback(&decode_template, fields_sink);
  message.properties = callback(+[](pb_istream_t* st, const pb_field_t* f, void** a) {
    auto& p = sink_of<Properties>(a);
    *p.out->read = {};
    *p.out->present = true;
    Sink<PropertySetRead> one{p.decoder, p.out->read};
    void* one_arg = &one;
    return decode_property_set(st, f, &one_arg);
  }, properties_sink);
  if (!decoder.nested(stream, field, org_eclipse_tahu_protobuf_Payload_Metric_fields, &message,
                      fmt::format("{} {}", s.out->noun, index), false)) {
    return false;
  }
  if (message.has_alias) metric.alias = message.alias;
  if (message.has_timestamp) metric.timestamp_ms = message.timestamp;
  if (message.has_datatype) metric.datatype = message.datatype;
  metric.is_historical = message.has_is_historical && message.is_historical;
  metric.is_transient = message.has_is_transient && message.is_transient;
  metric.is_null = message.has_is_null && message.is_null;
  if (metric.name) *metric.name = detail::utf8_or_replaced(*metric.name);
  fields.take_scalars(message);
  metric.value_error = detail::read_value(metric.datatype, fields, metric.value);
  if (metric.is_null) metric.value = nullptr;
  if (has_properties) {
    if (properties.error.empty()) {
      metric.properties = std::move(properties.value);
    } else if (metric.value_error.empty()) {
      metric.value_error = "properties: " + properties.error;
    }
  }
  if (!metric.value_error.empty()) metric.value = nullptr;
  s.out->metrics->push_back(std::move(metric));
  return true;
}

}  // namespace

std::optional<Payload> decode(std::string_view bytes, std::string& error) {
  Input input{bytes.data(), bytes.size()};
  pb_istream_t stream{};
  stream.callback = &read_input;
  stream.state = &input;
  stream.bytes_left = bytes.size();

  Decoder decoder;
  Payload payload;
  MetricList list{&payload.metrics, "metric"};
  Sink<MetricList> metrics_sink{&decoder, &list};
  Sink<std::optional<std::string>> uuid_sink{&decoder, &payload.uuid};
  Sink<std::optional<std::string>> body_sink{&decoder, &payload.body};
  PbPayload message = org_eclipse_tahu_protobuf_Payload_init_zero;
  message.metrics = callback(&decode_metric, metrics_sink);
  message.uuid = callback(&decode_optional_string, uuid_sink);
  message.body = callback(&decode_optional_string, body_sink);
  if (!pb_decode(&stream, org_eclipse_tahu_protobuf_Payload_fields, &message)) {
    error = fmt::format("{} (at byte {} of {})", decoder.take_error(&stream), input.pos, bytes.size());
    return std::nullopt;
  }
  if (message.has_timestamp) payload.timestamp_ms = message.timestamp;
  if (message.has_seq) payload.seq = message.seq;
  if (payload.uuid) *payload.uuid = detail::utf8_or_replaced(*payload.uuid);
  return payload;
}

boost::json::object to_json(const Metric& metric) {
  json::object o;
  if (metric.name) o["name"] = *metric.name;
  if (metric.alias) o["alias"] = *metric.alias;
  if (metric.timestamp_ms) o["timestamp"] = *metric.timestamp_ms;
  if (metric.datatype) o["datatype"] = to_string(static_cast<DataType>(*metric.datatype));
  o["value"] = metric.value;
  o["is_null"] = metric.is_null;
  o["is_historical"] = metric.is_historical;
  o["is_transient"] = metric.is_transient;
  if (!metric.properties.is_null()) o["properties"] = metric.properties;
  return o;
}

}  // namespace tank::sparkplug
