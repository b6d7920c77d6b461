#include "config/loader.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <set>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "common/fs.hpp"
#include "common/strings.hpp"

namespace tank::config {
namespace {

constexpr std::string_view kPluginKinds[] = {"inputs", "processors", "outputs"};
constexpr std::uintmax_t kMaxSecretBytes = 64 * 1024;

std::string_view kind_singular(std::string_view kind) {
  if (kind == "inputs") return "input";
  if (kind == "processors") return "processor";
  return "output";
}

struct Context {
  const Schema& schema;
  const LoadOptions& options;
  Diagnostics& diagnostics;
  std::string file;
  std::filesystem::path base_dir;
};

Location at(const Context& ctx, const toml::source_region& region) {
  return Location{ctx.file, static_cast<int>(region.begin.line), static_cast<int>(region.begin.column)};
}

// What a diagnostic shows of a secret option's value: never the value, not even a part of it.
constexpr std::string_view kSecretNotShown = "(not shown: the option is secret)";

// A text the user wrote (or got by substitution), quoted and cut for a diagnostic.
std::string describe_text(std::string_view text, bool secret) {
  if (secret) return fmt::format("a string {}", kSecretNotShown);
  if (text.size() > 60) return fmt::format("\"{}...\"", strings::printable(text, 60));
  return fmt::format("\"{}\"", strings::printable(text, 60));
}

// A value the user wrote, for a diagnostic; of a `secret` option's value only its kind.
std::string describe(const toml::node& node, bool secret = false) {
  if (auto s = node.as_string()) return describe_text(s->get(), secret);
  if (node.is_table()) return "a table";
  if (node.is_array()) return "an array";
  if (secret) {
    if (node.is_integer()) return fmt::format("an integer {}", kSecretNotShown);
    if (node.is_floating_point()) return fmt::format("a number {}", kSecretNotShown);
    if (node.is_boolean()) return fmt::format("true or false {}", kSecretNotShown);
  }
  if (auto i = node.as_integer()) return fmt::format("{}", i->get());
  if (auto f = node.as_floating_point()) return fmt::format("{}", f->get());
  if (auto b = node.as_boolean()) return b->get() ? "true" : "false";
  return "a date or time";
}

template <class T>
std::optional<T> parse_number(std::string_view text) {
  T value{};
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return value;
}

std::optional<double> parse_double(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::string owned(text);
  char* end = nullptr;
  double value = std::strtod(owned.c_str(), &end);
  if (end != owned.c_str() + owned.size()) return std::nullopt;
  return value;
}

// Comparable form of a typed value, for bounds.
struct Bound {
  enum class Kind { none, signed_int, unsigned_int, real } kind = Kind::none;
  std::int64_t i = 0;
  std::uint64_t u = 0;
  double d = 0;
};

Bound bound_of(Type type, std::string_view text) {
  Bound b;
  if (text.empty()) return b;
  switch (type) {
    case Type::integer:
      if (auto v = parse_number<std::int64_t>(text)) b = {Bound::Kind::signed_int, *v, 0, 0};
      break;
    case Type::number:
      if (auto v = parse_double(text)) b = {Bound::Kind::real, 0, 0, *v};
      break;
    case Type::size:
      if (auto v = units::parse_size(text)) b = {Bound::Kind::unsigned_int, 0, *v.value, 0};
      break;
    case Type::duration:
      if (auto v = units::parse_duration(text)) b = {Bound::Kind::signed_int, v.value->count(), 0, 0};
      break;
    default:
      break;
  }
  return b;
}

int compare(const Value::Data& data, const Bound& b) {
  auto cmp = [](auto x, auto y) { return x < y ? -1 : (x > y ? 1 : 0); };
  switch (b.kind) {
    case Bound::Kind::signed_int:
      if (auto p = std::get_if<std::int64_t>(&data)) return cmp(*p, b.i);
      if (auto p = std::get_if<std::chrono::nanoseconds>(&data)) return cmp(p->count(), b.i);
      break;
    case Bound::Kind::unsigned_int:
      if (auto p = std::get_if<std::uint64_t>(&data)) return cmp(*p, b.u);
      break;
    case Bound::Kind::real:
      if (auto p = std::get_if<double>(&data)) return cmp(*p, b.d);
      break;
    case Bound::Kind::none:
      break;
  }
  return 0;
}

// A parsed value, for a diagnostic; of a `secret` option's value nothing.
std::string render(const Value& value, bool secret) {
  if (secret) return std::string(kSecretNotShown);
  return std::visit(
      [&](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
        else if constexpr (std::is_same_v<T, std::int64_t>) return fmt::format("{}", v);
        else if constexpr (std::is_same_v<T, double>) return fmt::format("{}", v);
        else if constexpr (std::is_same_v<T, std::string>) return "\"" + v + "\"";
        else if constexpr (std::is_same_v<T, std::uint64_t>) return units::format_size(v);
        else if constexpr (std::is_same_v<T, std::chrono::nanoseconds>) return units::format_duration(v);
        else return "[...]";
      },
      value.data);
}

class SectionParser {
 public:
  SectionParser(Context& ctx, const Section& section, std::string path, Location where)
      : ctx_(ctx), section_(section), path_(std::move(path)), values_(&section, path_, where) {}

