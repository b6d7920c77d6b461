#pragma once

// A loaded, validated configuration: typed values with the place each came from.

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/schema.hpp"

namespace tank::config {

// Where a value was written. line == 0 means "not in the file" (a default).
struct Location {
  std::string file;
  int line = 0;
  int column = 0;

  // "tank.toml:12:5", or "tank.toml" when line is 0.
  std::string to_string() const;
};

struct Diagnostic {
  enum class Severity { error, warning };
  Severity severity = Severity::error;
  Location where;
  std::string key;      // the key path, e.g. "queue.max_disk_bytes" or "inputs.mqtt[1].qos"
  std::string message;  // what was wrong and what was expected

  // "tank.toml:12:5: queue.max_disk_bytes: expected a size ..." (warnings say "warning: ").
  std::string to_string() const;
};

class Diagnostics {
 public:
  void error(Location where, std::string key, std::string message);
  void warning(Location where, std::string key, std::string message);
  bool has_errors() const;
  std::size_t error_count() const;
  const std::vector<Diagnostic>& all() const { return items_; }
  // Sorted by file position (errors and warnings interleaved), then as added.
  std::vector<Diagnostic> sorted() const;

 private:
  std::vector<Diagnostic> items_;
};

// A list_table option's value: (name, strings) in file order.
using ListTable = std::vector<std::pair<std::string, std::vector<std::string>>>;
// A property_table option's value: (dotted name, value as text) in file order.
using PropertyTable = std::vector<std::pair<std::string, std::string>>;
// A table_list option's value: each table's values, in file order.
using TableList = std::vector<SectionValues>;

struct Value {
  using Data = std::variant<bool, std::int64_t, double, std::string, std::vector<std::string>, std::uint64_t,
                            std::chrono::nanoseconds, ListTable, PropertyTable, TableList>;
  Type type = Type::string;
  Data data;
  Location where;
  bool is_default = false;
};

// The values of one section instance, every declared option present either with the value from
// the file or its default (options with no default and not set are absent).
class SectionValues {
 public:
  SectionValues() = default;
  SectionValues(const Section* section, std::string path, Location where)
      : section_(section), path_(std::move(path)), where_(std::move(where)) {}

  const Section& section() const { return *section_; }
  // "queue", or "inputs.mqtt[1]" for the second instance of a plugin.
  const std::string& path() const { return path_; }
  // The table header's position (line 0 when the section is absent from the file).
  const Location& where() const { return where_; }

  const Value* find(std::string_view name) const;
  bool has(std::string_view name) const { return find(name) != nullptr; }
  // True when the file set the option (not a default).
  bool is_set(std::string_view name) const;
  // The value's position, or the section's when the value is a default.
  Location location_of(std::string_view name) const;

  // Typed access. Each throws std::logic_error when the option is absent or declared with
  // another type: a bug in the caller, not a user error (validation already ran).
  const std::string& string(std::string_view name) const;
  bool boolean(std::string_view name) const;
  std::int64_t integer(std::string_view name) const;
  double number(std::string_view name) const;
  std::uint64_t size(std::string_view name) const;
  std::chrono::nanoseconds duration(std::string_view name) const;
  const std::vector<std::string>& strings(std::string_view name) const;
  const std::string& choice(std::string_view name) const { return string(name); }
  const ListTable& list_table(std::string_view name) const;
  const PropertyTable& property_table(std::string_view name) const;
  const TableList& tables(std::string_view name) const;

  void set(std::string name, Value value) { values_.insert_or_assign(std::move(name), std::move(value)); }

  // The same options with the same values (where they were written aside): what a reload compares.
  friend bool operator==(const SectionValues& a, const SectionValues& b);

 private:
  const Value& get(std::string_view name, Type type) const;

  const Section* section_ = nullptr;
  std::string path_;
  Location where_;
  std::map<std::string, Value, std::less<>> values_;
};

struct Document {
  std::string source;  // the file name, or "<embedded default>"
  std::string text;    // the text as loaded (for the embedded default: what `tank run` used)
  std::map<std::string, SectionValues, std::less<>> sections;           // "agent", "queue", ...
  std::map<std::string, std::vector<SectionValues>, std::less<>> plugins;  // "inputs.mqtt" -> instances

  // The values of a core section; every core section is present (with defaults when absent
  // from the file). Throws std::logic_error for an unknown path.
  const SectionValues& section(std::string_view path) const;
  // The instances of a plugin, in file order (empty when none).
  const std::vector<SectionValues>& instances(std::string_view path) const;
};

}  // namespace tank::config
