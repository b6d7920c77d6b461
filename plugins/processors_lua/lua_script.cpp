#include "lua_script.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <boost/json.hpp>

#include <fmt/format.h>

#include <lua5.4/lua.hpp>

#include "common/units.hpp"
#include "lua_json.hpp"

namespace tank::lua {
namespace {

// Memory the state allocated, against its limit (the allocator's user data).
struct Memory {
  std::size_t used = 0;
  std::size_t limit = 0;
};

// A lua_Alloc that refuses to grow past the limit (Lua then raises "not enough memory"). Freeing
// and shrinking always succeed, as Lua requires.
void* allocate(void* ud, void* ptr, std::size_t old_size, std::size_t new_size) {
  auto* memory = static_cast<Memory*>(ud);
  const std::size_t old = ptr == nullptr ? 0 : old_size;  // for a new block old_size is its type
  if (new_size == 0) {
    std::free(ptr);
    memory->used -= old;
    return nullptr;
  }
  if (new_size > old && memory->used + (new_size - old) > memory->limit) return nullptr;
  void* p = std::realloc(ptr, new_size);
  if (p == nullptr) return nullptr;
  memory->used = memory->used - old + new_size;
  return p;
}

}  // namespace

struct Script::Impl {
  Options options;
  Memory memory;
  lua_State* L = nullptr;
  int process_ref = LUA_NOREF;
  WriteScratch scratch;

  // For the protected calls: what they work on.
  const boost::json::value* record = nullptr;
  std::span<const queue::Attribute> attributes;
  Output* out = nullptr;
  std::string_view state_text;
  std::string* state_out = nullptr;
  std::string* state_error = nullptr;

  ~Impl() {
    if (L != nullptr) lua_close(L);
  }

  static Impl& of(lua_State* L) { return **static_cast<Impl**>(lua_getextraspace(L)); }

  static void count_hook(lua_State* L, lua_Debug*) {
    luaL_error(L, "the script ran more than %I instructions (instruction_limit)",
               static_cast<lua_Integer>(of(L).options.instruction_limit));
  }

  // Arms the instruction budget for one call.
  void arm_budget() {
    const auto count = static_cast<int>(std::min<std::uint64_t>(options.instruction_limit, 0x7fffffff));
    lua_sethook(L, count_hook, LUA_MASKCOUNT, count);
  }

  // print(...): to Options::print, the values separated by tabs.
  static int print(lua_State* L) {
    Impl& self = of(L);
    const int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; ++i) {
      if (i > 1) luaL_addchar(&b, '\t');
      luaL_tolstring(L, i, nullptr);
      luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    std::size_t size = 0;
    const char* text = lua_tolstring(L, -1, &size);
    if (self.options.print) self.options.print(std::string_view(text, size));
    return 0;
  }

  // load(chunk [, name [, mode [, env]]]) for text chunks only: a precompiled chunk could break
  // out of the sandbox (Lua does not verify bytecode).
  static int load(lua_State* L) {
    std::size_t size = 0;
    const char* chunk = luaL_checklstring(L, 1, &size);
    const char* name = luaL_optstring(L, 2, chunk);
    const char* mode = luaL_optstring(L, 3, "t");
    if (std::strcmp(mode, "t") != 0) return luaL_error(L, "load: only text chunks (mode \"t\") are allowed");
    const bool has_env = !lua_isnone(L, 4);
    if (luaL_loadbufferx(L, chunk, size, name, "t") != LUA_OK) {
      luaL_pushfail(L);
      lua_insert(L, -2);
      return 2;
    }
    if (has_env) {
      lua_pushvalue(L, 4);
      if (lua_setupvalue(L, -2, 1) == nullptr) lua_pop(L, 1);
    }
    return 1;
  }