  // Validates the keys of `table` (may be null: the section is absent) and fills in defaults.
  SectionValues run(const toml::table* table) {
    std::set<std::string, std::less<>> seen;
    if (table != nullptr) {
      for (auto&& [key, node] : *table) {
        std::string name(key.str());
        Location where = at(ctx_, key.source());
        const Option* option = find_option(name);
        if (option != nullptr) {
          if (auto v = parse(node, *option, key_path(name), false)) {
            values_.set(name, std::move(*v));
            seen.insert(name);
          } else {
            seen.insert(name);  // reported; do not also report it missing
          }
          continue;
        }
        if (const Option* secret = secret_for_file_key(name)) {
          if (table->contains(secret->name)) {
            ctx_.diagnostics.error(where, key_path(name),
                                   fmt::format("give either {} or {}, not both", secret->name, name));
            seen.insert(std::string(secret->name));
            continue;
          }
          if (auto v = read_secret_file(node, *secret, key_path(name))) values_.set(std::string(secret->name), *v);
          seen.insert(std::string(secret->name));
          continue;
        }
        report_unknown_key(name, where);
      }
    }
    std::vector<const Option*> all;
    for (const Option& o : section_.common) all.push_back(&o);
    for (const Option& o : section_.options) all.push_back(&o);
    for (const Option* o : all) {
      const Option& option = *o;
      if (seen.contains(option.name)) continue;
      if (!option.default_value.empty()) {
        if (auto v = parse_default(option)) values_.set(std::string(option.name), std::move(*v));
      } else if (option.required) {
        std::string hint = option.secret ? fmt::format(" (or {}_file)", option.name) : std::string();
        fail(values_.where(), key_path(option.name),
             fmt::format("required option is missing{}: {}", hint, option.description));
      }
    }
    if (section_.check != nullptr && !section_failed_) section_.check(values_, ctx_.diagnostics);
    return std::move(values_);
  }

 private:
  std::string key_path(std::string_view name) const { return path_ + "." + std::string(name); }

  const Option* find_option(std::string_view name) const {
    for (const Option& o : section_.common) {
      if (o.name == name) return &o;
    }
    for (const Option& o : section_.options) {
      if (o.name == name) return &o;
    }
    return nullptr;
  }

  const Option* secret_for_file_key(std::string_view name) const {
    constexpr std::string_view suffix = "_file";
    if (name.size() <= suffix.size() || !name.ends_with(suffix)) return nullptr;
    const Option* o = find_option(name.substr(0, name.size() - suffix.size()));
    return (o != nullptr && o->secret) ? o : nullptr;
  }

