#pragma once

// Options declared once: each option of a plugin is bound to the member of its Settings struct
// that receives the value, so the option table is the only place its name is written.
//
//   struct Settings {
//     std::size_t max_line_bytes = 64 * 1024;
//     std::chrono::nanoseconds idle_timeout = std::chrono::minutes(5);
//     unsigned threads = 2;
//   };
//
//   const config::Options<Settings> kOptions{
//       config::size("max_line_bytes", &Settings::max_line_bytes)
//           .default_value("64KiB").min("16B").max("4MiB").describe("The longest line taken as a record."),
//       config::duration("idle_timeout", &Settings::idle_timeout).default_value("5m").max("24h").describe("..."),
//       config::integer("threads", &Settings::threads).default_value(2).min("1").max("64").describe("..."),
//   };
//   const config::Section kSection{.path = "inputs.x", ..., .options = kOptions.all(), ...};
//
//   Settings s = kOptions.read(values);  // in create(): every bound member filled
//
// The table produces the same config::Option data a hand-written table would (the loader,
// `tank check` and `tank reference` see no difference); it also knows how to copy each value into
// the Settings. A member of the wrong type does not compile: a size binds to std::uint64_t or
// std::size_t, an integer to an integral type (static_cast, the option's bounds say what fits), a
// duration to a std::chrono::duration (duration_cast), a string to std::string or
// std::filesystem::path, a string_list to std::vector<std::string>, a boolean to bool. A choice
// binds to std::string, or to any type through a table of values in the order of the choices.
// Values that need a conversion of their own go through a setter, `(Settings&, value)`, whose
// value parameter is checked against the option's type too:
//
//   config::string("mode", [](Settings& s, const std::string& text) { s.mode = parse_mode(text); })
//
// An option declared without a member or setter (`config::integer("max_in_flight")`, or a plain
// config::Option) is only declared: checks and common code read it by name, as before. Options a
// shared list binds to a sub-struct join a table through config::nested(&Settings::tls, list).
//
// A value is copied only when present (set in the file or by a default): an optional option with
// no default leaves the member's own initial value.
//
// Default values are written in the option's own syntax: "64KiB", "5m", "text" (quoted for the
// TOML-valued Option::default_value), 2, true; lists and numbers as TOML ("[]", "0.5"). Names,
// descriptions, bounds and choices are kept as string_views: pass literals (static storage).

#include <chrono>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "config/document.hpp"
#include "config/schema.hpp"

namespace tank::config {

// The Settings type of an option declared without a binding; converts to any Declaration<S>.
struct Unbound {};

namespace bind_detail {

template <class T>
struct is_duration : std::false_type {};
template <class Rep, class Period>
struct is_duration<std::chrono::duration<Rep, Period>> : std::true_type {};

// A setter's (Settings&, value) parameters, from its call operator (non-generic lambdas).
template <class F>
struct setter_traits : setter_traits<decltype(&std::remove_cvref_t<F>::operator())> {};
template <class C, class R, class A, class B>
struct setter_traits<R (C::*)(A, B) const> {
  using settings = std::remove_cvref_t<A>;
  using value = std::remove_cvref_t<B>;
};
template <class C, class R, class A, class B>
struct setter_traits<R (C::*)(A, B)> : setter_traits<R (C::*)(A, B) const> {};

template <class F>
concept setter = std::is_class_v<std::remove_cvref_t<F>>;

// An option with only its name and type (the declaration's chained calls add the rest).
inline Option option(std::string_view name, Type type, std::span<const std::string_view> choices = {}) {
  return {.name = name, .type = type, .default_value = {}, .description = {}, .choices = choices};
}

// The TOML form of a default written in the option's own syntax.
inline std::string toml_default(Type type, std::string_view text) {
  switch (type) {
    case Type::string:
    case Type::size:
    case Type::duration:
    case Type::choice: {
      std::string out = "\"";
      for (char c : text) {
        if (c == '"' || c == '\\') out.push_back('\\');
        out.push_back(c);
      }
      return out + "\"";
    }
    case Type::boolean:
    case Type::integer:
    case Type::number:
    case Type::string_list:
    case Type::list_table:
    case Type::property_table:
    case Type::table_list:
      return std::string(text);
  }
  return std::string(text);
}

}  // namespace bind_detail

// One option of a table, with what copies its value into a Settings S (nothing when Unbound).
// The chained calls fill in the Option; each returns the declaration itself.
template <class S>
class Declaration {
 public:
  using Reader = std::function<void(const SectionValues& values, S& settings)>;

