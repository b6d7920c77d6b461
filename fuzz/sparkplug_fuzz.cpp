// The Sparkplug B payload decoder (plugins/inputs_mqtt/sparkplug/payload.hpp): the payload of an
// MQTT message under spBv1.0/, as inputs.mqtt with `format = "sparkplug_b"` decodes it.
//
// Input: the payload.
// Properties: malformed bytes are refused with a reason, never read past, and never nest the
// decoder deeper than kMaxDepth (the stack stays bounded whatever the input); a decoded payload's
// JSON is valid UTF-8; a metric with a value error has a null value; the metrics of scalar and
// array types encode back to a payload that decodes to the same values.

#include <string>

#include <boost/json/serialize.hpp>

#include "common/strings.hpp"
#include "fuzz_support.hpp"
#include "inputs_mqtt/sparkplug/payload.hpp"
#include "targets.hpp"

namespace tank::fuzz {

namespace {

bool encodable(const sparkplug::Metric& m) {
  if (!m.datatype || !sparkplug::is_known(*m.datatype) || !m.value_error.empty()) return false;
  switch (static_cast<sparkplug::DataType>(*m.datatype)) {
    case sparkplug::DataType::dataset:
    case sparkplug::DataType::template_:
    case sparkplug::DataType::property_set:
    case sparkplug::DataType::property_set_list: return false;
    default: return true;
  }
}

}  // namespace

int sparkplug_target(const std::uint8_t* data, std::size_t size) {
  std::string error;
  const auto payload = sparkplug::decode(as_text(data, size), error);
  if (!payload) {
    require(!error.empty(), "a refused payload says why");
    return 0;
  }
  require(payload->metrics.size() <= size / 2, "each metric takes at least two bytes");
  sparkplug::Payload again;
  for (const sparkplug::Metric& m : payload->metrics) {
    const std::string text = boost::json::serialize(sparkplug::to_json(m));
    require(!strings::invalid_utf8_at(text), "a metric's JSON is UTF-8");
    if (!m.value_error.empty()) require(m.value.is_null(), "a metric with a value error has no value");
    if (m.is_null) require(m.value.is_null(), "a null metric has no value");
    if (encodable(m)) {
      sparkplug::Metric copy = m;
      copy.properties = nullptr;
      again.metrics.push_back(std::move(copy));
    }
  }
  if (payload->uuid) require(!strings::invalid_utf8_at(*payload->uuid), "the uuid is UTF-8");

  std::string again_error;
  const auto back = sparkplug::decode(sparkplug::encode(again), again_error);
  require(back.has_value(), "an encoded payload decodes");
  require(back->metrics.size() == again.metrics.size(), "every encoded metric decodes");
  for (std::size_t i = 0; i < again.metrics.size(); ++i) {
    require(back->metrics[i].value_error.empty(), "an encoded value reads without error");
    require(boost::json::serialize(back->metrics[i].value) == boost::json::serialize(again.metrics[i].value),
            "a value encodes back to itself");
    require(back->metrics[i].name == again.metrics[i].name, "a name encodes back to itself");
  }
  return 0;
}

}  // namespace tank::fuzz

TANK_FUZZ_TARGET(tank::fuzz::sparkplug_target)