  void report_unknown_key(const std::string& name, const Location& where) {
    std::vector<std::string> candidates;
    for (auto options : {section_.common, section_.options}) {
      for (const Option& o : options) {
        candidates.emplace_back(o.name);
        if (o.secret) candidates.push_back(std::string(o.name) + "_file");
      }
    }
    std::string message = fmt::format("unknown option in [{}]", section_.path);
    if (auto suggestion = strings::closest(name, candidates)) {
      message += fmt::format("; did you mean \"{}\"?", *suggestion);
    } else if (!candidates.empty()) {
      message += "; known options: " + strings::join_alternatives(candidates, false);
    }
    ctx_.diagnostics.error(where, key_path(name), message);
    section_failed_ = true;
  }

  void fail(const Location& where, const std::string& key, std::string message) {
    ctx_.diagnostics.error(where, key, std::move(message));
    section_failed_ = true;
  }

  // A string node with ${VAR} substituted; reports and returns nullopt on a bad reference (of a
  // `secret` option's value, the report quotes nothing of it).
  std::optional<std::string> substituted(const toml::node& node, const std::string& key, bool secret = false) {
    auto result = substitute_environment(node.as_string()->get(), ctx_.options.environment, secret);
    if (!result) {
      fail(at(ctx_, node.source()), key, result.error);
      return std::nullopt;
    }
    return *result.value;
  }

  std::optional<Value> parse_default(const Option& option) {
    toml::table parsed;
    try {
      const std::string text = fmt::format("v = {}", option.default_value);
      parsed = toml::parse(std::string_view(text), std::string_view("(default)"));
    } catch (const toml::parse_error& e) {
      fail(values_.where(), key_path(option.name),
           fmt::format("internal error: the declared default {} does not parse: {}", option.default_value,
                       e.description()));
      return std::nullopt;
    }
    auto v = parse(*parsed.get("v"), option, key_path(option.name), true);
    if (v) {
      v->where = values_.where();
      v->is_default = true;
    }
    return v;
  }

  std::optional<Value> read_secret_file(const toml::node& node, const Option& option, const std::string& key) {
    Location where = at(ctx_, node.source());
    if (!node.is_string()) {
      fail(where, key, fmt::format("expected the path of a file holding {}, got {}", option.name, describe(node)));
      return std::nullopt;
    }
    auto path_text = substituted(node, key);
    if (!path_text) return std::nullopt;
    std::filesystem::path path(*path_text);
    if (path.is_relative()) path = ctx_.base_dir / path;
    std::error_code size_error;
    auto size = std::filesystem::file_size(path, size_error);
    if (!size_error && size > kMaxSecretBytes) {
      fail(where, key, fmt::format("{} has {} bytes; a secret file may have at most {}", path.string(), size,
                                   kMaxSecretBytes));
      return std::nullopt;
    }
    // Bounded also for what has no size (a device, a FIFO, /proc): `token_file = "/dev/zero"`.
    std::string error;
    auto content = fs::read_file(path, &error, static_cast<std::size_t>(kMaxSecretBytes));
    if (!content) {
      fail(where, key, error);
      return std::nullopt;
    }
    if (content->ends_with("\r\n")) content->resize(content->size() - 2);
    else if (content->ends_with("\n")) content->pop_back();
    if (content->empty()) {
      fail(where, key, fmt::format("{} is empty", path.string()));
      return std::nullopt;
    }
    Value v;
    v.type = option.type;
    v.data = std::move(*content);
    v.where = where;
    return v;
  }

