// tank's own keywords for valijson: `pattern` and `format` evaluated with Boost.Regex, and a faster
// `properties` + `additionalProperties`. json_schema_rewrite.cpp moves a schema's keywords under them.

#include "process/json_schema_detail.hpp"

#include <cstddef>
#include <functional>
#include <memory>
#include <new>
#include <regex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <valijson/constraint_builder.hpp>
#include <valijson/constraints/concrete_constraints.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

#include "process/json_schema_adapter.hpp"

namespace tank::process {
using namespace schema_detail;
namespace {

// =============================================================================================
// Regular expressions (pattern and format), evaluated with Boost.Regex

// ECMA-262 semantics, as JSON Schema asks: '^' and '$' match only at the ends of the string
// (Perl's multi-line default is off), '.' does not match a newline.
constexpr auto kRegexFlags = boost::regex::ECMAScript | boost::regex::no_mod_m | boost::regex::no_mod_s;

}  // namespace

namespace schema_detail {

// Compiles `pattern` (once per schema); throws std::runtime_error with Boost's message.
std::shared_ptr<const boost::regex> compile_regex(RegexCache& cache, const std::string& pattern) {
  if (auto it = cache.find(pattern); it != cache.end()) return it->second;
  try {
    auto re = std::make_shared<const boost::regex>(pattern, kRegexFlags);
    cache.emplace(pattern, re);
    return re;
  } catch (const boost::regex_error& e) {
    throw std::runtime_error(e.what());
  }
}

}  // namespace schema_detail

namespace {

// The result of matching one string: matched, did not match, or Boost gave up (a pattern whose
// backtracking explodes on this input; Boost.Regex bounds the work and throws).
enum class RegexOutcome { match, no_match, too_complex };

RegexOutcome regex_search_bounded(const boost::regex& re, std::string_view s) {
  try {
    return boost::regex_search(s.data(), s.data() + s.size(), re, boost::match_default | boost::match_any)
               ? RegexOutcome::match
               : RegexOutcome::no_match;
  } catch (const std::exception&) {
    return RegexOutcome::too_complex;
  }
}

class PatternConstraint final : public valijson::constraints::PolyConstraint {
 public:
  PatternConstraint(std::string pattern, std::shared_ptr<const boost::regex> re)
      : pattern_(std::move(pattern)), re_(std::move(re)) {}

  bool validate(const valijson::adapters::Adapter& target, const std::vector<std::string>& context,
                valijson::ValidationResults* results) const override {
    if (!target.isString()) return true;
    std::string copy;
    std::string_view s;
    if (const auto* doc = dynamic_cast<const DocAdapter*>(&target)) {
      s = doc->raw().get_string();  // no copy: this runs on every record
    } else {
      target.getString(copy);  // a property name (propertyNames)
      s = copy;
    }
    switch (regex_search_bounded(*re_, s)) {
      case RegexOutcome::match:
        return true;
      case RegexOutcome::no_match:
        if (results != nullptr) results->pushError(context, fmt::format("Failed to match the pattern '{}'", pattern_));
        return false;
      case RegexOutcome::too_complex:
        if (results != nullptr) {
          results->pushError(context, fmt::format("The pattern '{}' is too complex to evaluate on this string",
                                                  pattern_));
        }
        return false;
    }
    return false;
  }

 private:
  Constraint* cloneInto(void* where) const override { return new (where) PatternConstraint(*this); }
  std::size_t sizeOf() const override { return sizeof(PatternConstraint); }

  std::string pattern_;
  std::shared_ptr<const boost::regex> re_;
};

class PatternBuilder final : public valijson::ConstraintBuilder {
 public:
  explicit PatternBuilder(RegexCache& cache) : cache_(cache) {}
  valijson::constraints::Constraint* make(const valijson::adapters::Adapter& value) const override {
    std::string pattern;
    if (!value.getString(pattern)) throw std::runtime_error("'pattern' must be a string");
    return new PatternConstraint(pattern, compile_regex(cache_, pattern));
  }

 private:
  RegexCache& cache_;
};

bool leap_year(int year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

bool valid_day(int year, int month, int day) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month < 1 || month > 12 || day < 1) return false;
  return day <= kDays[month - 1] + (month == 2 && leap_year(year) ? 1 : 0);
}

// The formats valijson 1.0 checks (the others are annotations, as draft 7 allows), with the
// same expressions, plus the length of February in leap years (RFC 3339).
class FormatConstraint final : public valijson::constraints::PolyConstraint {
 public:
  enum class Kind { date, time, date_time, other };

