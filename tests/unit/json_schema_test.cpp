// JsonDecoder, JsonSchema and SchemaValidator (process/json_schema.hpp): decoding with exact error
// offsets and no crash on any bytes, schema loading errors that say what and where, violations
// as JSON pointers, reuse, threads. The official test suite runs in json_schema_suite_test.cpp.

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "process/json_schema.hpp"
#include "support/helpers.hpp"

using namespace tank::process;
namespace json = boost::json;

namespace {

// Decodes `text` from a heap buffer of exactly its size, so that a read past the end is a
// read outside the allocation (caught by the sanitizer build).
struct Decoded {
  const json::value* value = nullptr;
  DecodeError error;
};

Decoded decode_exact(JsonDecoder& decoder, std::string_view text) {
  auto buffer = std::make_unique<char[]>(std::max<std::size_t>(text.size(), 1));
  std::memcpy(buffer.get(), text.data(), text.size());
  Decoded d;
  d.value = decoder.decode(std::string_view(buffer.get(), text.size()), &d.error);
  return d;
}

std::string nested_arrays(std::size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

std::shared_ptr<const JsonSchema> schema_of(std::string_view text) { return JsonSchema::parse(text, "test schema"); }

std::vector<Violation> violations_of(const std::shared_ptr<const JsonSchema>& schema, std::string_view document,
                                     std::size_t max = 16) {
  JsonDecoder decoder;
  DecodeError error;
  const json::value* doc = decoder.decode(document, &error);
  REQUIRE(doc != nullptr);
  SchemaValidator validator(schema);
  std::vector<Violation> violations;
  const bool valid = validator.validate(*doc, &violations, max);
  CHECK(valid == violations.empty());
  return violations;
}

bool has_violation(const std::vector<Violation>& violations, const std::string& pointer, const std::string& part) {
  return std::any_of(violations.begin(), violations.end(), [&](const Violation& v) {
    return v.pointer == pointer && v.message.find(part) != std::string::npos;
  });
}

std::string load_error(const std::filesystem::path& file) {
  try {
    (void)JsonSchema::load(file);
  } catch (const SchemaError& e) {
    return e.what();
  }
  return "(loaded)";
}

std::string parse_error(std::string_view text, JsonSchema::Resolver resolver = {}) {
  try {
    (void)JsonSchema::parse(text, "/etc/tank/schemas/t.json", std::move(resolver));
  } catch (const SchemaError& e) {
    return e.what();
  }
  return "(loaded)";
}

// The telemetry contract of the benchmark, with nesting for pointer tests.
constexpr const char* kContract = R"({
  "type": "object",
  "required": ["device", "temp"],
  "properties": {
    "device": {"type": "string", "pattern": "^[a-z0-9-]{1,32}$"},
    "temp": {"type": "number", "minimum": -60, "maximum": 200},
    "status": {"enum": ["ok", "degraded"]},
    "readings": {"type": "array", "items": {"type": "object", "properties": {"v": {"type": "number", "minimum": 0}}}},
    "meta": {
      "type": "object",
      "properties": {"a/b": {"type": "integer"}, "m~n": {"type": "string", "maxLength": 2}},
      "additionalProperties": false
    }
  },
  "additionalProperties": false
})";

}  // namespace

// ---------------------------------------------------------------------------------------------
// Decoding

TEST_CASE("json_schema: the decoder reads every kind of JSON value", "[json_schema][decoder]") {
  JsonDecoder decoder;
  DecodeError error;

  const json::value* v = decoder.decode(R"(  {"s":"a\"\u00e9\ud83d\ude00","i":-42,"d":2.5e3,"b":true,"n":null,"a":[1,[2]]} )", &error);
  REQUIRE(v != nullptr);
  const json::object& o = v->as_object();
  CHECK(o.at("s").as_string() == "a\"\xc3\xa9\xf0\x9f\x98\x80");
  CHECK(o.at("i").as_int64() == -42);
  CHECK(o.at("d").as_double() == 2500.0);
  CHECK(o.at("b").as_bool());
  CHECK(o.at("n").is_null());
  CHECK(o.at("a").as_array().size() == 2);

  CHECK(decoder.decode("\n\t 7 \r\n", &error)->as_int64() == 7);
  CHECK(decoder.decode("\"\"", &error)->as_string().empty());
  CHECK(decoder.decode("18446744073709551615", &error)->as_uint64() == 18446744073709551615ULL);
  CHECK(decoder.decode("[]", &error)->as_array().empty());
  // An escaped NUL stays in the string.
  CHECK(decoder.decode(R"("a\u0000b")", &error)->as_string().size() == 3);
  // Too large for a double: infinity, as Boost.JSON reads it.
  CHECK(std::isinf(decoder.decode("1e999", &error)->as_double()));
}

