#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "process/aggregator.hpp"

using namespace tank::process;
namespace json = boost::json;

namespace {

constexpr std::int64_t kS = 1'000'000'000;
constexpr std::int64_t kMs = 1'000'000;
constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t kT0 = 1795255200 * kS;  // 2026-11-21T10:00:00Z

AggregateSpec tumbling(std::int64_t window_s = 10, std::int64_t lateness_s = 0) {
  AggregateSpec s;
  s.window_ns = window_s * kS;
  s.hop_ns = window_s * kS;
  s.allowed_lateness_ns = lateness_s * kS;
  s.time_field = "ts";
  s.time_format = TimeFormat::automatic;
  s.group_by = {"device"};
  s.fields = {{"temp", {AggFunction::min, AggFunction::max, AggFunction::mean}}, {"hum", {AggFunction::mean}}};
  s.max_cells = 1000;
  return s;
}

// A record at kT0 + `seconds`.
json::value rec(double seconds, const char* device, json::value temp = nullptr, json::value hum = nullptr) {
  json::object o;
  o["ts"] = static_cast<double>(kT0 / kS) + seconds;
  if (device != nullptr) o["device"] = device;
  if (!temp.is_null()) o["temp"] = std::move(temp);
  if (!hum.is_null()) o["hum"] = std::move(hum);
  return o;
}

AddOutcome add(Aggregator& a, const json::value& v, std::string* detail = nullptr) { return a.add(v, detail); }
AddOutcome add_text(Aggregator& a, std::string_view text, std::string* detail = nullptr) {
  return a.add(json::parse(json::string_view(text.data(), text.size())), detail);
}

std::vector<std::string> ready(Aggregator& a) {
  std::vector<Emitted> out;
  a.close_ready(&out);
  std::vector<std::string> texts;
  for (auto& e : out) texts.push_back(e.json);
  return texts;
}

std::vector<std::string> all(Aggregator& a) {
  std::vector<Emitted> out;
  a.close_all(&out);
  std::vector<std::string> texts;
  for (auto& e : out) texts.push_back(e.json);
  return texts;
}

json::object obj(const std::string& text) { return json::parse(text).as_object(); }

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

using State = std::map<std::string, std::string>;

void apply_changes(Aggregator& a, State& state) {
  std::vector<std::pair<std::string, std::string>> puts;
  std::vector<std::string> deletes;
  a.take_changes(&puts, &deletes);
  std::set<std::string> put_keys;
  for (auto& [k, v] : puts) {
    CHECK(put_keys.insert(k).second);
    state[k] = v;
  }
  for (auto& k : deletes) {
    CHECK(put_keys.count(k) == 0);
    CHECK(state.erase(k) == 1);
  }
}

std::vector<std::pair<std::string, std::string>> entries(const State& state) { return {state.begin(), state.end()}; }

}  // namespace

TEST_CASE("aggregator: functions are named as in the configuration", "[aggregator]") {
  for (auto f : {AggFunction::count, AggFunction::sum, AggFunction::min, AggFunction::max, AggFunction::mean,
                 AggFunction::first, AggFunction::last, AggFunction::stddev}) {
    CHECK(parse_agg_function(to_string(f)) == f);
  }
  CHECK(parse_agg_function("avg") == std::nullopt);
  CHECK(parse_agg_function("Mean") == std::nullopt);
  CHECK(to_string(AddOutcome::cell_limit) == "cell_limit");
}

TEST_CASE("aggregator: a bad spec is refused", "[aggregator]") {
  auto refused = [](auto change, std::string_view why) {
    AggregateSpec s = tumbling();
    change(s);
    try {
      Aggregator a(s);
      FAIL("accepted");
    } catch (const std::invalid_argument& e) {
      CHECK(contains(e.what(), why));
    }
  };
  refused([](AggregateSpec& s) { s.window_ns = 0; }, "window");
  refused([](AggregateSpec& s) { s.hop_ns = 0; }, "hop");
  refused([](AggregateSpec& s) { s.hop_ns = s.window_ns + 1; }, "hop");
  refused([](AggregateSpec& s) { s.allowed_lateness_ns = -1; }, "allowed_lateness");
  refused([](AggregateSpec& s) { s.max_cells = 0; }, "max_cells");
  refused([](AggregateSpec& s) { s.time_field = "a..b"; }, "time_field");
  refused([](AggregateSpec& s) { s.group_by = {"device", "device"}; }, "twice");
  refused([](AggregateSpec& s) { s.group_by = {"/x~3"}; }, "group_by");
  refused([](AggregateSpec& s) { s.fields.push_back(s.fields[0]); }, "twice");
  refused([](AggregateSpec& s) { s.fields[0].second = {AggFunction::min, AggFunction::min}; }, "min twice");
  refused([](AggregateSpec& s) { s.fields[0].second.clear(); }, "no functions");
  refused([](AggregateSpec& s) { s.fields[0].first = ""; }, "field");
  AggregateSpec hopping = tumbling();
  hopping.hop_ns = 3 * kS;  // window need not be a multiple of hop
  CHECK_NOTHROW(Aggregator(hopping));
}

TEST_CASE("aggregator: one window of one group", "[aggregator]") {
  Aggregator a(tumbling());
  CHECK(a.watermark() == kMin);
  CHECK(ready(a).empty());
  CHECK(add_text(a, R"({"ts":"2026-11-21T10:00:01Z","device":"d1","temp":21.5,"hum":40})") == AddOutcome::absorbed);
  CHECK(add_text(a, R"({"ts":"2026-11-21T10:00:03Z","device":"d1","temp":22.5})") == AddOutcome::absorbed);
  CHECK(a.open_cells() == 1);
  CHECK(a.watermark() == kT0 + 3 * kS);
  CHECK(ready(a).empty());
  CHECK(add_text(a, R"({"ts":"2026-11-21T10:00:12Z","device":"d1","temp":20})") == AddOutcome::absorbed);
  std::vector<Emitted> out;
  a.close_ready(&out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].json ==
        R"({"window_start":"2026-11-21T10:00:00Z","window_end":"2026-11-21T10:00:10Z","count":2,"device":"d1",)"
        R"("temp_min":21.5,"temp_max":22.5,"temp_mean":22,"hum_mean":40})");
  CHECK(out[0].window_start_ns == kT0);
  CHECK(out[0].window_end_ns == kT0 + 10 * kS);
  CHECK(out[0].count == 2);
  CHECK(a.open_cells() == 1);
  CHECK(all(a) == std::vector<std::string>{
                      R"({"window_start":"2026-11-21T10:00:10Z","window_end":"2026-11-21T10:00:20Z","count":1,)"
                      R"("device":"d1","temp_min":20,"temp_max":20,"temp_mean":20,"hum_mean":null})"});
  CHECK(a.open_cells() == 0);
}

