#include "process/json_schema.hpp"

// valijson calls abort() on errors unless this is set before its headers; tank turns its
// exceptions into SchemaError (load) or a violation (validate).
#include <stdexcept>
#define VALIJSON_USE_EXCEPTIONS 1

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <new>
#include <regex>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <boost/regex.hpp>
#include <fmt/format.h>
#include <valijson/constraint_builder.hpp>
#include <valijson/constraints/concrete_constraints.hpp>
#include <valijson/internal/basic_adapter.hpp>
#include <valijson/internal/frozen_value.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

namespace tank::process {
namespace json = boost::json;

// =============================================================================================
// JsonDecoder

namespace {

// The arena grows to hold the largest document seen, up to this; a larger document still
// decodes, with the excess allocated for that call only.
constexpr std::size_t kInitialArenaBytes = 4 * 1024;
constexpr std::size_t kMaxArenaBytes = 1024 * 1024;

// Upstream of the arena: counts what the arena had to ask for beyond its buffer, so that the
// decoder knows when to grow the buffer.
class CountingResource final : public json::memory_resource {
 public:
  std::size_t requested() const { return requested_; }
  void reset() { requested_ = 0; }

 private:
  void* do_allocate(std::size_t bytes, std::size_t align) override {
    requested_ += bytes;
    return ::operator new(bytes, std::align_val_t(align));
  }
  // Unsized: Boost.JSON 1.81's monotonic_resource::release() passes a size that differs from
  // the one it allocated (AddressSanitizer reports new-delete-type-mismatch with sized delete).
  void do_deallocate(void* p, std::size_t /*bytes*/, std::size_t align) override {
    ::operator delete(p, std::align_val_t(align));
  }
  bool do_is_equal(const json::memory_resource& other) const noexcept override { return this == &other; }

  std::size_t requested_ = 0;
};

}  // namespace

struct JsonDecoder::State {
  explicit State(std::size_t depth) : max_depth(depth), parser(json::storage_ptr(), options(depth)) {
    rebuild_arena(kInitialArenaBytes);
  }

  static json::parse_options options(std::size_t depth) {
    json::parse_options o;
    o.max_depth = depth;
    return o;
  }

  void rebuild_arena(std::size_t bytes) {
    document.reset();
    arena.reset();
    buffer.reset(new unsigned char[bytes]);
    buffer_size = bytes;
    arena.emplace(buffer.get(), buffer_size, json::storage_ptr(&upstream));
  }

  std::size_t max_depth;
  json::parser parser;
  CountingResource upstream;
  std::unique_ptr<unsigned char[]> buffer;
  std::size_t buffer_size = 0;
  std::optional<json::monotonic_resource> arena;
  std::optional<json::value> document;  // lives in `arena`
};

JsonDecoder::JsonDecoder(std::size_t max_depth) : state_(std::make_unique<State>(max_depth)) {}
JsonDecoder::~JsonDecoder() = default;
JsonDecoder::JsonDecoder(JsonDecoder&&) noexcept = default;
JsonDecoder& JsonDecoder::operator=(JsonDecoder&&) noexcept = default;

std::size_t JsonDecoder::max_depth() const { return state_->max_depth; }

const json::value* JsonDecoder::decode(std::string_view bytes, DecodeError* error) {
  State& s = *state_;
  // The previous document goes first: its memory is about to be recycled. With a monotonic
  // arena its destructor frees nothing, so this is cheap.
  s.document.reset();
  if (s.upstream.requested() > 0 && s.buffer_size < kMaxArenaBytes) {
    std::size_t want = s.buffer_size;
    while (want < s.buffer_size + s.upstream.requested() && want < kMaxArenaBytes) want *= 2;
    s.rebuild_arena(std::min(want, kMaxArenaBytes));
  } else {
    s.arena->release();
  }
  s.upstream.reset();

  auto fail = [&](std::string message, std::size_t offset) -> const json::value* {
    if (error != nullptr) {
      error->message = std::move(message);
      error->offset = std::min(offset, bytes.size());
    }
    s.parser.reset();  // drop the partial document before the arena is recycled
    return nullptr;
  };

  s.parser.reset(json::storage_ptr(&*s.arena));
  json::error_code ec;
  const std::size_t consumed = s.parser.write_some(bytes.data(), bytes.size(), ec);
  if (ec) {
    std::string message = ec.message();
    if (ec == json::error::too_deep) message += fmt::format(" (nested deeper than {})", s.max_depth);
    return fail(std::move(message), consumed);
  }
  // The parser stops after the value and the whitespace that follows it.
  std::size_t rest = consumed;
  while (rest < bytes.size() &&
         (bytes[rest] == ' ' || bytes[rest] == '\t' || bytes[rest] == '\n' || bytes[rest] == '\r')) {
    ++rest;
  }
  if (rest < bytes.size()) {
    return fail(json::make_error_code(json::error::extra_data).message() + " after the JSON value", rest);
  }
  s.document.emplace(s.parser.release());
  return &*s.document;
}

// =============================================================================================
// A valijson adapter for Boost.JSON documents.
//
// valijson's own BoostJsonAdapter (1.0) differs from JSON Schema on numbers that Boost.JSON
// stores in other kinds than int64 and double: an integer above 2^63-1 (uint64) is neither an
// integer nor a double to it, and `minimum` or `maximum` on one throws "JSON value cannot be
// cast to a double"; 1.0 is not an "integer" although draft 7 says it is. It also copies strings
// with c_str(), cutting them at an escaped NUL. This adapter is the same but for those numbers:
//   - uint64: a number; isInteger() and isDouble(), its value as a double (getInteger clamps)
//   - a double with no fractional part: isInteger() too (getInteger clamps beyond int64)
// and strings copied whole.

namespace {

class DocAdapter;
class DocArrayIterator;
class DocObjectIterator;

using DocObjectMember = std::pair<std::string, DocAdapter>;

const json::value& empty_object_value() {
  static const json::value value(json::object{});
  return value;
}

const json::array& empty_array() {
  static const json::array array;
  return array;
}

bool integral_double(double d) { return std::isfinite(d) && std::trunc(d) == d; }

std::int64_t clamp_to_int64(double d) {
  if (!(d > static_cast<double>(std::numeric_limits<std::int64_t>::min()))) return std::numeric_limits<std::int64_t>::min();
  if (!(d < static_cast<double>(std::numeric_limits<std::int64_t>::max()))) return std::numeric_limits<std::int64_t>::max();
  return static_cast<std::int64_t>(d);
}

class DocArray {
 public:
  using const_iterator = DocArrayIterator;
  using iterator = DocArrayIterator;
  DocArray() : array_(&empty_array()) {}
  explicit DocArray(const json::array& array) : array_(&array) {}
  DocArrayIterator begin() const;
  DocArrayIterator end() const;
  std::size_t size() const { return array_->size(); }

 private:
  const json::array* array_;
};

class DocObject {
 public:
  using const_iterator = DocObjectIterator;
  using iterator = DocObjectIterator;
  DocObject() : object_(&empty_object_value().get_object()) {}
  explicit DocObject(const json::object& object) : object_(&object) {}
  DocObjectIterator begin() const;
  DocObjectIterator end() const;
  DocObjectIterator find(const std::string& name) const;
  std::size_t size() const { return object_->size(); }

 private:
  const json::object* object_;
};

class DocFrozenValue final : public valijson::adapters::FrozenValue {
 public:
  explicit DocFrozenValue(const json::value& value) : value_(value) {}
  FrozenValue* clone() const override { return new DocFrozenValue(value_); }
  bool equalTo(const valijson::adapters::Adapter& other, bool strict) const override;

 private:
  json::value value_;
};

class DocValue {
 public:
  DocValue() : value_(&empty_object_value()) {}
  explicit DocValue(const json::value& value) : value_(&value) {}

