#include "lua_json.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <boost/json.hpp>

#include <fmt/format.h>

#include <lua5.4/lua.hpp>

#include "common/strings.hpp"

namespace tank::lua {
namespace {

// Addresses used as unique keys and values: the null sentinel, and the registry key of the
// array metatable.
const char kNull = 0;
const char kArrayMetatable = 0;

void* null_value() { return const_cast<char*>(&kNull); }

// Pushes the array metatable.
void push_array_metatable(lua_State* L) { lua_rawgetp(L, LUA_REGISTRYINDEX, &kArrayMetatable); }

// tank.array(t): marks t as a JSON array (an empty table is then [], not {}); returns t.
int mark_array(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  push_array_metatable(L);
  lua_setmetatable(L, 1);
  return 1;
}

// Whether the table at `index` carries the array metatable.
bool marked_array(lua_State* L, int index) {
  if (!lua_getmetatable(L, index)) return false;
  push_array_metatable(L);
  const bool same = lua_rawequal(L, -1, -2) != 0;
  lua_pop(L, 2);
  return same;
}

// The keys of a table: only strings (an object), only integers 1..n (an array), neither.
struct KeyShape {
  bool strings = false;
  bool integers = false;
  bool other = false;
  lua_Integer max = 0;
  std::size_t count = 0;
};

KeyShape key_shape(lua_State* L, int table) {
  KeyShape shape;
  lua_pushnil(L);
  while (lua_next(L, table) != 0) {
    ++shape.count;
    if (lua_type(L, -2) == LUA_TSTRING) {
      shape.strings = true;
    } else if (lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1) {
      shape.integers = true;
      shape.max = std::max(shape.max, lua_tointeger(L, -2));
    } else {
      shape.other = true;
    }
    lua_pop(L, 1);
  }
  return shape;
}

void push_value(lua_State* L, const boost::json::value& v, int array_mt) {
  switch (v.kind()) {
    case boost::json::kind::null: lua_pushlightuserdata(L, null_value()); return;
    case boost::json::kind::bool_: lua_pushboolean(L, v.get_bool() ? 1 : 0); return;
    case boost::json::kind::int64: lua_pushinteger(L, static_cast<lua_Integer>(v.get_int64())); return;
    case boost::json::kind::uint64:
      if (v.get_uint64() <= static_cast<std::uint64_t>(std::numeric_limits<lua_Integer>::max())) {
        lua_pushinteger(L, static_cast<lua_Integer>(v.get_uint64()));
      } else {
        lua_pushnumber(L, static_cast<lua_Number>(v.get_uint64()));
      }
      return;
    case boost::json::kind::double_: lua_pushnumber(L, v.get_double()); return;
    case boost::json::kind::string: {
      const auto& s = v.get_string();
      lua_pushlstring(L, s.data(), s.size());
      return;
    }
    case boost::json::kind::array: {
      const auto& a = v.get_array();
      luaL_checkstack(L, 4, "JSON nested too deep");
      lua_createtable(L, static_cast<int>(std::min<std::size_t>(a.size(), 1u << 20)), 0);
      lua_Integer i = 0;
      for (const auto& e : a) {
        push_value(L, e, array_mt);
        lua_rawseti(L, -2, ++i);
      }
      lua_pushvalue(L, array_mt);
      lua_setmetatable(L, -2);
      return;
    }
    case boost::json::kind::object: {
      const auto& o = v.get_object();
      luaL_checkstack(L, 4, "JSON nested too deep");
      lua_createtable(L, 0, static_cast<int>(std::min<std::size_t>(o.size(), 1u << 20)));
      for (const auto& kv : o) {
        lua_pushlstring(L, kv.key().data(), kv.key().size());
        push_value(L, kv.value(), array_mt);
        lua_rawset(L, -3);
      }
      return;
    }
  }
}

// Writes Lua values as JSON, keeping the path to the value being written for error messages.
class Writer {
  using Segment = WriteScratch::Segment;
  using Entry = WriteScratch::Entry;

 public:
  Writer(lua_State* L, std::string& out, std::string& error, std::string_view root, bool object_only,
         WriteScratch& scratch)
      : L_(L), out_(out), error_(error), root_(root), object_only_(object_only), path_(scratch.path),
        entries_(scratch.entries) {}