TEST_CASE("aggregator: every function over one window", "[aggregator]") {
  AggregateSpec s = tumbling();
  s.fields = {{"temp",
               {AggFunction::count, AggFunction::sum, AggFunction::min, AggFunction::max, AggFunction::mean,
                AggFunction::first, AggFunction::last, AggFunction::stddev}}};
  Aggregator a(s);
  // Arrival order differs from event-time order: first/last follow event time.
  CHECK(add(a, rec(3, "d", 3)) == AddOutcome::absorbed);
  CHECK(add(a, rec(1, "d", 1.0)) == AddOutcome::absorbed);
  CHECK(add(a, rec(4, "d", 4)) == AddOutcome::absorbed);
  CHECK(add(a, rec(2, "d", -2.5)) == AddOutcome::absorbed);
  auto out = all(a);
  REQUIRE(out.size() == 1);
  auto o = obj(out[0]);
  CHECK(o.at("count").as_int64() == 4);
  CHECK(o.at("temp_count").as_int64() == 4);
  CHECK(o.at("temp_sum").to_number<double>() == 5.5);
  CHECK(o.at("temp_min").to_number<double>() == -2.5);
  CHECK(o.at("temp_max").to_number<double>() == 4);
  CHECK(o.at("temp_mean").to_number<double>() == 1.375);
  CHECK(o.at("temp_first").to_number<double>() == 1.0);
  CHECK(o.at("temp_last") == json::value(4));
  // Sample standard deviation of 3, 1, 4, -2.5.
  const double m = 1.375;
  const double sd = std::sqrt(((3 - m) * (3 - m) + (1 - m) * (1 - m) + (4 - m) * (4 - m) + (-2.5 - m) * (-2.5 - m)) / 3);
  CHECK(o.at("temp_stddev").to_number<double>() == Approx(sd).epsilon(1e-12));
  // Keys in configuration order.
  std::vector<std::string> keys;
  for (auto& kv : o) keys.emplace_back(kv.key());
  CHECK(keys == std::vector<std::string>{"window_start", "window_end", "count", "device", "temp_count", "temp_sum",
                                         "temp_min", "temp_max", "temp_mean", "temp_first", "temp_last",
                                         "temp_stddev"});
}

TEST_CASE("aggregator: stddev needs two numbers and non-finite results are null", "[aggregator]") {
  AggregateSpec s = tumbling();
  s.fields = {{"temp", {AggFunction::sum, AggFunction::mean, AggFunction::stddev, AggFunction::min}}};
  Aggregator a(s);
  add(a, rec(1, "one", 7));
  add(a, rec(1, "big", 1e308));
  add(a, rec(2, "big", 1e308));
  add(a, rec(1, "none", "x"));
  auto out = all(a);
  REQUIRE(out.size() == 3);
  // Groups sort by their bytes: "big" < "none" < "one".
  CHECK(contains(out[0], R"("device":"big","temp_sum":null,"temp_mean":null,"temp_stddev":)"));
  CHECK(contains(out[0], R"("temp_min":1e+308})"));
  CHECK(contains(out[1], R"("device":"none","temp_sum":null,"temp_mean":null,"temp_stddev":null,"temp_min":null})"));
  CHECK(contains(out[2], R"("device":"one","temp_sum":7,"temp_mean":7,"temp_stddev":null,"temp_min":7})"));
}

TEST_CASE("aggregator: empty windows are never emitted", "[aggregator]") {
  Aggregator a(tumbling());
  add(a, rec(5, "d", 1));
  add(a, rec(35, "d", 2));
  auto out = ready(a);
  REQUIRE(out.size() == 1);
  CHECK(contains(out[0], R"("window_start":"2026-11-21T10:00:00Z")"));
  out = all(a);
  REQUIRE(out.size() == 1);
  CHECK(contains(out[0], R"("window_start":"2026-11-21T10:00:30Z")"));
  CHECK(all(a).empty());
  CHECK(ready(a).empty());
}

TEST_CASE("aggregator: non-numeric values are counted and skipped", "[aggregator]") {
  AggregateSpec s = tumbling();
  s.fields = {{"temp", {AggFunction::count, AggFunction::min, AggFunction::max, AggFunction::mean, AggFunction::first,
                        AggFunction::last}},
              {"tag", {AggFunction::count, AggFunction::last}}};
  Aggregator a(s);
  add_text(a, R"({"ts":1795255201,"device":"d","temp":"NaN","tag":"a"})");
  add_text(a, R"({"ts":1795255202,"device":"d","temp":"abc","tag":null})");
  add_text(a, R"({"ts":1795255203,"device":"d","temp":true})");
  add_text(a, R"({"ts":1795255204,"device":"d","temp":{"v":1}})");
  add_text(a, R"({"ts":1795255205,"device":"d","temp":[1,2]})");
  add_text(a, R"({"ts":1795255206,"device":"d","temp":null})");
  add_text(a, R"({"ts":1795255207,"device":"d"})");
  add_text(a, R"({"ts":1795255208,"device":"d","temp":"12"})");
  // 6 non-numeric values for a field with numeric functions; null and missing are not counted,
  // and "tag" has no numeric function.
  CHECK(a.ignored_values() == 6);
  auto out = all(a);
  REQUIRE(out.size() == 1);
  CHECK(contains(out[0], R"("count":8,"device":"d","temp_count":6,"temp_min":null,"temp_max":null,)"
                         R"("temp_mean":null,"temp_first":"NaN","temp_last":"12","tag_count":1,"tag_last":"a"})"));
  Aggregator b(s);
  add_text(b, R"({"ts":1795255201,"device":"d","temp":"NaN"})");
  add_text(b, R"({"ts":1795255202,"device":"d","temp":5})");
  add_text(b, R"({"ts":1795255203,"device":"d","temp":{"k":[1,"x"]}})");
  out = all(b);
  REQUIRE(out.size() == 1);
  CHECK(contains(out[0], R"("temp_count":3,"temp_min":5,"temp_max":5,"temp_mean":5,"temp_first":"NaN",)"
                         R"("temp_last":{"k":[1,"x"]})"));
}

TEST_CASE("aggregator: a missing group key groups as null", "[aggregator]") {
  AggregateSpec s = tumbling();
  s.group_by = {"device", "site.name"};
  Aggregator a(s);
  add_text(a, R"({"ts":1795255201,"temp":1})");
  add_text(a, R"({"ts":1795255201,"device":null,"temp":2})");
  add_text(a, R"({"ts":1795255201,"device":"d","site":{"name":"s1"},"temp":3})");
  add_text(a, R"({"ts":1795255201,"device":"d","site":"flat","temp":4})");
  auto out = all(a);
  REQUIRE(out.size() == 3);
  CHECK(contains(out[0], R"("count":2,"device":null,"site.name":null,"temp_min":1,"temp_max":2)"));
  CHECK(contains(out[1], R"("count":1,"device":"d","site.name":null,"temp_min":4)"));
  CHECK(contains(out[2], R"("count":1,"device":"d","site.name":"s1","temp_min":3)"));
}