  std::optional<Value> parse(const toml::node& node, const Option& option, const std::string& key, bool is_default) {
    Location where = at(ctx_, node.source());
    // What the diagnostics below show of the value: of a secret option's, only its kind.
    auto shown = [&](const toml::node& n) { return describe(n, option.secret); };
    auto shown_text = [&](std::string_view text) { return describe_text(text, option.secret); };
    Value value;
    value.type = option.type;
    value.where = where;
    value.is_default = is_default;

    // Typed options also accept a quoted value that uses ${VAR}, so numbers and switches can
    // come from the environment.
    auto from_env_string = [&]() -> std::optional<std::string> {
      if (!node.is_string()) return std::nullopt;
      std::string_view raw = node.as_string()->get();
      if (raw.find("${") == std::string_view::npos) return std::nullopt;
      return substituted(node, key, option.secret);
    };

    switch (option.type) {
      case Type::string: {
        if (!node.is_string()) {
          fail(where, key, fmt::format("expected a string, got {}", shown(node)));
          return std::nullopt;
        }
        auto s = substituted(node, key, option.secret);
        if (!s) return std::nullopt;
        value.data = std::move(*s);
        break;
      }
      case Type::boolean: {
        if (auto b = node.as_boolean()) {
          value.data = b->get();
        } else if (auto s = from_env_string()) {
          if (*s == "true") value.data = true;
          else if (*s == "false") value.data = false;
          else {
            fail(where, key, fmt::format("expected true or false, got {} after substitution", shown_text(*s)));
            return std::nullopt;
          }
        } else {
          fail(where, key, fmt::format("expected true or false, got {}", shown(node)));
          return std::nullopt;
        }
        break;
      }
      case Type::integer: {
        if (auto i = node.as_integer()) {
          value.data = i->get();
        } else if (auto s = from_env_string()) {
          auto parsed = parse_number<std::int64_t>(*s);
          if (!parsed) {
            fail(where, key, fmt::format("expected an integer, got {} after substitution", shown_text(*s)));
            return std::nullopt;
          }
          value.data = *parsed;
        } else {
          std::string hint = node.is_string() ? " (write numbers without quotes)" : "";
          fail(where, key, fmt::format("expected an integer, got {}{}", shown(node), hint));
          return std::nullopt;
        }
        break;
      }
      case Type::number: {
        if (auto f = node.as_floating_point(); f && !std::isfinite(f->get())) {
          fail(where, key, fmt::format("expected a finite number, got {}", shown(node)));
          return std::nullopt;
        } else if (f) {
          value.data = f->get();
        } else if (auto i = node.as_integer()) {
          value.data = static_cast<double>(i->get());
        } else if (auto s = from_env_string()) {
          auto parsed = parse_double(*s);
          if (!parsed || !std::isfinite(*parsed)) {
            fail(where, key, fmt::format("expected a number, got {} after substitution", shown_text(*s)));
            return std::nullopt;
          }
          value.data = *parsed;
        } else {
          std::string hint = node.is_string() ? " (write numbers without quotes)" : "";
          fail(where, key, fmt::format("expected a number, got {}{}", shown(node), hint));
          return std::nullopt;
        }
        break;
      }
      case Type::size: {
        if (auto i = node.as_integer()) {
          if (i->get() < 0) {
            fail(where, key, fmt::format("a size cannot be negative, got {}", i->get()));
            return std::nullopt;
          }
          value.data = static_cast<std::uint64_t>(i->get());
        } else if (node.is_string()) {
          auto s = substituted(node, key, option.secret);
          if (!s) return std::nullopt;
          auto parsed = units::parse_size(*s);
          if (!parsed) {
            fail(where, key, parsed.error);
            return std::nullopt;
          }
          value.data = *parsed.value;
        } else {
          fail(where, key, fmt::format("expected a size such as \"64MiB\", got {}", shown(node)));
          return std::nullopt;
        }
        break;
      }
      case Type::duration: {
        if (node.is_string()) {
          auto s = substituted(node, key, option.secret);
          if (!s) return std::nullopt;
          auto parsed = units::parse_duration(*s);
          if (!parsed) {
            fail(where, key, parsed.error);
            return std::nullopt;
          }
          value.data = *parsed.value;
        } else if (auto i = node.as_integer()) {
          fail(where, key,
               fmt::format("a duration needs a unit and quotes, such as \"{}s\" or \"{}ms\"; got {}", i->get(),
                           i->get(), i->get()));
          return std::nullopt;
        } else {
          fail(where, key, fmt::format("expected a duration such as \"200ms\", got {}", shown(node)));
          return std::nullopt;
        }
        break;
      }
      case Type::string_list: {
        const toml::array* array = node.as_array();
        if (array == nullptr) {
          fail(where, key, fmt::format("expected a list of strings such as [\"a\", \"b\"], got {}", shown(node)));
          return std::nullopt;
        }
        std::vector<std::string> items;
        bool ok = true;
        for (std::size_t i = 0; i < array->size(); ++i) {
          const toml::node& element = *array->get(i);
          std::string element_key = fmt::format("{}[{}]", key, i);
          if (!element.is_string()) {
            fail(at(ctx_, element.source()), element_key, fmt::format("expected a string, got {}", shown(element)));
            ok = false;
            continue;
          }
          auto s = substituted(element, element_key, option.secret);
          if (!s) {
            ok = false;
            continue;
          }
          items.push_back(std::move(*s));
        }
        if (!ok) return std::nullopt;
        value.data = std::move(items);
        break;
      }
      case Type::list_table: {
        const toml::table* table = node.as_table();
        if (table == nullptr) {
          fail(where, key,
               fmt::format("expected a table of lists such as {{ temp = [\"min\", \"max\"] }}, got {}", shown(node)));
          return std::nullopt;
        }
        ListTable entries;
        bool ok = true;
        for (auto&& [name, list_node] : *table) {
          std::string entry_key = fmt::format("{}.{}", key, name.str());
          const toml::array* array = list_node.as_array();
          if (array == nullptr) {
            fail(at(ctx_, list_node.source()), entry_key,
                 fmt::format("expected a list of strings such as [\"a\", \"b\"], got {}", shown(list_node)));
            ok = false;
            continue;
          }
          std::vector<std::string> items;
          for (std::size_t i = 0; i < array->size(); ++i) {
            const toml::node& element = *array->get(i);
            std::string element_key = fmt::format("{}[{}]", entry_key, i);
            if (!element.is_string()) {
              fail(at(ctx_, element.source()), element_key, fmt::format("expected a string, got {}", shown(element)));
              ok = false;
              continue;
            }
            std::string item = element.as_string()->get();
            if (!option.choices.empty() &&
                std::find(option.choices.begin(), option.choices.end(), item) == option.choices.end()) {
              std::string message = fmt::format("expected one of {}, got {}", choices(option), shown_text(item));
              if (auto suggestion = strings::closest(item, option.choices)) {
                message += fmt::format(" (did you mean \"{}\"?)", *suggestion);
              }
              fail(at(ctx_, element.source()), element_key, message);
              ok = false;
              continue;
            }
            items.push_back(std::move(item));
          }
          entries.emplace_back(std::string(name.str()), std::move(items));
        }
        if (!ok) return std::nullopt;
        // toml++ keeps tables in key order; the file's order is what a user wrote, so restore it.
        std::stable_sort(entries.begin(), entries.end(), [&](const auto& a, const auto& b) {
          const auto* na = table->get(a.first);
          const auto* nb = table->get(b.first);
          const auto& sa = na->source().begin;
          const auto& sb = nb->source().begin;
          return sa.line != sb.line ? sa.line < sb.line : sa.column < sb.column;
        });
        value.data = std::move(entries);
        break;
      }
      case Type::property_table: {
        const toml::table* table = node.as_table();
        if (table == nullptr) {
          fail(where, key,
               fmt::format("expected a table such as {{ \"linger.ms\" = 20 }} (or a [{}] table), got {}", key,
                           shown(node)));
          return std::nullopt;
        }
        PropertyTable entries;
        std::vector<toml::source_position> positions;  // of each entry, to restore the file's order
        bool ok = true;
        // A dotted key (linger.ms = 20) is a nested table in TOML: its names are joined again.
        auto walk = [&](auto& self, const toml::table& t, const std::string& prefix) -> void {
          for (auto&& [name, entry] : t) {
            const std::string entry_name = prefix.empty() ? std::string(name.str()) : prefix + "." + std::string(name.str());
            const std::string entry_key = fmt::format("{}.{}", key, entry_name);
            if (const toml::table* inner = entry.as_table()) {
              self(self, *inner, entry_name);
              continue;
            }
            std::string text;
            if (entry.is_string()) {
              auto s = substituted(entry, entry_key, option.secret);
              if (!s) {
                ok = false;
                continue;
              }
              text = std::move(*s);
            } else if (auto i = entry.as_integer()) {
              text = std::to_string(i->get());
            } else if (auto f = entry.as_floating_point()) {
              text = fmt::format("{}", f->get());
            } else if (auto b = entry.as_boolean()) {
              text = b->get() ? "true" : "false";
            } else {
              fail(at(ctx_, entry.source()), entry_key,
                   fmt::format("expected a string, number or boolean, got {}", shown(entry)));
              ok = false;
              continue;
            }
            entries.emplace_back(entry_name, std::move(text));
            positions.push_back(entry.source().begin);
          }
        };
        walk(walk, *table, "");
        if (!ok) return std::nullopt;
        // toml++ keeps tables in key order; the file's order is what a user wrote, so restore it.
        std::vector<std::size_t> order(entries.size());
        for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
          return positions[a].line != positions[b].line ? positions[a].line < positions[b].line
                                                        : positions[a].column < positions[b].column;
        });
        PropertyTable sorted;
        for (std::size_t i : order) sorted.push_back(std::move(entries[i]));
        value.data = std::move(sorted);
        break;
      }
      case Type::table_list: {
        const toml::array* array = node.as_array();
        if (array == nullptr || option.element == nullptr) {
          fail(where, key,
               fmt::format("expected a list of tables, written [[{}.{}]] or [{{ ... }}, {{ ... }}], got {}",
                           section_.path, option.name, shown(node)));
          return std::nullopt;
        }
        TableList tables;
        bool ok = true;
        for (std::size_t i = 0; i < array->size(); ++i) {
          const toml::node& element = *array->get(i);
          const std::string element_key = fmt::format("{}[{}]", key, i);
          const toml::table* table = element.as_table();
          if (table == nullptr) {
            fail(at(ctx_, element.source()), element_key, fmt::format("expected a table, got {}", shown(element)));
            ok = false;
            continue;
          }
          // The element is a section of its own: its errors carry its key path and position.
          const std::size_t errors_before = ctx_.diagnostics.error_count();
          SectionParser inner(ctx_, *option.element, element_key, at(ctx_, element.source()));
          SectionValues parsed = inner.run(table);
          if (ctx_.diagnostics.error_count() == errors_before) tables.push_back(std::move(parsed));
        }
        // A table with errors is left out, the others kept: the section's own check still runs on
        // them, so that one `tank check` lists the errors of every level (each table's key path
        // keeps its index in the file). A value that is no table at all fails the section.
        if (!ok) return std::nullopt;
        value.data = std::move(tables);
        break;
      }
      case Type::choice: {
        if (!node.is_string()) {
          fail(where, key, fmt::format("expected one of {}, got {}", choices(option), shown(node)));
          return std::nullopt;
        }
        auto s = substituted(node, key, option.secret);
        if (!s) return std::nullopt;
        bool known = false;
        for (std::string_view c : option.choices) known = known || (c == *s);
        if (!known) {
          std::string message = fmt::format("expected one of {}, got {}", choices(option), shown_text(*s));
          if (auto suggestion = strings::closest(*s, option.choices)) {
            message += fmt::format(" (did you mean \"{}\"?)", *suggestion);
          }
          fail(where, key, message);
          return std::nullopt;
        }
        value.data = std::move(*s);
        break;
      }
    }

