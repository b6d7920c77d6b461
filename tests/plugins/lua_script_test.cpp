// processors.lua's runtime (plugins/processors_lua/lua_script.hpp, lua_json.hpp): what a script
// gets, what it may return, the sandbox and the bounds.

#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include <fmt/format.h>

#include "processors_lua/lua_script.hpp"
#include "support/helpers.hpp"

using namespace tank;
using lua::Output;

namespace {

lua::Script script(const std::string& source, lua::Options options = {}) {
  return lua::Script(source, "test.lua", std::move(options));
}

struct Run {
  Output::Kind kind;
  Output out;
};

Run run(lua::Script& s, const std::string& json, std::vector<queue::Attribute> attributes = {}) {
  Run r;
  r.kind = s.process(boost::json::parse(json), attributes, r.out);
  return r;
}

// The one record a call returned.
std::string one(lua::Script& s, const std::string& json) {
  Run r = run(s, json);
  INFO(r.out.error);
  REQUIRE(r.kind == Output::Kind::records);
  REQUIRE(r.out.size() == 1);
  return std::string(r.out.record(0));
}

std::string error_of(lua::Script& s, const std::string& json) {
  Run r = run(s, json);
  REQUIRE(r.kind == Output::Kind::error);
  return r.out.error;
}

const std::string kIdentity = "function process(r, a) return r end";

}  // namespace

TEST_CASE("lua: a 5-line script renames a field and converts a unit", "[unit][lua]") {
  auto s = script(R"(
function process(record, attributes)
  record.temp_f = record.temp * 9 / 5 + 32
  record.temp = nil
  return record
end)");
  CHECK(one(s, R"({"device":"a","temp":20})") == R"({"device":"a","temp_f":68.0})");
  // The first record and later ones alike; a missing field is a Lua error with its line.
  CHECK(one(s, R"({"device":"b","temp":-40})") == R"({"device":"b","temp_f":-40.0})");
  const std::string missing = error_of(s, R"({"device":"c"})");
  CHECK_THAT(missing, Catch::Contains("test.lua:3:") && Catch::Contains("nil"));
  // A type change: a string where a number was.
  CHECK_THAT(error_of(s, R"({"device":"d","temp":"hot"})"), Catch::Contains("test.lua:3:"));
  // ...and the stage goes on.
  CHECK(one(s, R"({"temp":0})") == R"({"temp_f":32.0})");
}

TEST_CASE("lua: JSON values round-trip through Lua unchanged", "[unit][lua]") {
  auto s = script(kIdentity);
  // Integers stay integers, floats stay floats, null stays null, [] and {} keep their kind, strings
  // keep their bytes (escapes, UTF-8, NUL), keys come out in byte order.
  CHECK(one(s, R"({"b":1,"a":1.5,"c":2.0,"n":null,"e":[],"o":{},"s":"\u00e9\"\\\n\u0000x","l":[1,null,"x",[]]})") ==
        R"({"a":1.5,"b":1,"c":2.0,"e":[],"l":[1,null,"x",[]],"n":null,"o":{},"s":"é\"\\\n\u0000x"})");
  CHECK(one(s, R"({"big":9223372036854775807,"neg":-9223372036854775808,"tiny":5e-324,"huge":1e300})") ==
        R"({"big":9223372036854775807,"huge":1e+300,"neg":-9223372036854775808,"tiny":5e-324})");
  // Above 2^63-1 a JSON integer becomes a float (Lua's integers are 64-bit signed).
  CHECK(one(s, R"({"u":18446744073709551615})") == R"({"u":1.8446744073709552e+19})");
  CHECK(one(s, R"({"t":true,"f":false})") == R"({"f":false,"t":true})");
}

