// The Sparkplug B payload codec (plugins/inputs_mqtt/sparkplug/payload.hpp): round trips of every
// scalar and array type, the reading of values that do not fit their type, malformed and too deeply
// nested payloads, and the payloads of an encoder nobody here wrote: Eclipse Tahu's JavaScript
// `sparkplug-payload` (tests/sparkplug/encode.js, with the values it must decode to).

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "common/strings.hpp"
#include "inputs_mqtt/sparkplug/payload.hpp"
#include "support/helpers.hpp"

namespace sp = tank::sparkplug;
namespace json = boost::json;

namespace {

sp::Metric metric(std::string name, sp::DataType type, json::value value) {
  sp::Metric m;
  m.name = std::move(name);
  m.datatype = static_cast<std::uint32_t>(type);
  m.value = std::move(value);
  return m;
}

sp::Payload decoded(std::string_view bytes) {
  std::string error;
  std::optional<sp::Payload> p = sp::decode(bytes, error);
  INFO(error);
  REQUIRE(p);
  CHECK(error.empty());
  return std::move(*p);
}

std::string decode_error(std::string_view bytes) {
  std::string error;
  CHECK_FALSE(sp::decode(bytes, error));
  CHECK_FALSE(error.empty());
  return error;
}

// A protobuf writer for payloads no encoder would make.
std::string varint(std::uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}
std::string tag(int field, int wire_type) { return varint(static_cast<std::uint64_t>(field) << 3 | static_cast<unsigned>(wire_type)); }
std::string field_varint(int field, std::uint64_t v) { return tag(field, 0) + varint(v); }
std::string field_bytes(int field, std::string_view bytes) { return tag(field, 2) + varint(bytes.size()) + std::string(bytes); }

// A payload of one metric whose fields are `metric_fields`.
std::string one_metric(const std::string& metric_fields) { return field_bytes(2, metric_fields); }

// The one metric of a payload of one metric.
sp::Metric only_metric(const std::string& metric_fields) {
  sp::Payload p = decoded(one_metric(metric_fields));
  REQUIRE(p.metrics.size() == 1);
  return std::move(p.metrics[0]);
}

}  // namespace

TEST_CASE("data types have the specification's names and numbers", "[sparkplug]") {
  CHECK(sp::to_string(sp::DataType::int8) == "Int8");
  CHECK(sp::to_string(sp::DataType::uint32) == "UInt32");
  CHECK(sp::to_string(sp::DataType::float32) == "Float");
  CHECK(sp::to_string(sp::DataType::float64) == "Double");
  CHECK(sp::to_string(sp::DataType::template_) == "Template");
  CHECK(sp::to_string(sp::DataType::property_set_list) == "PropertySetList");
  CHECK(sp::to_string(sp::DataType::datetime_array) == "DateTimeArray");
  CHECK(sp::to_string(sp::DataType::unknown) == "Unknown");
  CHECK(sp::to_string(static_cast<sp::DataType>(35)) == "Unknown");
  CHECK_FALSE(sp::is_known(0));
  CHECK(sp::is_known(1));
  CHECK(sp::is_known(34));
  CHECK_FALSE(sp::is_known(35));
}

