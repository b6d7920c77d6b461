#pragma once

// JSON records and their contracts: decoding bytes into a document (Boost.JSON) and checking the
// document against a JSON Schema draft 7 (valijson).
//
//   JsonDecoder      one per thread   bytes -> document, or the parser's error and its byte offset
//   JsonSchema       shared, const    a schema file loaded once (start-up, `tank check`)
//   SchemaValidator  one per thread   document -> valid, or the violations as JSON pointers
//
// The data path never throws: decode() and validate() report bad input through their results.
// Loading a schema is control plane and throws SchemaError, whose message names the file and
// says what is wrong and what to do.
//
// What tank adds to valijson (valijson 1.0, Debian libvalijson-dev), in json_schema*.cpp:
//   - A schema is checked against the draft 7 meta-schema before valijson reads it, so a wrong
//     keyword value is reported with its place ("/properties/temp/maximum: ...").
//   - `pattern` and the formats valijson checks (date, time, date-time) are evaluated with
//     Boost.Regex, compiled once at load. valijson uses std::regex, whose libstdc++ matcher
//     recurses once per character and overflows the stack on a string of some 20,000 bytes
//     (GCC bug 86164): one record would crash the agent. Boost.Regex bounds its backtracking
//     memory and gives up instead (a violation: "too complex to evaluate on this string"; for a
//     repeated capture group such as "^(a|b)*$" that happens beyond some 20,000 bytes).
//   - A schema whose $ref or allOf/anyOf/oneOf/not/if/then/else lead back to the same schema
//     without entering the document ({"$ref": "#"}, two definitions that refer to each other,
//     also through other documents) is refused at load: valijson would recurse until the stack
//     overflows. A $ref at the root of a document is moved into an allOf, where valijson
//     resolves it properly (its root-level path looked "other.json" up in the same document and
//     recursed for ever).
//   - Numbers as JSON Schema means them: an integer above 2^63-1 (Boost.JSON's uint64) is an
//     integer with its value (valijson threw on it under minimum/maximum), 1.0 is an integer.
//   - Speed: `properties` + `additionalProperties` run as a tank constraint where that gives the
//     same result (see PropertiesConstraint), and the first validation pass records nothing;
//     about 5x faster than valijson's own on a 6-property record (bench/validate_bench.cpp).
// Known limits (valijson 1.0): `$id` does not set the base URI (valijson reads draft 4's `id`),
// so a relative $ref that needs one cannot be resolved (the schema is refused at load; 11 cases of
// the official suite, listed in tests/unit/json_schema_suite_test.cpp); `patternProperties` still
// uses std::regex, on property names, so SchemaValidator refuses documents with a property name
// over kMaxPatternPropertyNameBytes when the schema uses patternProperties; formats other than
// date, time and date-time are not checked (draft 7 makes them annotations).

#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>

namespace tank::process {

// ---------------------------------------------------------------------------------------------
// Decoding

struct DecodeError {
  std::string message;      // Boost.JSON's message ("syntax error", "incomplete JSON", ...)
  std::size_t offset = 0;   // byte offset in the input where parsing stopped; <= input size
};

// The default nesting limit (arrays and objects inside each other) of a decoded document.
inline constexpr std::size_t kDefaultMaxDepth = 64;

// Parses JSON documents, reusing its memory from one call to the next: the parser's stack and
// the arena that holds the document (an arena that grows to the largest document seen, up to
// 1 MiB, and is recycled, not freed, between calls).
//
// Thread safety: none; use one decoder per thread.
class JsonDecoder {
 public:
  // `max_depth`: documents nested deeper are refused ("too deep") before they use the memory
  // or the stack that deep nesting would cost here and in the validator.
  explicit JsonDecoder(std::size_t max_depth = kDefaultMaxDepth);
  ~JsonDecoder();
  JsonDecoder(JsonDecoder&&) noexcept;
  JsonDecoder& operator=(JsonDecoder&&) noexcept;
  JsonDecoder(const JsonDecoder&) = delete;
  JsonDecoder& operator=(const JsonDecoder&) = delete;

  // Parses exactly one JSON value (RFC 8259, UTF-8 checked; whitespace around it allowed).
  // Returns the document, valid until the next call to decode() or the decoder's destruction.
  // It lives in the decoder's arena: to keep it, copy it with storage of its own,
  // `boost::json::value kept(*doc, boost::json::storage_ptr())` -- a plain copy
  // (`boost::json::value kept = *doc`) shares the arena (Boost.JSON copies keep the source's
  // storage) and dangles after the next decode().
  // Returns nullptr for anything else and, if `error` is not null, fills it:
  //   - empty or whitespace-only input: "incomplete JSON" at offset size
  //   - a syntax error, invalid UTF-8, an unterminated value: the parser's message at the
  //     offset of the byte where it stopped
  //   - nesting deeper than max_depth: "too deep" at the offending '[' or '{'
  //   - anything but whitespace after the value: "extra data" at the first such byte
  // Never reads outside `bytes`, whatever they hold; numbers too large for a double decode as
  // infinity, as in Boost.JSON. Throws only std::bad_alloc.
  const boost::json::value* decode(std::string_view bytes, DecodeError* error);

