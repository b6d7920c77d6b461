#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <string>

#include <boost/json.hpp>

#include "process/event_time.hpp"

using namespace tank::process;
namespace json = boost::json;

namespace {

constexpr std::int64_t kS = 1'000'000'000;
constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t k20261121 = 1795255200 * kS;  // 2026-11-21T10:00:00Z

std::optional<std::int64_t> time_of(const json::value& v, TimeFormat f = TimeFormat::automatic) {
  return event_time_ns(v, f, nullptr);
}

std::optional<std::int64_t> rfc(std::string_view s) { return time_of(json::value(json::string_view(s.data(), s.size()))); }

// The error for `v`, which must be refused.
std::string refusal(const json::value& v, TimeFormat f = TimeFormat::automatic) {
  std::string error;
  auto t = event_time_ns(v, f, &error, "ts");
  CHECK_FALSE(t);
  CHECK_FALSE(error.empty());
  return error;
}

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("event_time: formats are named as in the configuration", "[event_time]") {
  CHECK(parse_time_format("auto") == TimeFormat::automatic);
  CHECK(parse_time_format("unix") == TimeFormat::unix_s);
  CHECK(parse_time_format("unix_ms") == TimeFormat::unix_ms);
  CHECK(parse_time_format("unix_us") == TimeFormat::unix_us);
  CHECK(parse_time_format("unix_ns") == TimeFormat::unix_ns);
  CHECK(parse_time_format("rfc3339") == TimeFormat::rfc3339);
  CHECK_FALSE(parse_time_format(""));
  CHECK_FALSE(parse_time_format("Auto"));
  CHECK_FALSE(parse_time_format("unix_s"));
  CHECK_FALSE(parse_time_format("iso8601"));
  for (auto f : {TimeFormat::automatic, TimeFormat::unix_s, TimeFormat::unix_ms, TimeFormat::unix_us,
                 TimeFormat::unix_ns, TimeFormat::rfc3339}) {
    CHECK(parse_time_format(to_string(f)) == f);
  }
}

TEST_CASE("event_time: unix numbers in each unit", "[event_time]") {
  const std::int64_t s = 1795255200;
  CHECK(time_of(json::value(s), TimeFormat::unix_s) == k20261121);
  CHECK(time_of(json::value(s * 1000), TimeFormat::unix_ms) == k20261121);
  CHECK(time_of(json::value(s * 1000000), TimeFormat::unix_us) == k20261121);
  CHECK(time_of(json::value(s * kS), TimeFormat::unix_ns) == k20261121);
  // uint64 and doubles, with their fractional part kept to the nanosecond.
  CHECK(time_of(json::value(static_cast<std::uint64_t>(s)), TimeFormat::unix_s) == k20261121);
  CHECK(time_of(json::value(1795255200.25), TimeFormat::unix_s) == k20261121 + 250'000'000);
  CHECK(time_of(json::value(1795255200123.5), TimeFormat::unix_ms) == k20261121 + 123'500'000);
  CHECK(time_of(json::value(1.5), TimeFormat::unix_us) == 1500);
  CHECK(time_of(json::value(2.4), TimeFormat::unix_ns) == 2);
  CHECK(time_of(json::value(0.000000001), TimeFormat::unix_s) == 1);
  // Before the epoch.
  CHECK(time_of(json::value(-1), TimeFormat::unix_s) == -kS);
  CHECK(time_of(json::value(-1.5), TimeFormat::unix_s) == -1'500'000'000);
  CHECK(time_of(json::value(0), TimeFormat::unix_ms) == 0);
  // Numbers parsed from text take the same paths.
  CHECK(time_of(json::parse("1795255200.5"), TimeFormat::unix_s) == k20261121 + kS / 2);
  CHECK(time_of(json::parse("18446744073709551615"), TimeFormat::unix_ns) == std::nullopt);
}

TEST_CASE("event_time: automatic reads the unit from the magnitude", "[event_time]") {
  // The same instant in four units.
  CHECK(time_of(json::value(1795255200)) == k20261121);
  CHECK(time_of(json::value(1795255200000)) == k20261121);
  CHECK(time_of(json::value(1795255200000000)) == k20261121);
  CHECK(time_of(json::value(1795255200000000000)) == k20261121);
  CHECK(time_of(json::value(1795255200.5)) == k20261121 + kS / 2);
  CHECK(time_of(json::value(1795255200500.0)) == k20261121 + kS / 2);
  // The bounds: 1e11, 1e14, 1e17 start the next smaller unit (1e8 s = 1973-03-03T09:46:40Z).
  CHECK(time_of(json::value(100'000'000'000)) == 100'000'000 * kS);
  CHECK(time_of(json::value(99'999'999'999)) == std::nullopt);              // seconds: past 2262
  CHECK(time_of(json::value(99'999'999'999'999)) == std::nullopt);          // milliseconds: past 2262
  CHECK(time_of(json::value(99'999'999'999'999'999)) == std::nullopt);      // microseconds: past 2262
  CHECK(time_of(json::value(100'000'000'000'000)) == 100'000'000 * kS);
  CHECK(time_of(json::value(100'000'000'000'000'000)) == 100'000'000 * kS);
  CHECK(time_of(json::value(9'000'000'000)) == 9'000'000'000 * kS);        // seconds up to 2262
  CHECK(time_of(json::value(1e11)) == 100'000'000 * kS);
  CHECK(time_of(json::value(-1e11)) == -100'000'000 * kS);
  CHECK(time_of(json::value(-5)) == -5 * kS);
  CHECK(time_of(json::value(0)) == 0);
  // Strings are RFC 3339, never numbers.
  CHECK(rfc("2026-11-21T10:00:00Z") == k20261121);
  CHECK(time_of(json::value("1795255200")) == std::nullopt);
}

TEST_CASE("event_time: RFC 3339 fractions and offsets", "[event_time]") {
  CHECK(rfc("2026-11-21T10:00:00Z") == k20261121);
  CHECK(rfc("2026-11-21t10:00:00z") == k20261121);
  CHECK(rfc("2026-11-21 10:00:00Z") == k20261121);
  CHECK(rfc("2026-11-21T10:00:00+00:00") == k20261121);
  CHECK(rfc("2026-11-21T10:00:00-00:00") == k20261121);
  CHECK(rfc("2026-11-21T11:00:00+01:00") == k20261121);
  CHECK(rfc("2026-11-21T15:30:00+05:30") == k20261121);
  CHECK(rfc("2026-11-21T02:00:00-08:00") == k20261121);
  CHECK(rfc("2026-11-20T10:01:00-23:59") == k20261121);
  CHECK(rfc("2026-11-22T09:59:00+23:59") == k20261121);
  CHECK(rfc("2026-11-21T10:00:00.5Z") == k20261121 + 500'000'000);
  CHECK(rfc("2026-11-21T10:00:00.123Z") == k20261121 + 123'000'000);
  CHECK(rfc("2026-11-21T10:00:00.123456Z") == k20261121 + 123'456'000);
  CHECK(rfc("2026-11-21T10:00:00.123456789Z") == k20261121 + 123'456'789);
  CHECK(rfc("2026-11-21T10:00:00.000000001Z") == k20261121 + 1);
  CHECK(rfc("2026-11-21T10:00:00.1234567899999Z") == k20261121 + 123'456'789);  // truncated past ns
  CHECK(rfc("2026-11-21T11:00:00.25+01:00") == k20261121 + 250'000'000);
  // A leap second is the first second of the next minute.
  CHECK(rfc("2016-12-31T23:59:60Z") == rfc("2017-01-01T00:00:00Z"));
  CHECK(rfc("1970-01-01T00:00:00Z") == 0);
  CHECK(rfc("1969-12-31T23:59:59Z") == -kS);
  CHECK(rfc("1969-12-31T23:59:59.999999999Z") == -1);
  CHECK(time_of(json::value("2026-11-21T10:00:00Z"), TimeFormat::rfc3339) == k20261121);
}

TEST_CASE("event_time: leap years and month lengths", "[event_time]") {
  CHECK(rfc("2024-02-29T12:34:56Z") == 1709210096 * kS);
  CHECK(rfc("2000-02-29T00:00:00Z") == 951868800 * kS - 86400 * kS);
  CHECK(rfc("2000-03-01T00:00:00Z") == 951868800 * kS);
  CHECK(rfc("1900-03-01T00:00:00Z") == -2203891200 * kS);
  CHECK(rfc("1900-02-28T00:00:00Z") == -2203891200 * kS - 86400 * kS);
  CHECK(rfc("2023-02-28T23:59:59Z") == rfc("2023-03-01T00:00:00Z").value() - kS);
  CHECK(rfc("2026-12-31T23:59:59Z") == rfc("2027-01-01T00:00:00Z").value() - kS);
  CHECK(rfc("2026-04-30T00:00:00Z"));
  CHECK(rfc("2026-01-31T00:00:00Z"));

  CHECK(contains(refusal(json::value("2023-02-29T00:00:00Z")), "day 29 does not exist in February 2023"));
  CHECK(contains(refusal(json::value("1900-02-29T00:00:00Z")), "day 29 does not exist in February 1900"));
  CHECK(contains(refusal(json::value("2100-02-29T00:00:00Z")), "February 2100"));
  CHECK(contains(refusal(json::value("2024-02-30T00:00:00Z")), "February 2024"));
  CHECK(contains(refusal(json::value("2026-04-31T00:00:00Z")), "day 31 does not exist in April 2026"));
  CHECK(contains(refusal(json::value("2026-11-00T00:00:00Z")), "day 00"));
  CHECK(contains(refusal(json::value("2026-13-01T00:00:00Z")), "month 13 does not exist"));
  CHECK(contains(refusal(json::value("2026-00-01T00:00:00Z")), "month 00 does not exist"));
}

TEST_CASE("event_time: the int64 nanosecond range is the limit", "[event_time]") {
  CHECK(rfc("2262-04-11T23:47:16.854775807Z") == kMax);
  CHECK(rfc("1677-09-21T00:12:43.145224192Z") == kMin);
  CHECK(contains(refusal(json::value("2262-04-11T23:47:16.854775808Z")), "outside the representable time range"));
  CHECK(contains(refusal(json::value("1677-09-21T00:12:43.145224191Z")), "outside the representable time range"));
  CHECK(contains(refusal(json::value("9999-12-31T23:59:59Z")), "outside"));
  CHECK(contains(refusal(json::value("0000-01-01T00:00:00Z")), "outside"));
  // An offset can bring a time back into the range.
  CHECK(rfc("2262-04-12T00:47:16.854775807+01:00") == kMax);

  CHECK(time_of(json::value(kMax), TimeFormat::unix_ns) == kMax);
  CHECK(time_of(json::value(kMin), TimeFormat::unix_ns) == kMin);
  CHECK(time_of(json::value(kMax)) == kMax);
  CHECK(time_of(json::value(kMin)) == kMin);
  CHECK(time_of(json::value(static_cast<std::uint64_t>(kMax) + 1), TimeFormat::unix_ns) == std::nullopt);
  CHECK(time_of(json::value(9223372036), TimeFormat::unix_s) == 9223372036 * kS);
  CHECK(time_of(json::value(-9223372036), TimeFormat::unix_s) == -9223372036 * kS);
  CHECK(time_of(json::value(9223372037), TimeFormat::unix_s) == std::nullopt);
  CHECK(time_of(json::value(-9223372037), TimeFormat::unix_s) == std::nullopt);
  CHECK(time_of(json::value(9223372036854776), TimeFormat::unix_us) == std::nullopt);
  CHECK(time_of(json::value(9.3e18), TimeFormat::unix_ns) == std::nullopt);
  CHECK(time_of(json::value(-9.3e18), TimeFormat::unix_ns) == std::nullopt);
  CHECK(time_of(json::value(1e300), TimeFormat::unix_s) == std::nullopt);
  CHECK(refusal(json::value(1e300), TimeFormat::unix_s) ==
        "\"ts\" is 1e+300, outside the representable time range (1677-09-21 to 2262-04-11)");
  // Not finite.
  CHECK(contains(refusal(json::value(std::nan(""))), "outside"));
  CHECK(contains(refusal(json::value(std::numeric_limits<double>::infinity()), TimeFormat::unix_ms), "outside"));
  CHECK(contains(refusal(json::value(-std::numeric_limits<double>::infinity())), "outside"));
}

TEST_CASE("event_time: garbage is refused with a clear error", "[event_time]") {
  CHECK(refusal(json::value("abc")).rfind("\"ts\" is \"abc\", not an RFC 3339 time", 0) == 0);
  CHECK(refusal(json::value("abc"), TimeFormat::rfc3339).rfind("\"ts\" is \"abc\", not an RFC 3339 time", 0) == 0);
  for (const char* text : {"", "2026", "2026-11-21", "2026-11-21T10:00:00", "2026-11-21T10:00Z",
                           "2026-11-21T10:00:00.Z", "2026-11-21T10:00:00+0100", "2026-11-21T10:00:00+01",
                           "2026-11-21T10:00:00 Z", "2026-11-21T10:00:00Zjunk", "2026-11-21T10:00:00+01:00:00",
                           "-2026-11-21T10:00:00Z", "+2026-11-21T10:00:00Z", "-001-01-01T00:00:00Z",
                           "2026/11/21T10:00:00Z", "2026-11-21X10:00:00Z", "2026-1-21T10:00:00Z",
                           "26-11-21T10:00:00Z", "2026-11-21T10:00:00.1.2Z", "2026-11-21T1a:00:00Z",
                           " 2026-11-21T10:00:00Z", "2026-11-21T10:00:00Z ", "NaN", "Infinity", "null"}) {
    INFO(text);
    CHECK(contains(refusal(json::value(text)), "not an RFC 3339 time"));
  }
  CHECK(contains(refusal(json::value("2026-11-21T24:00:00Z")), "24:00:00 does not exist"));
  CHECK(contains(refusal(json::value("2026-11-21T10:60:00Z")), "10:60:00 does not exist"));
  CHECK(contains(refusal(json::value("2026-11-21T10:00:61Z")), "10:00:61 does not exist"));
  CHECK(contains(refusal(json::value("2026-11-21T10:00:00+24:00")), "offset +24:00 does not exist"));
  CHECK(contains(refusal(json::value("2026-11-21T10:00:00-01:60")), "offset -01:60 does not exist"));
  CHECK(contains(refusal(json::value("2026-11-21T10:00:00")), "missing the offset"));

  // Wrong JSON types, for each format.
  CHECK(refusal(json::value(true)) == "\"ts\" is true, not an RFC 3339 time or a Unix time number");
  CHECK(refusal(json::value(nullptr)) == "\"ts\" is null, not an RFC 3339 time or a Unix time number");
  CHECK(refusal(json::parse("{\"a\":1}")) == "\"ts\" is an object, not an RFC 3339 time or a Unix time number");
  CHECK(refusal(json::parse("[1]")) == "\"ts\" is an array, not an RFC 3339 time or a Unix time number");
  CHECK(refusal(json::value("1795255200"), TimeFormat::unix_s) ==
        "\"ts\" is \"1795255200\", not a number of seconds since the Unix epoch");
  CHECK(refusal(json::value(false), TimeFormat::unix_ms) ==
        "\"ts\" is false, not a number of milliseconds since the Unix epoch");
  CHECK(refusal(json::value(1795255200), TimeFormat::rfc3339) == "\"ts\" is 1795255200, not an RFC 3339 time");
  CHECK(refusal(json::value(1.5), TimeFormat::rfc3339) == "\"ts\" is 1.5, not an RFC 3339 time");

  // Long and odd strings are shown as a short JSON excerpt.
  const std::string long_text(500, 'x');
  const std::string error = refusal(json::value(long_text));
  CHECK(error.size() < 200);
  CHECK(contains(error, "\"xxxxxxxx"));
  CHECK(contains(error, "...\""));
  CHECK(contains(refusal(json::value("a\"b\n")), "\"a\\\"b\\n\""));
  // The default field name, and no error text wanted.
  std::string plain;
  CHECK_FALSE(event_time_ns(json::value("abc"), TimeFormat::automatic, &plain));
  CHECK(plain.rfind("\"time\" is \"abc\"", 0) == 0);
  CHECK_FALSE(event_time_ns(json::value("abc"), TimeFormat::automatic, nullptr));
}

TEST_CASE("event_time: the rfc3339 parser alone", "[event_time]") {
  std::string error;
  CHECK(parse_rfc3339_ns("2026-11-21T10:00:00Z", &error) == k20261121);
  CHECK_FALSE(parse_rfc3339_ns("2026-11-21T10:00:00", &error));
  CHECK(error == "missing the offset: Z or +HH:MM");
  CHECK_FALSE(parse_rfc3339_ns("2026-11-21", nullptr));
}

TEST_CASE("event_time: formatting writes the fewest exact fraction digits", "[event_time]") {
  CHECK(format_rfc3339_ns(0) == "1970-01-01T00:00:00Z");
  CHECK(format_rfc3339_ns(k20261121) == "2026-11-21T10:00:00Z");
  CHECK(format_rfc3339_ns(k20261121 + 500'000'000) == "2026-11-21T10:00:00.500Z");
  CHECK(format_rfc3339_ns(k20261121 + 123'000'000) == "2026-11-21T10:00:00.123Z");
  CHECK(format_rfc3339_ns(k20261121 + 1'000) == "2026-11-21T10:00:00.000001Z");
  CHECK(format_rfc3339_ns(k20261121 + 123'456'000) == "2026-11-21T10:00:00.123456Z");
  CHECK(format_rfc3339_ns(k20261121 + 1) == "2026-11-21T10:00:00.000000001Z");
  CHECK(format_rfc3339_ns(k20261121 + 999'999'999) == "2026-11-21T10:00:00.999999999Z");
  CHECK(format_rfc3339_ns(-1) == "1969-12-31T23:59:59.999999999Z");
  CHECK(format_rfc3339_ns(-kS) == "1969-12-31T23:59:59Z");
  CHECK(format_rfc3339_ns(-kS / 2) == "1969-12-31T23:59:59.500Z");
  CHECK(format_rfc3339_ns(1709210096 * kS) == "2024-02-29T12:34:56Z");
  CHECK(format_rfc3339_ns(-2203891200 * kS) == "1900-03-01T00:00:00Z");
  CHECK(format_rfc3339_ns(kMax) == "2262-04-11T23:47:16.854775807Z");
  CHECK(format_rfc3339_ns(kMin) == "1677-09-21T00:12:43.145224192Z");
  std::string out = "x";
  append_rfc3339_ns(out, 0);
  CHECK(out == "x1970-01-01T00:00:00Z");
}

TEST_CASE("event_time: formatting and parsing round-trip", "[event_time]") {
  std::mt19937_64 rng(20261121);
  std::uniform_int_distribution<std::int64_t> any(kMin, kMax);
  std::uniform_int_distribution<std::int64_t> near(-3'000'000'000 * kS, 3'000'000'000 * kS);
  for (int i = 0; i < 100000; ++i) {
    std::int64_t x = i % 2 == 0 ? any(rng) : near(rng);
    if (i % 3 == 0) x -= x % kS;            // whole seconds
    else if (i % 5 == 0) x -= x % 1'000'000;  // whole milliseconds
    const std::string text = format_rfc3339_ns(x);
    const auto back = parse_rfc3339_ns(text);
    if (!back || *back != x) {
      FAIL("round trip of " << x << " through " << text);
    }
  }
  CHECK(parse_rfc3339_ns(format_rfc3339_ns(kMin)) == kMin);
  CHECK(parse_rfc3339_ns(format_rfc3339_ns(kMax)) == kMax);
}

TEST_CASE("event_time: field paths find nested keys and pointers", "[event_time]") {
  const json::value doc = json::parse(R"({
    "ts": 1, "a": {"b": {"c": "deep"}, "x.y": 2}, "x.y": 3, "arr": [10, {"k": 11}],
    "we/ird": 4, "ti~lde": 5, "": 6, "n": null, "0": 7
  })");
  CHECK(*find_field(doc, "ts") == json::value(1));
  CHECK(*find_field(doc, "a.b.c") == json::value("deep"));
  CHECK(find_field(doc, "a.b.c.d") == nullptr);
  CHECK(find_field(doc, "a.x.y") == nullptr);  // dots always separate
  CHECK(find_field(doc, "x.y") == nullptr);
  CHECK(*find_field(doc, "/x.y") == json::value(3));
  CHECK(*find_field(doc, "/a/x.y") == json::value(2));
  CHECK(*find_field(doc, "/a/b/c") == json::value("deep"));
  CHECK(*find_field(doc, "/arr/0") == json::value(10));
  CHECK(*find_field(doc, "/arr/1/k") == json::value(11));
  CHECK(find_field(doc, "/arr/2") == nullptr);
  CHECK(find_field(doc, "/arr/01") == nullptr);
  CHECK(find_field(doc, "/arr/-") == nullptr);
  CHECK(find_field(doc, "arr.0") == nullptr);  // dotted paths do not index arrays
  CHECK(*find_field(doc, "/we~1ird") == json::value(4));
  CHECK(*find_field(doc, "/ti~0lde") == json::value(5));
  CHECK(find_field(doc, "/ti~2lde") == nullptr);
  CHECK(find_field(doc, "/ti~") == nullptr);
  CHECK(*find_field(doc, "/") == json::value(6));
  CHECK(*find_field(doc, "/0") == json::value(7));  // an index on an object is a key
  CHECK(find_field(doc, "n")->is_null());
  CHECK(find_field(doc, "missing") == nullptr);
  CHECK(find_field(doc, "ts.x") == nullptr);
  CHECK(find_field(doc, "") == nullptr);
  CHECK(find_field(doc, "a..b") == nullptr);
  CHECK(find_field(doc, ".a") == nullptr);
  CHECK(find_field(doc, "a.") == nullptr);
  CHECK(find_field(json::value(1), "a") == nullptr);

  // FieldPath agrees with find_field and reports malformed paths.
  for (const char* p : {"ts", "a.b.c", "/a/x.y", "/arr/1/k", "/we~1ird", "/ti~0lde", "/", "/0", "missing",
                        "/arr/-", "/arr/01", "a.x.y"}) {
    INFO(p);
    auto path = FieldPath::parse(p);
    REQUIRE(path);
    CHECK(path->text() == p);
    CHECK(path->find(doc) == find_field(doc, p));
  }
  std::string error;
  CHECK_FALSE(FieldPath::parse("a..b", &error));
  CHECK(contains(error, "empty part"));
  CHECK_FALSE(FieldPath::parse("", &error));
  CHECK_FALSE(FieldPath::parse("/a~2", &error));
  CHECK(contains(error, "'~' must be followed by 0 or 1"));
}