TEST_CASE("aggregator: group values of every JSON type", "[aggregator]") {
  AggregateSpec s = tumbling();
  s.fields = {{"v", {AggFunction::count}}};
  Aggregator a(s);
  const char* devices[] = {"1", "1.0", "1e0", "-7", "2.5", "true", "false", "null", "18446744073709551615",
                           "\"a\\u0000b\"", "\"a\"", "\"\"", "\"q\\\"\\n\"", "{\"k\":1}", "[1,2]", "-0.0"};
  for (const char* d : devices) {
    CHECK(add_text(a, fmt::format(R"({{"ts":1795255201,"device":{},"v":1}})", d)) == AddOutcome::absorbed);
  }
  auto out = all(a);
  std::vector<std::string> groups;
  std::vector<std::int64_t> counts;
  for (auto& text : out) {
    auto o = obj(text);
    groups.push_back(json::serialize(o.at("device")));
    counts.push_back(o.at("count").as_int64());
  }
  // Numbers group by value (1, 1.0, 1e0 and also -0.0 with 0 would be one); kinds in tag order.
  CHECK(groups == std::vector<std::string>{"null", "false", "true", "-7", "0", "1", "18446744073709551615",
                                           "2.5E0", "\"\"", "\"a\"", "\"a\\u0000b\"", "\"q\\\"\\n\"", "[1,2]",
                                           "{\"k\":1}"});
  CHECK(counts == std::vector<std::int64_t>{1, 1, 1, 1, 1, 3, 1, 1, 1, 1, 1, 1, 1, 1});
}

TEST_CASE("aggregator: records without an object or a time are refused", "[aggregator]") {
  Aggregator a(tumbling());
  std::string detail;
  CHECK(add_text(a, "[1,2]", &detail) == AddOutcome::not_object);
  CHECK(detail == "the record is not a JSON object but an array");
  CHECK(add_text(a, "\"x\"", &detail) == AddOutcome::not_object);
  CHECK(add_text(a, "3", &detail) == AddOutcome::not_object);
  CHECK(add_text(a, R"({"device":"d"})", &detail) == AddOutcome::bad_time);
  CHECK(detail == "no time field \"ts\"");
  CHECK(add_text(a, R"({"ts":"abc"})", &detail) == AddOutcome::bad_time);
  CHECK(detail.rfind("\"ts\" is \"abc\", not an RFC 3339 time", 0) == 0);
  CHECK(add_text(a, R"({"ts":null})", &detail) == AddOutcome::bad_time);
  CHECK(add_text(a, R"({"ts":true})", &detail) == AddOutcome::bad_time);
  CHECK(add_text(a, R"({"ts":"2026-02-30T00:00:00Z"})", &detail) == AddOutcome::bad_time);
  CHECK(contains(detail, "February 2026"));
  CHECK(add_text(a, R"({"ts":1e300})", &detail) == AddOutcome::bad_time);
  CHECK(contains(detail, "outside the representable time range"));
  // Within a window of the end of the int64 range, windows cannot be represented.
  CHECK(add_text(a, R"({"ts":"2262-04-11T23:47:16Z"})", &detail) == AddOutcome::bad_time);
  CHECK(contains(detail, "its windows do not fit"));
  CHECK(add_text(a, R"({"ts":"1677-09-21T00:12:44Z"})", &detail) == AddOutcome::bad_time);
  CHECK(a.open_cells() == 0);
  CHECK(a.watermark() == kMin);
  // A nested time field.
  AggregateSpec s = tumbling();
  s.time_field = "/meta/time";
  s.time_format = TimeFormat::unix_ms;
  Aggregator b(s);
  CHECK(add_text(b, R"({"meta":{"time":1795255201000},"device":"d"})") == AddOutcome::absorbed);
  CHECK(b.max_event_time() == kT0 + kS);
  CHECK(add_text(b, R"({"meta":{"time":"2026-11-21T10:00:00Z"}})", &detail) == AddOutcome::bad_time);
  CHECK(detail == "\"/meta/time\" is \"2026-11-21T10:00:00Z\", not a number of milliseconds since the Unix epoch");
}

TEST_CASE("aggregator: clock jumps back are late and forward close everything before", "[aggregator]") {
  Aggregator a(tumbling(10, 5));
  for (int i = 0; i < 30; ++i) CHECK(add(a, rec(i, "d", i)) == AddOutcome::absorbed);
  CHECK(a.watermark() == kT0 + 24 * kS);
  CHECK(ready(a).size() == 2);  // [0,10) and [10,20)
  std::string detail;
  // A device whose clock is a day behind: late, with a reason.
  CHECK(add(a, rec(-86400, "d", 1), &detail) == AddOutcome::late);
  CHECK(detail == "event time 2026-11-20T10:00:00Z is late: its windows closed at watermark 2026-11-21T10:00:24Z");
  // Still within the allowed lateness: absorbed.
  CHECK(add(a, rec(20, "other", 1)) == AddOutcome::absorbed);
  CHECK(add(a, rec(19.999, "other", 1)) == AddOutcome::late);
  // A clock a year ahead: absorbed, and it closes everything before it.
  CHECK(add(a, rec(365.0 * 86400, "d", 1)) == AddOutcome::absorbed);
  auto out = ready(a);
  REQUIRE(out.size() == 2);
  CHECK(contains(out[0], R"("window_start":"2026-11-21T10:00:20Z")"));
  CHECK(contains(out[0], R"("device":"d")"));
  CHECK(contains(out[1], R"("device":"other")"));
  // Now the present time is late.
  CHECK(add(a, rec(31, "d", 1), &detail) == AddOutcome::late);
  CHECK(a.open_cells() == 1);
}

TEST_CASE("aggregator: hopping windows hold a record several times", "[aggregator]") {
  AggregateSpec s = tumbling();
  s.hop_ns = 5 * kS;
  s.fields = {{"temp", {AggFunction::count, AggFunction::sum}}};
  Aggregator a(s);
  CHECK(add(a, rec(7, "d", 1)) == AddOutcome::absorbed);  // [0,10) and [5,15)
  CHECK(a.open_cells() == 2);
  CHECK(add(a, rec(12, "d", 10)) == AddOutcome::absorbed);  // [5,15) and [10,20); watermark 12
  auto out = ready(a);
  REQUIRE(out.size() == 1);
  CHECK(contains(out[0], R"("window_start":"2026-11-21T10:00:00Z","window_end":"2026-11-21T10:00:10Z","count":1,)"
                         R"("device":"d","temp_count":1,"temp_sum":1})"));
  // 8 s: [0,10) is closed, [5,15) is open: absorbed into that one only.
  CHECK(add(a, rec(8, "d", 100)) == AddOutcome::absorbed);
  CHECK(add(a, rec(4, "d", 100)) == AddOutcome::late);  // [-5,5) and [0,10): both closed
  out = all(a);
  REQUIRE(out.size() == 2);
  CHECK(contains(out[0], R"("window_start":"2026-11-21T10:00:05Z","window_end":"2026-11-21T10:00:15Z","count":3,)"
                         R"("device":"d","temp_count":3,"temp_sum":111})"));
  CHECK(contains(out[1], R"("window_start":"2026-11-21T10:00:10Z","window_end":"2026-11-21T10:00:20Z","count":1,)"));

  // A window that is not a multiple of the hop: 10 s windows every 4 s.
  s.hop_ns = 4 * kS;
  Aggregator b(s);
  json::object r;
  r["ts"] = 9;  // 9 s after the epoch: windows starting at 0, 4 and 8
  r["device"] = "d";
  CHECK(add(b, r) == AddOutcome::absorbed);
  CHECK(b.open_cells() == 3);
  r["ts"] = 10;  // windows starting at 4 and 8 (0 + 10 is not > 10)
  CHECK(add(b, r) == AddOutcome::absorbed);
  out = all(b);
  REQUIRE(out.size() == 3);
  CHECK(contains(out[0], R"("window_start":"1970-01-01T00:00:00Z","window_end":"1970-01-01T00:00:10Z","count":1)"));
  CHECK(contains(out[1], R"("window_start":"1970-01-01T00:00:04Z","window_end":"1970-01-01T00:00:14Z","count":2)"));
  CHECK(contains(out[2], R"("window_start":"1970-01-01T00:00:08Z","window_end":"1970-01-01T00:00:18Z","count":2)"));
}

