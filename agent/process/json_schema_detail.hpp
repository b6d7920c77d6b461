#pragma once

// What the pieces of json_schema.hpp's implementation share; private to agent/process/json_schema*.cpp.
//   json_schema_decoder.cpp   JsonDecoder
//   json_schema_adapter.hpp   a valijson adapter for Boost.JSON documents (DocAdapter)
//   json_schema_pointer.cpp   JSON pointers
//   json_schema_keywords.cpp  tank's keywords: pattern and format (Boost.Regex), properties
//   json_schema_rewrite.cpp   reading schema documents: keywords, rewriting, cycles
//   json_schema.cpp           JsonSchema: building, the draft 7 meta-schema, loading files
//   json_schema_validate.cpp  SchemaValidator and describe()
//   draft7_meta_schema.json   the draft 7 meta-schema, embedded at build time

// valijson calls abort() on errors unless this is set before its headers; tank turns its
// exceptions into SchemaError (load) or a violation (validate).
#include <stdexcept>
#define VALIJSON_USE_EXCEPTIONS 1

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>
#include <boost/regex.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>

#include "process/json_schema.hpp"

namespace tank::process {
namespace json = boost::json;

namespace schema_detail {

// JSON pointers (json_schema_pointer.cpp)

void append_pointer_token(std::string& pointer, std::string_view token);

std::string pointer_child(const std::string& pointer, std::string_view token);

// A $ref fragment is URI-encoded ("#/definitions/a%25b"): decode %XX first, then ~0/~1 per token.
std::string percent_decode(std::string_view s);

// Resolves an (already percent-decoded) JSON pointer in `root`. On failure returns nullptr and
// says why in `why`.
const json::value* resolve_pointer(const json::value& root, std::string_view pointer, std::string* why);

std::string shown_pointer(const std::string& pointer);

// Keywords (json_schema_keywords.cpp)

// The key under which tank stores `pattern` and `format` in the copy of the schema that valijson
// reads, so that valijson's own std::regex constraints never see them.
constexpr const char* kPatternKeyword = "x-tank-pattern";
constexpr const char* kFormatKeyword = "x-tank-format";

inline bool starts_with_tank_keyword(std::string_view key) { return key.substr(0, 7) == "x-tank-"; }

// The properties keyword tank puts in place of `properties` + `additionalProperties` where its
// constraint gives the same result (json_schema_keywords.cpp says when and why).
constexpr const char* kPropertiesKeyword = "x-tank-properties";

using RegexCache = std::map<std::string, std::shared_ptr<const boost::regex>, std::less<>>;

// Compiles `pattern` (once per schema); throws std::runtime_error with Boost's message.
std::shared_ptr<const boost::regex> compile_regex(RegexCache& cache, const std::string& pattern);

void add_tank_keywords(valijson::SchemaParser& parser, RegexCache& regexes);
// A subschema compiled on its own (it has no $ref), for tank's properties keyword.
std::shared_ptr<const valijson::Schema> compile_standalone(const json::value& node, RegexCache& regexes);

// Reading schema documents (json_schema_rewrite.cpp)

struct SchemaDocError {
  std::string message;
  bool has_origin = false;  // the message starts with "origin:line:column"
};

// A document read for a schema: the root of the main one or a document fetched for a $ref.
struct PreparedDocument {
  json::value value;
  bool pattern_properties = false;
};

// Parses schema text; throws SchemaDocError with line:column on bad JSON.
json::value parse_schema_json(std::string_view text, const std::string& origin);

// Checks `document` against the draft 7 meta-schema (unless `check_meta` is false: the meta-schema
// itself) and rewrites it for valijson: tank's keywords, loops refused, a root $ref moved down.
PreparedDocument prepare_document(json::value document, RegexCache& regexes, bool check_meta);

// LoopFinder checks each document; a loop through several documents (a.json's allOf refers to
// b.json, whose allOf refers to a.json) shows only once valijson has resolved the $refs, so the
// compiled schema is checked too: no subschema may reach itself through same-value edges.
void check_compiled_loops(const valijson::Subschema& root);

// Loading (json_schema.cpp)

// Checks a schema document against the draft 7 meta-schema (json_schema.cpp); throws
// SchemaDocError naming the places that are wrong.
void check_against_meta_schema(const json::value& document);

// The draft 7 meta-schema (http://json-schema.org/draft-07/schema), as published,
// from agent/process/draft7_meta_schema.json, embedded at build time (agent/CMakeLists.txt).
std::string_view draft7_meta_schema_text();

// Validation (json_schema_validate.cpp)

// valijson's results as tank's violations (json_schema_validate.cpp): at most `max`, appended to `out`.
void report_violations(valijson::ValidationResults& results, const json::value& document, std::size_t max,
                       std::vector<Violation>* out);

}  // namespace schema_detail

struct JsonSchema::Impl {
  std::string origin;
  valijson::Schema schema;
  bool pattern_properties = false;
  schema_detail::RegexCache regexes;  // owned here so the constraints' regexes live as long as the schema
};

}  // namespace tank::process