  // collectgarbage("count") only: the others would let a script turn the collector off.
  static int collectgarbage(lua_State* L) {
    const char* what = luaL_optstring(L, 1, "count");
    if (std::strcmp(what, "count") != 0) return luaL_error(L, "collectgarbage: only \"count\" is allowed");
    const int kib = lua_gc(L, LUA_GCCOUNT, 0);
    const int bytes = lua_gc(L, LUA_GCCOUNTB, 0);
    lua_pushnumber(L, static_cast<lua_Number>(kib) + static_cast<lua_Number>(bytes) / 1024.0);
    return 1;
  }

  // An assignment to a new global after the main chunk ran.
  static int refuse_global(lua_State* L) {
    return luaL_error(L, "assignment to the undeclared global \"%s\" while processing a record (use a local, or "
                         "the table `state` with state = true)",
                      luaL_tolstring(L, 2, nullptr));
  }

  void open_sandbox() {
    static const luaL_Reg libraries[] = {
        {LUA_GNAME, luaopen_base},         {LUA_STRLIBNAME, luaopen_string}, {LUA_TABLIBNAME, luaopen_table},
        {LUA_MATHLIBNAME, luaopen_math},   {LUA_UTF8LIBNAME, luaopen_utf8},
    };
    for (const luaL_Reg& lib : libraries) {
      luaL_requiref(L, lib.name, lib.func, 1);
      lua_pop(L, 1);
    }
    for (const char* name : {"dofile", "loadfile"}) {
      lua_pushnil(L);
      lua_setglobal(L, name);
    }
    lua_register(L, "print", print);
    lua_register(L, "load", load);
    lua_register(L, "collectgarbage", collectgarbage);
    lua_getglobal(L, LUA_STRLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    // The same random numbers in every run: a restart must not change what a script computes.
    lua_getglobal(L, LUA_MATHLIBNAME);
    lua_getfield(L, -1, "randomseed");
    lua_pushinteger(L, 0);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    open_tank_library(L);
  }

  // Protected: the sandbox, the script's main chunk (loaded at index 1), its process function.
  static int setup(lua_State* L) {
    Impl& self = of(L);
    self.open_sandbox();
    if (self.options.state) {
      lua_newtable(L);
      lua_setglobal(L, "state");
    }
    lua_pushvalue(L, 1);
    self.arm_budget();
    lua_call(L, 0, 0);
    lua_sethook(L, nullptr, 0, 0);
    if (lua_getglobal(L, "process") != LUA_TFUNCTION) {
      return luaL_error(L, "the script defines no function process(record, attributes)");
    }
    self.process_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    // From now on a new global is an error (see the header).
    lua_pushglobaltable(L);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, refuse_global);
    lua_setfield(L, -2, "__newindex");
    lua_setmetatable(L, -2);
    lua_pop(L, 1);
    return 0;
  }

  // Protected: one call of process(), its result written into *out.
  static int call(lua_State* L) {
    Impl& self = of(L);
    Output& out = *self.out;
    lua_createtable(L, 0, static_cast<int>(self.attributes.size()));
    for (const queue::Attribute& a : self.attributes) {
      lua_pushlstring(L, a.key.data(), a.key.size());
      lua_pushlstring(L, a.value.data(), a.value.size());
      lua_rawset(L, -3);
    }
    const int attributes = lua_gettop(L);  // stays on the stack after the call
    lua_rawgeti(L, LUA_REGISTRYINDEX, self.process_ref);
    push_json(L, *self.record);
    lua_pushvalue(L, attributes);
    self.arm_budget();
    lua_call(L, 2, 1);
    lua_sethook(L, nullptr, 0, 0);
    // result at -1, attributes table below it
    const int result = lua_gettop(L);
    if (lua_isnil(L, result)) {
      out.kind = Output::Kind::nothing;
      return 0;
    }
    if (lua_type(L, result) != LUA_TTABLE) {
      out.kind = Output::Kind::error;
      out.error = fmt::format("process() returned a {} value; return a record (a table), a list of records, or nil",
                              luaL_typename(L, result));
      return 0;
    }
    if (is_list(L, result)) {
      const auto n = static_cast<lua_Integer>(lua_rawlen(L, result));
      for (lua_Integer i = 1; i <= n; ++i) {
        lua_rawgeti(L, result, i);
        if (!self.record_json(L, fmt::format("record[{}]", i))) return 0;
        lua_pop(L, 1);
      }
      if (n == 0) {
        out.kind = Output::Kind::nothing;
        out.empty_list = true;
        return 0;
      }
    } else if (!self.record_json(L, "record")) {
      return 0;
    }
    if (!self.read_attributes(L, attributes)) return 0;
    out.kind = Output::Kind::records;
    return 0;
  }