  std::size_t max_depth() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// ---------------------------------------------------------------------------------------------
// Schemas

// A schema that cannot be used. what(): "<origin>: <what is wrong>; <what to do>".
class SchemaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The documents a schema refers to with a $ref that is not inside the schema itself. Called with
// the absolute URI of the document (no fragment), e.g. "http://localhost:1234/integer.json";
// returns its text, or nullopt when it is unknown (load/parse then throw SchemaError naming the
// $ref). It may throw; the exception becomes a SchemaError.
using SchemaResolver = std::function<std::optional<std::string>(const std::string& uri)>;

// The most bytes of a property name that a schema with patternProperties is applied to (see the
// limits above): a longer name is a violation, never a std::regex stack overflow.
inline constexpr std::size_t kMaxPatternPropertyNameBytes = 4096;

// A JSON Schema draft 7 contract, immutable once loaded: share one between threads (as
// shared_ptr<const JsonSchema>) and give each thread its own SchemaValidator.
class JsonSchema {
 public:
  using Resolver = SchemaResolver;

  // Loads `file`. A $ref to another document is resolved relative to the file's directory
  // when it has no scheme ("types.json#/definitions/id"); tank never fetches a URI from the
  // network, so a $ref with a scheme (http:, https:, file:...) is refused -- but for the draft 7
  // meta-schema (http://json-schema.org/draft-07/schema), which tank knows.
  // Throws SchemaError when the file cannot be read (with errno's text), is not JSON (with
  // line:column and the parser's message), is not a valid draft 7 schema (with the place and
  // what is wrong), or has a $ref that cannot be resolved or loops.
  static std::shared_ptr<const JsonSchema> load(const std::filesystem::path& file);

  // Parses a schema from `text`; `origin` names it in error messages (a path, "inline"...).
  // `resolver` fetches other documents; without one, any $ref outside `text` is refused (but
  // for the draft 7 meta-schema, as in load()).
  // Throws SchemaError as load() does.
  static std::shared_ptr<const JsonSchema> parse(std::string_view text, std::string origin,
                                                 Resolver resolver = {});

  ~JsonSchema();
  JsonSchema(const JsonSchema&) = delete;
  JsonSchema& operator=(const JsonSchema&) = delete;

  // The file or name the schema came from.
  const std::string& origin() const;

  // The compiled schema; its definition is private to json_schema_detail.hpp (valijson stays out of
  // this header). Use load() or parse() to make one.
  struct Impl;
  explicit JsonSchema(std::unique_ptr<Impl> impl);
  const Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------------------
// Validation

struct Violation {
  std::string pointer;  // RFC 6901 JSON pointer into the document: "" the root, "/temp",
                        // "/readings/0/value", "/a~1b" for the key "a/b", "/m~0n" for "m~n"
  std::string message;  // what the schema expected (valijson's description), and for a scalar
                        // the value found, e.g. "Expected number less than or equal to 200
                        // (found 500)"
};

// Checks documents against one schema. One per thread: valijson's Validator is not safe to
// share -- Validator::validate() is non-const and inserts compiled patterns into a plain
// std::unordered_map (its regex cache) while validating, a data race between threads.
// SchemaValidator runs valijson's ValidationVisitor with a cache of its own in the same way.
// The compiled schema itself is only read while validating (valijson's Subschema and
// constraints are const, with no mutable state), so any number of validators may share one
// JsonSchema (the threads test in tests/unit/json_schema_test.cpp passes ThreadSanitizer).
class SchemaValidator {
 public:
  // Throws std::invalid_argument if `schema` is null.
  explicit SchemaValidator(std::shared_ptr<const JsonSchema> schema);
  ~SchemaValidator();
  SchemaValidator(SchemaValidator&&) noexcept;
  SchemaValidator& operator=(SchemaValidator&&) noexcept;
  SchemaValidator(const SchemaValidator&) = delete;
  SchemaValidator& operator=(const SchemaValidator&) = delete;

  // True when `document` satisfies the schema. Otherwise false and, if `violations` is not
  // null, appends the failures to it (at most `max_violations`, in the order valijson checks
  // them): each failed leaf constraint once, with its JSON pointer. The summaries valijson adds
  // above a leaf ("failed to validate against schema associated with property name ...") are
  // left out; those of anyOf and oneOf stay, since the leaves under them are alternatives, and
  // a summary that is the only explanation stays too, at the member or item it is about (a
  // `false` subschema reports nothing else: "/x: Failed to validate against schema associated
  // with property name 'x' (found 1)").
  // A valid document costs one pass that records nothing; an invalid one a second pass that
  // collects the details (so a document that fails is slower to check than one that passes).
  // A document with more than 10,000 values gets one violation at "" instead of the list, so
  // that a huge bad document cannot make validation allocate without bound.
  // Throws only std::bad_alloc, whatever the document (an internal error is reported as a
  // violation at "").
  // `document` must not be nested deeper than the decoder allows (kDefaultMaxDepth by default):
  // validation recurses along the document.
  bool validate(const boost::json::value& document, std::vector<Violation>* violations,
                std::size_t max_violations = 16);

  const JsonSchema& schema() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// One line for people (dead-letter details, logs): "/temp: Expected number less than or equal
// to 200 (found 500); /: Missing required property 'device'". The root is shown as "/".
// At most about 1 KiB: violations that do not fit are counted ("... and 3 more").
std::string describe(const std::vector<Violation>& violations);

}  // namespace tank::process