TEST_CASE("every scalar and array type round-trips through encode and decode, edge values too", "[sparkplug]") {
  using T = sp::DataType;
  struct Case {
    T type;
    json::value value;
    json::value expected;  // null: the value itself
  };
  const std::vector<Case> cases = {
      {T::int8, -128, nullptr}, {T::int8, -5, nullptr}, {T::int8, 127, nullptr}, {T::int8, 0, nullptr},
      {T::int16, INT16_MIN, nullptr}, {T::int16, -1, nullptr}, {T::int16, INT16_MAX, nullptr},
      {T::int32, INT32_MIN, nullptr}, {T::int32, -7, nullptr}, {T::int32, INT32_MAX, nullptr},
      {T::int64, INT64_MIN, nullptr}, {T::int64, -1, nullptr}, {T::int64, INT64_MAX, nullptr},
      {T::uint8, 255, nullptr}, {T::uint16, 65535, nullptr}, {T::uint32, UINT32_MAX, nullptr},
      {T::uint64, UINT64_MAX, nullptr}, {T::uint64, 0, nullptr}, {T::datetime, 1700000000123, nullptr},
      {T::float32, 1.5, nullptr}, {T::float32, 0.1, static_cast<double>(0.1f)}, {T::float32, -0.0, nullptr},
      {T::float32, "NaN", nullptr}, {T::float32, "Infinity", nullptr}, {T::float32, "-Infinity", nullptr},
      {T::float64, 0.1, nullptr}, {T::float64, 5e-324, nullptr}, {T::float64, -1.7976931348623157e308, nullptr},
      {T::float64, "NaN", nullptr}, {T::float64, "Infinity", nullptr}, {T::float64, "-Infinity", nullptr},
      {T::boolean, true, nullptr}, {T::boolean, false, nullptr},
      {T::string, "", nullptr}, {T::string, "Grüße 🌡", nullptr}, {T::text, "a\nb\"c", nullptr},
      {T::uuid, "123e4567-e89b-12d3-a456-426614174000", nullptr},
      {T::bytes, "", nullptr}, {T::bytes, "AAEC/v8=", nullptr}, {T::file, "aGVsbG8K", nullptr},
      {T::int8_array, json::array{-23, 123, -128, 127}, nullptr}, {T::int8_array, json::array{}, nullptr},
      {T::int16_array, json::array{INT16_MIN, -1, INT16_MAX}, nullptr},
      {T::int32_array, json::array{123456789, -987654321}, nullptr},
      {T::int64_array, json::array{INT64_MIN, 0, INT64_MAX}, nullptr},
      {T::uint8_array, json::array{0, 23, 255}, nullptr}, {T::uint16_array, json::array{30, 65535}, nullptr},
      {T::uint32_array, json::array{52, UINT32_MAX}, nullptr}, {T::uint64_array, json::array{52, UINT64_MAX}, nullptr},
      {T::float_array, json::array{1.5, "NaN", "-Infinity"}, nullptr}, {T::float_array, json::array{}, nullptr},
      {T::double_array, json::array{12.354213, "Infinity", -0.0}, nullptr},
      {T::boolean_array, json::array{true}, nullptr}, {T::boolean_array, json::array{}, nullptr},
      {T::boolean_array, json::array{false, false, true, true, false, true, false, false, true}, nullptr},
      {T::string_array, json::array{"ABC", "", "Grüße"}, nullptr}, {T::string_array, json::array{}, nullptr},
      {T::datetime_array, json::array{1700000000000, 0, UINT64_MAX}, nullptr},
  };
  sp::Payload payload;
  payload.timestamp_ms = 1700000000000;
  payload.seq = 255;
  payload.uuid = "schema";
  payload.body = std::string("\0\xff", 2);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    payload.metrics.push_back(metric("m" + std::to_string(i), cases[i].type, cases[i].value));
  }
  payload.metrics[3].alias = UINT64_MAX;
  payload.metrics[3].timestamp_ms = 5;
  payload.metrics[3].is_historical = true;
  payload.metrics[4].is_transient = true;

  const sp::Payload back = decoded(sp::encode(payload));
  CHECK(back.timestamp_ms == payload.timestamp_ms);
  CHECK(back.seq == payload.seq);
  CHECK(back.uuid == payload.uuid);
  CHECK(back.body == payload.body);
  REQUIRE(back.metrics.size() == cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const sp::Metric& m = back.metrics[i];
    INFO(sp::to_string(cases[i].type) << " " << json::serialize(cases[i].value));
    CHECK(m.value_error == "");
    CHECK(m.name == payload.metrics[i].name);
    CHECK(m.datatype == payload.metrics[i].datatype);
    const json::value& expected = cases[i].expected.is_null() ? cases[i].value : cases[i].expected;
    CHECK(json::serialize(m.value) == json::serialize(expected));
    CHECK(m.value == expected);
    CHECK_FALSE(m.is_null);
    CHECK(m.properties.is_null());
  }
  CHECK(back.metrics[3].alias == UINT64_MAX);
  CHECK(back.metrics[3].timestamp_ms == 5u);
  CHECK(back.metrics[3].is_historical);
  CHECK_FALSE(back.metrics[3].is_transient);
  CHECK(back.metrics[4].is_transient);
  CHECK_FALSE(back.metrics[5].alias);
  CHECK_FALSE(back.metrics[5].timestamp_ms);

  // Signed values take 32-bit two's complement in int_value, as Tahu's Java encoder writes them.
  sp::Payload one;
  one.metrics.push_back(metric("x", sp::DataType::int8, -5));
  CHECK(sp::encode(one) == one_metric(field_bytes(1, "x") + field_varint(4, 1) + field_varint(10, 0xFFFFFFFB)));
}

