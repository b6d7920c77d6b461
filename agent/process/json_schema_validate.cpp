// SchemaValidator and describe() (json_schema.hpp): validating documents and saying where they fail.

#include "process/json_schema.hpp"

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

#include "process/json_schema_adapter.hpp"
#include "process/json_schema_detail.hpp"

namespace tank::process {
namespace json = boost::json;
using namespace schema_detail;

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

}  // namespace

namespace schema_detail {

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

}  // namespace schema_detail

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