TEST_CASE("aggregator: windows before the epoch start at multiples of the hop", "[aggregator]") {
  AggregateSpec s = tumbling(10, 100);
  s.fields = {{"v", {AggFunction::count}}};
  Aggregator a(s);
  CHECK(add_text(a, R"({"ts":-1})") == AddOutcome::absorbed);
  CHECK(add_text(a, R"({"ts":-10})") == AddOutcome::absorbed);
  CHECK(add_text(a, R"({"ts":-11})") == AddOutcome::absorbed);
  auto out = all(a);
  REQUIRE(out.size() == 2);
  CHECK(contains(out[0], R"("window_start":"1969-12-31T23:59:40Z","window_end":"1969-12-31T23:59:50Z","count":1)"));
  CHECK(contains(out[1], R"("window_start":"1969-12-31T23:59:50Z","window_end":"1970-01-01T00:00:00Z","count":2)"));
}

TEST_CASE("aggregator: allowed lateness keeps windows open", "[aggregator]") {
  Aggregator a(tumbling(10, 5));
  add(a, rec(1, "d", 1));
  add(a, rec(14, "d", 2));  // watermark 9: [0,10) still open
  CHECK(ready(a).empty());
  CHECK(add(a, rec(2, "d", 3)) == AddOutcome::absorbed);
  add(a, rec(15, "d", 4));  // watermark 10: [0,10) closes
  auto out = ready(a);
  REQUIRE(out.size() == 1);
  CHECK(contains(out[0], R"("count":2,"device":"d","temp_min":1,"temp_max":3)"));
  CHECK(add(a, rec(9.999, "d", 3)) == AddOutcome::late);
  // Without lateness the record at 2 s would have been late.
  Aggregator b(tumbling(10, 0));
  add(b, rec(1, "d", 1));
  add(b, rec(14, "d", 2));
  CHECK(add(b, rec(2, "d", 3)) == AddOutcome::late);
}

TEST_CASE("aggregator: close_all then a record for a closed window is late", "[aggregator]") {
  Aggregator a(tumbling(10, 30));
  add(a, rec(1, "d", 1));
  add(a, rec(12, "d", 1));
  CHECK(a.watermark() < kT0);
  CHECK(all(a).size() == 2);
  CHECK(a.watermark() == kT0 + 20 * kS);
  CHECK(add(a, rec(5, "d", 1)) == AddOutcome::late);
  CHECK(add(a, rec(19, "d", 1)) == AddOutcome::late);
  CHECK(add(a, rec(20, "d", 1)) == AddOutcome::absorbed);
  CHECK(a.open_cells() == 1);
}

TEST_CASE("aggregator: cells past max_cells are refused", "[aggregator]") {
  AggregateSpec s = tumbling();
  s.max_cells = 3;
  Aggregator a(s);
  for (const char* d : {"a", "b", "c"}) CHECK(add(a, rec(1, d, 1)) == AddOutcome::absorbed);
  std::string detail;
  CHECK(add(a, rec(1, "d", 1), &detail) == AddOutcome::cell_limit);
  CHECK(detail == "needs 1 new window cell but max_cells (3) are held");
  CHECK(add(a, rec(2, "a", 5)) == AddOutcome::absorbed);  // an existing cell is fine
  CHECK(a.open_cells() == 3);
  // A record of the next window raises the watermark even though it is refused; close_ready frees
  // the cells and the next record fits.
  CHECK(add(a, rec(11, "a", 1)) == AddOutcome::cell_limit);
  CHECK(ready(a).size() == 3);
  CHECK(add(a, rec(11, "a", 1)) == AddOutcome::absorbed);
  // Hopping: a record that needs two cells when only one is left is refused whole.
  s.hop_ns = 5 * kS;
  s.max_cells = 3;
  Aggregator b(s);
  CHECK(add(b, rec(7, "a", 1)) == AddOutcome::absorbed);
  CHECK(add(b, rec(7, "b", 1), &detail) == AddOutcome::cell_limit);
  CHECK(detail == "needs 2 new window cells but max_cells (3) are held");
  CHECK(b.open_cells() == 2);
  auto out = all(b);
  REQUIRE(out.size() == 2);
  CHECK(contains(out[0], R"("count":1,"device":"a")"));
}

TEST_CASE("aggregator: emission is ordered by window end then start then group", "[aggregator]") {
  AggregateSpec s = tumbling();
  s.hop_ns = 5 * kS;
  s.allowed_lateness_ns = 100 * kS;
  s.fields = {{"v", {AggFunction::count}}};
  Aggregator a(s);
  for (double t : {17.0, 3.0, 8.0, 12.0}) {
    for (const char* d : {"zeta", "alpha", "mid"}) add(a, rec(t, d));
  }
  std::vector<Emitted> out;
  a.close_all(&out);
  std::vector<std::pair<std::int64_t, std::string>> got;
  for (auto& e : out) got.emplace_back(e.window_start_ns, obj(e.json).at("device").as_string().c_str());
  std::vector<std::pair<std::int64_t, std::string>> expected;
  for (std::int64_t start : {-5, 0, 5, 10, 15}) {
    for (const char* d : {"alpha", "mid", "zeta"}) expected.emplace_back(kT0 + start * kS, d);
  }
  CHECK(got == expected);
  for (std::size_t i = 1; i < out.size(); ++i) {
    CHECK(out[i - 1].window_end_ns <= out[i].window_end_ns);
  }
}

TEST_CASE("aggregator: first and last follow event time with ties by arrival", "[aggregator]") {
  AggregateSpec s = tumbling();
  s.fields = {{"temp", {AggFunction::first, AggFunction::last}}};
  Aggregator a(s);
  add(a, rec(5, "d", "t5-a"));
  add(a, rec(2, "d", "t2-a"));
  add(a, rec(2, "d", "t2-b"));
  add(a, rec(8, "d", "t8-a"));
  add(a, rec(8, "d", "t8-b"));
  add(a, rec(3, "d", "t3"));
  add(a, rec(1, "d"));  // no value: does not count for first
  auto out = all(a);
  REQUIRE(out.size() == 1);
  CHECK(contains(out[0], R"("count":7,"device":"d","temp_first":"t2-a","temp_last":"t8-b"})"));
}