TEST_CASE("an empty payload and a payload of defaults decode", "[sparkplug]") {
  const sp::Payload empty = decoded("");
  CHECK(empty.metrics.empty());
  CHECK_FALSE(empty.timestamp_ms);
  CHECK_FALSE(empty.seq);
  CHECK(sp::encode(sp::Payload{}) == "");
  const sp::Metric m = only_metric("");
  CHECK_FALSE(m.name);
  CHECK_FALSE(m.datatype);
  CHECK(m.value.is_null());
  CHECK(m.value_error.empty());
}

TEST_CASE("integers are read from int_value or long_value, by their low bits", "[sparkplug]") {
  // Tahu JS 1.0.3 and Tahu Java write UInt32 in long_value (field 11); the specification, int_value (10).
  CHECK(only_metric(field_varint(4, 7) + field_varint(11, 4000000000)).value == json::value(4000000000u));
  CHECK(only_metric(field_varint(4, 7) + field_varint(10, 4000000000)).value == json::value(4000000000u));
  CHECK(only_metric(field_varint(4, 1) + field_varint(10, 0xFFFFFFFB)).value == json::value(-5));
  CHECK(only_metric(field_varint(4, 1) + field_varint(11, 0xFFFFFFFFFFFFFFFB)).value == json::value(-5));
  CHECK(only_metric(field_varint(4, 1) + field_varint(10, 300)).value == json::value(44));
  CHECK(only_metric(field_varint(4, 2) + field_varint(10, 0xFFFF8000)).value == json::value(-32768));
  CHECK(only_metric(field_varint(4, 3) + field_varint(11, 0x80000000)).value == json::value(INT32_MIN));
  CHECK(only_metric(field_varint(4, 4) + field_varint(10, 0xFFFFFFFF)).value == json::value(4294967295));
  CHECK(only_metric(field_varint(4, 4) + field_varint(11, 0x8000000000000000)).value == json::value(INT64_MIN));
  CHECK(only_metric(field_varint(4, 5) + field_varint(10, 0x1FF)).value == json::value(255));
  CHECK(only_metric(field_varint(4, 8) + field_varint(10, 1)).value == json::value(1));
  CHECK(only_metric(field_varint(4, 13) + field_varint(10, 1000)).value == json::value(1000));
}

TEST_CASE("without a datatype a value is read by the field that was set", "[sparkplug]") {
  CHECK(only_metric(field_varint(2, 4) + field_varint(10, 0xFFFFFFFB)).value == json::value(4294967291u));
  CHECK(only_metric(field_varint(2, 4) + field_varint(11, UINT64_MAX)).value == json::value(UINT64_MAX));
  CHECK(only_metric(field_varint(14, 1)).value == json::value(true));
  CHECK(only_metric(field_bytes(15, "hi")).value == json::value("hi"));
  CHECK(only_metric(field_bytes(16, "hi")).value == json::value("aGk="));
  const std::string nan_float = tag(12, 5) + std::string("\x00\x00\xc0\x7f", 4);
  CHECK(only_metric(nan_float).value == json::value("NaN"));
  const sp::Metric m = only_metric(field_varint(2, 4) + field_varint(10, 1));
  CHECK(m.alias == 4u);
  CHECK_FALSE(m.name);
  CHECK_FALSE(m.datatype);
}

TEST_CASE("is_null makes the value null, whatever was sent", "[sparkplug]") {
  sp::Payload p;
  p.metrics.push_back(metric("a", sp::DataType::int32, nullptr));
  p.metrics[0].is_null = true;
  p.metrics.push_back(metric("b", sp::DataType::string, nullptr));
  p.metrics[1].is_null = true;
  const sp::Payload back = decoded(sp::encode(p));
  for (const sp::Metric& m : back.metrics) {
    CHECK(m.is_null);
    CHECK(m.value.is_null());
    CHECK(m.value_error.empty());
  }
  const sp::Metric m = only_metric(field_varint(4, 3) + field_varint(7, 1) + field_varint(10, 5));
  CHECK(m.is_null);
  CHECK(m.value.is_null());
  CHECK(to_json(m).at("is_null") == json::value(true));
}