  valijson::adapters::FrozenValue* freeze() const { return new DocFrozenValue(*value_); }

  std::optional<DocArray> getArrayOptional() const {
    if (value_->is_array()) return DocArray(value_->get_array());
    return {};
  }
  bool getArraySize(std::size_t& result) const {
    if (!value_->is_array()) return false;
    result = value_->get_array().size();
    return true;
  }
  bool getBool(bool& result) const {
    if (!value_->is_bool()) return false;
    result = value_->get_bool();
    return true;
  }
  bool getDouble(double& result) const {
    switch (value_->kind()) {
      case json::kind::double_: result = value_->get_double(); return true;
      case json::kind::uint64: result = static_cast<double>(value_->get_uint64()); return true;
      case json::kind::int64: result = static_cast<double>(value_->get_int64()); return true;
      default: return false;
    }
  }
  bool getInteger(std::int64_t& result) const {
    switch (value_->kind()) {
      case json::kind::int64: result = value_->get_int64(); return true;
      case json::kind::uint64: result = std::numeric_limits<std::int64_t>::max(); return true;
      case json::kind::double_:
        if (!integral_double(value_->get_double())) return false;
        result = clamp_to_int64(value_->get_double());
        return true;
      default: return false;
    }
  }
  std::optional<DocObject> getObjectOptional() const {
    if (value_->is_object()) return DocObject(value_->get_object());
    return {};
  }
  bool getObjectSize(std::size_t& result) const {
    if (!value_->is_object()) return false;
    result = value_->get_object().size();
    return true;
  }
  bool getString(std::string& result) const {
    if (!value_->is_string()) return false;
    const json::string& s = value_->get_string();
    result.assign(s.data(), s.size());
    return true;
  }
  static bool hasStrictTypes() { return true; }
  bool isArray() const { return value_->is_array(); }
  bool isBool() const { return value_->is_bool(); }
  // uint64 counts as a double so that valijson reads its value with getDouble (exact enough
  // for comparisons; int64 cannot hold it).
  bool isDouble() const { return value_->is_double() || value_->is_uint64(); }
  bool isInteger() const {
    return value_->is_int64() || value_->is_uint64() ||
           (value_->is_double() && integral_double(value_->get_double()));
  }
  bool isNull() const { return value_->is_null(); }
  bool isNumber() const { return value_->is_number(); }
  bool isObject() const { return value_->is_object(); }
  bool isString() const { return value_->is_string(); }

 private:
  const json::value* value_;
};

class DocAdapter
    : public valijson::adapters::BasicAdapter<DocAdapter, DocArray, DocObjectMember, DocObject, DocValue> {
 public:
  DocAdapter() : raw_(&empty_object_value()) {}
  explicit DocAdapter(const json::value& value) : BasicAdapter(DocValue(value)), raw_(&value) {}

  // The Boost.JSON value, for tank's own constraints (valijson's Adapter interface would copy).
  const json::value& raw() const { return *raw_; }

 private:
  const json::value* raw_;
};

class DocArrayIterator {
 public:
  using iterator_category = std::bidirectional_iterator_tag;
  using value_type = DocAdapter;
  using difference_type = std::ptrdiff_t;
  using pointer = DocAdapter*;
  using reference = DocAdapter&;

  explicit DocArrayIterator(json::array::const_iterator it) : it_(it) {}
  DocAdapter operator*() const { return DocAdapter(*it_); }
  valijson::adapters::DerefProxy<DocAdapter> operator->() const {
    return valijson::adapters::DerefProxy<DocAdapter>(**this);
  }
  bool operator==(const DocArrayIterator& other) const { return it_ == other.it_; }
  bool operator!=(const DocArrayIterator& other) const { return it_ != other.it_; }
  const DocArrayIterator& operator++() {
    ++it_;
    return *this;
  }
  DocArrayIterator operator++(int) {
    DocArrayIterator before(it_);
    ++it_;
    return before;
  }
  const DocArrayIterator& operator--() {
    --it_;
    return *this;
  }
  void advance(std::ptrdiff_t n) { it_ += n; }

 private:
  json::array::const_iterator it_;
};

class DocObjectIterator {
 public:
  using iterator_category = std::bidirectional_iterator_tag;
  using value_type = DocObjectMember;
  using difference_type = std::ptrdiff_t;
  using pointer = DocObjectMember*;
  using reference = DocObjectMember&;

  explicit DocObjectIterator(json::object::const_iterator it) : it_(it) {}
  DocObjectMember operator*() const { return DocObjectMember(std::string(it_->key()), DocAdapter(it_->value())); }
  valijson::adapters::DerefProxy<DocObjectMember> operator->() const {
    return valijson::adapters::DerefProxy<DocObjectMember>(**this);
  }
  bool operator==(const DocObjectIterator& other) const { return it_ == other.it_; }
  bool operator!=(const DocObjectIterator& other) const { return it_ != other.it_; }
  const DocObjectIterator& operator++() {
    ++it_;
    return *this;
  }
  DocObjectIterator operator++(int) {
    DocObjectIterator before(it_);
    ++it_;
    return before;
  }
  const DocObjectIterator& operator--() {
    --it_;
    return *this;
  }

 private:
  json::object::const_iterator it_;
};

DocArrayIterator DocArray::begin() const { return DocArrayIterator(array_->begin()); }
DocArrayIterator DocArray::end() const { return DocArrayIterator(array_->end()); }
DocObjectIterator DocObject::begin() const { return DocObjectIterator(object_->begin()); }
DocObjectIterator DocObject::end() const { return DocObjectIterator(object_->end()); }
DocObjectIterator DocObject::find(const std::string& name) const { return DocObjectIterator(object_->find(name)); }

bool DocFrozenValue::equalTo(const valijson::adapters::Adapter& other, bool strict) const {
  return DocAdapter(value_).equalTo(other, strict);
}

}  // namespace
}  // namespace tank::process

template <>
struct valijson::adapters::AdapterTraits<tank::process::DocAdapter> {
  using DocumentType = boost::json::value;
  static std::string adapterName() { return "TankDocAdapter"; }
};