  // Writes the record at the top of the stack into *out; false (and out is an error) when it is
  // not a JSON object.
  bool record_json(lua_State* L, std::string_view root) {
    Output& o = *out;
    if (!write_json(L, -1, o.json, o.error, root, /*object_only=*/true, scratch)) {
      o.kind = Output::Kind::error;
      return false;
    }
    o.ends.push_back(o.json.size());
    return true;
  }

  // The attributes table after the call: the keys it had first, in their order (values as they
  // are now; removed ones left out), then the keys the script added, in byte order.
  bool read_attributes(lua_State* L, int table) {
    Output& o = *out;
    for (const queue::Attribute& a : attributes) {
      lua_pushlstring(L, a.key.data(), a.key.size());
      if (lua_rawget(L, table) != LUA_TNIL && !attribute_value(L, a.key)) return false;
      lua_pop(L, 1);
    }
    const std::size_t first_new = o.attributes.size();
    lua_pushnil(L);
    while (lua_next(L, table) != 0) {
      if (lua_type(L, -2) != LUA_TSTRING) {
        o.kind = Output::Kind::error;
        o.error = fmt::format("attributes: a key that is not a string ({})", luaL_typename(L, -2));
        return false;
      }
      std::size_t n = 0;
      const char* p = lua_tolstring(L, -2, &n);
      const std::string_view key(p, n);
      bool known = false;
      for (const queue::Attribute& a : attributes) known = known || a.key == key;
      if (!known && !attribute_value(L, key)) return false;
      lua_pop(L, 1);
    }
    std::sort(o.attributes.begin() + static_cast<std::ptrdiff_t>(first_new), o.attributes.end());
    return true;
  }

  // Appends the attribute value at the top of the stack (a string or a number).
  bool attribute_value(lua_State* L, std::string_view key) {
    Output& o = *out;
    const int type = lua_type(L, -1);
    if (type != LUA_TSTRING && type != LUA_TNUMBER) {
      o.kind = Output::Kind::error;
      o.error = fmt::format("attributes.{}: a {} value; attributes are strings", key, luaL_typename(L, -1));
      return false;
    }
    if (key.size() > 0xffff) {
      o.kind = Output::Kind::error;
      o.error = "attributes: a key longer than 65535 bytes";
      return false;
    }
    lua_pushvalue(L, -1);  // tolstring converts a number in place: convert a copy
    std::size_t n = 0;
    const char* p = lua_tolstring(L, -1, &n);
    o.attributes.emplace_back(std::string(key), std::string(p, n));
    lua_pop(L, 1);
    return true;
  }

  // Protected: state_json().
  static int write_state(lua_State* L) {
    Impl& self = of(L);
    lua_getglobal(L, "state");
    if (lua_isnil(L, -1)) {
      *self.state_out = "{}";
      return 0;
    }
    if (!write_json(L, -1, *self.state_out, *self.state_error, "state", /*object_only=*/true, self.scratch)) {
      self.state_out->clear();
    }
    return 0;
  }

  // Protected: restore_state().
  static int read_state(lua_State* L) {
    Impl& self = of(L);
    boost::json::parse_options options;
    options.max_depth = kMaxDepth;
    boost::system::error_code ec;
    const boost::json::value v = boost::json::parse(self.state_text, ec, {}, options);
    if (ec || !v.is_object()) return luaL_error(L, "the saved state is not a JSON object");
    lua_pushglobaltable(L);
    lua_pushliteral(L, "state");
    push_json(L, v);
    lua_rawset(L, -3);
    return 0;
  }