  explicit FormatConstraint(Kind kind) : kind_(kind) {}

  bool validate(const valijson::adapters::Adapter& target, const std::vector<std::string>& context,
                valijson::ValidationResults* results) const override {
    if (kind_ == Kind::other || !target.isString()) return true;
    std::string s;
    target.getString(s);
    if (check(s)) return true;
    if (results != nullptr) {
      static constexpr const char* kNames[] = {"date", "time", "date-time", ""};
      results->pushError(context, fmt::format("String should be a valid {}", kNames[static_cast<int>(kind_)]));
    }
    return false;
  }

 private:
  bool check(const std::string& s) const {
    // The subexpressions are bounded but for the year and the fraction of seconds, and the
    // strings they run on are records' strings: Boost's bounded matcher keeps that safe.
    static const boost::regex date("^([0-9]+)-(0[1-9]|1[012])-(0[1-9]|[12][0-9]|3[01])$", kRegexFlags);
    static const boost::regex time(
        "^([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9]|60)(\\.[0-9]+)?(([Zz])|([\\+|\\-]([01][0-9]|2[0-3]):[0-5][0-9]))$",
        kRegexFlags);
    static const boost::regex date_time(
        "^([0-9]+)-(0[1-9]|1[012])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9]|60)"
        "(\\.[0-9]+)?(([Zz])|([\\+|\\-]([01][0-9]|2[0-3]):[0-5][0-9]))$",
        kRegexFlags);
    try {
      boost::smatch m;
      switch (kind_) {
        case Kind::date:
        case Kind::date_time:
          if (!boost::regex_match(s, m, kind_ == Kind::date ? date : date_time)) return false;
          {
            // Years beyond 9 digits cannot be leap-checked with an int; they are not dates
            // anyone sends.
            const std::string year = m[1].str();
            if (year.size() > 9) return false;
            return valid_day(std::stoi(year), std::stoi(m[2].str()), std::stoi(m[3].str()));
          }
        case Kind::time:
          return boost::regex_match(s, time);
        case Kind::other:
          return true;
      }
    } catch (const std::exception&) {
      return false;
    }
    return false;
  }

  Constraint* cloneInto(void* where) const override { return new (where) FormatConstraint(*this); }
  std::size_t sizeOf() const override { return sizeof(FormatConstraint); }

  Kind kind_;
};

class FormatBuilder final : public valijson::ConstraintBuilder {
 public:
  valijson::constraints::Constraint* make(const valijson::adapters::Adapter& value) const override {
    std::string format;
    if (!value.getString(format)) throw std::runtime_error("'format' must be a string");
    FormatConstraint::Kind kind = FormatConstraint::Kind::other;
    if (format == "date") kind = FormatConstraint::Kind::date;
    if (format == "time") kind = FormatConstraint::Kind::time;
    if (format == "date-time") kind = FormatConstraint::Kind::date_time;
    return new FormatConstraint(kind);
  }
};

// ---------------------------------------------------------------------------------------------
// properties + additionalProperties
//
// valijson's `properties` costs about 450 ns per property on a valid record (measured with perf
// on the 6-property contract of bench/validate_bench.cpp: 3 us of the 4.6 us a record took):
// for each property it copies the context path (a vector of strings) twice, appends to it,
// inserts the name into a std::set and builds a visitor, even when no error is being recorded.
// Where it can be done without changing the result, tank replaces the keyword by this
// constraint, which looks each member up in a hash table and validates it with valijson's own
// ValidationVisitor against the property's subschema, compiled by valijson, building a context
// only while errors are being recorded. It takes over `properties` and `additionalProperties`
// of a schema that has no `patternProperties` and whose property subschemas contain no $ref (so
// that each compiles on its own); any other schema keeps valijson's constraint. The draft 7 test
// suite runs through it (tests/unit/json_schema_suite_test.cpp).

struct PropertyTable {
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, std::shared_ptr<const valijson::Schema>, Hash, std::equal_to<>> properties;
  enum class Others { allowed, refused, checked } others = Others::allowed;
  std::shared_ptr<const valijson::Schema> others_schema;  // Others::checked
};

class PropertiesConstraint final : public valijson::constraints::PolyConstraint {
 public:
  explicit PropertiesConstraint(std::shared_ptr<const PropertyTable> table) : table_(std::move(table)) {}