TEST_CASE("json_schema: the decoder reports each kind of error at its byte offset", "[json_schema][decoder]") {
  struct Case {
    std::string input;
    std::string message;  // a part of it
    std::size_t offset;
  };
  const std::vector<Case> cases = {
      {"", "incomplete JSON", 0},
      {"   \n ", "incomplete JSON", 5},
      {"[1,2", "incomplete JSON", 4},
      {R"({"a":)", "incomplete JSON", 5},
      {R"("abc)", "incomplete JSON", 4},
      {"tru", "incomplete JSON", 3},
      {"-", "incomplete JSON", 1},
      {"[1,]", "syntax error", 3},
      {R"({"a" 1})", "syntax error", 5},
      {R"({"a":1,})", "syntax error", 7},
      {R"({a:1})", "syntax error", 1},
      {R"("\x")", "syntax error", 2},
      {"\"a\x01\"", "syntax error", 2},      // a control character in a string
      {"\"\xff\"", "syntax error", 1},       // invalid UTF-8
      {"\"\xc3\"", "syntax error", 1},       // a truncated UTF-8 sequence
      {"NaN", "syntax error", 0},
      {"'a'", "syntax error", 0},
      {R"({"a":1} x)", "extra data", 8},     // trailing garbage: its first byte
      {R"({"a":1}{})", "extra data", 7},
      {"1 2", "extra data", 2},
      {"01", "extra data", 1},
      {"[1]\n\n]", "extra data", 5},
  };
  JsonDecoder decoder;
  for (const Case& c : cases) {
    INFO("input: " << json::serialize(json::string(c.input)));
    Decoded d = decode_exact(decoder, c.input);
    CHECK(d.value == nullptr);
    CHECK_THAT(d.error.message, Catch::Contains(c.message));
    CHECK(d.error.offset == c.offset);
  }
  // A null `error` is allowed.
  CHECK(decoder.decode("[", nullptr) == nullptr);
  // And the decoder still works after errors.
  CHECK(decoder.decode("[1]", nullptr)->as_array().size() == 1);
}

TEST_CASE("json_schema: the decoder refuses documents nested deeper than its limit", "[json_schema][decoder]") {
  JsonDecoder decoder;
  CHECK(decoder.max_depth() == kDefaultMaxDepth);
  DecodeError error;
  CHECK(decoder.decode(nested_arrays(kDefaultMaxDepth), &error) != nullptr);
  CHECK(decoder.decode(nested_arrays(kDefaultMaxDepth + 1), &error) == nullptr);
  CHECK_THAT(error.message, Catch::Contains("too deep") && Catch::Contains("64"));
  CHECK(error.offset == kDefaultMaxDepth);  // the '[' one level too deep
  // Deep enough to overflow a recursive parser: refused early, no crash.
  const std::string deep = std::string(1'000'000, '[');
  CHECK(decoder.decode(deep, &error) == nullptr);
  CHECK(error.offset == kDefaultMaxDepth);

  JsonDecoder shallow(3);
  CHECK(shallow.decode(R"({"a":[{"b":1}]})", &error) != nullptr);
  CHECK(shallow.decode(R"({"a":[{"b":[1]}]})", &error) == nullptr);
  CHECK(error.offset == 11);
}