TEST_CASE("aggregator: names and values are escaped in the output", "[aggregator]") {
  AggregateSpec s = tumbling();
  s.group_by = {"/de\"v"};
  s.fields = {{"/t\\emp", {AggFunction::last}}};
  Aggregator a(s);
  CHECK(add_text(a, R"({"ts":1795255201,"de\"v":"x\ty\u0001","t\\emp":"\"q\""})") == AddOutcome::absorbed);
  auto out = all(a);
  REQUIRE(out.size() == 1);
  CHECK(contains(out[0], R"("/de\"v":"x\ty\u0001","/t\\emp_last":"\"q\""})"));
  CHECK_NOTHROW(json::parse(out[0]));
}

TEST_CASE("aggregator: take_changes hands out puts deletes and meta", "[aggregator]") {
  Aggregator a(tumbling());
  std::vector<std::pair<std::string, std::string>> puts;
  std::vector<std::string> deletes;
  a.take_changes(&puts, &deletes);
  REQUIRE(puts.size() == 1);  // the first call always writes meta
  CHECK(puts[0].first == "meta");
  puts.clear();
  a.take_changes(&puts, &deletes);
  CHECK(puts.empty());
  CHECK(deletes.empty());

  add(a, rec(1, "b", 1));
  add(a, rec(2, "a", 1));
  add(a, rec(3, "a", 2));
  a.take_changes(&puts, &deletes);
  REQUIRE(puts.size() == 3);
  std::vector<std::string> keys;
  for (auto& [k, v] : puts) keys.push_back(k);
  std::sort(keys.begin(), keys.end());
  CHECK(keys[2] == "meta");
  CHECK(keys[0][0] == 'c');
  CHECK(keys[0].size() == 1 + 8 + 1 + 1 + 1);  // c, start, string tag, "a", end
  CHECK(keys[0].substr(9) == std::string("\x07" "a\0", 3));
  CHECK(keys[1].substr(9) == std::string("\x07" "b\0", 3));
  CHECK(deletes.empty());
  // Cell keys sort by window start (memcmp, also across the sign of the start) then group, which
  // is the emission order.
  {
    Aggregator w(tumbling());
    add_text(w, R"({"ts":-25,"device":"b"})");
    add_text(w, R"({"ts":-5,"device":"a"})");
    add_text(w, R"({"ts":-5,"device":"b"})");
    add_text(w, R"({"ts":5,"device":"a"})");
    add_text(w, R"({"ts":1795255201,"device":"a"})");
    State state;
    apply_changes(w, state);
    std::vector<std::string> stored;
    for (auto& [k, v] : state) {
      if (k != "meta") stored.push_back(k);
    }
    std::vector<Emitted> out;
    w.close_all(&out);
    REQUIRE(out.size() == 5);
    REQUIRE(stored.size() == 5);
    for (std::size_t i = 0; i < 5; ++i) {
      std::uint64_t be = 0;
      for (std::size_t j = 1; j <= 8; ++j) be = (be << 8) | static_cast<unsigned char>(stored[i][j]);
      CHECK(static_cast<std::int64_t>(be ^ (1ULL << 63)) == out[i].window_start_ns);
      CHECK(stored[i].substr(10, 1) == obj(out[i].json).at("device").as_string().c_str());
    }
    CHECK(out[0].window_start_ns == -30 * kS);
    // A restored Aggregator emits the same.
    Aggregator r(tumbling());
    r.restore(entries(state));
    std::vector<Emitted> again;
    r.close_all(&again);
    REQUIRE(again.size() == 5);
    for (std::size_t j = 0; j < 5; ++j) CHECK(again[j].json == out[j].json);
  }

  // Only changed cells are put again; closed stored cells are deleted; a cell made and closed
  // between two calls leaves no trace.
  puts.clear();
  add(a, rec(4, "a", 3));
  a.take_changes(&puts, &deletes);
  REQUIRE(puts.size() == 2);  // cell "a" and meta (max_event_time moved)
  puts.clear();
  add(a, rec(15, "c", 1));   // closes nothing yet (ready() not called); new window cell
  CHECK(ready(a).size() == 2);
  add(a, rec(25, "c", 1));
  CHECK(ready(a).size() == 1);  // the cell of window [10,20), never handed out
  a.take_changes(&puts, &deletes);
  CHECK(deletes.size() == 2);
  for (auto& k : deletes) CHECK(k.substr(9, 1) == "\x07");
  REQUIRE(puts.size() == 2);
  CHECK(a.open_cells() == 1);
}

namespace {

// A stream of telemetry: `devices` devices, event time advancing 10 ms per record with up to
// `disorder_ms` of disorder, some records far in the past (late), some with bad times, missing
// fields and values that are not numbers.
std::vector<json::value> make_stream(std::size_t n, int devices, std::uint64_t seed, int disorder_ms = 3000) {
  std::mt19937_64 rng(seed);
  std::vector<json::value> out;
  out.reserve(n);
  const std::int64_t start_ms = kT0 / kMs;
  for (std::size_t i = 0; i < n; ++i) {
    json::object o;
    std::int64_t t = start_ms + static_cast<std::int64_t>(i) * 10 +
                     static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(disorder_ms)) - disorder_ms / 2;
    const unsigned roll = static_cast<unsigned>(rng() % 1000);
    if (roll < 10) t -= 60'000;  // a late one
    if (roll >= 10 && roll < 13) {
      o["ts"] = "garbage";
    } else if (roll == 13) {
      // no time at all
    } else if (roll < 200) {
      o["ts"] = format_rfc3339_ns(t * kMs);
    } else {
      o["ts"] = t;
    }
    if (rng() % 50 != 0) o["device"] = fmt::format("dev-{:04}", rng() % static_cast<std::uint64_t>(devices));
    const unsigned v = static_cast<unsigned>(rng() % 100);
    if (v < 3) {
      o["temp"] = "NaN";
    } else if (v < 5) {
      o["temp"] = nullptr;
    } else if (v < 7) {
      // missing
    } else if (v < 40) {
      o["temp"] = static_cast<std::int64_t>(rng() % 200) - 50;
    } else {
      o["temp"] = static_cast<double>(static_cast<std::int64_t>(rng() % 40000) - 10000) / 4.0;  // exact
    }
    if (rng() % 4 != 0) o["hum"] = static_cast<double>(rng() % 400) / 4.0;
    if (rng() % 3 == 0) o["status"] = rng() % 2 == 0 ? json::value("ok") : json::value(json::object{{"code", 3}});
    out.emplace_back(std::move(o));
  }
  return out;
}