  bool value(int index, int depth) {
    if (depth == 0 && object_only_ && lua_type(L_, index) != LUA_TTABLE) return not_object();
    switch (lua_type(L_, index)) {
      case LUA_TBOOLEAN: out_ += lua_toboolean(L_, index) ? "true" : "false"; return true;
      case LUA_TNUMBER: return number(index);
      case LUA_TSTRING: return string(index);
      case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L_, index) == null_value()) {
          out_ += "null";
          return true;
        }
        return fail("a userdata value");
      case LUA_TTABLE: return table(index, depth);
      case LUA_TNIL: out_ += "null"; return true;  // only a hole in a marked array gets here
      default: return fail(fmt::format("a {} value", lua_typename(L_, lua_type(L_, index))));
    }
  }

 private:

  bool number(int index) {
    if (lua_isinteger(L_, index)) {
      fmt::format_to(std::back_inserter(out_), "{}", lua_tointeger(L_, index));
      return true;
    }
    const double d = lua_tonumber(L_, index);
    if (std::isnan(d)) return fail("NaN");
    if (std::isinf(d)) return fail(d > 0 ? "inf" : "-inf");
    const std::size_t begin = out_.size();
    fmt::format_to(std::back_inserter(out_), "{}", d);
    // Keep a float a float: 2.0 is written "2.0", not "2" (which reads back as an integer).
    if (out_.find_first_of(".e", begin) == std::string::npos) out_ += ".0";
    return true;
  }

  bool string(int index) {
    std::size_t n = 0;
    const char* p = lua_tolstring(L_, index, &n);
    const std::string_view s(p, n);
    if (const auto bad = strings::invalid_utf8_at(s)) {
      return fail(fmt::format("a string that is not UTF-8 (byte {} is 0x{:02x})", *bad,
                              static_cast<unsigned char>(s[*bad])));
    }
    strings::append_json_string(out_, s);
    return true;
  }

  bool table(int index, int depth) {
    if (depth >= kMaxDepth) return fail(fmt::format("tables nested deeper than {} (a cycle?)", kMaxDepth));
    index = lua_absindex(L_, index);
    luaL_checkstack(L_, 6, "tables nested too deep");
    const bool must_be_object = depth == 0 && object_only_;
    if (marked_array(L_, index)) {
      if (must_be_object) return not_object();
      return marked(index, static_cast<lua_Integer>(lua_rawlen(L_, index)), depth);
    }
    // One pass over the table: each key and value stays on the stack (the value at `slot`, its
    // key below it) and is written from there, in key order, without a second lookup.
    const int base = lua_gettop(L_);
    const std::size_t first = entries_.size();
    bool strings = false, integers = false, other = false;
    lua_pushnil(L_);
    while (lua_next(L_, index) != 0) {
      Entry e;
      e.slot = lua_gettop(L_);
      if (lua_type(L_, -2) == LUA_TSTRING) {
        std::size_t n = 0;
        const char* p = lua_tolstring(L_, -2, &n);  // a string: no conversion happens
        e.key = std::string_view(p, n);
        strings = true;
      } else if (lua_isinteger(L_, -2) && lua_tointeger(L_, -2) >= 1) {
        e.index = lua_tointeger(L_, -2);
        integers = true;
      } else {
        other = true;
      }
      entries_.push_back(e);
      luaL_checkstack(L_, 3, "a table too large to write");
      lua_pushvalue(L_, -2);  // the key, for lua_next
    }
    const auto begin = entries_.begin() + static_cast<std::ptrdiff_t>(first);
    const std::size_t count = entries_.size() - first;
    bool ok = false;
    if (other || (strings && integers)) {
      ok = fail("a table with keys that are neither all strings (an object) nor all 1..n (an array)");
    } else if (integers) {
      std::sort(begin, entries_.end(), [](const Entry& a, const Entry& b) { return a.index < b.index; });
      const lua_Integer max = entries_.back().index;
      if (must_be_object) {
        ok = not_object();
      } else if (static_cast<std::size_t>(max) != count) {
        ok = fail(fmt::format("a table with holes: keys 1..{} with only {} of them set", max, count));
      } else {
        ok = sequence(first, depth);
      }
    } else {
      std::sort(begin, entries_.end(), [](const Entry& a, const Entry& b) { return a.key < b.key; });
      ok = object(first, depth);
    }
    entries_.resize(first);
    lua_settop(L_, base);
    return ok;
  }