  // Runs `f` protected; on an error, its message (or what the budget or limit says).
  int protected_call(lua_CFunction f, std::string* error, int args = 0) {
    lua_pushcfunction(L, f);
    if (args > 0) lua_insert(L, -(args + 1));
    const int status = lua_pcall(L, args, 0, 0);
    lua_sethook(L, nullptr, 0, 0);
    if (status != LUA_OK && error != nullptr) {
      if (status == LUA_ERRMEM) {
        *error = fmt::format("the script needed more than its memory_limit ({})", units::format_size(memory.limit));
      } else if (const char* message = lua_tostring(L, -1)) {
        *error = message;
      } else {
        *error = fmt::format("the script raised an error with a {} value", luaL_typename(L, -1));
      }
    }
    if (status != LUA_OK) lua_pop(L, 1);
    return status;
  }
};

Script::Script(std::string_view source, const std::string& chunk_name, Options options)
    : impl_(std::make_unique<Impl>()) {
  Impl& self = *impl_;
  self.options = std::move(options);
  self.memory.limit = self.options.memory_limit;
  self.L = lua_newstate(allocate, &self.memory);
  if (self.L == nullptr) throw ScriptError(chunk_name + ": not enough memory for a Lua state (memory_limit)");
  *static_cast<Impl**>(lua_getextraspace(self.L)) = &self;
  // Generational collection: a record's tables die young, which it collects cheaply.
  lua_gc(self.L, LUA_GCGEN, 0, 0);
  const std::string name = "@" + chunk_name;  // '@': Lua names the chunk by this file name
  const int loaded = luaL_loadbufferx(self.L, source.data(), source.size(), name.c_str(), "t");
  if (loaded != LUA_OK) {
    const char* message = lua_tostring(self.L, -1);
    throw ScriptError(message != nullptr ? message : chunk_name + ": the script cannot be loaded");
  }
  std::string error;
  if (self.protected_call(Impl::setup, &error, 1) != LUA_OK) {
    throw ScriptError(error.starts_with(chunk_name) ? error : chunk_name + ": " + error);
  }
}

Script::~Script() = default;

std::unique_ptr<Script> Script::from_file(const std::filesystem::path& path, Options options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ScriptError(fmt::format("{}: cannot be read ({})", path.string(), std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ScriptError(fmt::format("{}: cannot be read", path.string()));
  return std::make_unique<Script>(text.str(), path.string(), std::move(options));
}

Output::Kind Script::process(const boost::json::value& record, std::span<const queue::Attribute> attributes,
                             Output& out) {
  Impl& self = *impl_;
  out.kind = Output::Kind::nothing;
  out.empty_list = false;
  out.out_of_memory = false;
  out.error.clear();
  out.json.clear();
  out.ends.clear();
  out.attributes.clear();
  self.record = &record;
  self.attributes = attributes;
  self.out = &out;
  const int status = self.protected_call(Impl::call, &out.error);
  if (status != LUA_OK) {
    out.kind = Output::Kind::error;
    out.out_of_memory = status == LUA_ERRMEM;
  }
  if (out.kind != Output::Kind::records) {
    out.json.clear();
    out.ends.clear();
    out.attributes.clear();
  }
  self.out = nullptr;
  lua_settop(self.L, 0);
  return out.kind;
}

bool Script::state_json(std::string& out, std::string& error) {
  Impl& self = *impl_;
  out.clear();
  error.clear();
  self.state_out = &out;
  self.state_error = &error;
  if (self.protected_call(Impl::write_state, &error) != LUA_OK) out.clear();
  lua_settop(self.L, 0);
  return error.empty();
}

void Script::restore_state(std::string_view json) {
  Impl& self = *impl_;
  self.state_text = json;
  std::string error;
  const int status = self.protected_call(Impl::read_state, &error);
  lua_settop(self.L, 0);
  if (status != LUA_OK) throw ScriptError(error);
}

std::size_t Script::memory_used() const { return impl_->memory.used; }

}  // namespace tank::lua