AggregateSpec stream_spec(bool hopping, std::size_t max_cells = 100000) {
  AggregateSpec s;
  s.window_ns = 10 * kS;
  s.hop_ns = hopping ? 4 * kS : 10 * kS;
  s.allowed_lateness_ns = 2 * kS;
  s.time_field = "ts";
  s.time_format = TimeFormat::automatic;
  s.group_by = {"device"};
  s.fields = {{"temp",
               {AggFunction::count, AggFunction::sum, AggFunction::min, AggFunction::max, AggFunction::mean,
                AggFunction::first, AggFunction::last, AggFunction::stddev}},
              {"hum", {AggFunction::mean, AggFunction::last}},
              {"status", {AggFunction::first, AggFunction::last, AggFunction::count}}};
  s.max_cells = max_cells;
  return s;
}

// When close_ready() is called: after record i when schedule[i].
std::vector<bool> close_schedule(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<bool> s(n);
  for (std::size_t i = 0; i < n; ++i) s[i] = rng() % 40 == 0;
  return s;
}

std::vector<std::string> run_uninterrupted(const AggregateSpec& spec, const std::vector<json::value>& stream,
                                           const std::vector<bool>& schedule) {
  Aggregator a(spec);
  std::vector<Emitted> out;
  for (std::size_t i = 0; i < stream.size(); ++i) {
    a.add(stream[i], nullptr);
    if (schedule[i]) a.close_ready(&out);
  }
  a.close_all(&out);
  std::vector<std::string> texts;
  for (auto& e : out) texts.push_back(std::move(e.json));
  return texts;
}

// The naive model: every absorbed record kept, functions computed when a cell closes.
class Reference {
 public:
  explicit Reference(AggregateSpec spec) : spec_(std::move(spec)) {}

  struct Kept {
    std::int64_t t;
    json::value record;
  };
  using Group = std::optional<std::string>;  // the device; nullopt: missing or null

  AddOutcome add(const json::value& record) {
    if (!record.is_object()) return AddOutcome::not_object;
    const json::value* tv = find_field(record, spec_.time_field);
    if (tv == nullptr) return AddOutcome::bad_time;
    auto t = event_time_ns(*tv, spec_.time_format, nullptr);
    if (!t) return AddOutcome::bad_time;
    max_t_ = std::max(max_t_, *t);
    watermark_ = std::max(watermark_, max_t_ - spec_.allowed_lateness_ns);
    std::vector<std::int64_t> open;
    const std::int64_t hop = spec_.hop_ns;
    std::int64_t s = *t / hop * hop;
    if (s > *t) s -= hop;
    for (; s > *t - spec_.window_ns; s -= hop) {
      if (s + spec_.window_ns > watermark_) open.push_back(s);
    }
    if (open.empty()) return AddOutcome::late;
    Group g;
    const json::value* d = find_field(record, "device");
    if (d != nullptr && d->is_string()) g = std::string(d->get_string());
    std::size_t missing = 0;
    for (auto st : open) missing += cells_.count({st, g}) == 0 ? 1 : 0;
    if (missing > 0 && cells_.size() + missing > spec_.max_cells) return AddOutcome::cell_limit;
    for (auto st : open) cells_[{st, g}].push_back({*t, record});
    return AddOutcome::absorbed;
  }

  struct Out {
    std::int64_t start;
    Group group;
    std::vector<Kept> records;
  };
  void close_ready(std::vector<Out>* out) {
    for (auto it = cells_.begin(); it != cells_.end();) {
      if (it->first.first + spec_.window_ns > watermark_) {
        ++it;
        continue;
      }
      out->push_back({it->first.first, it->first.second, std::move(it->second)});
      it = cells_.erase(it);
    }
  }
  void close_all(std::vector<Out>* out) {
    for (auto& [key, records] : cells_) {
      out->push_back({key.first, key.second, std::move(records)});
      watermark_ = std::max(watermark_, key.first + spec_.window_ns);
    }
    cells_.clear();
  }

 private:
  AggregateSpec spec_;
  std::int64_t max_t_ = kMin;
  std::int64_t watermark_ = kMin;
  std::map<std::pair<std::int64_t, Group>, std::vector<Kept>> cells_;  // (start, group): emission order
};

void check_close(double got, double want) {
  if (want == 0) {
    CHECK(std::fabs(got) < 1e-9);
  } else {
    CHECK(std::fabs(got - want) <= 1e-9 * std::fabs(want));
  }
}

// Checks one emitted object against the reference's records for the cell.
void check_against(const Emitted& e, const Reference::Out& r, const AggregateSpec& spec) {
  auto o = obj(e.json);
  CHECK(e.window_start_ns == r.start);
  CHECK(e.window_end_ns == r.start + spec.window_ns);
  CHECK(e.count == r.records.size());
  CHECK(o.at("count").as_int64() == static_cast<std::int64_t>(r.records.size()));
  CHECK(o.at("window_start").as_string() == format_rfc3339_ns(r.start).c_str());
  if (r.group) {
    CHECK(o.at("device") == json::value(*r.group));
  } else {
    CHECK(o.at("device").is_null());
  }
  for (const auto& [field, functions] : spec.fields) {
    std::vector<double> numbers;
    std::size_t present = 0;
    const json::value* first = nullptr;
    const json::value* last = nullptr;
    std::int64_t first_t = 0;
    std::int64_t last_t = 0;
    for (const auto& k : r.records) {
      const json::value* v = find_field(k.record, field);
      if (v == nullptr || v->is_null()) continue;
      ++present;
      if (v->is_number()) numbers.push_back(v->to_number<double>());
      if (first == nullptr || k.t < first_t) first = v, first_t = k.t;
      if (last == nullptr || k.t >= last_t) last = v, last_t = k.t;
    }
    double sum = 0;
    for (double x : numbers) sum += x;
    for (AggFunction f : functions) {
      const json::value& got = o.at(fmt::format("{}_{}", field, to_string(f)));
      INFO(e.json << " " << field << "_" << to_string(f));
      switch (f) {
        case AggFunction::count: CHECK(got.as_int64() == static_cast<std::int64_t>(present)); break;
        case AggFunction::sum:
          if (numbers.empty()) CHECK(got.is_null()); else check_close(got.to_number<double>(), sum);
          break;
        case AggFunction::mean:
          if (numbers.empty()) CHECK(got.is_null());
          else check_close(got.to_number<double>(), sum / static_cast<double>(numbers.size()));
          break;
        case AggFunction::min:
          if (numbers.empty()) CHECK(got.is_null());
          else CHECK(got.to_number<double>() == *std::min_element(numbers.begin(), numbers.end()));
          break;
        case AggFunction::max:
          if (numbers.empty()) CHECK(got.is_null());
          else CHECK(got.to_number<double>() == *std::max_element(numbers.begin(), numbers.end()));
          break;
        case AggFunction::stddev: {
          if (numbers.size() < 2) {
            CHECK(got.is_null());
            break;
          }
          const double m = sum / static_cast<double>(numbers.size());
          double ss = 0;
          for (double x : numbers) ss += (x - m) * (x - m);
          check_close(got.to_number<double>(), std::sqrt(ss / static_cast<double>(numbers.size() - 1)));
          break;
        }
        case AggFunction::first:
          if (first == nullptr) CHECK(got.is_null());
          else if (first->is_number()) CHECK(got.to_number<double>() == first->to_number<double>());
          else CHECK(got == *first);
          break;
        case AggFunction::last:
          if (last == nullptr) CHECK(got.is_null());
          else if (last->is_number()) CHECK(got.to_number<double>() == last->to_number<double>());
          else CHECK(got == *last);
          break;
      }
    }
  }
}

}  // namespace

