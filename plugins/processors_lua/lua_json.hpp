#pragma once

// JSON <-> Lua for processors.lua, both ways in one place.
//
// JSON to Lua:
//   object -> table with string keys       array -> sequence 1..n, marked as an array
//   string -> string (the same bytes)      null  -> tank.null (a unique light userdata)
//   integer -> integer (above 2^63-1: float)  number with a fraction or exponent -> float
//   true/false -> boolean
// Lua to JSON:
//   a table marked as an array (what came in as one, or tank.array(t)) -> array of t[1..#t]
//   (nil in between -> null); another table with only the keys 1..n -> array; one with only
//   string keys, or none -> object, its keys in byte order (a Lua table has no order, and the
//   output must be the same in every run); integer -> integer; float -> number, written as the
//   shortest text that reads back as the same double and keeps a ".0" when whole, so that a float
//   stays a float; string -> string (must be UTF-8); tank.null -> null; boolean -> boolean.
// Not JSON-able (an error naming the place, e.g. "NaN at record.temp"): NaN and infinities, a
// string that is not UTF-8, a table with other keys (or both kinds), nesting deeper than
// kMaxDepth (also what a cycle gives), functions, userdata, threads.
//
// Every function here may raise a Lua error (memory): call it from a protected call.

#include <cstddef>
#include <cstdint>
#include <vector>
#include <string>
#include <string_view>

#include <boost/json/fwd.hpp>

struct lua_State;

namespace tank::lua {

inline constexpr int kMaxDepth = 64;

// Installs tank.null, tank.array in the state (once, when it is made).
void open_tank_library(lua_State* L);

// Pushes `value` as Lua values (see above).
void push_json(lua_State* L, const boost::json::value& value);

// What write_json() reuses from one call to the next.
struct WriteScratch {
  struct Segment {
    std::string_view key;  // the key, or (data() null) an array index
    std::int64_t index = 0;
  };
  struct Entry {
    std::string_view key;
    std::int64_t index = 0;
    int slot = 0;  // the value's place on the Lua stack
  };
  std::vector<Segment> path;
  std::vector<Entry> entries;
};

// Appends the Lua value at stack `index` to `out` as JSON. `root` names it in errors
// ("record", "state"). With `object_only`, a value that is not written as a JSON object is
// refused ("record is not a record: ..."). Returns false with `error` ("not JSON-able: NaN at
// record.temp") when it cannot; `out` then holds a part of it.
bool write_json(lua_State* L, int index, std::string& out, std::string& error, std::string_view root,
                bool object_only, WriteScratch& scratch);

// Whether the table at `index` is a list of records: marked as an array, or with keys 1..n only
// (n >= 1). {} is not: it is an empty record.
bool is_list(lua_State* L, int index);

}  // namespace tank::lua