namespace tank::process {
namespace {

// =============================================================================================
// JSON pointers

void append_pointer_token(std::string& pointer, std::string_view token) {
  pointer += '/';
  for (char c : token) {
    if (c == '~') {
      pointer += "~0";
    } else if (c == '/') {
      pointer += "~1";
    } else {
      pointer += c;
    }
  }
}

std::string pointer_child(const std::string& pointer, std::string_view token) {
  std::string out = pointer;
  append_pointer_token(out, token);
  return out;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A $ref fragment is URI-encoded ("#/definitions/a%25b"): decode %XX first, then ~0/~1 per token.
std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      const int hi = hex_digit(s[i + 1]);
      const int lo = hex_digit(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

// Resolves an (already percent-decoded) JSON pointer in `root`. On failure returns nullptr and
// says why in `why`.
const json::value* resolve_pointer(const json::value& root, std::string_view pointer, std::string* why) {
  const json::value* at = &root;
  std::string where;
  std::size_t i = 0;
  while (i < pointer.size()) {
    if (pointer[i] != '/') {
      *why = "a JSON pointer starts with '/'";
      return nullptr;
    }
    const std::size_t end = std::min(pointer.find('/', i + 1), pointer.size());
    std::string token;
    for (std::size_t j = i + 1; j < end; ++j) {
      if (pointer[j] == '~' && j + 1 < end && (pointer[j + 1] == '0' || pointer[j + 1] == '1')) {
        token += pointer[j + 1] == '0' ? '~' : '/';
        ++j;
      } else {
        token += pointer[j];
      }
    }
    if (const json::object* o = at->if_object()) {
      at = o->if_contains(token);
      if (at == nullptr) {
        *why = fmt::format("\"{}\" has no member \"{}\"", where.empty() ? "#" : where, token);
        return nullptr;
      }
    } else if (const json::array* a = at->if_array()) {
      std::size_t index = 0;
      const bool digits = !token.empty() && token.size() < 10 &&
                          std::all_of(token.begin(), token.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (digits) index = std::stoul(token);
      if (!digits || index >= a->size()) {
        *why = fmt::format("\"{}\" has no element \"{}\"", where.empty() ? "#" : where, token);
        return nullptr;
      }
      at = &(*a)[index];
    } else {
      *why = fmt::format("\"{}\" is neither an object nor an array", where.empty() ? "#" : where);
      return nullptr;
    }
    append_pointer_token(where, token);
    i = end;
  }
  return at;
}

std::string shown_pointer(const std::string& pointer) { return pointer.empty() ? "/" : pointer; }

// =============================================================================================
// Regular expressions (pattern and format), evaluated with Boost.Regex

// The key under which tank stores `pattern` and `format` in the copy of the schema that valijson
// reads, so that valijson's own std::regex constraints never see them.
constexpr const char* kPatternKeyword = "x-tank-pattern";
constexpr const char* kFormatKeyword = "x-tank-format";

// ECMA-262 semantics, as JSON Schema asks: '^' and '$' match only at the ends of the string
// (Perl's multi-line default is off), '.' does not match a newline.
constexpr auto kRegexFlags = boost::regex::ECMAScript | boost::regex::no_mod_m | boost::regex::no_mod_s;

bool starts_with_tank_keyword(std::string_view key) { return key.substr(0, 7) == "x-tank-"; }

using RegexCache = std::map<std::string, std::shared_ptr<const boost::regex>, std::less<>>;

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

constexpr const char* kPropertiesKeyword = "x-tank-properties";

std::shared_ptr<const valijson::Schema> compile_standalone(const json::value& node, RegexCache& regexes);

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

// =============================================================================================
// Reading schema documents: keywords, rewriting, cycles

// Where a keyword's value sits in draft 7.
enum class Slot {
  schema,        // a subschema: additionalProperties, not, if...
  schema_map,    // name -> subschema: properties, patternProperties, definitions
  schema_array,  // [subschema...]: allOf, anyOf, oneOf
  items,         // a subschema or an array of them
  dependencies,  // name -> subschema or [names]
  data,          // values, names, numbers: enum, const, required, type, $ref...
  unknown,       // not a draft 7 keyword: looked into, in case a $ref points there
};

Slot slot_of(std::string_view keyword) {
  static const std::unordered_map<std::string_view, Slot> kSlots = {
      {"additionalItems", Slot::schema},  {"additionalProperties", Slot::schema},
      {"contains", Slot::schema},         {"propertyNames", Slot::schema},
      {"not", Slot::schema},              {"if", Slot::schema},
      {"then", Slot::schema},             {"else", Slot::schema},
      {"properties", Slot::schema_map},   {"patternProperties", Slot::schema_map},
      {"definitions", Slot::schema_map},  {"allOf", Slot::schema_array},
      {"anyOf", Slot::schema_array},      {"oneOf", Slot::schema_array},
      {"items", Slot::items},             {"dependencies", Slot::dependencies},
      {"enum", Slot::data},               {"const", Slot::data},
      {"default", Slot::data},            {"examples", Slot::data},
      {"required", Slot::data},           {"type", Slot::data},
      {"$ref", Slot::data},               {"$id", Slot::data},
      {"id", Slot::data},                 {"$schema", Slot::data},
      {"$comment", Slot::data},           {"title", Slot::data},
      {"description", Slot::data},        {"format", Slot::data},
      {"pattern", Slot::data},            {"multipleOf", Slot::data},
      {"maximum", Slot::data},            {"exclusiveMaximum", Slot::data},
      {"minimum", Slot::data},            {"exclusiveMinimum", Slot::data},
      {"maxLength", Slot::data},          {"minLength", Slot::data},
      {"maxItems", Slot::data},           {"minItems", Slot::data},
      {"uniqueItems", Slot::data},        {"maxProperties", Slot::data},
      {"minProperties", Slot::data},      {"contentMediaType", Slot::data},
      {"contentEncoding", Slot::data},    {"readOnly", Slot::data},
      {"writeOnly", Slot::data},
  };
  auto it = kSlots.find(keyword);
  return it == kSlots.end() ? Slot::unknown : it->second;
}

// Calls fn(child, pointer, under_unknown) for every subschema directly under the schema object
// `schema`; `under_unknown` is true for values of keywords draft 7 does not know, which are
// schemas only if a $ref makes them one.
template <class Fn>
void for_each_subschema(json::object& schema, const std::string& pointer, Fn&& fn) {
  for (auto& member : schema) {
    const std::string_view key = member.key();
    json::value& v = member.value();
    const std::string here = pointer_child(pointer, key);
    switch (slot_of(key)) {
      case Slot::schema:
        fn(v, here, false);
        break;
      case Slot::unknown:
        // Not a keyword, but a $ref may point into it ("#/x-defs/a"): objects found there are
        // treated as schemas where that is harmless (renaming `pattern` inside them changes
        // nothing valijson would otherwise use).
        if (v.is_object()) fn(v, here, true);
        if (v.is_array()) {
          for (std::size_t i = 0; i < v.get_array().size(); ++i) {
            fn(v.get_array()[i], pointer_child(here, std::to_string(i)), true);
          }
        }
        break;
      case Slot::schema_map:
      case Slot::dependencies:
        if (json::object* o = v.if_object()) {
          for (auto& entry : *o) {
            if (!entry.value().is_array()) fn(entry.value(), pointer_child(here, entry.key()), false);
          }
        }
        break;
      case Slot::schema_array:
      case Slot::items:
        if (json::array* a = v.if_array()) {
          for (std::size_t i = 0; i < a->size(); ++i) fn((*a)[i], pointer_child(here, std::to_string(i)), false);
        } else if (slot_of(key) == Slot::items) {
          fn(v, here, false);
        }
        break;
      case Slot::data:
        break;
    }
  }
}

struct SchemaDocError {
  std::string message;
  bool has_origin = false;  // the message starts with "origin:line:column"
};

// Moves `pattern` and `format` (strings, in schema positions) under tank's keywords, compiling
// each pattern once (an invalid one is reported with its place), and notes patternProperties.
// Under an unknown keyword (`lenient`) an invalid pattern is left alone: it may be documentation.
void rewrite_schema(json::value& node, const std::string& pointer, RegexCache& regexes, bool& pattern_properties,
                    bool lenient, std::size_t depth) {
  json::object* schema = node.if_object();
  if (schema == nullptr || depth > 512) return;
  if (const json::value* p = schema->if_contains("pattern"); p != nullptr && p->is_string()) {
    const std::string pattern(p->get_string());
    bool compiled = true;
    try {
      (void)compile_regex(regexes, pattern);
    } catch (const std::exception& e) {
      if (!lenient) {
        throw SchemaDocError{fmt::format(
            "{}/pattern: \"{}\" is not a valid regular expression ({}); fix the pattern", pointer, pattern, e.what())};
      }
      compiled = false;
    }
    if (compiled) {
      json::value moved = *p;
      schema->erase("pattern");
      (*schema)[kPatternKeyword] = std::move(moved);
    }
  }
  if (const json::value* f = schema->if_contains("format"); f != nullptr && f->is_string()) {
    json::value moved = *f;
    schema->erase("format");
    (*schema)[kFormatKeyword] = std::move(moved);
  }
  if (const json::value* pp = schema->if_contains("patternProperties"); pp != nullptr && pp->is_object()) {
    // Noted even under an unknown keyword: a $ref may make it a schema.
    pattern_properties = true;
    for (const auto& entry : pp->get_object()) {
      if (lenient) break;
      try {
        // valijson compiles these itself (std::regex, at each validation); an invalid one would
        // throw there, so it is refused here.
        std::regex check{std::string(entry.key())};
      } catch (const std::exception& e) {
        throw SchemaDocError{fmt::format("{}: \"{}\" is not a valid regular expression ({}); fix the pattern",
                                         pointer_child(pointer, "patternProperties"), std::string(entry.key()),
                                         e.what())};
      }
    }
  }
  for_each_subschema(*schema, pointer, [&](json::value& child, const std::string& at, bool under_unknown) {
    rewrite_schema(child, at, regexes, pattern_properties, lenient || under_unknown, depth + 1);
  });
}

// Finds the schemas that apply to the same value as themselves through a chain of $ref, allOf,
// anyOf, oneOf, not, if/then/else and schema dependencies: valijson follows such a loop until the
// stack overflows (at load for a $ref loop, at each validation for the others). Also checks that
// every $ref into this document resolves.
class LoopFinder {
 public:
  explicit LoopFinder(json::value& root) : root_(root) {}

  void run() { visit_all(root_, "", 0); }

 private:
  enum class Mark { active, done };

  // Every schema in the document is a starting point (definitions are reached only by $ref).
  void visit_all(json::value& node, const std::string& pointer, std::size_t depth) {
    json::object* schema = node.if_object();
    if (schema == nullptr || depth > 512) return;
    visit(node, pointer);
    // Values of unknown keywords are schemas only if a $ref leads there (then visit() follows
    // it); check_compiled_loops covers what is reached from them.
    for_each_subschema(*schema, pointer, [&](json::value& child, const std::string& at, bool under_unknown) {
      if (!under_unknown) visit_all(child, at, depth + 1);
    });
  }

  void visit(json::value& node, const std::string& pointer) {
    json::object* schema = node.if_object();
    if (schema == nullptr) return;
    auto [it, inserted] = marks_.emplace(&node, Mark::active);
    if (!inserted) {
      if (it->second == Mark::active) {
        std::string loop;
        bool in_loop = false;
        for (const std::string& p : path_) {
          in_loop = in_loop || p == pointer;
          if (in_loop) loop += shown_pointer(p) + " -> ";
        }
        throw SchemaDocError{fmt::format(
            "{} applies to itself without descending into the document ({}{}), so validation would never end; "
            "break the loop",
            shown_pointer(pointer), loop, shown_pointer(pointer))};
      }
      return;
    }
    path_.push_back(pointer);
    // In draft 7 (and in valijson) a $ref replaces the schema it is in: its siblings do nothing.
    if (const json::value* ref = schema->if_contains("$ref"); ref != nullptr && ref->is_string()) {
      const std::string text(ref->get_string());
      if (json::value* target = local_target(text, pointer)) visit(*target, percent_decode(text.substr(1)));
      path_.pop_back();
      marks_[&node] = Mark::done;
      return;
    }
    for (auto& member : *schema) {
      const std::string_view key = member.key();
      json::value& v = member.value();
      const std::string here = pointer_child(pointer, key);
      if (key == "allOf" || key == "anyOf" || key == "oneOf") {
        if (json::array* a = v.if_array()) {
          for (std::size_t i = 0; i < a->size(); ++i) visit((*a)[i], pointer_child(here, std::to_string(i)));
        }
      } else if (key == "not" || key == "if" || key == "then" || key == "else") {
        visit(v, here);
      } else if (key == "dependencies") {
        if (json::object* o = v.if_object()) {
          for (auto& entry : *o) visit(entry.value(), pointer_child(here, entry.key()));
        }
      }
    }
    path_.pop_back();
    marks_[&node] = Mark::done;  // `it` may be stale: the map grew meanwhile
  }

  // The schema a "#..." $ref points to in this document; nullptr for other documents (checked
  // when fetched). In draft 7 a $ref replaces its whole schema, and valijson resolves "#..."
  // against the root of the document the $ref is in.
  json::value* local_target(const std::string& ref, const std::string& at) {
    if (ref.empty() || ref[0] != '#') return nullptr;
    const std::string pointer = percent_decode(ref.substr(1));
    if (!pointer.empty() && pointer[0] != '/') {
      throw SchemaDocError{fmt::format(
          "$ref \"{}\" at {}: a plain-name fragment ($id anchor) cannot be resolved here; refer to the schema "
          "with a JSON pointer such as \"#/definitions/name\"",
          ref, shown_pointer(at))};
    }
    std::string why;
    const json::value* target = resolve_pointer(root_, pointer, &why);
    if (target == nullptr) {
      throw SchemaDocError{
          fmt::format("$ref \"{}\" at {} cannot be resolved: {}; point it at a subschema that exists", ref,
                      shown_pointer(at), why)};
    }
    return const_cast<json::value*>(target);
  }

  json::value& root_;
  std::unordered_map<const json::value*, Mark> marks_;
  std::vector<std::string> path_;
};

bool contains_ref(const json::value& v) {
  if (const json::object* o = v.if_object()) {
    if (o->contains("$ref")) return true;
    return std::any_of(o->begin(), o->end(), [](const auto& m) { return contains_ref(m.value()); });
  }
  if (const json::array* a = v.if_array()) return std::any_of(a->begin(), a->end(), contains_ref);
  return false;
}

// Moves `properties` and `additionalProperties` under kPropertiesKeyword where tank's
// constraint gives the same result (see PropertiesConstraint), innermost schemas first.
void take_over_properties(json::value& node, std::size_t depth) {
  json::object* schema = node.if_object();
  if (schema == nullptr || depth > 512) return;
  for_each_subschema(*schema, "", [&](json::value& child, const std::string&, bool) {
    take_over_properties(child, depth + 1);
  });
  const json::value* properties = schema->if_contains("properties");
  const json::value* others = schema->if_contains("additionalProperties");
  if (properties == nullptr || !properties->is_object() || schema->contains("patternProperties") ||
      schema->contains("$ref") || contains_ref(*properties) || (others != nullptr && contains_ref(*others))) {
    return;
  }
  // A property subschema or additionalProperties that is not a schema is left to valijson,
  // which reports it.
  auto is_schema = [](const json::value& v) { return v.is_object() || v.is_bool(); };
  const json::object& map = properties->get_object();
  if (!std::all_of(map.begin(), map.end(), [&](const auto& m) { return is_schema(m.value()); })) return;
  if (others != nullptr && !is_schema(*others)) return;
  json::object spec;
  spec["properties"] = *properties;
  if (others != nullptr) spec["additionalProperties"] = *others;
  schema->erase("properties");
  schema->erase("additionalProperties");
  (*schema)[kPropertiesKeyword] = std::move(spec);
}

// valijson resolves a $ref at the root of a document by a path of its own: a relative URI there
// ("types.json#/a") is looked up in the same document, so {"$ref": "other.json"} recurses until
// the stack overflows, and a remote document is fetched again at each step. A $ref anywhere else
// is resolved properly (and cached). So a root $ref is moved one level down:
//   {"$ref": R, "definitions": D}  ->  {"allOf": [{"$ref": R}], "definitions": D}
// keeping the members a JSON pointer may refer to (definitions and unknown keywords) and dropping
// the keywords beside it, which draft 7 ignores next to a $ref anyway.
void wrap_root_ref(json::value& root) {
  json::object* schema = root.if_object();
  if (schema == nullptr) return;
  const json::value* ref = schema->if_contains("$ref");
  if (ref == nullptr || !ref->is_string()) return;
  json::object wrapped;
  json::array all_of;
  all_of.emplace_back(json::object{{"$ref", *ref}});
  wrapped["allOf"] = std::move(all_of);
  for (const auto& member : *schema) {
    const std::string_view key = member.key();
    if (key == "definitions" || (slot_of(key) == Slot::unknown && !starts_with_tank_keyword(key))) {
      wrapped[key] = member.value();
    }
  }
  root = std::move(wrapped);
}

// The subschemas a constraint applies: to the same value (allOf, anyOf, oneOf, not, if/then/
// else, schema dependencies) or to a part of it (properties, items, contains, propertyNames).
class ChildSchemas final : public valijson::constraints::ConstraintVisitor {
 public:
  using Subschema = valijson::Subschema;
  std::vector<const Subschema*> same_value;
  std::vector<const Subschema*> parts;

 private:
  template <class C>
  void all(const C& c, std::vector<const Subschema*>& into) {
    c.applyToSubschemas([&](unsigned, const Subschema* s) {
      into.push_back(s);
      return true;
    });
  }
  void add(const Subschema* s, std::vector<const Subschema*>& into) {
    if (s != nullptr) into.push_back(s);
  }

  bool visit(const AllOfConstraint& c) override { return all(c, same_value), true; }
  bool visit(const AnyOfConstraint& c) override { return all(c, same_value), true; }
  bool visit(const OneOfConstraint& c) override { return all(c, same_value), true; }
  bool visit(const NotConstraint& c) override { return add(c.getSubschema(), same_value), true; }
  bool visit(const ConditionalConstraint& c) override {
    add(c.getIfSubschema(), same_value);
    add(c.getThenSubschema(), same_value);
    add(c.getElseSubschema(), same_value);
    return true;
  }
  bool visit(const DependenciesConstraint& c) override {
    c.applyToSchemaDependencies([&](const auto&, const Subschema* s) {
      add(s, same_value);
      return true;
    });
    return true;
  }
  bool visit(const ContainsConstraint& c) override { return add(c.getSubschema(), parts), true; }
  bool visit(const PropertyNamesConstraint& c) override { return add(c.getSubschema(), parts), true; }
  bool visit(const SingularItemsConstraint& c) override { return add(c.getItemsSubschema(), parts), true; }
  bool visit(const LinearItemsConstraint& c) override {
    c.applyToItemSubschemas([&](unsigned, const Subschema* s) {
      add(s, parts);
      return true;
    });
    add(c.getAdditionalItemsSubschema(), parts);
    return true;
  }
  bool visit(const PropertiesConstraint& c) override {
    auto each = [&](const auto&, const Subschema* s) {
      add(s, parts);
      return true;
    };
    c.applyToProperties(each);
    c.applyToPatternProperties(each);
    add(c.getAdditionalPropertiesSubschema(), parts);
    return true;
  }
  // tank's own constraints hold separately compiled schemas without $ref: they cannot loop.
  bool visit(const PolyConstraint&) override { return true; }
  bool visit(const ConstConstraint&) override { return true; }
  bool visit(const EnumConstraint&) override { return true; }
  bool visit(const FormatConstraint&) override { return true; }
  bool visit(const MaximumConstraint&) override { return true; }
  bool visit(const MaxItemsConstraint&) override { return true; }
  bool visit(const MaxLengthConstraint&) override { return true; }
  bool visit(const MaxPropertiesConstraint&) override { return true; }
  bool visit(const MinimumConstraint&) override { return true; }
  bool visit(const MinItemsConstraint&) override { return true; }
  bool visit(const MinLengthConstraint&) override { return true; }
  bool visit(const MinPropertiesConstraint&) override { return true; }
  bool visit(const MultipleOfDoubleConstraint&) override { return true; }
  bool visit(const MultipleOfIntConstraint&) override { return true; }
  bool visit(const PatternConstraint&) override { return true; }
  bool visit(const RequiredConstraint&) override { return true; }
  bool visit(const TypeConstraint&) override { return true; }
  bool visit(const UniqueItemsConstraint&) override { return true; }
};

// LoopFinder checks each document; a loop through several documents (a.json's allOf refers to
// b.json, whose allOf refers to a.json) shows only once valijson has resolved the $refs, so the
// compiled schema is checked too: no subschema may reach itself through same-value edges.
void check_compiled_loops(const valijson::Subschema& root) {
  enum class Mark { active, done };
  std::unordered_map<const valijson::Subschema*, Mark> marks;
  std::unordered_set<const valijson::Subschema*> seen;
  std::vector<const valijson::Subschema*> pending{&root};
  // Each subschema (reached by any edge) starts a depth-first walk along same-value edges.
  std::function<void(const valijson::Subschema*)> walk = [&](const valijson::Subschema* s) {
    auto [it, inserted] = marks.emplace(s, Mark::active);
    if (!inserted) {
      if (it->second == Mark::active) {
        throw SchemaDocError{
            "a $ref loop through other documents applies a schema to itself without descending into the "
            "document, so validation would never end; break the loop"};
      }
      return;
    }
    ChildSchemas children;
    valijson::Subschema::ApplyFunction visit = [&](const valijson::constraints::Constraint& c) {
      return c.accept(children);
    };
    s->apply(visit);
    for (const valijson::Subschema* child : children.same_value) walk(child);
    for (const valijson::Subschema* child : children.parts) pending.push_back(child);
    marks[s] = Mark::done;
  };
  while (!pending.empty()) {
    const valijson::Subschema* s = pending.back();
    pending.pop_back();
    if (!seen.insert(s).second) continue;
    walk(s);
    // Same-value children were walked (and marked) but their parts still need a start.
    ChildSchemas children;
    valijson::Subschema::ApplyFunction visit = [&](const valijson::constraints::Constraint& c) {
      return c.accept(children);
    };
    s->apply(visit);
    for (const valijson::Subschema* child : children.same_value) pending.push_back(child);
    for (const valijson::Subschema* child : children.parts) pending.push_back(child);
  }
}

// A document read for a schema: the root of the main one or a document fetched for a $ref.
struct PreparedDocument {
  json::value value;
  bool pattern_properties = false;
};

// Parses schema text; throws SchemaDocError with line:column on bad JSON.
json::value parse_schema_json(std::string_view text, const std::string& origin) {
  json::parse_options options;
  options.max_depth = 256;
  json::parser parser(json::storage_ptr(), options);
  json::error_code ec;
  const std::size_t consumed = parser.write_some(text.data(), text.size(), ec);
  std::size_t at = consumed;
  if (!ec) {
    while (at < text.size() && (text[at] == ' ' || text[at] == '\t' || text[at] == '\n' || text[at] == '\r')) ++at;
    if (at < text.size()) ec = json::error::extra_data;
  }
  if (ec) {
    at = std::min(at, text.size());
    std::size_t line = 1;
    std::size_t line_start = 0;
    for (std::size_t i = 0; i < at; ++i) {
      if (text[i] == '\n') {
        ++line;
        line_start = i + 1;
      }
    }
    throw SchemaDocError{fmt::format("{}:{}:{}: not JSON: {}; fix the JSON syntax there", origin, line,
                                     at - line_start + 1, ec.message()),
                         true};
  }
  return parser.release();
}

}  // namespace

// =============================================================================================
// JsonSchema

struct JsonSchema::Impl {
  std::string origin;
  valijson::Schema schema;
  bool pattern_properties = false;
  RegexCache regexes;  // owned here so the constraints' regexes live as long as the schema
};

namespace {

void report_violations(valijson::ValidationResults& results, const json::value& document, std::size_t max,
                       std::vector<Violation>* out);

// Loads schema text into `impl`; `check_meta` is false only for the meta-schema itself.
void build_schema(JsonSchema::Impl& impl, std::string_view text, const SchemaResolver& resolver, bool check_meta);

const JsonSchema& meta_schema();

// Checks a schema document against the draft 7 meta-schema, so that a wrong keyword is reported
// with its place rather than with valijson's bare message.
void check_against_meta_schema(const json::value& document) {
  valijson::Validator validator;
  DocAdapter adapter(document);
  if (validator.validate(meta_schema().impl().schema, adapter, nullptr)) return;
  valijson::ValidationResults results;
  validator.validate(meta_schema().impl().schema, adapter, &results);
  std::vector<Violation> violations;
  report_violations(results, document, 8, &violations);
  throw SchemaDocError{fmt::format("not a valid JSON Schema (draft 7): {}; fix the keywords at those places",
                                   describe(violations))};
}

PreparedDocument prepare_document(json::value document, RegexCache& regexes, bool check_meta) {
  if (check_meta) check_against_meta_schema(document);
  PreparedDocument prepared;
  prepared.value = std::move(document);
  rewrite_schema(prepared.value, "", regexes, prepared.pattern_properties, false, 0);
  LoopFinder(prepared.value).run();
  take_over_properties(prepared.value, 0);
  wrap_root_ref(prepared.value);
  return prepared;
}

std::string_view draft7_meta_schema_text();

// Thrown from inside valijson's parser (through its fetch callback) so that the error about a
// fetched document keeps its own message.
struct FetchError {
  std::string message;
};

void build_schema(JsonSchema::Impl& impl, std::string_view text, const SchemaResolver& resolver, bool check_meta) {
  try {
    PreparedDocument root = prepare_document(parse_schema_json(text, impl.origin), impl.regexes, check_meta);
    impl.pattern_properties = root.pattern_properties;

    valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
    add_tank_keywords(parser, impl.regexes);

    auto fetch = [&](const std::string& uri) -> const json::value* {
      // The draft 7 meta-schema is known without fetching it (a schema may refer to it to say
      // "a value here is a schema").
      if (uri == "http://json-schema.org/draft-07/schema" || uri == "https://json-schema.org/draft-07/schema") {
        PreparedDocument doc = prepare_document(parse_schema_json(draft7_meta_schema_text(), uri), impl.regexes, false);
        return new json::value(std::move(doc.value));
      }
      if (!resolver) {
        throw FetchError{fmt::format(
            "$ref to another document \"{}\" cannot be resolved here; copy what it refers to under \"definitions\" "
            "and refer to it as \"#/definitions/...\"",
            uri)};
      }
      std::optional<std::string> fetched;
      try {
        fetched = resolver(uri);
      } catch (const std::exception& e) {
        throw FetchError{fmt::format("$ref to \"{}\" cannot be resolved: {}", uri, e.what())};
      }
      if (!fetched) {
        throw FetchError{fmt::format("$ref to \"{}\" cannot be resolved: no such document", uri)};
      }
      try {
        PreparedDocument doc = prepare_document(parse_schema_json(*fetched, uri), impl.regexes, check_meta);
        impl.pattern_properties = impl.pattern_properties || doc.pattern_properties;
        return new json::value(std::move(doc.value));
      } catch (const SchemaDocError& e) {
        throw FetchError{fmt::format("in the document \"{}\" it refers to: {}", uri, e.message)};
      }
    };
    auto free_document = [](const json::value* document) { delete document; };
    DocAdapter adapter(root.value);
    parser.populateSchema(adapter, impl.schema, fetch, free_document);
    check_compiled_loops(impl.schema);
  } catch (const SchemaDocError& e) {
    if (e.has_origin) throw SchemaError("schema " + e.message);
    throw SchemaError(fmt::format("schema {}: {}", impl.origin, e.message));
  } catch (const FetchError& e) {
    throw SchemaError(fmt::format("schema {}: {}", impl.origin, e.message));
  } catch (const std::exception& e) {
    throw SchemaError(fmt::format("schema {}: not a valid JSON Schema (draft 7): {}; fix the schema", impl.origin,
                                  e.what()));
  }
}

// The draft 7 meta-schema (http://json-schema.org/draft-07/schema), as published.
constexpr std::string_view kDraft7MetaSchema = R"json({
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": "http://json-schema.org/draft-07/schema#",
    "title": "Core schema meta-schema",
    "definitions": {
        "schemaArray": {"type": "array", "minItems": 1, "items": { "$ref": "#" }},
        "nonNegativeInteger": {"type": "integer", "minimum": 0},
        "nonNegativeIntegerDefault0": {"allOf": [{ "$ref": "#/definitions/nonNegativeInteger" }, { "default": 0 }]},
        "simpleTypes": {"enum": ["array", "boolean", "integer", "null", "number", "object", "string"]},
        "stringArray": {"type": "array", "items": { "type": "string" }, "uniqueItems": true, "default": []}
    },
    "type": ["object", "boolean"],
    "properties": {
        "$id": {"type": "string", "format": "uri-reference"},
        "$schema": {"type": "string", "format": "uri"},
        "$ref": {"type": "string", "format": "uri-reference"},
        "$comment": {"type": "string"},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "default": true,
        "readOnly": {"type": "boolean", "default": false},
        "examples": {"type": "array", "items": true},
        "multipleOf": {"type": "number", "exclusiveMinimum": 0},
        "maximum": {"type": "number"},
        "exclusiveMaximum": {"type": "number"},
        "minimum": {"type": "number"},
        "exclusiveMinimum": {"type": "number"},
        "maxLength": { "$ref": "#/definitions/nonNegativeInteger" },
        "minLength": { "$ref": "#/definitions/nonNegativeIntegerDefault0" },
        "pattern": {"type": "string", "format": "regex"},
        "additionalItems": { "$ref": "#" },
        "items": {"anyOf": [{ "$ref": "#" }, { "$ref": "#/definitions/schemaArray" }], "default": true},
        "maxItems": { "$ref": "#/definitions/nonNegativeInteger" },
        "minItems": { "$ref": "#/definitions/nonNegativeIntegerDefault0" },
        "uniqueItems": {"type": "boolean", "default": false},
        "contains": { "$ref": "#" },
        "maxProperties": { "$ref": "#/definitions/nonNegativeInteger" },
        "minProperties": { "$ref": "#/definitions/nonNegativeIntegerDefault0" },
        "required": { "$ref": "#/definitions/stringArray" },
        "additionalProperties": { "$ref": "#" },
        "definitions": {"type": "object", "additionalProperties": { "$ref": "#" }, "default": {}},
        "properties": {"type": "object", "additionalProperties": { "$ref": "#" }, "default": {}},
        "patternProperties": {"type": "object", "additionalProperties": { "$ref": "#" },
                              "propertyNames": { "format": "regex" }, "default": {}},
        "dependencies": {"type": "object",
                         "additionalProperties": {"anyOf": [{ "$ref": "#" }, { "$ref": "#/definitions/stringArray" }]}},
        "propertyNames": { "$ref": "#" },
        "const": true,
        "enum": {"type": "array", "items": true},
        "type": {"anyOf": [
            { "$ref": "#/definitions/simpleTypes" },
            {"type": "array", "items": { "$ref": "#/definitions/simpleTypes" }, "minItems": 1, "uniqueItems": true}
        ]},
        "format": { "type": "string" },
        "contentMediaType": { "type": "string" },
        "contentEncoding": { "type": "string" },
        "if": { "$ref": "#" },
        "then": { "$ref": "#" },
        "else": { "$ref": "#" },
        "allOf": { "$ref": "#/definitions/schemaArray" },
        "anyOf": { "$ref": "#/definitions/schemaArray" },
        "oneOf": { "$ref": "#/definitions/schemaArray" },
        "not": { "$ref": "#" }
    },
    "default": true
})json";

std::string_view draft7_meta_schema_text() { return kDraft7MetaSchema; }

}  // namespace

JsonSchema::JsonSchema(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
JsonSchema::~JsonSchema() = default;

const std::string& JsonSchema::origin() const { return impl_->origin; }

namespace {

const JsonSchema& meta_schema() {
  // Built once, then only read (by any thread).
  static const std::shared_ptr<const JsonSchema> meta = [] {
    auto impl = std::make_unique<JsonSchema::Impl>();
    impl->origin = "draft-07 meta-schema";
    build_schema(*impl, kDraft7MetaSchema, {}, false);
    return std::make_shared<const JsonSchema>(std::move(impl));
  }();
  return *meta;
}

}  // namespace

std::shared_ptr<const JsonSchema> JsonSchema::parse(std::string_view text, std::string origin, Resolver resolver) {
  auto impl = std::make_unique<Impl>();
  impl->origin = std::move(origin);
  build_schema(*impl, text, resolver, true);
  return std::make_shared<const JsonSchema>(std::move(impl));
}

namespace {

// Reads a whole file; nullopt and errno's text in `error` when it cannot.
std::optional<std::string> read_whole_file(const std::filesystem::path& file, std::string* error) {
  constexpr std::size_t kMaxSchemaBytes = 16 * 1024 * 1024;
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = std::strerror(errno);
    return std::nullopt;
  }
  std::string content;
  char buffer[64 * 1024];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = std::strerror(errno);
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    content.append(buffer, static_cast<std::size_t>(n));
    if (content.size() > kMaxSchemaBytes) {
      *error = fmt::format("larger than {} MiB, which is not a schema", kMaxSchemaBytes >> 20);
      ::close(fd);
      return std::nullopt;
    }
  }
  ::close(fd);
  return content;
}

bool has_scheme(const std::string& uri) {
  const std::size_t colon = uri.find(':');
  if (colon == std::string::npos || colon == 0) return false;
  return std::all_of(uri.begin(), uri.begin() + static_cast<std::ptrdiff_t>(colon), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' || c == '-' ||
           c == '.';
  });
}

}  // namespace