TEST_CASE("aggregator: matches a naive reference implementation", "[aggregator]") {
  const auto stream = make_stream(12000, 40, 7);
  const auto schedule = close_schedule(stream.size(), 11);
  for (auto [hopping, max_cells] : {std::pair{false, std::size_t{100000}}, std::pair{true, std::size_t{100000}},
                                    std::pair{false, std::size_t{30}}, std::pair{true, std::size_t{70}}}) {
    INFO("hopping " << hopping << " max_cells " << max_cells);
    const AggregateSpec spec = stream_spec(hopping, max_cells);
    Aggregator a(spec);
    Reference ref(spec);
    std::vector<Emitted> got;
    std::vector<Reference::Out> want;
    std::map<AddOutcome, int> outcomes;
    for (std::size_t i = 0; i < stream.size(); ++i) {
      const AddOutcome o = a.add(stream[i], nullptr);
      REQUIRE(o == ref.add(stream[i]));
      ++outcomes[o];
      if (schedule[i]) {
        a.close_ready(&got);
        ref.close_ready(&want);
        REQUIRE(got.size() == want.size());
      }
    }
    a.close_all(&got);
    ref.close_all(&want);
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < got.size(); ++i) check_against(got[i], want[i], spec);
    // The stream exercises every outcome.
    CHECK(outcomes[AddOutcome::absorbed] > (max_cells < 1000 ? 3000 : 10000));
    CHECK(outcomes[AddOutcome::late] > 50);
    CHECK(outcomes[AddOutcome::bad_time] > 20);
    if (max_cells < 1000) CHECK(outcomes[AddOutcome::cell_limit] > 0);
  }
}

TEST_CASE("aggregator: restore and continue is byte-identical to an uninterrupted run", "[aggregator]") {
  const auto stream = make_stream(15000, 60, 42);
  const auto schedule = close_schedule(stream.size(), 43);
  for (bool hopping : {false, true}) {
    INFO("hopping " << hopping);
    const AggregateSpec spec = stream_spec(hopping);
    const auto expected = run_uninterrupted(spec, stream, schedule);
    REQUIRE(expected.size() > 500);

    // Commits (take_changes applied to the store, with the output emitted so far) at random points;
    // crashes at random points after which a new Aggregator restores the store and the records
    // since the last commit are consumed again.
    std::mt19937_64 rng(hopping ? 99 : 98);
    State store;
    auto agg = std::make_unique<Aggregator>(spec);
    std::vector<std::string> committed;
    std::vector<std::string> pending;
    std::size_t committed_at = 0;  // the next record after the last commit
    std::size_t furthest_crash = 0;
    int crashes = 0;
    int commits = 0;
    for (std::size_t i = 0; i < stream.size(); ++i) {
      agg->add(stream[i], nullptr);
      if (schedule[i]) {
        std::vector<Emitted> out;
        agg->close_ready(&out);
        for (auto& e : out) pending.push_back(std::move(e.json));
      }
      if (rng() % 300 == 0) {
        apply_changes(*agg, store);
        CHECK(store.size() == agg->open_cells() + 1);
        committed.insert(committed.end(), pending.begin(), pending.end());
        pending.clear();
        committed_at = i + 1;
        ++commits;
      }
      if (i > furthest_crash && rng() % 700 == 0) {
        furthest_crash = i;
        agg = std::make_unique<Aggregator>(spec);
        agg->restore(entries(store));
        pending.clear();
        i = committed_at - 1;  // (wraps when 0) the loop's ++i resumes at committed_at
        ++crashes;
      }
    }
    std::vector<Emitted> out;
    agg->close_all(&out);
    for (auto& e : out) pending.push_back(std::move(e.json));
    committed.insert(committed.end(), pending.begin(), pending.end());
    CHECK(crashes > 5);
    CHECK(commits > 20);
    REQUIRE(committed.size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
      if (committed[i] != expected[i]) {
        FAIL("output " << i << " differs:\n  " << committed[i] << "\n  " << expected[i]);
      }
    }
  }
}

TEST_CASE("aggregator: emission in bounded chunks, committed and crashed between chunks, is byte-identical",
          "[aggregator]") {
  // The stage drains close_ready()/close_all() a few cells at a time, committing between chunks,
  // so that no commit holds a whole window of a large fleet. A crash between two chunks restores
  // a state whose watermark has passed cells not yet emitted; draining right after restore()
  // must continue the output exactly.
  const auto stream = make_stream(15000, 60, 7);
  for (bool hopping : {false, true}) {
    INFO("hopping " << hopping);
    const AggregateSpec spec = stream_spec(hopping);
    const auto expected = run_uninterrupted(spec, stream, std::vector<bool>(stream.size(), true));
    std::mt19937_64 rng(hopping ? 5 : 6);
    State store;
    auto agg = std::make_unique<Aggregator>(spec);
    std::vector<std::string> committed, pending;
    std::size_t next = 0;  // the next record to read
    std::size_t committed_at = 0;
    int crashes = 0, partial = 0;
    auto commit = [&] {
      apply_changes(*agg, store);
      committed.insert(committed.end(), pending.begin(), pending.end());
      pending.clear();
      committed_at = next;
    };
    auto maybe_crash = [&] {
      if (rng() % 40 != 0) return false;
      agg = std::make_unique<Aggregator>(spec);
      agg->restore(entries(store));
      pending.clear();
      next = committed_at;
      ++crashes;
      return true;
    };
    // Drains in chunks of 1 to 3 cells with a commit (and maybe a crash) after each chunk.
    auto drain = [&](bool all_cells) {
      for (;;) {
        std::vector<Emitted> out;
        const std::size_t limit = 1 + rng() % 3;
        const bool done = all_cells ? agg->close_all(&out, limit) : agg->close_ready(&out, limit);
        CHECK(out.size() <= limit);
        for (auto& e : out) pending.push_back(std::move(e.json));
        if (done) return true;
        ++partial;
        commit();
        if (maybe_crash()) return false;
      }
    };
    while (next < stream.size()) {
      agg->add(stream[next++], nullptr);
      if (!drain(false)) {
        // Restarted: drain what the restored watermark has passed before reading on.
        while (!drain(false)) {
        }
        continue;
      }
      if (rng() % 200 == 0) commit();
    }
    while (!drain(true)) {
      while (!drain(false)) {
      }
    }
    commit();
    CHECK(crashes > 3);
    CHECK(partial > 100);
    REQUIRE(committed.size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
      if (committed[i] != expected[i]) FAIL("output " << i << " differs:\n  " << committed[i] << "\n  " << expected[i]);
    }
  }
}