  Declaration(Option option, Reader read) : option_(option), read_(std::move(read)) {}
  // A declaration without a binding joins any table.
  Declaration(const Declaration<Unbound>& unbound)  // NOLINT(google-explicit-constructor)
    requires(!std::is_same_v<S, Unbound>)
      : option_(unbound.option()), keep_(unbound.kept()) {}
  // A plain Option (e.g. plugin::format_option): declared only.
  Declaration(const Option& option)  // NOLINT(google-explicit-constructor)
      : option_(option) {}

  // The default in the option's own syntax ("64KiB", "5m", "text"; "[]" for a list).
  Declaration& default_value(std::string_view text) {
    option_.default_value = keep(bind_detail::toml_default(option_.type, text));
    return *this;
  }
  Declaration& default_value(const char* text) { return default_value(std::string_view(text)); }
  // An integer's or a boolean's default.
  template <std::integral I>
  Declaration& default_value(I value) {
    if constexpr (std::is_same_v<I, bool>) {
      expect(Type::boolean, "a bool default");
      option_.default_value = value ? "true" : "false";
    } else {
      expect(Type::integer, "an integer default");
      option_.default_value = keep(std::to_string(value));
    }
    return *this;
  }
  Declaration& describe(std::string_view text) {
    option_.description = text;
    return *this;
  }
  Declaration& min(std::string_view bound) {
    option_.min = bound;
    return *this;
  }
  Declaration& max(std::string_view bound) {
    option_.max = bound;
    return *this;
  }
  // The strings allowed in a list_table's lists (a choice gets its choices where it is declared).
  Declaration& choices(std::span<const std::string_view> allowed) {
    option_.choices = allowed;
    return *this;
  }
  Declaration& required() {
    option_.required = true;
    return *this;
  }
  Declaration& secret() {
    option_.secret = true;
    return *this;
  }
  Declaration& default_note(std::string_view note) {
    option_.default_note = note;
    return *this;
  }

  const Option& option() const { return option_; }
  const Reader& reader() const { return read_; }
  // The storage of the texts this declaration made (the Option's views point into it).
  const std::vector<std::shared_ptr<const std::string>>& kept() const { return keep_; }

 private:
  template <class>
  friend class Declaration;
  template <class>
  friend class Options;

  std::string_view keep(std::string text) {
    keep_.push_back(std::make_shared<const std::string>(std::move(text)));
    return *keep_.back();
  }
  void expect(Type type, const char* what) const {
    if (option_.type != type) {
      throw std::logic_error(std::string(what) + " for the option " + std::string(option_.name) + " of type " +
                             std::string(type_name(option_.type)));
    }
  }

  Option option_;
  Reader read_;
  std::vector<std::shared_ptr<const std::string>> keep_;
};

template <class S>
class Options;

// The options of `list` (bound to a Sub), bound through `member` into an S: a shared list (TLS, an
// MQTT connection) joins a plugin's table.
template <class S, class Sub>
struct Nested {
  Sub S::*member;
  const Options<Sub>* list;
};
template <class S, class Sub>
Nested<S, Sub> nested(Sub S::*member, const Options<Sub>& list) {
  return {member, &list};
}

// A plugin's option table: the config::Options a Section lists, and how to fill a Settings.
template <class S>
class Options {
 public:
  // Each item: a Declaration<S>, a declaration without binding, a config::Option, a Nested list,
  // or a span of declarations (a shared list placed in the middle of the table).
  template <class... Items>
    requires(!(std::is_same_v<std::remove_cvref_t<Items>, Options> || ...))
  explicit Options(Items&&... items) {
    (add(std::forward<Items>(items)), ...);
  }

  // The options in table order, for Section::options.
  std::span<const Option> all() const { return options_; }
  std::span<const Declaration<S>> declarations() const { return declarations_; }

  // A Settings with every bound member filled from `values` (validated by the loader).
  S read(const SectionValues& values) const {
    S settings{};
    read_into(values, settings);
    return settings;
  }
  // Fills the bound members of `settings`; the others keep their values.
  void read_into(const SectionValues& values, S& settings) const {
    for (const auto& d : declarations_) {
      if (d.reader() && values.has(d.option().name)) d.reader()(values, settings);
    }
  }

 private:
  void add(const Declaration<S>& declaration) {
    declarations_.push_back(declaration);
    options_.push_back(declaration.option());
  }
  void add(const Declaration<Unbound>& declaration)
    requires(!std::is_same_v<S, Unbound>)
  {
    add(Declaration<S>(declaration));
  }
  void add(const Option& option) { add(Declaration<S>(option)); }
  void add(std::span<const Declaration<S>> list) {
    for (const auto& d : list) add(d);
  }
  template <class Sub>
  void add(const Nested<S, Sub>& nested) {
    for (const auto& inner : nested.list->declarations()) {
      typename Declaration<S>::Reader read;
      if (inner.reader()) {
        read = [member = nested.member, inner_read = inner.reader()](const SectionValues& values, S& settings) {
          inner_read(values, settings.*member);
        };
      }
      Declaration<S> outer(inner.option(), std::move(read));
      outer.keep_ = inner.kept();
      add(outer);
    }
  }