  bool validate(const valijson::adapters::Adapter& target, const std::vector<std::string>& context,
                valijson::ValidationResults* results) const override {
    if (!target.isObject()) return true;
    const auto* doc = dynamic_cast<const DocAdapter*>(&target);
    // Documents are always read through DocAdapter; anything else is a bug, reported (as a
    // violation) rather than guessed at.
    if (doc == nullptr) throw std::logic_error("tank's properties constraint needs a DocAdapter");
    // valijson's visitor wants a regex cache; only valijson's `pattern` uses it, and tank
    // rewrites every `pattern` to its own constraint, so it stays empty (and allocates nothing).
    std::unordered_map<std::string, std::regex> unused_regex_cache;
    bool valid = true;
    for (const auto& member : doc->raw().get_object()) {
      const std::string_view name = member.key();
      const valijson::Schema* schema = nullptr;
      if (auto it = table_->properties.find(name); it != table_->properties.end()) {
        schema = it->second.get();
      } else if (table_->others == PropertyTable::Others::checked) {
        schema = table_->others_schema.get();
      } else if (table_->others == PropertyTable::Others::refused) {
        if (results == nullptr) return false;
        results->pushError(context, fmt::format("Object contains a property that could not be validated using "
                                                "'properties' or 'additionalProperties' constraints: '{}'.",
                                                name));
        valid = false;
        continue;
      }
      if (schema == nullptr) continue;
      const DocAdapter value(member.value());
      if (results == nullptr) {
        valijson::ValidationVisitor<DocAdapter> visitor(value, {}, true, nullptr, unused_regex_cache);
        if (!visitor.validateSchema(*schema)) return false;
        continue;
      }
      std::vector<std::string> child_context = context;
      child_context.push_back(fmt::format("[{}]", name));
      valijson::ValidationVisitor<DocAdapter> visitor(value, std::move(child_context), true, results,
                                                      unused_regex_cache);
      if (!visitor.validateSchema(*schema)) {
        valid = false;
        results->pushError(context,
                           fmt::format("Failed to validate against schema associated with property name '{}'.", name));
      }
    }
    return valid;
  }

 private:
  Constraint* cloneInto(void* where) const override { return new (where) PropertiesConstraint(*this); }
  std::size_t sizeOf() const override { return sizeof(PropertiesConstraint); }

  std::shared_ptr<const PropertyTable> table_;
};

class PropertiesBuilder final : public valijson::ConstraintBuilder {
 public:
  explicit PropertiesBuilder(RegexCache& regexes) : regexes_(regexes) {}

  valijson::constraints::Constraint* make(const valijson::adapters::Adapter& value) const override {
    const auto* doc = dynamic_cast<const DocAdapter*>(&value);
    if (doc == nullptr || !doc->raw().is_object()) throw std::logic_error("tank's properties keyword is malformed");
    const json::object& spec = doc->raw().get_object();
    auto table = std::make_shared<PropertyTable>();
    if (const json::value* properties = spec.if_contains("properties")) {
      for (const auto& p : properties->get_object()) {
        table->properties.emplace(std::string(p.key()), compile_standalone(p.value(), regexes_));
      }
    }
    if (const json::value* others = spec.if_contains("additionalProperties")) {
      if (others->is_bool()) {
        table->others = others->get_bool() ? PropertyTable::Others::allowed : PropertyTable::Others::refused;
      } else {
        table->others = PropertyTable::Others::checked;
        table->others_schema = compile_standalone(*others, regexes_);
      }
    }
    return new PropertiesConstraint(std::move(table));
  }

 private:
  RegexCache& regexes_;
};

}  // namespace

namespace schema_detail {

void add_tank_keywords(valijson::SchemaParser& parser, RegexCache& regexes) {
  parser.addConstraintBuilder(kPatternKeyword, new PatternBuilder(regexes));
  parser.addConstraintBuilder(kFormatKeyword, new FormatBuilder());
  parser.addConstraintBuilder(kPropertiesKeyword, new PropertiesBuilder(regexes));
}

std::shared_ptr<const valijson::Schema> compile_standalone(const json::value& node, RegexCache& regexes) {
  auto schema = std::make_shared<valijson::Schema>();
  valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
  add_tank_keywords(parser, regexes);
  parser.populateSchema(DocAdapter(node), *schema);
  return schema;
}

}  // namespace schema_detail
}  // namespace tank::process