TEST_CASE("json_schema: the decoder reuses its memory across documents of any size", "[json_schema][decoder]") {
  JsonDecoder decoder;
  DecodeError error;
  // Grows past the arena's initial size and its cap, then back to small documents.
  for (std::size_t n : {1u, 100u, 10'000u, 300'000u, 5u, 50'000u, 1u}) {
    std::string text = "[";
    for (std::size_t i = 0; i < n; ++i) text += fmt::format("{}{{\"i\":{},\"s\":\"{}\"}}", i ? "," : "", i, i * 7);
    text += "]";
    const json::value* v = decoder.decode(text, &error);
    REQUIRE(v != nullptr);
    REQUIRE(v->as_array().size() == n);
    CHECK(v->as_array()[n - 1].as_object().at("i").as_int64() == static_cast<std::int64_t>(n - 1));
    CHECK(v->as_array()[n - 1].as_object().at("s").as_string() == std::to_string((n - 1) * 7));
  }
  // A moved decoder keeps working.
  JsonDecoder moved = std::move(decoder);
  CHECK(moved.decode(R"({"x":1})", &error)->as_object().at("x").as_int64() == 1);
}

TEST_CASE("json_schema: the decoder never crashes on random and mutated bytes", "[json_schema][decoder][fuzz]") {
  const std::vector<std::string> seeds = {
      R"({"device":"plant-a-7","ts":1700000000123,"temp":23.5,"hum":45,"status":"ok","seq":1})",
      R"([1,-2.5e-3,true,false,null,"x\n\u00e9",{"a":[[]]},{}])",
      R"({"nested":{"a":{"b":{"c":[1,2,{"d":"\ud83d\ude00"}]}}}})",
      R"("just a string with \"escapes\" and \\ and \/")",
  };
  auto schema = schema_of(kContract);
  SchemaValidator validator(schema);
  JsonDecoder decoder;
  std::mt19937 rng(20240611);
  auto pick = [&](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
  const std::string alphabet = "{}[]\":,.-+eE0123456789 \t\n\\/tfnul\"abc\xc3\xa9\xff\x00";

  std::size_t decoded = 0;
  std::size_t refused = 0;
  for (int i = 0; i < 20'000; ++i) {
    std::string input;
    if (i % 4 == 0) {
      // Random bytes.
      input.resize(pick(64));
      for (char& c : input) c = static_cast<char>(pick(256));
    } else {
      // A valid document with a few mutations: flip, insert, delete, truncate.
      input = seeds[pick(seeds.size())];
      const std::size_t mutations = 1 + pick(4);
      for (std::size_t m = 0; m < mutations && !input.empty(); ++m) {
        const std::size_t at = pick(input.size());
        switch (pick(4)) {
          case 0: input[at] = alphabet[pick(alphabet.size())]; break;
          case 1: input.insert(input.begin() + static_cast<std::ptrdiff_t>(at), alphabet[pick(alphabet.size())]); break;
          case 2: input.erase(at, 1); break;
          default: input.resize(at); break;
        }
      }
    }
    const Decoded d = decode_exact(decoder, input);
    if (d.value == nullptr) {
      ++refused;
      REQUIRE(d.error.offset <= input.size());
      REQUIRE(!d.error.message.empty());
      continue;
    }
    ++decoded;
    // What decodes serializes and decodes back to the same value, and validates without
    // throwing (whatever the verdict).
    // A copy of its own: a plain copy would share the decoder's arena (Boost.JSON copies keep
    // the source's storage), which the next decode() recycles.
    const json::value copy(*d.value, json::storage_ptr());
    const std::string again = json::serialize(copy);
    DecodeError error;
    const json::value* round = decoder.decode(again, &error);
    REQUIRE(round != nullptr);
    // (Not compared for equality: Boost.JSON 1.81 does not read back every double it writes
    // bit for bit.)
    REQUIRE(round->kind() == copy.kind());
    std::vector<Violation> violations;
    const bool valid = validator.validate(*round, &violations);
    REQUIRE(valid == violations.empty());
  }
  CHECK(decoded > 1000);
  CHECK(refused > 1000);
}

// ---------------------------------------------------------------------------------------------
// Loading schemas

TEST_CASE("json_schema: a schema file that cannot be read is named with the reason", "[json_schema][load]") {
  tank::test::TempDir dir;
  std::string e = load_error(dir / "missing.json");
  CHECK_THAT(e, Catch::Contains((dir / "missing.json").string()) && Catch::Contains("No such file or directory"));
  e = load_error(dir.path());
  CHECK_THAT(e, Catch::Contains(dir.path().string()) && Catch::Contains("Is a directory"));
}

TEST_CASE("json_schema: a schema that is not JSON is reported at line and column", "[json_schema][load]") {
  tank::test::TempDir dir;
  tank::test::write_file(dir / "bad.json", "{\n  \"type\": \"object\",\n  \"required\": [\"a\",]\n}\n");
  const std::string e = load_error(dir / "bad.json");
  CHECK_THAT(e, Catch::Contains((dir / "bad.json").string() + ":3:20: not JSON: syntax error"));
  CHECK_THAT(parse_error(""), Catch::Contains("t.json:1:1: not JSON: incomplete JSON"));
  CHECK_THAT(parse_error("{} []"), Catch::Contains("t.json:1:4: not JSON: extra data"));
}

TEST_CASE("json_schema: an invalid schema is reported with the place and the problem", "[json_schema][load]") {
  // Checked against the draft 7 meta-schema: the place of each wrong keyword.
  CHECK_THAT(parse_error(R"({"type": "strng"})"),
             Catch::Contains("not a valid JSON Schema (draft 7)") && Catch::Contains("/type:") &&
                 Catch::Contains("\"strng\""));
  CHECK_THAT(parse_error(R"({"properties": {"temp": {"maximum": "200"}}})"),
             Catch::Contains("/properties/temp/maximum: Value type not permitted"));
  CHECK_THAT(parse_error(R"({"minLength": -1})"), Catch::Contains("/minLength:"));
  CHECK_THAT(parse_error(R"({"required": "device"})"), Catch::Contains("/required:"));
  CHECK_THAT(parse_error(R"([1, 2])"), Catch::Contains("/:"));
  // Regular expressions are compiled at load.
  CHECK_THAT(parse_error(R"({"properties": {"device": {"pattern": "[a-z"}}})"),
             Catch::Contains("/properties/device/pattern") && Catch::Contains("not a valid regular expression"));
  CHECK_THAT(parse_error(R"({"patternProperties": {"(": {}}})"),
             Catch::Contains("/patternProperties") && Catch::Contains("not a valid regular expression"));
  // Under a keyword draft 7 does not know, an object is not a schema (unless a $ref makes it
  // one): an invalid pattern or a dangling $ref there may be documentation.
  CHECK(violations_of(schema_of(R"({"x-notes": {"pattern": "[", "$ref": "#/nowhere"}})"), "1").empty());
  // Every message says what to do.
  CHECK_THAT(parse_error(R"({"type": 5})"), Catch::Contains("; fix"));
}

TEST_CASE("json_schema: a $ref that cannot be resolved or that loops is refused at load", "[json_schema][load]") {
  CHECK_THAT(parse_error(R"({"properties": {"q": {"$ref": "#/definitions/missing"}}})"),
             Catch::Contains("$ref \"#/definitions/missing\" at /properties/q cannot be resolved"));
  CHECK_THAT(parse_error(R"({"definitions": {"a": {}}, "$ref": "#/definitions/b"})"),
             Catch::Contains("has no member \"b\""));
  CHECK_THAT(parse_error(R"({"$ref": "#foo"})"), Catch::Contains("plain-name fragment"));
  // Another document, without a resolver.
  CHECK_THAT(parse_error(R"({"$ref": "http://example.com/x.json"})"),
             Catch::Contains("\"http://example.com/x.json\" cannot be resolved"));
  // A resolver that does not know it.
  CHECK_THAT(parse_error(R"({"$ref": "http://example.com/x.json#/a"})",
                         [](const std::string&) -> std::optional<std::string> { return std::nullopt; }),
             Catch::Contains("\"http://example.com/x.json\" cannot be resolved: no such document"));
  // A fetched document that is not JSON names that document.
  CHECK_THAT(parse_error(R"({"$ref": "http://example.com/x.json"})",
                         [](const std::string&) -> std::optional<std::string> { return "{oops"; }),
             Catch::Contains("http://example.com/x.json:1:2: not JSON"));
  // Loops that valijson would follow until the stack overflows.
  CHECK_THAT(parse_error(R"({"$ref": "#"})"), Catch::Contains("applies to itself"));
  CHECK_THAT(parse_error(R"({"definitions": {"a": {"$ref": "#/definitions/b"}, "b": {"$ref": "#/definitions/a"}},
                            "properties": {"x": {"$ref": "#/definitions/a"}}})"),
             Catch::Contains("/definitions/a -> /definitions/b -> /definitions/a"));
  CHECK_THAT(parse_error(R"({"definitions": {"a": {"anyOf": [{"type": "string"}, {"not": {"$ref": "#/definitions/a"}}]}}})"),
             Catch::Contains("applies to itself"));
  // A loop through two documents shows only once valijson has resolved the $refs.
  auto two_documents = [](const std::string& uri) -> std::optional<std::string> {
    if (uri == "http://x/a.json") return R"({"allOf": [{"$ref": "http://x/b.json"}]})";
    if (uri == "http://x/b.json") return R"({"anyOf": [{"type": "null"}, {"$ref": "http://x/a.json"}]})";
    return std::nullopt;
  };
  CHECK_THAT(parse_error(R"({"properties": {"p": {"$ref": "http://x/a.json"}}})", two_documents),
             Catch::Contains("loop through other documents"));
  CHECK_THAT(parse_error(R"({"$ref": "http://x/a.json"})", two_documents),
             Catch::Contains("loop through other documents"));
  // Recursion that descends into the document is fine.
  auto tree = schema_of(R"({"type": "object", "properties": {"v": {"type": "integer"},
                            "children": {"type": "array", "items": {"$ref": "#"}}}})");
  CHECK(violations_of(tree, R"({"v":1,"children":[{"v":2,"children":[{"v":3}]}]})").empty());
  CHECK(has_violation(violations_of(tree, R"({"v":1,"children":[{"v":2,"children":[{"v":"x"}]}]})"),
                      "/children/0/children/0/v", "type"));
}

TEST_CASE("json_schema: refs to other documents resolve through the resolver or next to the file",
          "[json_schema][load]") {
  std::vector<std::string> asked;
  auto schema = JsonSchema::parse(R"({"properties": {"id": {"$ref": "http://schemas.example/types.json#/definitions/id"}}})",
                                  "inline", [&](const std::string& uri) -> std::optional<std::string> {
                                    asked.push_back(uri);
                                    return R"({"definitions": {"id": {"type": "string", "pattern": "^[0-9a-f]{8}$"}}})";
                                  });
  CHECK(asked == std::vector<std::string>{"http://schemas.example/types.json"});
  CHECK(schema->origin() == "inline");
  CHECK(violations_of(schema, R"({"id":"0123abcd"})").empty());
  CHECK(has_violation(violations_of(schema, R"({"id":"xyz"})"), "/id", "pattern"));

  // The draft 7 meta-schema is known without a resolver.
  auto meta = schema_of(R"({"properties": {"contract": {"$ref": "http://json-schema.org/draft-07/schema#"}}})");
  CHECK(violations_of(meta, R"({"contract": {"type": "object"}})").empty());
  CHECK(!violations_of(meta, R"({"contract": {"type": 5}})").empty());

  tank::test::TempDir dir;
  tank::test::write_file(dir / "types.json", R"({"definitions": {"celsius": {"type": "number", "maximum": 200}}})");
  tank::test::write_file(dir / "main.json", R"({"properties": {"temp": {"$ref": "types.json#/definitions/celsius"}}})");
  auto loaded = JsonSchema::load(dir / "main.json");
  CHECK(loaded->origin() == (dir / "main.json").string());
  CHECK(violations_of(loaded, R"({"temp": 20})").empty());
  CHECK(has_violation(violations_of(loaded, R"({"temp": 500})"), "/temp", "less than or equal to 200"));

  // A $ref at the root (valijson resolves those by another path, which tank avoids).
  tank::test::write_file(dir / "alias.json", R"({"$ref": "types.json#/definitions/celsius", "definitions": {}})");
  auto alias = JsonSchema::load(dir / "alias.json");
  CHECK(violations_of(alias, "20").empty());
  CHECK(has_violation(violations_of(alias, "500"), "", "less than or equal to 200"));
  auto local_alias = schema_of(R"({"$ref": "#/definitions/a", "definitions": {"a": {"type": "string"}}})");
  CHECK(violations_of(local_alias, R"("x")").empty());
  CHECK(!violations_of(local_alias, "1").empty());

  tank::test::write_file(dir / "remote.json", R"({"$ref": "https://example.com/x.json"})");
  CHECK_THAT(load_error(dir / "remote.json"), Catch::Contains("does not fetch"));
  tank::test::write_file(dir / "dangling.json", R"({"$ref": "nothere.json"})");
  CHECK_THAT(load_error(dir / "dangling.json"),
             Catch::Contains((dir / "nothere.json").string()) && Catch::Contains("No such file or directory"));
}

// ---------------------------------------------------------------------------------------------
// Validating

TEST_CASE("json_schema: violations are reported as JSON pointers to the failing values", "[json_schema][validate]") {
  auto schema = schema_of(kContract);
  CHECK(violations_of(schema, R"({"device":"gw-1","temp":21.5,"status":"ok","readings":[{"v":1}],"meta":{"a/b":3}})")
            .empty());

  const auto v = violations_of(
      schema,
      R"({"temp":500,"status":"meh","readings":[{"v":1},{"v":-1.5}],"meta":{"a/b":1.5,"m~n":"xyz","zz":1},"x":[]})");
  CHECK(has_violation(v, "", "Missing required property 'device'"));
  CHECK(has_violation(v, "/temp", "less than or equal to 200 (found 500)"));
  CHECK(has_violation(v, "/status", "enum values (found \"meh\")"));
  CHECK(has_violation(v, "/readings/1/v", "greater than or equal to 0 (found -1.5)"));
  CHECK(has_violation(v, "/meta/a~1b", "type"));            // "/" in a key is ~1
  CHECK(has_violation(v, "/meta/m~0n", "no more than 2"));  // "~" is ~0
  CHECK(has_violation(v, "/meta", "'zz'"));
  CHECK(has_violation(v, "", "'x'"));
  // The leaves only: no "failed to validate against schema associated with ..." above them.
  for (const Violation& violation : v) {
    CHECK_THAT(violation.message, !Catch::Contains("associated with property name"));
    CHECK_THAT(violation.message, !Catch::Contains("Failed to validate item"));
  }
  // Every pointer is in the document.
  JsonDecoder decoder;
  const json::value* doc = decoder.decode(
      R"({"temp":500,"status":"meh","readings":[{"v":1},{"v":-1.5}],"meta":{"a/b":1.5,"m~n":"xyz","zz":1},"x":[]})",
      nullptr);
  for (const Violation& violation : v) {
    json::error_code ec;
    CHECK(doc->find_pointer(violation.pointer, ec) != nullptr);
  }
  // The root itself.
  CHECK(has_violation(violations_of(schema, "[1]"), "", "'type' constraint (found an array)"));
}

TEST_CASE("json_schema: violation summaries are kept where they are the only explanation", "[json_schema][validate]") {
  // A `false` subschema reports nothing but its summary: it is kept, at the member.
  CHECK(has_violation(violations_of(schema_of(R"({"properties": {"x": false}})"), R"({"x": 1})"), "/x", "(found 1)"));
  CHECK(has_violation(violations_of(schema_of(R"({"items": [true, false]})"), R"([1, 2])"), "/1", "(found 2)"));
  // anyOf: the alternatives' failures, then the anyOf itself.
  const auto v = violations_of(schema_of(R"({"properties": {"alt": {"anyOf": [{"type": "string"}, {"minimum": 3}]}}})"),
                               R"({"alt": 1})");
  CHECK(has_violation(v, "/alt", "Value type not permitted"));
  CHECK(has_violation(v, "/alt", "greater than or equal to 3"));
  CHECK(has_violation(v, "/alt", "anyOf"));
}

TEST_CASE("json_schema: validate honours max_violations and a null violations vector", "[json_schema][validate]") {
  auto schema = schema_of(R"({"type": "array", "items": {"type": "integer"}})");
  JsonDecoder decoder;
  SchemaValidator validator(schema);
  const json::value* doc = decoder.decode(R"(["a","b","c","d","e","f"])", nullptr);
  std::vector<Violation> v;
  CHECK(!validator.validate(*doc, &v, 4));
  CHECK(v.size() == 4);
  CHECK(v[0].pointer == "/0");
  v.clear();
  CHECK(!validator.validate(*doc, &v, 0));
  CHECK(v.empty());
  CHECK(!validator.validate(*doc, nullptr));
  // A valid document leaves the vector as it was.
  v = {Violation{"/kept", "kept"}};
  CHECK(validator.validate(*decoder.decode("[1,2]", nullptr), &v));
  CHECK(v.size() == 1);
  CHECK(&validator.schema() == schema.get());
}

TEST_CASE("json_schema: describe gives one bounded line", "[json_schema][validate]") {
  CHECK(describe({}).empty());
  CHECK(describe({{"/temp", "Expected number less than or equal to 200 (found 500)"}, {"", "Missing required property 'device'"}}) ==
        "/temp: Expected number less than or equal to 200 (found 500); /: Missing required property 'device'");
  std::vector<Violation> many;
  for (int i = 0; i < 100; ++i) many.push_back({fmt::format("/items/{}", i), "Value type not permitted by 'type' constraint"});
  const std::string line = describe(many);
  CHECK(line.size() <= 1024);
  CHECK_THAT(line, Catch::StartsWith("/items/0: Value type") && Catch::EndsWith("more"));
  CHECK(line.find('\n') == std::string::npos);
  const std::string one_long = describe({{"/" + std::string(5000, 'k'), "too long"}});
  CHECK(one_long.size() <= 1024);
  CHECK_THAT(one_long, Catch::EndsWith("..."));
}

TEST_CASE("json_schema: numbers follow JSON Schema beyond int64 and for integral doubles", "[json_schema][validate]") {
  auto schema = schema_of(R"({"properties": {"n": {"type": "integer", "minimum": 0, "maximum": 1e19},
                                              "m": {"type": "number", "maximum": 10}}})");
  CHECK(violations_of(schema, R"({"n": 18446744073709551615})").size() == 1);  // above 1e19
  CHECK(violations_of(schema, R"({"n": 9223372036854775808})").empty());      // uint64, an integer
  CHECK(violations_of(schema, R"({"n": 1.0})").empty());                      // 1.0 is an integer
  CHECK(has_violation(violations_of(schema, R"({"n": 1.5})"), "/n", "type"));
  CHECK(has_violation(violations_of(schema, R"({"m": 18446744073709551615})"), "/m", "less than or equal to 10"));
}

TEST_CASE("json_schema: patterns and formats are safe on long strings", "[json_schema][validate]") {
  // std::regex (what valijson uses) overflows the stack on strings of some 20,000 bytes.
  auto schema = schema_of(R"({"properties": {"s": {"type": "string", "pattern": "^[a-z]*$"},
                                              "r": {"pattern": "^(?:a|b)*$"}, "c": {"pattern": "^(a|b)*$"},
                                              "d": {"format": "date"}, "t": {"format": "date-time"}}})");
  const std::string long_a(200'000, 'a');
  CHECK(violations_of(schema, fmt::format(R"({{"s":"{}","r":"{}"}})", long_a, long_a)).empty());
  CHECK(has_violation(violations_of(schema, fmt::format(R"({{"s":"{}B"}})", long_a)), "/s", "pattern"));
  // A repeated capture group keeps a backtracking state per repetition: Boost bounds that memory
  // and gives up on a long string, reported as a violation (not a crash, as with std::regex).
  CHECK(violations_of(schema, fmt::format(R"({{"c":"{}"}})", std::string(10'000, 'a'))).empty());
  CHECK(has_violation(violations_of(schema, fmt::format(R"({{"c":"{}"}})", long_a)), "/c", "too complex"));
  CHECK(has_violation(violations_of(schema, fmt::format(R"({{"d":"{}"}})", std::string(100'000, '1'))), "/d", "date"));
  CHECK(has_violation(violations_of(schema, fmt::format(R"({{"t":"{}"}})", std::string(100'000, '1'))), "/t", "date-time"));
  CHECK(violations_of(schema, R"({"d":"2024-02-29","t":"2024-02-29T23:59:60.5+01:00"})").empty());
  CHECK(has_violation(violations_of(schema, R"({"d":"2023-02-29"})"), "/d", "date"));
  // A catastrophic pattern: Boost.Regex gives up instead of running for ever.
  auto catastrophic = schema_of(R"({"pattern": "^(a+)+$"})");
  const auto start = std::chrono::steady_clock::now();
  const auto v = violations_of(catastrophic, fmt::format(R"("{}b")", std::string(5'000, 'a')));
  CHECK(v.size() == 1);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));
  // ECMA 262, as JSON Schema says: '$' is the end of the string, '.' is not a newline.
  auto anchored = schema_of(R"({"properties": {"a": {"pattern": "^abc$"}, "b": {"pattern": "^a.c$"}}})");
  CHECK(has_violation(violations_of(anchored, R"({"a": "abc\n"})"), "/a", "pattern"));
  CHECK(has_violation(violations_of(anchored, R"({"a": "x\nabc"})"), "/a", "pattern"));
  CHECK(has_violation(violations_of(anchored, R"({"b": "a\nc"})"), "/b", "pattern"));
  CHECK(violations_of(anchored, R"({"a": "abc", "b": "a-c"})").empty());
  // Patterns on property names (propertyNames) use the same engine.
  auto names = schema_of(R"({"propertyNames": {"pattern": "^[a-z]+$"}})");
  CHECK(violations_of(names, R"({"abc": 1})").empty());
  CHECK(!violations_of(names, R"({"aBc": 1})").empty());
}

TEST_CASE("json_schema: patternProperties is not applied to overlong property names", "[json_schema][validate]") {
  auto schema = schema_of(R"({"patternProperties": {"^x-": {"type": "string"}}})");
  CHECK(violations_of(schema, R"({"x-a": "s", "y": 1})").empty());
  CHECK(has_violation(violations_of(schema, R"({"x-a": 1})"), "/x-a", "type"));
  const std::string long_name(kMaxPatternPropertyNameBytes + 1, 'k');
  CHECK(has_violation(violations_of(schema, fmt::format(R"({{"inner":{{"{}":1}}}})", long_name)), "/inner",
                      "longer than"));
}

TEST_CASE("json_schema: a huge invalid document gets one summary violation", "[json_schema][validate]") {
  auto schema = schema_of(R"({"items": {"type": "string"}})");
  std::string text = "[";
  for (int i = 0; i < 20'000; ++i) text += i ? ",1" : "1";
  text += "]";
  const auto v = violations_of(schema, text);
  REQUIRE(v.size() == 1);
  CHECK(v[0].pointer.empty());
  CHECK_THAT(v[0].message, Catch::Contains("more than 10000 values"));
}

TEST_CASE("json_schema: one validator checks many documents in turn", "[json_schema][validate]") {
  auto schema = schema_of(kContract);
  SchemaValidator validator(schema);
  JsonDecoder decoder;
  std::vector<Violation> violations;
  std::size_t valid = 0;
  for (int i = 0; i < 10'000; ++i) {
    const std::string text = i % 3 == 0 ? fmt::format(R"({{"device":"d-{}","temp":{}}})", i, 300 + i)
                                        : fmt::format(R"({{"device":"d-{}","temp":{}}})", i, i % 200);
    const json::value* doc = decoder.decode(text, nullptr);
    REQUIRE(doc != nullptr);
    violations.clear();
    const bool ok = validator.validate(*doc, &violations);
    REQUIRE(ok == (i % 3 != 0));
    if (ok) {
      ++valid;
    } else {
      REQUIRE(violations.size() == 1);
      REQUIRE(violations[0].pointer == "/temp");
      REQUIRE_THAT(violations[0].message, Catch::Contains(fmt::format("(found {})", 300 + i)));
    }
  }
  CHECK(valid == 6666);
  // Moved validators keep working (the validate processor keeps them in std::optional).
  std::optional<SchemaValidator> slot;
  slot.emplace(std::move(validator));
  CHECK(slot->validate(*decoder.decode(R"({"device":"a","temp":1})", nullptr), nullptr));
}

TEST_CASE("json_schema: threads share one schema with a validator each", "[json_schema][validate][threads]") {
  auto schema = schema_of(kContract);
  constexpr int kThreads = 4;
  constexpr int kDocuments = 5'000;
  std::atomic<int> wrong{0};
  std::atomic<int> invalid{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      SchemaValidator validator(schema);
      JsonDecoder decoder;
      std::vector<Violation> violations;
      for (int i = 0; i < kDocuments; ++i) {
        const bool bad = (i + t) % 4 == 0;
        const std::string text = bad ? fmt::format(R"({{"device":"T{}","temp":{}}})", t, i)
                                     : fmt::format(R"({{"device":"t{}-{}","temp":{}}})", t, i, i % 100);
        const json::value* doc = decoder.decode(text, nullptr);
        violations.clear();
        const bool ok = doc != nullptr && validator.validate(*doc, &violations);
        if (ok == bad) ++wrong;
        if (!ok) {
          ++invalid;
          if (violations.empty() || violations[0].pointer != "/device") ++wrong;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK(wrong == 0);
  CHECK(invalid == kThreads * kDocuments / 4);
}