  std::vector<Declaration<S>> declarations_;
  std::vector<Option> options_;
};

// --- Declarations by type. Each: (name) declared only, (name, &S::member) or (name, setter).

namespace bind_detail {

template <class F, class Expected>
inline constexpr bool setter_takes =
    std::is_same_v<typename setter_traits<F>::value, std::remove_cvref_t<Expected>>;

// A declaration whose reader passes the value `get` reads to `set`.
template <setter F, class Value>
auto with_setter(std::string_view name, Type type, F set, Value (SectionValues::*get)(std::string_view) const) {
  static_assert(setter_takes<F, Value>,
                "an option's setter takes (Settings&, T) with T the value of its kind: string std::string, "
                "boolean bool, integer std::int64_t, number double, size std::uint64_t, duration "
                "std::chrono::nanoseconds, string_list std::vector<std::string>, list_table ListTable, property_table PropertyTable, "
                "choice std::string");
  using S = typename setter_traits<F>::settings;
  return Declaration<S>(option(name, type),
                        [name, set, get](const SectionValues& values, S& settings) { set(settings, (values.*get)(name)); });
}

}  // namespace bind_detail


// Declared only: checks and common code read the value by name.
inline Declaration<Unbound> declared(std::string_view name, Type type) {
  return Declaration<Unbound>(bind_detail::option(name, type), {});
}
inline Declaration<Unbound> string(std::string_view name) { return declared(name, Type::string); }
inline Declaration<Unbound> boolean(std::string_view name) { return declared(name, Type::boolean); }
inline Declaration<Unbound> integer(std::string_view name) { return declared(name, Type::integer); }
inline Declaration<Unbound> number(std::string_view name) { return declared(name, Type::number); }
inline Declaration<Unbound> size(std::string_view name) { return declared(name, Type::size); }
inline Declaration<Unbound> duration(std::string_view name) { return declared(name, Type::duration); }
inline Declaration<Unbound> string_list(std::string_view name) { return declared(name, Type::string_list); }
inline Declaration<Unbound> list_table(std::string_view name) { return declared(name, Type::list_table); }
inline Declaration<Unbound> property_table(std::string_view name) { return declared(name, Type::property_table); }

inline Declaration<Unbound> choice(std::string_view name, std::span<const std::string_view> choices) {
  return Declaration<Unbound>(bind_detail::option(name, Type::choice, choices), {});
}

// A string, to a std::string or a std::filesystem::path.
template <class S, class M>
Declaration<S> string(std::string_view name, M S::*member) {
  static_assert(std::is_same_v<M, std::string> || std::is_same_v<M, std::filesystem::path>,
                "a string option binds to std::string or std::filesystem::path");
  return Declaration<S>(bind_detail::option(name, Type::string),
                        [name, member](const SectionValues& v, S& s) { s.*member = v.string(name); });
}
template <bind_detail::setter F>
auto string(std::string_view name, F set) {
  return bind_detail::with_setter(name, Type::string, std::move(set), &SectionValues::string);
}

template <class S>
Declaration<S> boolean(std::string_view name, bool S::*member) {
  return Declaration<S>(bind_detail::option(name, Type::boolean),
                        [name, member](const SectionValues& v, S& s) { s.*member = v.boolean(name); });
}
template <bind_detail::setter F>
auto boolean(std::string_view name, F set) {
  return bind_detail::with_setter(name, Type::boolean, std::move(set), &SectionValues::boolean);
}

// An integer, static_cast to the member's integral type (the option's bounds say what fits).
template <class S, class M>
Declaration<S> integer(std::string_view name, M S::*member) {
  static_assert(std::is_integral_v<M> && !std::is_same_v<M, bool>, "an integer option binds to an integral type");
  return Declaration<S>(bind_detail::option(name, Type::integer),
                        [name, member](const SectionValues& v, S& s) { s.*member = static_cast<M>(v.integer(name)); });
}
template <bind_detail::setter F>
auto integer(std::string_view name, F set) {
  return bind_detail::with_setter(name, Type::integer, std::move(set), &SectionValues::integer);
}

template <class S, class M>
Declaration<S> number(std::string_view name, M S::*member) {
  static_assert(std::is_floating_point_v<M>, "a number option binds to a floating-point type");
  return Declaration<S>(bind_detail::option(name, Type::number),
                        [name, member](const SectionValues& v, S& s) { s.*member = static_cast<M>(v.number(name)); });
}
template <bind_detail::setter F>
auto number(std::string_view name, F set) {
  return bind_detail::with_setter(name, Type::number, std::move(set), &SectionValues::number);
}

// A size in bytes, to std::uint64_t or std::size_t.
template <class S, class M>
Declaration<S> size(std::string_view name, M S::*member) {
  static_assert(std::is_same_v<M, std::uint64_t> || std::is_same_v<M, std::size_t>,
                "a size option binds to std::uint64_t or std::size_t");
  return Declaration<S>(bind_detail::option(name, Type::size),
                        [name, member](const SectionValues& v, S& s) { s.*member = static_cast<M>(v.size(name)); });
}
template <bind_detail::setter F>
auto size(std::string_view name, F set) {
  return bind_detail::with_setter(name, Type::size, std::move(set), &SectionValues::size);
}

// A duration, duration_cast to the member's std::chrono::duration (truncated toward zero).
template <class S, class M>
Declaration<S> duration(std::string_view name, M S::*member) {
  static_assert(bind_detail::is_duration<M>::value, "a duration option binds to a std::chrono::duration");
  return Declaration<S>(bind_detail::option(name, Type::duration), [name, member](const SectionValues& v, S& s) {
    s.*member = std::chrono::duration_cast<M>(v.duration(name));
  });
}
template <bind_detail::setter F>
auto duration(std::string_view name, F set) {
  return bind_detail::with_setter(name, Type::duration, std::move(set), &SectionValues::duration);
}

template <class S>
Declaration<S> string_list(std::string_view name, std::vector<std::string> S::*member) {
  return Declaration<S>(bind_detail::option(name, Type::string_list),
                        [name, member](const SectionValues& v, S& s) { s.*member = v.strings(name); });
}
template <bind_detail::setter F>
auto string_list(std::string_view name, F set) {
  return bind_detail::with_setter(name, Type::string_list, std::move(set), &SectionValues::strings);
}

template <class S>
Declaration<S> list_table(std::string_view name, ListTable S::*member) {
  return Declaration<S>(bind_detail::option(name, Type::list_table),
                        [name, member](const SectionValues& v, S& s) { s.*member = v.list_table(name); });
}
template <bind_detail::setter F>
auto list_table(std::string_view name, F set) {
  return bind_detail::with_setter(name, Type::list_table, std::move(set), &SectionValues::list_table);
}

template <class S>
Declaration<S> property_table(std::string_view name, PropertyTable S::*member) {
  return Declaration<S>(bind_detail::option(name, Type::property_table),
                        [name, member](const SectionValues& v, S& s) { s.*member = v.property_table(name); });
}
template <bind_detail::setter F>
auto property_table(std::string_view name, F set) {
  return bind_detail::with_setter(name, Type::property_table, std::move(set), &SectionValues::property_table);
}

// A list of tables, each read through `element_options` into one E of a std::vector<E>; `element`
// is what the loader checks each table against (usually {.options = element_options.all(), ...}).
// Give it .default_value("[]") unless it is required.
template <class S, class E>
Declaration<S> table_list(std::string_view name, std::vector<E> S::*member, const Section& element,
                          const Options<E>& element_options) {
  Option o = bind_detail::option(name, Type::table_list);
  o.element = &element;
  return Declaration<S>(o, [name, member, list = &element_options](const SectionValues& v, S& s) {
    (s.*member).clear();
    for (const SectionValues& table : v.tables(name)) (s.*member).push_back(list->read(table));
  });
}

// One of `choices`, to a std::string member.
template <class S>
Declaration<S> choice(std::string_view name, std::span<const std::string_view> choices, std::string S::*member) {
  return Declaration<S>(bind_detail::option(name, Type::choice, choices),
                        [name, member](const SectionValues& v, S& s) { s.*member = v.choice(name); });
}
// One of `choices`, to the value at the same place in `values` (an enum, a bool, a number): the two
// arrays have the same length or this does not compile.
template <class S, class M, std::size_t N>
Declaration<S> choice(std::string_view name, const std::string_view (&choices)[N], M S::*member,
                      const std::type_identity_t<M> (&values)[N]) {
  std::vector<M> by_index(values, values + N);
  return Declaration<S>(bind_detail::option(name, Type::choice, choices),
                        [name, member, choices = std::span<const std::string_view>(choices),
                         by_index = std::move(by_index)](const SectionValues& v, S& s) {
                          const std::string& chosen = v.choice(name);
                          for (std::size_t i = 0; i < choices.size(); ++i) {
                            if (choices[i] == chosen) s.*member = by_index[i];
                          }
                        });
}
template <bind_detail::setter F>
auto choice(std::string_view name, std::span<const std::string_view> choices, F set) {
  using S = typename bind_detail::setter_traits<F>::settings;
  auto d = bind_detail::with_setter(name, Type::choice, std::move(set), &SectionValues::choice);
  return Declaration<S>(bind_detail::option(name, Type::choice, choices), d.reader());
}

}  // namespace tank::config