  // A marked array: t[1..n], a nil in between written as null.
  bool marked(int index, lua_Integer n, int depth) {
    out_ += '[';
    for (lua_Integer i = 1; i <= n; ++i) {
      if (i > 1) out_ += ',';
      lua_rawgeti(L_, index, i);
      path_.push_back(Segment{{}, i});
      const bool ok = value(-1, depth + 1);
      path_.pop_back();
      lua_pop(L_, 1);
      if (!ok) return false;
    }
    out_ += ']';
    return true;
  }

  // The entries from `first` on (sorted by index, 1..n) as an array.
  bool sequence(std::size_t first, int depth) {
    out_ += '[';
    for (std::size_t k = first; k < entries_.size(); ++k) {
      if (k > first) out_ += ',';
      const Entry e = entries_[k];  // a copy: nested tables add entries
      path_.push_back(Segment{{}, e.index});
      const bool ok = value(e.slot, depth + 1);
      path_.pop_back();
      if (!ok) return false;
    }
    out_ += ']';
    return true;
  }

  // The entries from `first` on (sorted by key) as an object.
  bool object(std::size_t first, int depth) {
    out_ += '{';
    for (std::size_t k = first; k < entries_.size(); ++k) {
      const Entry e = entries_[k];
      if (k > first) out_ += ',';
      path_.push_back(Segment{e.key, 0});
      bool ok = true;
      if (const auto bad = strings::invalid_utf8_at(e.key)) {
        ok = fail(fmt::format("a key that is not UTF-8 (byte {})", *bad));
      } else {
        strings::append_json_string(out_, e.key);
        out_ += ':';
        ok = value(e.slot, depth + 1);
      }
      path_.pop_back();
      if (!ok) return false;
    }
    out_ += '}';
    return true;
  }

  bool not_object() {
    error_ = fmt::format("{} is not a record: a record is a table with string keys (a JSON object)", root_);
    return false;
  }

  bool fail(std::string_view what) {
    std::string place(root_);
    for (const Segment& s : path_) {
      if (s.key.data() != nullptr) {
        place += '.';
        place += strings::printable(s.key, 64);
      } else {
        fmt::format_to(std::back_inserter(place), "[{}]", s.index);
      }
    }
    error_ = fmt::format("not JSON-able: {} at {}", what, place);
    return false;
  }

  lua_State* L_;
  std::string& out_;
  std::string& error_;
  std::string_view root_;
  bool object_only_;
  std::vector<Segment>& path_;
  std::vector<Entry>& entries_;
};

}  // namespace

void open_tank_library(lua_State* L) {
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "array");
  lua_setfield(L, -2, "__name");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &kArrayMetatable);

  lua_createtable(L, 0, 2);
  lua_pushlightuserdata(L, null_value());
  lua_setfield(L, -2, "null");
  lua_pushcfunction(L, mark_array);
  lua_setfield(L, -2, "array");
  lua_setglobal(L, "tank");
}

void push_json(lua_State* L, const boost::json::value& value) {
  luaL_checkstack(L, 4, nullptr);
  push_array_metatable(L);
  const int array_mt = lua_gettop(L);
  push_value(L, value, array_mt);
  lua_remove(L, array_mt);
}

bool write_json(lua_State* L, int index, std::string& out, std::string& error, std::string_view root,
                bool object_only, WriteScratch& scratch) {
  scratch.path.clear();
  scratch.entries.clear();
  Writer writer(L, out, error, root, object_only, scratch);
  return writer.value(lua_absindex(L, index), 0);
}

bool is_list(lua_State* L, int index) {
  if (lua_type(L, index) != LUA_TTABLE) return false;
  index = lua_absindex(L, index);
  if (marked_array(L, index)) return true;
  // A record, the usual case, is known by its first key; only what may be a list is looked at whole.
  lua_pushnil(L);
  if (lua_next(L, index) == 0) return false;  // {}: an empty record
  const bool integer_key = lua_isinteger(L, -2) != 0;
  lua_pop(L, 2);
  if (!integer_key) return false;
  const KeyShape shape = key_shape(L, index);
  return shape.integers && !shape.strings && !shape.other;
}

}  // namespace tank::lua
