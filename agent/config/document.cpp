#include "config/document.hpp"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>

namespace tank::config {

std::string Location::to_string() const {
  if (line <= 0) return file;
  return fmt::format("{}:{}:{}", file, line, column);
}

std::string Diagnostic::to_string() const {
  std::string prefix = where.to_string();
  std::string out = prefix.empty() ? std::string() : prefix + ": ";
  if (severity == Severity::warning) out += "warning: ";
  if (!key.empty()) out += key + ": ";
  out += message;
  return out;
}

void Diagnostics::error(Location where, std::string key, std::string message) {
  items_.push_back({Diagnostic::Severity::error, std::move(where), std::move(key), std::move(message)});
}

void Diagnostics::warning(Location where, std::string key, std::string message) {
  items_.push_back({Diagnostic::Severity::warning, std::move(where), std::move(key), std::move(message)});
}

bool Diagnostics::has_errors() const { return error_count() > 0; }

std::size_t Diagnostics::error_count() const {
  return static_cast<std::size_t>(std::count_if(items_.begin(), items_.end(), [](const Diagnostic& d) {
    return d.severity == Diagnostic::Severity::error;
  }));
}

std::vector<Diagnostic> Diagnostics::sorted() const {
  std::vector<Diagnostic> out = items_;
  std::stable_sort(out.begin(), out.end(), [](const Diagnostic& a, const Diagnostic& b) {
    // Problems without a position (defaults, whole-file) come last.
    int la = a.where.line <= 0 ? 1 << 30 : a.where.line;
    int lb = b.where.line <= 0 ? 1 << 30 : b.where.line;
    if (la != lb) return la < lb;
    return a.where.column < b.where.column;
  });
  return out;
}

const Value* SectionValues::find(std::string_view name) const {
  auto it = values_.find(name);
  return it == values_.end() ? nullptr : &it->second;
}

bool SectionValues::is_set(std::string_view name) const {
  const Value* v = find(name);
  return v != nullptr && !v->is_default;
}

Location SectionValues::location_of(std::string_view name) const {
  const Value* v = find(name);
  if (v != nullptr && !v->is_default) return v->where;
  return where_;
}

const Value& SectionValues::get(std::string_view name, Type type) const {
  const Value* v = find(name);
  if (v == nullptr) {
    throw std::logic_error(fmt::format("configuration option {}.{} has no value", path_, name));
  }
  if (v->type != type) {
    throw std::logic_error(fmt::format("configuration option {}.{} is a {}, not a {}", path_, name,
                                       type_name(v->type), type_name(type)));
  }
  return *v;
}

const std::string& SectionValues::string(std::string_view name) const {
  const Value* v = find(name);
  if (v != nullptr && v->type == Type::choice) return std::get<std::string>(v->data);
  return std::get<std::string>(get(name, Type::string).data);
}
bool SectionValues::boolean(std::string_view name) const { return std::get<bool>(get(name, Type::boolean).data); }
std::int64_t SectionValues::integer(std::string_view name) const {
  return std::get<std::int64_t>(get(name, Type::integer).data);
}
double SectionValues::number(std::string_view name) const { return std::get<double>(get(name, Type::number).data); }
std::uint64_t SectionValues::size(std::string_view name) const {
  return std::get<std::uint64_t>(get(name, Type::size).data);
}
std::chrono::nanoseconds SectionValues::duration(std::string_view name) const {
  return std::get<std::chrono::nanoseconds>(get(name, Type::duration).data);
}
const ListTable& SectionValues::list_table(std::string_view name) const {
  return std::get<ListTable>(get(name, Type::list_table).data);
}

const PropertyTable& SectionValues::property_table(std::string_view name) const {
  return std::get<PropertyTable>(get(name, Type::property_table).data);
}

bool operator==(const SectionValues& a, const SectionValues& b) {
  return std::equal(a.values_.begin(), a.values_.end(), b.values_.begin(), b.values_.end(),
                    [](const auto& x, const auto& y) { return x.first == y.first && x.second.data == y.second.data; });
}

const TableList& SectionValues::tables(std::string_view name) const {
  return std::get<TableList>(get(name, Type::table_list).data);
}

const std::vector<std::string>& SectionValues::strings(std::string_view name) const {
  return std::get<std::vector<std::string>>(get(name, Type::string_list).data);
}

const SectionValues& Document::section(std::string_view path) const {
  auto it = sections.find(path);
  if (it == sections.end()) throw std::logic_error(fmt::format("no configuration section [{}]", path));
  return it->second;
}

const std::vector<SectionValues>& Document::instances(std::string_view path) const {
  static const std::vector<SectionValues> none;
  auto it = plugins.find(path);
  return it == plugins.end() ? none : it->second;
}

const Section* Schema::find(std::string_view path) const {
  for (const Section* s : sections) {
    if (s->path == path) return s;
  }
  return nullptr;
}

std::string_view type_name(Type type) {
  switch (type) {
    case Type::string: return "string";
    case Type::boolean: return "boolean";
    case Type::integer: return "integer";
    case Type::number: return "number";
    case Type::size: return "size";
    case Type::duration: return "duration";
    case Type::string_list: return "list of strings";
    case Type::list_table: return "table of lists of strings";
    case Type::property_table: return "table of name = value";
    case Type::table_list: return "list of tables";
    case Type::choice: return "choice";
  }
  return "?";
}

}  // namespace tank::config