TEST_CASE("lua: what is not JSON-able dead-letters the record with the place", "[unit][lua]") {
  auto s = script(R"(
function process(r)
  if r.k == "nan" then r.v = 0/0 end
  if r.k == "inf" then r.x = {y = {1, 2, math.huge}} end
  if r.k == "fn" then r.f = print end
  if r.k == "cycle" then r.self = r end
  if r.k == "mixed" then r.m = {1, 2, a = 3} end
  if r.k == "holes" then r.h = {[1] = 1, [3] = 3} end
  if r.k == "bytes" then r.b = string.char(255) end
  if r.k == "number" then return 42 end
  if r.k == "scalars" then return {1, 2} end
  if r.k == "null" then r.n = tank.null end
  return r
end)");
  CHECK(error_of(s, R"({"k":"nan"})") == "not JSON-able: NaN at record.v");
  CHECK(error_of(s, R"({"k":"inf"})") == "not JSON-able: inf at record.x.y[3]");
  CHECK(error_of(s, R"({"k":"fn"})") == "not JSON-able: a function value at record.f");
  CHECK_THAT(error_of(s, R"({"k":"cycle"})"), Catch::Contains("nested deeper than 64"));
  CHECK_THAT(error_of(s, R"({"k":"mixed"})"), Catch::StartsWith("not JSON-able: a table with keys") &&
                                                    Catch::EndsWith("at record.m"));
  CHECK_THAT(error_of(s, R"({"k":"holes"})"), Catch::Contains("holes") && Catch::EndsWith("at record.h"));
  CHECK_THAT(error_of(s, R"({"k":"bytes"})"), Catch::Contains("not UTF-8") && Catch::EndsWith("at record.b"));
  CHECK_THAT(error_of(s, R"({"k":"number"})"), Catch::Contains("returned a number value"));
  CHECK_THAT(error_of(s, R"({"k":"scalars"})"), Catch::Contains("record[1] is not a record"));
  CHECK(one(s, R"({"k":"null"})") == R"({"k":"null","n":null})");
  // NaN coming in (a number too large for a double is infinity) cannot go out either.
  CHECK(error_of(s, R"({"k":"x","v":1e999})") == "not JSON-able: inf at record.v");
}

TEST_CASE("lua: nil drops, a list gives several records, attributes go with them", "[unit][lua]") {
  auto s = script(R"(
function process(r, a)
  if r.drop then return nil end
  if r.none then return {} end
  if r.split then
    a.split = "yes"
    a.topic = nil
    local out = {}
    for i, v in ipairs(r.split) do out[i] = {v = v} end
    return tank.array(out)
  end
  return r
end)");
  CHECK(run(s, R"({"drop":true})").kind == Output::Kind::nothing);
  CHECK_FALSE(run(s, R"({"drop":true})").out.empty_list);
  // {} is an empty record (an object), not an empty list.
  CHECK(one(s, R"({"none":true})") == "{}");
  Run r = run(s, R"({"split":[1,2,3]})", {{"topic", "t/1"}, {"peer", "p"}});
  REQUIRE(r.kind == Output::Kind::records);
  REQUIRE(r.out.size() == 3);
  CHECK(r.out.record(2) == R"({"v":3})");
  using Pairs = std::vector<std::pair<std::string, std::string>>;
  CHECK(r.out.attributes == Pairs{{"peer", "p"}, {"split", "yes"}});
  Run empty = run(s, R"({"split":[]})");
  CHECK(empty.kind == Output::Kind::nothing);
  CHECK(empty.out.empty_list);
  // Attributes come in as strings and stay in their order.
  Run kept = run(s, R"({"x":1})", {{"z", "1"}, {"a", "2"}});
  CHECK(kept.out.attributes == Pairs{{"z", "1"}, {"a", "2"}});
}

TEST_CASE("lua: an endless loop and a memory bomb fail their record only", "[unit][lua]") {
  lua::Options options;
  options.instruction_limit = 10'000'000;
  options.memory_limit = 4u << 20;
  auto s = script(R"(
keep = {}
function process(r)
  if r.loop then while true do end end
  if r.bomb then local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 100) .. i end end
  if r.rep then return {s = string.rep("x", 1 << 30)} end
  if r.hold then for i = 1, 30000 do keep[#keep + 1] = string.rep("y", 100) .. i end end
  return r
end)", options);
  CHECK(error_of(s, R"({"loop":true})") == "the script ran more than 10000000 instructions (instruction_limit)");
  CHECK(one(s, R"({"ok":1})") == R"({"ok":1})");
  Run bomb = run(s, R"({"bomb":true})");
  REQUIRE(bomb.kind == Output::Kind::error);
  CHECK(bomb.out.out_of_memory);
  CHECK(bomb.out.error == "the script needed more than its memory_limit (4MiB)");
  CHECK(s.memory_used() <= options.memory_limit);
  CHECK(one(s, R"({"ok":2})") == R"({"ok":2})");
  CHECK(run(s, R"({"rep":true})").out.out_of_memory);
  CHECK(one(s, R"({"ok":3})") == R"({"ok":3})");
}