TEST_CASE("aggregator: restore keeps the watermark and the closed windows closed", "[aggregator]") {
  Aggregator a(tumbling(10, 5));
  State store;
  add(a, rec(1, "d", 1));
  add(a, rec(30, "d", 2));
  apply_changes(a, store);
  Aggregator b(tumbling(10, 5));
  b.restore(entries(store));
  CHECK(b.watermark() == a.watermark());
  CHECK(b.max_event_time() == a.max_event_time());
  CHECK(b.open_cells() == 2);
  CHECK(add(b, rec(2, "d", 1)) == AddOutcome::late);
  CHECK(ready(b) == ready(a));
  // A longer allowed_lateness after the restart does not move the watermark back.
  Aggregator c(tumbling(10, 60));
  c.restore(entries(store));
  CHECK(c.watermark() == a.watermark());
  // A shorter one moves it forward at once.
  Aggregator d(tumbling(10, 0));
  d.restore(entries(store));
  CHECK(d.watermark() == kT0 + 30 * kS);
  std::vector<std::pair<std::string, std::string>> puts;
  std::vector<std::string> deletes;
  d.take_changes(&puts, &deletes);
  REQUIRE(puts.size() == 1);
  CHECK(puts[0].first == "meta");
  // Empty entries: a fresh state.
  Aggregator e(tumbling());
  e.restore({});
  CHECK(e.watermark() == kMin);
  CHECK(e.open_cells() == 0);
}

TEST_CASE("aggregator: state of another spec is a SpecMismatch", "[aggregator]") {
  Aggregator a(tumbling());
  State store;
  add(a, rec(1, "d", 1));
  apply_changes(a, store);
  auto mismatch = [&](auto change) {
    AggregateSpec s = tumbling();
    change(s);
    Aggregator b(s);
    CHECK_THROWS_AS(b.restore(entries(store)), SpecMismatch);
    try {
      b.restore(entries(store));
    } catch (const SpecMismatch& e) {
      CHECK(contains(e.what(), "written for another configuration"));
      CHECK(contains(e.what(), "\"window_ns\":10000000000"));
    }
  };
  mismatch([](AggregateSpec& s) { s.window_ns = s.hop_ns = 20 * kS; });
  mismatch([](AggregateSpec& s) { s.hop_ns = 5 * kS; });
  mismatch([](AggregateSpec& s) { s.group_by = {"site"}; });
  mismatch([](AggregateSpec& s) { s.fields[0].second.push_back(AggFunction::last); });
  mismatch([](AggregateSpec& s) { std::swap(s.fields[0], s.fields[1]); });
  mismatch([](AggregateSpec& s) { s.time_field = "time"; });
  mismatch([](AggregateSpec& s) { s.time_format = TimeFormat::unix_ms; });
  // allowed_lateness and max_cells may change.
  AggregateSpec s = tumbling();
  s.allowed_lateness_ns = 7 * kS;
  s.max_cells = 5;
  Aggregator c(s);
  CHECK_NOTHROW(c.restore(entries(store)));
  CHECK(c.open_cells() == 1);
}

TEST_CASE("aggregator: malformed state bytes throw and never crash", "[aggregator]") {
  const AggregateSpec spec = stream_spec(true);
  const auto stream = make_stream(3000, 20, 5);
  Aggregator a(spec);
  State store;
  for (std::size_t i = 0; i < stream.size(); ++i) a.add(stream[i], nullptr);
  apply_changes(a, store);
  REQUIRE(store.size() > 10);
  const auto good = entries(store);

  Aggregator b(spec);
  b.restore(good);
  const std::size_t cells = b.open_cells();
  auto refused = [&](const std::vector<std::pair<std::string, std::string>>& bad) {
    try {
      b.restore(bad);
      return false;
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()).size() > 10);
      CHECK(b.open_cells() == cells);  // the previous state is kept
      return true;
    }
  };

  // Every truncation of every value, and of cell keys.
  for (std::size_t k = 0; k < good.size(); k += 7) {
    for (std::size_t cut = 0; cut < good[k].second.size(); ++cut) {
      auto bad = good;
      bad[k].second.resize(cut);
      CHECK(refused(bad));
    }
    if (good[k].first != "meta") {
      for (std::size_t cut = 0; cut < good[k].first.size(); ++cut) {
        auto bad = good;
        bad[k].first.resize(cut);
        refused(bad);  // may collide with nothing and still be malformed; must not crash
      }
    }
  }
  // Known problems, each with its message.
  auto with = [&](auto change) {
    auto bad = good;
    change(bad);
    return bad;
  };
  auto message = [&](const std::vector<std::pair<std::string, std::string>>& bad) -> std::string {
    try {
      b.restore(bad);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  };
  CHECK(contains(message(with([](auto& v) { v.emplace_back("zzz", "x"); })), "not an aggregation state key"));
  CHECK(contains(message(with([](auto& v) { v.push_back(v.front()); })), "appears twice"));
  CHECK(contains(message(with([](auto& v) { v.back().second.push_back('x'); })), "unexpected bytes at the end"));
  CHECK(contains(message(with([](auto& v) { v.front().second[0] = 9; })), "format version 9"));
  CHECK(contains(message(with([](auto& v) { v.back().second[0] = 2; })), "format version 2"));
  CHECK(contains(message(with([](auto& v) {
                   v.erase(std::remove_if(v.begin(), v.end(), [](auto& e) { return e.first == "meta"; }), v.end());
                 })),
                 "no \"meta\" entry"));
  CHECK(contains(message(with([](auto& v) { v.front().first.push_back('\x09'); })), "more group values than group_by"));
  CHECK(contains(message(with([](auto& v) { v.front().first[9] = '\x09'; })), "unknown group value tag"));
  CHECK(contains(message(with([](auto& v) { v.front().first[5] ^= 1; })), "is not a window of this configuration"));

  // Random bytes and random damage: a throw or a state, never a crash (run under ASan/UBSan too).
  std::mt19937_64 rng(1234);
  for (int round = 0; round < 3000; ++round) {
    auto bad = good;
    const int kind = round % 3;
    auto& entry = bad[rng() % bad.size()];
    if (kind == 0) {
      entry.second.resize(rng() % 200);
      for (char& c : entry.second) c = static_cast<char>(rng());
    } else if (kind == 1) {
      for (int flips = 0; flips < 4 && !entry.second.empty(); ++flips) {
        entry.second[rng() % entry.second.size()] ^= static_cast<char>(1u << (rng() % 8));
      }
    } else {
      std::string key(1 + rng() % 40, '\0');
      for (char& c : key) c = static_cast<char>(rng());
      key[0] = rng() % 2 == 0 ? 'c' : key[0];
      bad.emplace_back(key, entry.second);
    }
    try {
      Aggregator c(spec);
      c.restore(bad);
      // Accepted (e.g. a changed double): it must still work.
      std::vector<Emitted> out;
      c.close_all(&out);
      for (auto& e : out) CHECK_NOTHROW(json::parse(e.json));
    } catch (const std::runtime_error&) {
    }
  }
}