TEST_CASE("invalid UTF-8 in strings is replaced by U+FFFD", "[sparkplug]") {
  const sp::Metric m = only_metric(field_bytes(1, "t\xff") + field_varint(4, 12) + field_bytes(15, "a\xc3(b\xed\xa0\x80"));
  CHECK(m.name == "t\xEF\xBF\xBD");
  CHECK(m.value == json::value("a\xEF\xBF\xBD(b\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"));
  CHECK_FALSE(tank::strings::invalid_utf8_at(m.value.get_string()));
  const sp::Metric a = only_metric(field_varint(4, 33) + field_bytes(16, std::string("ok\0\xfe\0", 5)));
  CHECK(a.value == json::value(json::array{"ok", "\xEF\xBF\xBD"}));
  // Property keys and DataSet columns too: every string in the JSON is UTF-8.
  const std::string property = field_varint(1, 12) + field_bytes(8, "v\x80");
  const sp::Metric p = only_metric(field_bytes(9, field_bytes(1, "k\xc0") + field_bytes(2, property)));
  CHECK(json::serialize(p.properties) == "{\"k\xEF\xBF\xBD\":\"v\xEF\xBF\xBD\"}");
}

TEST_CASE("a value that does not fit its type is a value error of its metric only", "[sparkplug]") {
  struct Case {
    std::string fields;
    std::string error;
  };
  const std::vector<Case> cases = {
      {field_varint(4, 23) + field_bytes(16, "abc"), "a Int16Array of 3 bytes: not a multiple of its 2-byte elements"},
      {field_varint(4, 31) + field_bytes(16, std::string(9, '\0')), "not a multiple of its 8-byte elements"},
      {field_varint(4, 32) + field_bytes(16, std::string("\x09\0\0\0\xff", 5)), "needs 2 bytes after its count, not 1"},
      {field_varint(4, 32) + field_bytes(16, std::string("\xff\xff\xff\xff", 4)), "needs 536870912 bytes"},
      {field_varint(4, 32) + field_bytes(16, "ab"), "shorter than its 4-byte count"},
      {field_varint(4, 33) + field_bytes(16, std::string("a\0b", 3)), "has no terminating NUL"},
      {field_varint(4, 3) + field_bytes(15, "12"), "a Int32 value is read from int_value or long_value, but string_value was set"},
      {field_varint(4, 12) + field_varint(10, 1), "a String value is read from string_value, but int_value was set"},
      {field_varint(4, 9) + tag(13, 1) + std::string(8, '\0'), "a Float value is read from float_value, but double_value was set"},
      {field_varint(4, 22) + field_varint(10, 1), "a Int8Array value is read from bytes_value"},
      {field_varint(4, 20) + field_varint(10, 1), "a PropertySet value is read from propertyset_value"},
      {field_varint(4, 99) + field_varint(10, 1), "datatype 99 is not a Sparkplug data type"},
      {field_varint(4, 0), "datatype 0 is not a Sparkplug data type"},
      {field_varint(4, 3) + field_varint(10, 1) + field_bytes(15, "x"), "int_value and string_value are all set"},
  };
  for (const Case& c : cases) {
    INFO(c.error);
    // The next metric is read as usual.
    sp::Payload p = decoded(one_metric(c.fields) + one_metric(field_varint(4, 11) + field_varint(14, 1)));
    REQUIRE(p.metrics.size() == 2);
    CHECK_THAT(p.metrics[0].value_error, Catch::Contains(c.error));
    CHECK(p.metrics[0].value.is_null());
    CHECK(p.metrics[1].value_error.empty());
    CHECK(p.metrics[1].value == json::value(true));
  }
  // A bad property fails its metric's value; a bad template member, the template.
  const std::string bad_property = field_bytes(1, "k") + field_bytes(2, field_varint(1, 3) + field_bytes(8, "x"));
  CHECK_THAT(only_metric(field_varint(4, 3) + field_varint(10, 1) + field_bytes(9, bad_property)).value_error,
             Catch::Contains("properties: property \"k\": a Int32 value"));
  CHECK_THAT(only_metric(field_bytes(9, field_bytes(1, "k"))).value_error,
             Catch::Contains("a PropertySet of 1 keys and 0 values"));
  const std::string bad_member = field_bytes(2, field_varint(4, 23) + field_bytes(16, "x"));
  CHECK_THAT(only_metric(field_varint(4, 19) + field_bytes(18, bad_member)).value_error,
             Catch::Contains("template metric 0: a Int16Array of 1 bytes"));
  const std::string dataset = field_varint(1, 1) + field_bytes(2, "c") + field_varint(3, 3) +
                              field_bytes(4, field_bytes(1, field_bytes(6, "s")));
  CHECK_THAT(only_metric(field_varint(4, 16) + field_bytes(17, dataset)).value_error,
             Catch::Contains("DataSet row 0 column 0: a Int32 value is read from int_value or long_value"));
  const std::string short_row = field_bytes(2, "c") + field_varint(3, 3) + field_bytes(4, "");
  CHECK_THAT(only_metric(field_varint(4, 16) + field_bytes(17, short_row)).value_error,
             Catch::Contains("DataSet row 0 has 0 values for 1 columns"));
}