std::shared_ptr<const JsonSchema> JsonSchema::load(const std::filesystem::path& file) {
  std::string error;
  std::optional<std::string> text = read_whole_file(file, &error);
  if (!text) {
    throw SchemaError(fmt::format("schema {}: cannot read it: {}; check the path and that tank may read the file",
                                  file.string(), error));
  }
  const std::filesystem::path dir = file.parent_path();
  Resolver next_to_file = [dir](const std::string& uri) -> std::optional<std::string> {
    if (has_scheme(uri)) {
      throw std::runtime_error(
          "tank does not fetch schemas from URIs; save the document next to the schema and refer to it by its "
          "relative path");
    }
    std::string why;
    std::optional<std::string> content = read_whole_file(dir / uri, &why);
    if (!content) throw std::runtime_error(fmt::format("cannot read {}: {}", (dir / uri).string(), why));
    return content;
  };
  return parse(*text, file.string(), std::move(next_to_file));
}

// =============================================================================================
// Validation

namespace {

// Beyond this many values, an invalid document gets one summary violation (see the header).
constexpr std::size_t kMaxDetailedValues = 10000;

// Counts values up to `limit` (stops early).
std::size_t count_values(const json::value& v, std::size_t limit) {
  std::size_t n = 1;
  if (const json::object* o = v.if_object()) {
    for (const auto& m : *o) {
      if (n > limit) break;
      n += count_values(m.value(), limit - std::min(n, limit));
    }
  } else if (const json::array* a = v.if_array()) {
    for (const json::value& e : *a) {
      if (n > limit) break;
      n += count_values(e, limit - std::min(n, limit));
    }
  }
  return n;
}

// The first property name longer than `limit`, as the pointer of its object; nullopt if none.
std::optional<std::string> overlong_name(const json::value& v, std::size_t limit, const std::string& pointer) {
  if (const json::object* o = v.if_object()) {
    for (const auto& m : *o) {
      if (m.key().size() > limit) return pointer;
      if (auto found = overlong_name(m.value(), limit, pointer_child(pointer, m.key()))) return found;
    }
  } else if (const json::array* a = v.if_array()) {
    for (std::size_t i = 0; i < a->size(); ++i) {
      if (auto found = overlong_name((*a)[i], limit, pointer_child(pointer, std::to_string(i)))) return found;
    }
  }
  return std::nullopt;
}

// valijson's context ("<root>", "[readings]", "[0]") as a JSON pointer, following the document
// so that "[0]" is an index in an array and a member name in an object. Returns the value there
// (nullptr if the path leaves the document).
const json::value* context_to_pointer(const std::vector<std::string>& context, const json::value& document,
                                      std::string* pointer) {
  const json::value* at = &document;
  for (std::size_t i = 0; i < context.size(); ++i) {
    std::string_view token = context[i];
    if (i == 0 && token == "<root>") continue;
    if (token.size() >= 2 && token.front() == '[' && token.back() == ']') token = token.substr(1, token.size() - 2);
    append_pointer_token(*pointer, token);
    if (at == nullptr) continue;
    if (const json::object* o = at->if_object()) {
      at = o->if_contains(token);
    } else if (const json::array* a = at->if_array()) {
      std::size_t index = 0;
      bool digits = !token.empty() && token.size() < 19;
      for (char c : token) {
        if (c < '0' || c > '9') digits = false;
      }
      if (digits) index = std::stoull(std::string(token));
      at = digits && index < a->size() ? &(*a)[index] : nullptr;
    } else {
      at = nullptr;
    }
  }
  return at;
}

// "200.000000" (std::to_string in valijson's messages) -> "200"; "0.010000" -> "0.01".
std::string trim_fixed_decimals(std::string_view message) {
  auto digit = [&](std::size_t i) { return i < message.size() && std::isdigit(static_cast<unsigned char>(message[i])); };
  std::string out;
  out.reserve(message.size());
  for (std::size_t i = 0; i < message.size(); ++i) {
    bool fixed6 = message[i] == '.' && i > 0 && digit(i - 1) && !digit(i + 7);
    for (std::size_t k = 1; fixed6 && k <= 6; ++k) fixed6 = digit(i + k);
    if (!fixed6) {
      out += message[i];
      continue;
    }
    std::string_view decimals = message.substr(i + 1, 6);
    while (!decimals.empty() && decimals.back() == '0') decimals.remove_suffix(1);
    if (!decimals.empty()) {
      out += '.';
      out += decimals;
    }
    i += 6;
  }
  return out;
}

// Cuts `s` to at most `max` bytes without splitting a UTF-8 sequence; adds "..." when cut.
// The first bytes of `s`, at most `max`, without splitting a UTF-8 sequence.
std::string_view utf8_prefix(std::string_view s, std::size_t max) {
  if (s.size() <= max) return s;
  std::size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return s.substr(0, cut);
}

std::string shorten(std::string_view s, std::size_t max) {
  if (s.size() <= max) return std::string(s);
  return std::string(utf8_prefix(s, max)) + "...";
}

std::string found_value(const json::value& v) {
  switch (v.kind()) {
    case json::kind::object: return "an object";
    case json::kind::array: return "an array";
    case json::kind::string: {
      // Cut before serializing: the string may be megabytes long.
      const json::string& text = v.get_string();
      const std::string_view cut = utf8_prefix(std::string_view(text.data(), text.size()), 40);
      return json::serialize(json::string_view(cut.data(), cut.size())) + (cut.size() < text.size() ? "..." : "");
    }
    // Boost.JSON writes doubles as "3.66E1"; fmt gives the shortest form that reads back.
    case json::kind::double_: return fmt::format("{}", v.get_double());
    case json::kind::int64: return fmt::format("{}", v.get_int64());
    case json::kind::uint64: return fmt::format("{}", v.get_uint64());
    case json::kind::bool_: return v.get_bool() ? "true" : "false";
    case json::kind::null: return "null";
  }
  return "";
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// valijson's lines that only say that a subschema below failed; the failure below says more.
bool is_summary(std::string_view message) {
  static constexpr std::string_view kSummaries[] = {
      "Failed to validate against schema associated with property name",
      "Failed to validate against schema associated with pattern",
      "Failed to validate item #",
      "Failed to validate against additional properties schema",
      "Failed to validate against child schema #",
      "Failed to validate against dependent schema",
      "Failed to validate against a conditional schema",
  };
  return std::any_of(std::begin(kSummaries), std::end(kSummaries),
                     [&](std::string_view s) { return starts_with(message, s); });
}

// Messages about the value itself, which the value found makes clearer (not those about an
// object's members or an array's items).
bool about_the_value(std::string_view message, const json::value& v) {
  if (!v.is_object() && !v.is_array()) return true;
  return starts_with(message, "Value type not permitted") || starts_with(message, "Failed to match against any enum") ||
         starts_with(message, "Failed to match expected value set by 'const'");
}

bool is_under(const std::string& pointer, const std::string& parent) {
  return pointer.size() >= parent.size() && pointer.compare(0, parent.size(), parent) == 0 &&
         (pointer.size() == parent.size() || pointer[parent.size()] == '/');
}

// The place a summary line is about: "... property name 'x'" is about the member x of the object
// it was reported on, "... item #3 ..." about its element 3; the others about the value itself.
std::string summary_pointer(const std::string& pointer, std::string_view message) {
  constexpr std::string_view kProperty = "Failed to validate against schema associated with property name '";
  constexpr std::string_view kItem = "Failed to validate item #";
  if (starts_with(message, kProperty) && message.size() > kProperty.size() && message.back() == '\'') {
    return pointer_child(pointer, message.substr(kProperty.size(), message.size() - kProperty.size() - 1));
  }
  // valijson reports "... against corresponding item schema" (items as an array) on the item
  // itself, the other item summaries on the array.
  if (starts_with(message, kItem) && message.find("corresponding item schema") == std::string_view::npos) {
    const std::string_view rest = message.substr(kItem.size());
    const std::size_t digits = std::min(rest.find_first_not_of("0123456789"), rest.size());
    if (digits > 0) return pointer_child(pointer, rest.substr(0, digits));
  }
  return pointer;
}

void report_violations(valijson::ValidationResults& results, const json::value& document, std::size_t max,
                       std::vector<Violation>* out) {
  struct Entry {
    std::string pointer;
    std::string message;
    bool summary;
  };
  std::vector<Entry> entries;
  for (const auto& error : results) {
    Entry e;
    std::string pointer;
    context_to_pointer(error.context, document, &pointer);
    std::string message = trim_fixed_decimals(error.description);
    if (!message.empty() && message.back() == '.') message.pop_back();
    e.summary = is_summary(message);
    e.pointer = e.summary ? summary_pointer(pointer, message) : pointer;
    e.message = std::move(message);
    entries.push_back(std::move(e));
  }
  const std::size_t first = out->size();
  for (Entry& e : entries) {
    if (out->size() - first >= max) break;
    if (e.summary) {
      // Kept only when nothing at or below its place explains it: a `false` subschema, for one,
      // reports nothing but the summary.
      const bool explained = std::any_of(entries.begin(), entries.end(), [&](const Entry& other) {
        return !other.summary && is_under(other.pointer, e.pointer);
      });
      if (explained) continue;
    }
    json::error_code ec;
    const json::value* at = document.find_pointer(e.pointer, ec);
    if (at != nullptr && (e.summary || about_the_value(e.message, *at))) {
      e.message += fmt::format(" (found {})", found_value(*at));
    }
    const bool duplicate = std::any_of(out->begin() + static_cast<std::ptrdiff_t>(first), out->end(),
                                       [&](const Violation& v) { return v.pointer == e.pointer && v.message == e.message; });
    if (!duplicate) out->push_back(Violation{e.pointer, e.message});
  }
}

}  // namespace

// valijson's Validator is a ValidationVisitor started at "<root>" with strict types and the
// Validator's regex cache. SchemaValidator starts the visitor itself so that the first pass has
// an empty context (nothing is recorded in it; the "<root>" string would cost an allocation per
// record), and keeps the cache, which must not be shared between threads.
struct SchemaValidator::State {
  explicit State(std::shared_ptr<const JsonSchema> s) : schema(std::move(s)) {}