TEST_CASE("lua: the sandbox has no way out", "[unit][lua]") {
  auto s = script(R"(
function process(r)
  local ok, err = pcall(function()
    if r.t == "os" then return os.execute("true") end
    if r.t == "io" then return io.open("/etc/passwd") end
    if r.t == "require" then return require("os") end
    if r.t == "dofile" then return dofile("/etc/passwd") end
    if r.t == "loadfile" then return loadfile("/etc/passwd") end
    if r.t == "debug" then return debug.getregistry() end
    if r.t == "dump" then return string.dump(process) end
    if r.t == "bytecode" then return load("\27Lua", "x", "b") end
    if r.t == "binary" then local f, e = load("\27LuaT\0", "x") if not f then error(e) end end
    if r.t == "gc" then return collectgarbage("stop") end
    if r.t == "global" then leaked = 1 end
    if r.t == "text" then local f = load("return 1 + 1") return f() end
  end)
  return {ok = ok, err = err and tostring(err) or tank.null}
end)");
  for (const char* escape : {"os", "io", "require", "dofile", "loadfile", "debug", "dump", "bytecode", "binary", "gc",
                             "global"}) {
    INFO(escape);
    const auto v = boost::json::parse(one(s, fmt::format(R"({{"t":"{}"}})", escape)));
    CHECK(v.at("ok") == false);
  }
  CHECK_THAT(one(s, R"({"t":"global"})"), Catch::Contains("undeclared global"));
  CHECK_THAT(one(s, R"({"t":"bytecode"})"), Catch::Contains("only text chunks"));
  CHECK(one(s, R"({"t":"text"})") == R"({"err":"2","ok":true})");  // pcall's second value: 1 + 1
}

TEST_CASE("lua: a script that cannot load says where", "[unit][lua]") {
  CHECK_THROWS_WITH(script("function process(r)\n  return r +\nend"),
                    Catch::StartsWith("test.lua:3:") && Catch::Contains("unexpected symbol"));
  CHECK_THROWS_WITH(script("x = 1"), "test.lua: the script defines no function process(record, attributes)");
  CHECK_THROWS_WITH(script("error('no config')"), Catch::StartsWith("test.lua:1: no config"));
  CHECK_THROWS_WITH(script("\x1bLua"), Catch::Contains("attempt to load a binary chunk"));
  lua::Options budget;
  budget.instruction_limit = 1000;
  CHECK_THROWS_WITH(script("while true do end", budget), Catch::Contains("more than 1000 instructions"));
  test::TempDir dir;
  CHECK_THROWS_WITH(lua::Script::from_file(dir / "absent.lua", {}), Catch::Contains("absent.lua: cannot be read"));
}

TEST_CASE("lua: the state table is saved as JSON and restored", "[unit][lua]") {
  lua::Options options;
  options.state = true;
  const std::string source = R"(
function process(r)
  state.n = (state.n or 0) + 1
  state.last = r.v
  if r.bad then state.f = print end
  if r.fix then state.f = nil end
  return {n = state.n, v = r.v}
end)";
  auto a = script(source, options);
  std::string json, error;
  REQUIRE(a.state_json(json, error));
  CHECK(json == "{}");
  CHECK(one(a, R"({"v":1.5})") == R"({"n":1,"v":1.5})");
  CHECK(one(a, R"({"v":[1,{}]})") == R"({"n":2,"v":[1,{}]})");
  REQUIRE(a.state_json(json, error));
  CHECK(json == R"({"last":[1,{}],"n":2})");
  auto b = script(source, options);
  b.restore_state(json);
  CHECK(one(b, R"({"v":"x"})") == R"({"n":3,"v":"x"})");
  CHECK(one(b, R"({"v":1,"bad":true})") == R"({"n":4,"v":1})");
  CHECK_FALSE(b.state_json(json, error));
  CHECK(error == "not JSON-able: a function value at state.f");
  CHECK(one(b, R"({"v":1,"fix":true})") == R"({"n":5,"v":1})");
  CHECK(b.state_json(json, error));
  CHECK_THROWS(b.restore_state("[1]"));
  // Without state = true there is no `state`.
  auto c = script("function process(r) return {has = state ~= nil} end");
  CHECK(one(c, "{}") == R"({"has":false})");
}

TEST_CASE("lua: math.random gives the same numbers in every run", "[unit][lua]") {
  const std::string source = "function process(r) return {x = math.random(1, 1000000)} end";
  auto a = script(source);
  auto b = script(source);
  CHECK(one(a, "{}") == one(b, "{}"));
}