TEST_CASE("malformed payloads are refused with where and why, never read out of bounds", "[sparkplug]") {
  sp::Payload p;
  p.timestamp_ms = 1700000000000;
  p.seq = 3;
  p.metrics.push_back(metric("temperature", sp::DataType::double_array, json::array{1.5, 2.5}));
  p.metrics.push_back(metric("name", sp::DataType::string, "boiler"));
  const std::string good = sp::encode(p);
  // Every truncation either reads as a shorter payload (a cut between fields) or is refused.
  for (std::size_t cut = 0; cut < good.size(); ++cut) {
    const std::string prefix = good.substr(0, cut);
    std::string error;
    std::optional<sp::Payload> d = sp::decode(prefix, error);
    CHECK(d.has_value() == error.empty());
  }
  CHECK_THAT(decode_error(good.substr(0, good.size() - 1)), Catch::Contains("at byte"));
  CHECK_THAT(decode_error(one_metric(field_bytes(1, "a")) + one_metric(tag(1, 2) + varint(5) + "ab")),
             Catch::StartsWith("metric 1: ") && Catch::Contains("(at byte"));

  // Wrong wire types: a scalar field (nanopb's check) and a string field (the codec's own).
  CHECK_THAT(decode_error(field_bytes(1, "x")), Catch::Contains("wrong wire type"));
  CHECK(decode_error(one_metric(field_varint(1, 5))) == "metric 0: invalid wire type for field 1 (at byte 4 of 4)");
  CHECK_THAT(decode_error(one_metric(field_bytes(1, "a")) + one_metric(tag(15, 5) + "abcd")),
             Catch::StartsWith("metric 1: invalid wire type for field 15 ("));
  CHECK_THAT(decode_error(field_varint(2, 5)), Catch::StartsWith("invalid wire type for field 2 ("));
  CHECK_THAT(decode_error(one_metric(field_varint(4, 3) + field_bytes(10, "x"))), Catch::StartsWith("metric 0: "));
  // A length past the end, a varint that does not end, a wire type that does not exist.
  CHECK_FALSE(decode_error(tag(2, 2) + varint(100) + "abc").empty());
  CHECK_FALSE(decode_error(tag(1, 0) + std::string(11, '\xff')).empty());
  CHECK_FALSE(decode_error(tag(1, 7)).empty());
  CHECK_FALSE(decode_error(one_metric(field_bytes(17, field_bytes(4, tag(1, 6))))).empty());
  // A field number 0.
  CHECK_FALSE(decode_error(std::string("\x00\x00", 2)).empty());
  // Unknown fields and extensions are skipped.
  const sp::Payload skipped = decoded(field_varint(6, 1) + field_bytes(99, "x") + one_metric(field_bytes(19, "ext") + field_bytes(8, "meta")));
  CHECK(skipped.metrics.size() == 1);
}