  bool run(const DocAdapter& document, valijson::ValidationResults* results) {
    std::vector<std::string> context;
    if (results != nullptr) context.emplace_back("<root>");
    valijson::ValidationVisitor<DocAdapter> visitor(document, std::move(context), true, results, regex_cache);
    return visitor.validateSchema(schema->impl().schema);
  }

  std::shared_ptr<const JsonSchema> schema;
  std::unordered_map<std::string, std::regex> regex_cache;
};

SchemaValidator::SchemaValidator(std::shared_ptr<const JsonSchema> schema)
    : state_(std::make_unique<State>(std::move(schema))) {
  if (!state_->schema) throw std::invalid_argument("SchemaValidator needs a schema");
}
SchemaValidator::~SchemaValidator() = default;
SchemaValidator::SchemaValidator(SchemaValidator&&) noexcept = default;
SchemaValidator& SchemaValidator::operator=(SchemaValidator&&) noexcept = default;

const JsonSchema& SchemaValidator::schema() const { return *state_->schema; }

bool SchemaValidator::validate(const json::value& document, std::vector<Violation>* violations,
                               std::size_t max_violations) {
  const JsonSchema::Impl& impl = state_->schema->impl();
  try {
    if (impl.pattern_properties) {
      if (auto at = overlong_name(document, kMaxPatternPropertyNameBytes, "")) {
        if (violations != nullptr && max_violations > 0) {
          violations->push_back(Violation{
              *at, fmt::format("A property name is longer than the {} bytes that patternProperties are checked on",
                               kMaxPatternPropertyNameBytes)});
        }
        return false;
      }
    }
    DocAdapter adapter(document);
    // First pass: stops at the first failure and records nothing (cheap for the common, valid
    // case). The second pass, only for an invalid document, collects every failure.
    if (state_->run(adapter, nullptr)) return true;
    if (violations == nullptr || max_violations == 0) return false;
    if (count_values(document, kMaxDetailedValues) > kMaxDetailedValues) {
      violations->push_back(Violation{
          "", fmt::format("The document does not match the schema (it has more than {} values, too many to list "
                          "each violation)",
                          kMaxDetailedValues)});
      return false;
    }
    valijson::ValidationResults results;
    state_->run(adapter, &results);
    const std::size_t before = violations->size();
    report_violations(results, document, max_violations, violations);
    if (violations->size() == before) {
      violations->push_back(Violation{"", "The document does not match the schema"});
    }
    return false;
  } catch (const std::exception& e) {
    if (violations != nullptr && max_violations > 0) {
      violations->push_back(Violation{"", fmt::format("The schema could not be evaluated on this document: {}",
                                                      e.what())});
    }
    return false;
  }
}

std::string describe(const std::vector<Violation>& violations) {
  constexpr std::size_t kMaxBytes = 1024;
  std::string out;
  for (std::size_t i = 0; i < violations.size(); ++i) {
    std::string item = shown_pointer(violations[i].pointer) + ": " + violations[i].message;
    const std::string separator = out.empty() ? "" : "; ";
    const std::size_t left = violations.size() - i;
    // Room for what follows is kept only when something follows.
    const std::size_t tail = left > 1 ? 32 : 0;
    if (out.size() + separator.size() + item.size() + tail > kMaxBytes) {
      if (out.empty()) {
        out = shorten(item, kMaxBytes - 32);
        if (left > 1) out += fmt::format("; ... and {} more", left - 1);
      } else {
        out += fmt::format("; ... and {} more", left);
      }
      return out;
    }
    out += separator + item;
  }
  return out;
}

}  // namespace tank::process