    Bound lo = bound_of(option.type, option.min);
    Bound hi = bound_of(option.type, option.max);
    if (lo.kind != Bound::Kind::none && compare(value.data, lo) < 0) {
      fail(where, key, fmt::format("must be at least {}, got {}", option.min, render(value, option.secret)));
      return std::nullopt;
    }
    if (hi.kind != Bound::Kind::none && compare(value.data, hi) > 0) {
      fail(where, key, fmt::format("must be at most {}, got {}", option.max, render(value, option.secret)));
      return std::nullopt;
    }
    return value;
  }

  static std::string choices(const Option& option) {
    std::vector<std::string> items(option.choices.begin(), option.choices.end());
    return strings::join_alternatives(items);
  }

  Context& ctx_;
  const Section& section_;
  std::string path_;
  SectionValues values_;
  bool section_failed_ = false;
};

std::vector<const Section*> plugins_of_kind(const Schema& schema, std::string_view kind) {
  std::vector<const Section*> out;
  for (const Section* s : schema.sections) {
    if (s->repeated && s->path.starts_with(kind) && s->path.size() > kind.size() && s->path[kind.size()] == '.') {
      out.push_back(s);
    }
  }
  return out;
}

void load_plugin_kind(Context& ctx, Document& doc, std::string_view kind, const toml::node& node,
                      const Location& where) {
  const toml::table* table = node.as_table();
  if (table == nullptr) {
    ctx.diagnostics.error(where, std::string(kind),
                          fmt::format("expected plugin tables such as [[{}.NAME]], got {}", kind, describe(node)));
    return;
  }
  auto available = plugins_of_kind(ctx.schema, kind);
  for (auto&& [key, plugin_node] : *table) {
    std::string name(key.str());
    std::string path = fmt::format("{}.{}", kind, name);
    Location key_where = at(ctx, key.source());
    const Section* section = ctx.schema.find(path);
    if (section == nullptr || !section->repeated) {
      std::vector<std::string> names;
      for (const Section* s : available) names.emplace_back(s->path.substr(kind.size() + 1));
      std::string message = fmt::format("unknown {} plugin \"{}\"", kind_singular(kind), name);
      if (auto suggestion = strings::closest(name, names)) message += fmt::format("; did you mean \"{}\"?", *suggestion);
      if (names.empty()) {
        message += fmt::format("; this build has no {} plugins", kind_singular(kind));
      } else {
        message += fmt::format("; this build has: {}", strings::join_alternatives(names, false));
      }
      ctx.diagnostics.error(key_where, path, message);
      continue;
    }
    const toml::array* instances = plugin_node.as_array();
    if (instances == nullptr || !instances->is_array_of_tables()) {
      ctx.diagnostics.error(key_where, path,
                            fmt::format("write [[{}]] (double brackets): each [[{}]] table is one instance", path, path));
      continue;
    }
    auto& list = doc.plugins[path];
    for (std::size_t i = 0; i < instances->size(); ++i) {
      const toml::table* instance = instances->get(i)->as_table();
      std::string instance_path = fmt::format("{}[{}]", path, i);
      SectionParser parser(ctx, *section, instance_path, at(ctx, instance->source()));
      list.push_back(parser.run(instance));
    }
  }
}