TEST_CASE("nesting deeper than kMaxDepth is refused, up to it is read", "[sparkplug]") {
  // Templates within templates: each a metric whose template_value holds the next.
  auto templates = [](int depth) {
    std::string inner = field_varint(4, 11) + field_varint(14, 1);  // the innermost metric: a Boolean
    for (int i = 0; i < depth; ++i) inner = field_varint(4, 19) + field_bytes(18, field_bytes(2, inner));
    return one_metric(inner);
  };
  const sp::Payload ok = decoded(templates(sp::kMaxDepth));
  REQUIRE(ok.metrics.size() == 1);
  CHECK(ok.metrics[0].value_error.empty());
  json::value v = ok.metrics[0].value;
  for (int i = 0; i < sp::kMaxDepth; ++i) v = v.at("metrics").at(0).at("value");
  CHECK(v == json::value(true));
  CHECK_THAT(decode_error(templates(sp::kMaxDepth + 1)), Catch::Contains("nested deeper than 16"));

  // PropertySets within PropertySets, through PropertySetLists too.
  auto properties = [](int depth) {
    std::string set = field_bytes(1, "leaf") + field_bytes(2, field_varint(1, 11) + field_varint(7, 1));
    for (int i = 1; i < depth; ++i) {
      const std::string value = i % 2 ? field_varint(1, 20) + field_bytes(9, set)
                                      : field_varint(1, 21) + field_bytes(10, field_bytes(1, set));
      set = field_bytes(1, "k") + field_bytes(2, value);
    }
    return one_metric(field_bytes(9, set));
  };
  const sp::Payload ok_properties = decoded(properties(sp::kMaxDepth));
  CHECK(ok_properties.metrics[0].value_error.empty());
  CHECK_THAT(decode_error(properties(sp::kMaxDepth + 1)), Catch::Contains("nested deeper than 16"));
  // Far deeper than any stack: refused at the bound, not by a crash.
  CHECK_THAT(decode_error(templates(2000)), Catch::Contains("nested deeper than 16"));
}

TEST_CASE("encode refuses values that do not fit their type", "[sparkplug]") {
  auto refuses = [](sp::DataType type, json::value value) {
    sp::Payload p;
    p.metrics.push_back(metric("x", type, std::move(value)));
    CHECK_THROWS_AS(sp::encode(p), std::invalid_argument);
  };
  refuses(sp::DataType::int8, 128);
  refuses(sp::DataType::int8, -129);
  refuses(sp::DataType::uint8, -1);
  refuses(sp::DataType::uint32, 4294967296);
  refuses(sp::DataType::int64, UINT64_MAX);
  refuses(sp::DataType::int32, 1.5);
  refuses(sp::DataType::int32, "1");
  refuses(sp::DataType::float32, 1e300);
  refuses(sp::DataType::float32, "nan");
  refuses(sp::DataType::boolean, 1);
  refuses(sp::DataType::string, 1);
  refuses(sp::DataType::bytes, "not base64!");
  refuses(sp::DataType::bytes, "QQ");
  refuses(sp::DataType::int16_array, json::array{70000});
  refuses(sp::DataType::boolean_array, json::array{1});
  refuses(sp::DataType::string_array, json::array{std::string("a\0b", 3)});
  refuses(sp::DataType::int8_array, 1);
  refuses(sp::DataType::dataset, json::object{});
  refuses(sp::DataType::template_, json::object{});
  refuses(sp::DataType::property_set, json::object{});
  refuses(sp::DataType::unknown, 1);
  refuses(static_cast<sp::DataType>(77), 1);
  sp::Payload untyped;
  untyped.metrics.emplace_back().value = 1;
  CHECK_THROWS_AS(sp::encode(untyped), std::invalid_argument);
  sp::Payload with_properties;
  with_properties.metrics.push_back(metric("x", sp::DataType::int8, 1));
  with_properties.metrics[0].properties = json::object{{"k", 1}};
  CHECK_THROWS_AS(sp::encode(with_properties), std::invalid_argument);
}

TEST_CASE("to_json leaves out what a metric does not have", "[sparkplug]") {
  sp::Metric m;
  m.alias = 3;
  m.value = 5;
  CHECK(json::serialize(sp::to_json(m)) ==
        R"({"alias":3,"value":5,"is_null":false,"is_historical":false,"is_transient":false})");
  m.name = "n";
  m.timestamp_ms = 9;
  m.datatype = 3;
  m.properties = json::object{{"u", "C"}};
  CHECK(json::serialize(sp::to_json(m)) ==
        R"({"name":"n","alias":3,"timestamp":9,"datatype":"Int32","value":5,"is_null":false,)"
        R"("is_historical":false,"is_transient":false,"properties":{"u":"C"}})");
}

