#pragma once

// processors.lua's runtime: one sandboxed Lua 5.4 state running a user's script. No queue, no
// clock, no threads: the stage (lua.cpp) hands it one record at a time.
//
// The script defines a global function `process(record, attributes)`:
//   - record: the record's JSON as Lua values (lua_json.hpp says how each JSON type maps);
//   - attributes: the record's queue attributes (MQTT topic, TCP peer...) as a table of strings,
//     which the script may change; every record it returns carries the table as it is left;
//   - it returns a record (a table that is a JSON object), a list of records (a sequence of such
//     tables), or nil (the record is dropped).
//
// Sandbox: the base functions but dofile, loadfile and print (print goes to Options::print),
// load only of text chunks, collectgarbage("count") only; the string (no string.dump), table,
// math (seeded with 0: math.random gives the same numbers every run) and utf8 libraries; no os,
// io, package/require, debug or coroutine. Globals can be set while the script's main chunk runs
// (its functions, its constants); while it processes records an assignment to a new global is an
// error (a local was meant, or `state`), so no hidden state outlives a record unless the script
// keeps it in a table it made at load. Lua's errors are C++ exceptions here (Debian's
// liblua5.4-c++), so a script error unwinds tank's frames properly.
//
// Bounds: an instruction budget per call (a count hook: a loop that does not end is an error of
// that record) and a memory limit over everything the state allocates (an allocation past it
// fails, which Lua reports as "not enough memory"; the state stays usable). Neither covers time
// spent inside one library call (a pathological string pattern): those are bounded by the
// memory limit only.
//
// Thread safety: none; one Script per thread.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/json/fwd.hpp>

#include "queue/record.hpp"

namespace tank::lua {

// A script that cannot be used (missing file, syntax error, no process function, an error or a
// budget exceeded while its main chunk runs): "path:line: message" where Lua knows the line.
class ScriptError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Options {
  std::uint64_t instruction_limit = 1'000'000;  // per call of process() (and for the main chunk)
  std::size_t memory_limit = 16u << 20;         // bytes, everything the state allocates
  bool state = false;                           // a global table `state` that the stage persists
  std::function<void(std::string_view)> print;  // where print() goes (nothing when empty)
};

// What one call of process() gave.
struct Output {
  enum class Kind {
    records,  // records() holds one or more records
    nothing,  // nil, or an empty list: dropped
    error,    // error holds what went wrong: a Lua error, the budget, not JSON-able
  };
  Kind kind = Kind::nothing;
  bool empty_list = false;      // for nothing: the script returned an empty list (not nil)
  bool out_of_memory = false;   // for error: the memory limit was hit
  std::string error;
  std::string json;              // the records' JSON texts, one after the other
  std::vector<std::size_t> ends;  // where each record ends in json
  std::vector<std::pair<std::string, std::string>> attributes;  // the attributes table after the call

  std::size_t size() const { return ends.size(); }
  std::string_view record(std::size_t i) const {
    const std::size_t begin = i == 0 ? 0 : ends[i - 1];
    return std::string_view(json).substr(begin, ends[i] - begin);
  }
};

class Script {
 public:
  // Compiles `source` (text only; a precompiled chunk is refused) as `chunk_name` (what error
  // messages name, e.g. the path) in a new sandboxed state and runs its main chunk. Throws
  // ScriptError when it does not compile, fails, or defines no function `process`.
  Script(std::string_view source, const std::string& chunk_name, Options options);
  ~Script();
  Script(const Script&) = delete;
  Script& operator=(const Script&) = delete;

  // Reads and loads the file at `path` (named by its path in messages). Throws ScriptError.
  static std::unique_ptr<Script> from_file(const std::filesystem::path& path, Options options);

  // Calls process(record, attributes). Never throws for what the script does; fills `out`
  // (reusing its memory) and returns out.kind.
  Output::Kind process(const boost::json::value& record, std::span<const queue::Attribute> attributes, Output& out);

  // With Options::state: the `state` table as a JSON object text. False with `error` when it
  // cannot be written (a function in it, NaN, a cycle...).
  bool state_json(std::string& out, std::string& error);
  // With Options::state: sets `state` from a JSON object text that state_json() wrote. Throws
  // ScriptError when it cannot.
  void restore_state(std::string_view json);

  // Bytes the state holds now.
  std::size_t memory_used() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tank::lua