LoadResult load_parsed(Context& ctx, const toml::table& root, std::string text) {
  Document doc;
  doc.source = ctx.file;
  doc.text = std::move(text);

  std::vector<std::string> top_level;
  for (const Section* s : ctx.schema.sections) {
    if (!s->repeated) top_level.emplace_back(s->path);
  }
  for (std::string_view kind : kPluginKinds) top_level.emplace_back(kind);

  std::set<std::string, std::less<>> present;
  for (auto&& [key, node] : root) {
    std::string name(key.str());
    Location where = at(ctx, key.source());
    bool is_kind = false;
    for (std::string_view kind : kPluginKinds) is_kind = is_kind || kind == name;
    if (is_kind) {
      load_plugin_kind(ctx, doc, name, node, where);
      continue;
    }
    const Section* section = ctx.schema.find(name);
    if (section == nullptr || section->repeated) {
      std::string message = "unknown section";
      if (auto suggestion = strings::closest(name, top_level)) {
        message += fmt::format("; did you mean [{}]?", *suggestion);
      } else {
        message += "; known sections: " + strings::join_alternatives(top_level, false);
      }
      ctx.diagnostics.error(where, name, message);
      continue;
    }
    const toml::table* table = node.as_table();
    if (table == nullptr) {
      ctx.diagnostics.error(where, name,
                            fmt::format("expected a table [{}] holding options, got {}", name, describe(node)));
      continue;
    }
    present.insert(name);
    SectionParser parser(ctx, *section, name, at(ctx, table->source()));
    doc.sections.insert_or_assign(name, parser.run(table));
  }
  // Sections absent from the file take their defaults.
  for (const Section* s : ctx.schema.sections) {
    if (s->repeated || present.contains(s->path)) continue;
    SectionParser parser(ctx, *s, std::string(s->path), Location{ctx.file, 0, 0});
    doc.sections.insert_or_assign(std::string(s->path), parser.run(nullptr));
  }

  if (!ctx.diagnostics.has_errors()) {
    for (const DocumentCheck& check : ctx.schema.checks) check(doc, ctx.diagnostics);
  }
  LoadResult result;
  result.diagnostics = ctx.diagnostics;
  if (!ctx.diagnostics.has_errors()) result.document = std::move(doc);
  return result;
}

}  // namespace

