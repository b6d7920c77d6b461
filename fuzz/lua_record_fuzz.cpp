// processors.lua's record conversion (plugins/processors_lua/lua_json.hpp): a record's JSON into
// Lua values and what a script returns back into JSON, through Script::process as the stage calls it.
//
// Input: one control byte (which script), then the record's bytes (JSON, as the stage's decoder
// takes it).
// Properties: never crashes whatever the record; what comes out is JSON objects of valid UTF-8;
// the identity script gives back the same value (an object record whose numbers all fit a double
// or an int64), and a record that is not an object is refused with a message, never passed.

#include <cmath>
#include <string>

#include <boost/json.hpp>

#include "common/strings.hpp"
#include "fuzz_support.hpp"
#include "process/json_schema.hpp"
#include "processors_lua/lua_script.hpp"
#include "targets.hpp"

namespace tank::fuzz {

namespace {

const char* const kScripts[] = {
    // identity
    "function process(r, a) return r end",
    // walks every value and changes types: numbers to strings and back, tables copied
    "local function copy(v)\n"
    "  if type(v) ~= 'table' then\n"
    "    if math.type(v) == 'float' then return tostring(v) end\n"
    "    if type(v) == 'string' then return tonumber(v) or v end\n"
    "    return v\n"
    "  end\n"
    "  local t = {}\n"
    "  for k, x in pairs(v) do t[k] = copy(x) end\n"
    "  return t\n"
    "end\n"
    "function process(r, a) a.seen = 'yes' return {copy(r), {n = 1}} end",
};

// Whether every number in `v` reads back as itself through Lua (an int64 or a finite double).
bool round_trips(const boost::json::value& v) {
  switch (v.kind()) {
    case boost::json::kind::uint64: return v.get_uint64() <= static_cast<std::uint64_t>(INT64_MAX);
    case boost::json::kind::double_: return std::isfinite(v.get_double());
    case boost::json::kind::array:
      for (const auto& e : v.get_array()) {
        if (!round_trips(e)) return false;
      }
      return true;
    case boost::json::kind::object:
      for (const auto& kv : v.get_object()) {
        if (!round_trips(kv.value())) return false;
      }
      return true;
    default: return true;
  }
}

// Equal values, a double within 2 ulps: Boost.JSON 1.81 parses some long numbers 1 ulp off (it
// is not correctly rounded), so "923237744000476176838" read, written as the shortest text of
// that double and read again may come back 1 ulp away although the text written is exact.
bool same(const boost::json::value& a, const boost::json::value& b) {
  if (a.is_double() && b.is_double()) {
    double x = a.get_double();
    for (int i = 0; i < 2 && x != b.get_double(); ++i) x = std::nextafter(x, b.get_double());
    return x == b.get_double();
  }
  if (a.kind() != b.kind()) return a == b;
  if (a.is_array()) {
    const auto& x = a.get_array();
    const auto& y = b.get_array();
    if (x.size() != y.size()) return false;
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (!same(x[i], y[i])) return false;
    }
    return true;
  }
  if (a.is_object()) {
    const auto& x = a.get_object();
    const auto& y = b.get_object();
    if (x.size() != y.size()) return false;
    for (const auto& kv : x) {
      const auto* other = y.if_contains(kv.key());
      if (other == nullptr || !same(kv.value(), *other)) return false;
    }
    return true;
  }
  return a == b;
}

}  // namespace

int lua_record_target(const std::uint8_t* data, std::size_t size) {
  Controls controls(data, size);
  const std::size_t which = controls.byte() % std::size(kScripts);
  static process::JsonDecoder decoder;
  const boost::json::value* record = decoder.decode(as_text(data, size), nullptr);
  if (record == nullptr) return 0;
  lua::Options options;
  options.instruction_limit = 200000;
  options.memory_limit = 8u << 20;
  lua::Script script(kScripts[which], "fuzz.lua", options);
  const queue::Attribute attributes[] = {{"topic", "a/b"}};
  lua::Output out;
  const auto kind = script.process(*record, attributes, out);
  if (kind == lua::Output::Kind::error) {
    require(!out.error.empty(), "a refused record says why");
    return 0;
  }
  for (std::size_t i = 0; i < out.size(); ++i) {
    const std::string_view text = out.record(i);
    require(!strings::invalid_utf8_at(text), "a record's JSON is UTF-8");
    boost::system::error_code ec;
    const boost::json::value back = boost::json::parse(text, ec);
    require(!ec, "a record's JSON parses");
    require(back.is_object(), "a record is a JSON object");
  }
  if (which == 0 && record->is_object() && round_trips(*record)) {
    require(kind == lua::Output::Kind::records && out.size() == 1, "an object record passes");
    require(same(boost::json::parse(out.record(0)), *record), "the identity script gives the record back");
  }
  if (!record->is_object() && !record->is_array()) require(kind == lua::Output::Kind::error, "a scalar is refused");
  return 0;
}

}  // namespace tank::fuzz

TANK_FUZZ_TARGET(tank::fuzz::lua_record_target)