namespace {

// Whether `a` and `b` are the same JSON, numbers compared by value: an integer and a double by
// their numeric values (JavaScript writes 0.0 as 0), two doubles within 4 units in the last place
// (Boost.JSON 1.81's parser is not exact to the last bit: "3.4028234663852886e+38", a Float's
// largest value, reads as 3.402823466385289e+38). A decoder that got a float's bytes wrong is far
// further off.
bool same(const json::value& a, const json::value& b) {
  if (a.is_number() && b.is_number()) {
    if (!a.is_double() && !b.is_double()) return a == b;
    const double x = a.to_number<double>(), y = b.to_number<double>();
    return x == y || std::fabs(x - y) <= 4 * std::numeric_limits<double>::epsilon() * std::max(std::fabs(x), std::fabs(y));
  }
  if (a.kind() != b.kind()) return false;
  if (a.is_array()) {
    const json::array &x = a.get_array(), &y = b.get_array();
    if (x.size() != y.size()) return false;
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (!same(x[i], y[i])) return false;
    }
    return true;
  }
  if (a.is_object()) {
    const json::object &x = a.get_object(), &y = b.get_object();
    if (x.size() != y.size()) return false;
    for (const auto& member : x) {
      const json::value* other = y.if_contains(member.key());
      if (!other || !same(member.value(), *other)) return false;
    }
    return true;
  }
  return a == b;
}

// `expected` holds the members encode.js wrote; `actual` must have the same ones with the same
// values. "value_error": true in `expected`: the metric must have a value error.
void compare_metric(const json::object& expected, const sp::Metric& m, const std::string& where) {
  INFO(where);
  json::object actual = sp::to_json(m);
  json::object want = expected;
  if (want.erase("value_error") != 0) {
    CHECK_FALSE(m.value_error.empty());
  } else {
    CHECK(m.value_error == "");
  }
  INFO("decoded:  " << json::serialize(actual));
  INFO("expected: " << json::serialize(want));
  CHECK(same(actual, want));
}

std::string from_hex(std::string_view hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

}  // namespace

TEST_CASE("payloads of the Eclipse Tahu JavaScript encoder decode to what the specification says", "[sparkplug]") {
  // tests/sparkplug/setup.sh installs sparkplug-payload (package-lock.json) into
  // tests/sparkplug/node_modules when it is missing or older than the lock file; encode.js prints
  // one case a line.
  const std::string dir = std::string(TANK_SOURCE_DIR) + "/tests/sparkplug";
  const tank::test::ProcessResult r =
      tank::test::run({"/bin/sh", "-c", "\"$0\"/setup.sh && exec node \"$0\"/encode.js", dir}, {},
                      std::chrono::seconds(300));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::istringstream lines(r.out);
  std::string line;
  std::vector<std::string> names;
  while (std::getline(lines, line)) {
    const json::object c = json::parse(line).as_object();
    const std::string name(c.at("name").as_string());
    names.push_back(name);
    INFO("case " << name);
    const std::string bytes = from_hex(c.at("payload_hex").as_string());
    const sp::Payload p = decoded(bytes);
    const json::object& expected = c.at("expected").as_object();
    CHECK(p.timestamp_ms == (expected.contains("timestamp") ? std::optional(expected.at("timestamp").to_number<std::uint64_t>()) : std::nullopt));
    CHECK(p.seq == (expected.contains("seq") ? std::optional(expected.at("seq").to_number<std::uint64_t>()) : std::nullopt));
    if (expected.contains("uuid")) CHECK(p.uuid == std::string(expected.at("uuid").as_string()));
    const json::array& metrics = expected.at("metrics").as_array();
    REQUIRE(p.metrics.size() == metrics.size());
    for (std::size_t i = 0; i < metrics.size(); ++i) {
      compare_metric(metrics[i].as_object(), p.metrics[i], name + " metric " + std::to_string(i));
    }
  }
  // Every case of encode.js was read (a script that stopped early must not pass).
  CHECK(names == std::vector<std::string>{"integers", "floats-bools-strings", "flags-aliases-nulls", "properties",
                                          "dataset", "template", "arrays", "unsupported-array"});
}