EnvLookup process_environment() {
  return [](std::string_view name) -> std::optional<std::string> {
    std::string key(name);
    const char* value = std::getenv(key.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

units::Parsed<std::string> substitute_environment(std::string_view text, const EnvLookup& environment,
                                                  bool secret) {
  units::Parsed<std::string> result;
  std::string out;
  std::size_t i = 0;
  while (i < text.size()) {
    if (text.compare(i, 3, "$${") == 0) {
      out += "${";
      i += 3;
      continue;
    }
    if (text.compare(i, 2, "${") == 0) {
      std::size_t close = text.find('}', i + 2);
      if (close == std::string_view::npos) {
        result.error = fmt::format("unterminated \"${{\" in {} (write \"$${{\" for a literal \"${{\")",
                                   secret ? "the secret value" : "\"" + strings::printable(text, 80) + "\"");
        return result;
      }
      std::string_view inner = text.substr(i + 2, close - i - 2);
      std::string_view name = inner;
      std::optional<std::string_view> fallback;
      if (auto sep = inner.find(":-"); sep != std::string_view::npos) {
        name = inner.substr(0, sep);
        fallback = inner.substr(sep + 2);
      }
      bool valid = !name.empty() && !(name[0] >= '0' && name[0] <= '9');
      for (char c : name) {
        valid = valid && ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_');
      }
      if (!valid) {
        result.error = fmt::format("{} is not a valid variable reference (use ${{NAME}} or ${{NAME:-default}}, "
                                   "NAME made of letters, digits and _)",
                                   secret ? "a \"${...}\" in the secret value"
                                          : "\"${" + strings::printable(inner, 60) + "}\"");
        return result;
      }
      std::optional<std::string> value = environment(name);
      if (fallback) {
        out += (value && !value->empty()) ? *value : std::string(*fallback);
      } else if (!value) {
        result.error = fmt::format("environment variable {} is not set (write ${{{}:-default}} to give a default)",
                                   name, name);
        return result;
      } else {
        out += *value;
      }
      i = close + 1;
      continue;
    }
    out.push_back(text[i]);
    ++i;
  }
  result.value = std::move(out);
  return result;
}

LoadResult load_text(std::string_view text, std::string source_name, const Schema& schema,
                     const LoadOptions& options) {
  Diagnostics diagnostics;
  Context ctx{schema, options, diagnostics, source_name,
              options.base_dir.value_or(std::filesystem::current_path())};
  toml::table root;
  try {
    root = toml::parse(text, std::string_view(source_name));
  } catch (const toml::parse_error& e) {
    LoadResult result;
    result.diagnostics.error(Location{source_name, static_cast<int>(e.source().begin.line),
                                      static_cast<int>(e.source().begin.column)},
                             "", fmt::format("TOML syntax error: {}", e.description()));
    return result;
  }
  return load_parsed(ctx, root, std::string(text));
}

LoadResult load_file(const std::filesystem::path& path, const Schema& schema, const LoadOptions& options) {
  std::string error;
  auto text = fs::read_file(path, &error);
  if (!text) {
    LoadResult result;
    result.diagnostics.error(Location{path.string(), 0, 0}, "", error);
    return result;
  }
  LoadOptions with_base = options;
  if (!with_base.base_dir) with_base.base_dir = path.parent_path().empty() ? std::filesystem::current_path()
                                                                           : path.parent_path();
  return load_text(*text, path.string(), schema, with_base);
}

}  // namespace tank::config
