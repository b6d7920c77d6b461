// Routes (decoding by format, record checks), route filters over record flags, dead letters
// with attributes, list_table options, and dead-letter replay/purge on a real queue.

#include <catch2/catch.hpp>

#include <random>

#include "common/strings.hpp"
#include "config/loader.hpp"
#include "engine/agent_config.hpp"
#include "engine/dead_letter_ops.hpp"
#include "engine/routes.hpp"
#include "plugin/registry.hpp"
#include "input/batch.hpp"
#include "process/route.hpp"
#include "queue/dead_letter.hpp"
#include "queue/queue.hpp"
#include "support/helpers.hpp"
#include "support/queue_helpers.hpp"

using namespace tank;
using namespace tank::test;

namespace {

// A check that refuses payloads containing "bad".
class NoBad final : public plugin::RecordCheck {
 public:
  bool needs_document() const override { return false; }
  class S final : public Session {
   public:
    bool check(std::string_view payload, const boost::json::value*, plugin::Rejection& r) override {
      if (payload.find("bad") == std::string_view::npos) return true;
      r.reason = "bad_word";
      r.detail = "contains \"bad\"";
      return false;
    }
  };
  std::unique_ptr<Session> session() const override { return std::make_unique<S>(); }
};

std::shared_ptr<const process::Route> route_with(process::Format format, metrics::Registry& registry,
                                                 bool with_check = false) {
  std::vector<process::Route::Check> checks;
  if (with_check) {
    checks.push_back({"nobad", std::make_shared<NoBad>(), std::make_shared<process::ProcessorMetrics>(registry, "nobad", "test")});
  }
  return std::make_shared<process::Route>("in", format, std::move(checks));
}

}  // namespace

TEST_CASE("route: json format dead-letters what is not one JSON value, with the parser's message and offset",
          "[unit][route]") {
  metrics::Registry registry;
  auto route = route_with(process::Format::json, registry);
  auto session = route->session();
  plugin::Rejection r;
  CHECK(session->admit(R"({"a":1})", r));
  CHECK(session->admit(" [1,2] ", r));
  CHECK(session->admit("42", r));
  CHECK_FALSE(session->admit(R"({"a":})", r));
  CHECK(r.reason == "decode_error");
  CHECK(r.detail.find("at byte 5") != std::string::npos);
  CHECK_FALSE(session->admit(R"({"a":1} x)", r));
  CHECK(r.detail.find("at byte 8") != std::string::npos);
  CHECK_FALSE(session->admit("", r));
  CHECK(r.reason == "decode_error");
  // Known JSON (inputs.http parsed it) is not parsed again when no check needs it.
  CHECK(session->admit("not parsed", r, /*known_json=*/true));
}

TEST_CASE("route: text format needs UTF-8, raw takes anything", "[unit][route]") {
  metrics::Registry registry;
  auto text_route = route_with(process::Format::text, registry);
  auto raw_route = route_with(process::Format::raw, registry);
  auto text = text_route->session();
  auto raw = raw_route->session();
  plugin::Rejection r;
  CHECK(text->admit("plain text é ✓ 𝄞", r));
  CHECK_FALSE(text->admit(std::string("ab\xff", 3), r));
  CHECK(r.reason == "decode_error");
  CHECK(r.detail.find("0xff at byte 2") != std::string::npos);
  CHECK_FALSE(text->admit("\xc0\xaf", r));           // overlong
  CHECK_FALSE(text->admit("\xed\xa0\x80", r));       // a surrogate
  CHECK_FALSE(text->admit("\xf4\x90\x80\x80", r));   // past U+10FFFF
  CHECK_FALSE(text->admit("ok\xe2\x82", r));         // truncated
  CHECK(raw->admit(std::string("\x00\xff\xfe", 3), r));
  CHECK(strings::invalid_utf8_at("0123456789abcdef\x80") == 16u);
  CHECK_FALSE(strings::invalid_utf8_at("0123456789abcdef"));
}

TEST_CASE("route: random bytes never crash decoding and every refusal has a reason", "[unit][route][fuzz]") {
  metrics::Registry registry;
  auto json_route = route_with(process::Format::json, registry);
  auto text_route = route_with(process::Format::text, registry);
  auto json = json_route->session();
  auto text = text_route->session();
  std::mt19937 rng(4242);
  std::uniform_int_distribution<int> byte(0, 255), len(0, 200);
  const std::string seeds[] = {R"({"a":[1,2,{"b":null}],"c":"d\u00e9"})", "[true,false,1e308,-0.5]", "\"x\""};
  std::size_t admitted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string s;
    if (i % 2 == 0) {
      s.resize(static_cast<std::size_t>(len(rng)));
      for (char& c : s) c = static_cast<char>(byte(rng));
    } else {
      s = seeds[i % 3];
      const int edits = 1 + i % 4;
      for (int e = 0; e < edits && !s.empty(); ++e) s[static_cast<std::size_t>(byte(rng)) % s.size()] = static_cast<char>(byte(rng));
    }
    plugin::Rejection r;
    if (json->admit(s, r)) {
      ++admitted;
    } else {
      CHECK(r.reason == "decode_error");
      CHECK_FALSE(r.detail.empty());
    }
    plugin::Rejection t;
    if (!text->admit(s, t)) CHECK(t.reason == "decode_error");
  }
  CHECK(admitted > 0);
}

TEST_CASE("route: a check's refusal names the processor and is counted", "[unit][route]") {
  metrics::Registry registry;
  auto route = route_with(process::Format::raw, registry, true);
  input::PendingBatch batch("in", 1 << 20, route.get());
  const queue::Attribute attrs[] = {{"peer", "10.0.0.1:5"}};
  CHECK(batch.add("good", 1, attrs));
  CHECK_FALSE(batch.add("bad one", 2, attrs));
  CHECK(batch.records() == 1);
  REQUIRE(batch.dead_letters() == 1);
  const auto& d = batch.write_batch().dead_letters.front();
  CHECK(d.reason == "bad_word");
  CHECK(d.detail == "processor \"nobad\": contains \"bad\"");
  CHECK(d.original == "bad one");
  auto kept = queue::decode_attributes(d.attributes);
  REQUIRE(kept.size() == 1);
  CHECK(kept[0].key == "peer");
  CHECK(kept[0].value == "10.0.0.1:5");
  const std::string scraped = registry.serialize();
  CHECK(scraped.find(R"(tank_processor_records_in_total{processor="nobad",type="test"} 2)") != std::string::npos);
  CHECK(scraped.find(R"(tank_processor_dead_letters_total{processor="nobad",reason="bad_word",type="test"} 1)") !=
        std::string::npos);
}

TEST_CASE("route filter: raw, derived and derived-only inputs", "[unit][route][queue]") {
  queue::EncodedRecords b;
  b.add("plant", 1, "raw");
  b.add("plant", 2, "agg", {}, queue::kRecordDerived);
  b.add("logs", 3, "line");
  queue::RouteFilter raw{{"plant"}, queue::RouteFilter::Origin::raw, {}};
  queue::RouteFilter out{{}, queue::RouteFilter::Origin::any, {"plant"}};
  CHECK(raw.accepts(b.encoded(0)));
  CHECK_FALSE(raw.accepts(b.encoded(1)));
  CHECK_FALSE(raw.accepts(b.encoded(2)));
  CHECK_FALSE(out.accepts(b.encoded(0)));  // replaced by its aggregates
  CHECK(out.accepts(b.encoded(1)));
  CHECK(out.accepts(b.encoded(2)));
  auto decoded = queue::decode_record(2, b.encoded(1));
  REQUIRE(decoded);
  CHECK(decoded->derived());
}

TEST_CASE("route filter: an input's name matches only itself, whatever its length and wherever it differs",
          "[unit][route][queue]") {
  // The names are compared 8 bytes at a time, then byte by byte: every length around those steps,
  // a byte changed at each position, and each name's prefixes and extensions.
  for (std::size_t len = 1; len <= 25; ++len) {
    std::string name;
    for (std::size_t i = 0; i < len; ++i) name += static_cast<char>('a' + (i * 7 + len) % 26);
    std::vector<std::string> others = {name.substr(0, len - 1), name + "x"};
    for (std::size_t at = 0; at < len; ++at) {
      std::string changed = name;
      changed[at] = changed[at] == 'z' ? 'y' : static_cast<char>(changed[at] + 1);
      others.push_back(changed);
    }
    INFO("name " << name);
    queue::RouteFilter only{{name}};
    queue::RouteFilter staged{{"first-input", name}, queue::RouteFilter::Origin::any, {}, {0, 0}};
    queue::RouteFilter not_raw{{}, queue::RouteFilter::Origin::any, {name}};
    queue::EncodedRecords b;
    b.add(name, 1, "x");
    CHECK(only.accepts(b.encoded(0)));
    CHECK(staged.accepts(b.encoded(0)));
    CHECK_FALSE(not_raw.accepts(b.encoded(0)));
    for (std::size_t k = 0; k < others.size(); ++k) {
      INFO("other " << others[k]);
      b.add(others[k], 1, "x");
      CHECK_FALSE(only.accepts(b.encoded(k + 1)));
      CHECK_FALSE(staged.accepts(b.encoded(k + 1)));
      CHECK(not_raw.accepts(b.encoded(k + 1)));
    }
  }
}

TEST_CASE("dead letters: attributes round trip, and entries written by tank 0.1 (format 1) are still read",
          "[unit][dead-letter]") {
  queue::DeadLetter d = queue::DeadLetter::make("plant", "decode_error", "not JSON", "{x", 42);
  const queue::Attribute attrs[] = {{"topic", "a/b"}, {"qos", "1"}};
  d.attributes = queue::encode_attributes(attrs);
  auto back = queue::decode_dead_letter(7, queue::encode_dead_letter(d, "0.1.0"));
  REQUIRE(back);
  CHECK(back->letter.attributes == d.attributes);
  CHECK(back->letter.original == "{x");
  CHECK(back->version == "0.1.0");

  // Format 1: the same layout without the attributes length and block.
  std::string v1 = queue::encode_dead_letter(queue::DeadLetter::make("in", "r", "det", "orig", 5), "0.1.0");
  v1[0] = 1;
  v1.erase(32, 4);
  auto old = queue::decode_dead_letter(1, v1);
  REQUIRE(old);
  CHECK(old->letter.input == "in");
  CHECK(old->letter.detail == "det");
  CHECK(old->letter.original == "orig");
  CHECK(old->letter.attributes.empty());

  // Any truncation of a valid entry is refused, never read past its end.
  const std::string full = queue::encode_dead_letter(d, "0.1.0");
  for (std::size_t n = 0; n < full.size(); ++n) CHECK_FALSE(queue::decode_dead_letter(1, full.substr(0, n)));
}

TEST_CASE("config: a list_table option keeps the file's order and checks each string", "[unit][config]") {
  constexpr std::string_view kFns[] = {"min", "max", "mean"};
  static const config::Option kOptions[] = {
      {.name = "fields", .type = config::Type::list_table, .default_value = "", .description = "F.", .choices = kFns}};
  static const config::Section kSection{.path = "agg", .summary = "A.", .options = kOptions};
  config::Schema schema{{&kSection}, {}};
  auto ok = config::load_text("[agg]\nfields = { zeta = [\"min\"], alpha = [\"max\", \"mean\"] }\n", "t.toml", schema);
  REQUIRE(ok.document);
  const auto& table = ok.document->section("agg").list_table("fields");
  REQUIRE(table.size() == 2);
  CHECK(table[0].first == "zeta");
  CHECK(table[1].first == "alpha");
  CHECK(table[1].second == std::vector<std::string>{"max", "mean"});

  auto bad = config::load_text("[agg]\nfields = { t = [\"mena\", 3], u = \"min\" }\n", "b.toml", schema);
  CHECK_FALSE(bad.document);
  std::string all;
  for (const auto& d : bad.diagnostics.sorted()) all += d.to_string() + "\n";
  CHECK(all.find("agg.fields.t[0]: expected one of \"min\", \"max\" or \"mean\", got \"mena\" (did you mean \"mean\"?)") !=
        std::string::npos);
  CHECK(all.find("agg.fields.t[1]: expected a string") != std::string::npos);
  CHECK(all.find("agg.fields.u: expected a list of strings") != std::string::npos);
}

TEST_CASE("dead-letter replay and purge on a queue: one transaction per page, new failures not replayed twice",
          "[unit][dead-letter][replay]") {
  TempDir dir;
  ManualClock clock;
  auto q = queue::Queue::open(small_queue(dir / "q", 16 << 20), clock, nullptr);
  queue::WriteBatch w;
  for (int i = 0; i < 600; ++i) {
    w.dead_letters.push_back(queue::DeadLetter::make(i % 3 == 0 ? "gone" : "in", i % 2 == 0 ? "r_even" : "r_odd", "d",
                                                     i % 5 == 0 ? "bad " + std::to_string(i) : "ok " + std::to_string(i),
                                                     clock.wall_ns()));
  }
  REQUIRE(q->commit(w).ok());
  metrics::Registry registry;
  auto route = route_with(process::Format::raw, registry, true);
  auto lookup = [&](std::string_view input) -> std::shared_ptr<const process::Route> {
    return input == "in" ? route : nullptr;
  };

  engine::DeadLetterSelection all;
  auto outcome = engine::replay_dead_letters(*q, lookup, all, clock);
  CHECK(outcome.error.empty());
  // 400 entries of "in" (i % 3 != 0); of them, i % 5 == 0 fail again: 80.
  CHECK(outcome.replayed == 320);
  CHECK(outcome.failed_again == 80);
  CHECK(outcome.kept == 200);  // input "gone" is not configured
  REQUIRE(outcome.problems.size() == 1);
  CHECK(outcome.problems[0].find("input \"gone\" is not configured") != std::string::npos);
  CHECK(everything(*q).size() == 320);
  CHECK(q->dead_letter_stats().entries == 280);
  CHECK(q->dead_letters({0, 1000, "", "bad_word", 0}).size() == 80);

  engine::DeadLetterSelection by_ids;
  by_ids.ids = {1, 2, 999999};
  auto purged = engine::purge_dead_letters(*q, by_ids);
  CHECK(purged.purged == 1);  // id 1 ("gone") still there; id 2 was replayed
  CHECK(purged.missing == 2);

  engine::DeadLetterSelection gone;
  gone.filter.input = "gone";
  purged = engine::purge_dead_letters(*q, gone);
  CHECK(purged.purged == 199);
  CHECK(q->dead_letter_stats().entries == 80);
}

TEST_CASE("a replay into a full drop_newest queue keeps the dead letters it could not turn into records",
          "[unit][dead-letter][replay]") {
  TempDir dir;
  ManualClock clock;
  queue::Options o = small_queue(dir / "q", 1 << 20);
  o.overflow = queue::Overflow::drop_newest;
  auto q = queue::Queue::open(o, clock, nullptr);
  queue::WriteBatch letters;
  for (int i = 0; i < 5; ++i) {
    letters.dead_letters.push_back(queue::DeadLetter::make("in", "r", "d", "ok " + std::to_string(i), clock.wall_ns()));
  }
  letters.dead_letters.push_back(queue::DeadLetter::make("in", "r", "d", "bad again", clock.wall_ns()));
  REQUIRE(q->commit(letters).ok());
  // Fill the queue until it drops new records.
  for (int i = 0; i < 10000; ++i) {
    const auto r = q->append(batch_of(payloads(16, "fill", 4000), clock));
    if (r.status == queue::CommitStatus::dropped) break;
    REQUIRE(r.ok());
  }
  for (int i = 0; i < 100000; ++i) {  // then with small ones, to the last page
    const auto r = q->append(batch_of({"one more"}, clock));
    if (r.status == queue::CommitStatus::dropped) break;
    REQUIRE(r.ok());
  }
  REQUIRE(q->append(batch_of({"ok 9"}, clock)).status == queue::CommitStatus::dropped);
  const std::uint64_t stored = q->stats().records;

  metrics::Registry registry;
  auto route = route_with(process::Format::raw, registry, true);
  auto lookup = [&](std::string_view input) -> std::shared_ptr<const process::Route> {
    return input == "in" ? route : nullptr;
  };
  auto outcome = engine::replay_dead_letters(*q, lookup, engine::DeadLetterSelection{}, clock);
  CHECK(outcome.replayed == 0);
  CHECK(outcome.error.find("drop_newest") != std::string::npos);
  // Every entry is still there, once: none left the store without its record being stored.
  CHECK(q->dead_letter_stats().entries == 6);
  CHECK(q->dead_letters({0, 100, "", "bad_word", 0}).empty());
  CHECK(q->stats().records == stored);
}

TEST_CASE("route plan: the queue consumers are the stages and outputs that run", "[unit][route]") {
  plugin::Registry plugins;
  plugin::register_builtin(plugins);
  const config::Schema schema = engine::build_schema(plugins);
  auto plan_of = [&](const std::string& text) {
    auto r = config::load_text(text, "t.toml", schema);
    INFO((r.diagnostics.all().empty() ? std::string() : r.diagnostics.all().front().to_string()));
    REQUIRE(r.document);
    return engine::plan_routes(*r.document, plugins);
  };
  const std::string inputs = "[[inputs.tcp]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nformat = \"json\"\n\n"
                             "[[inputs.tcp]]\nname = \"b\"\nlisten = \"127.0.0.1:0\"\n\n";
  const std::string aggregate = "[[processors.aggregate]]\nname = \"agg\"\ninputs = [\"a\"]\nwindow = \"1m\"\n"
                                "time_field = \"ts\"\nfields = { v = [\"sum\"] }\n\n";
  // No outputs: a stand-in keeps what the stage derives.
  auto plan = plan_of(inputs + aggregate);
  CHECK(plan.consumers() == std::vector<std::string>{"processor/agg", "outputs/none"});
  // With an output: its cursor, no stand-in; it takes a's aggregates (not a's records) and b.
  plan = plan_of(inputs + aggregate + "[[outputs.file]]\nname = \"arch\"\ndirectory = \"/tmp/x\"\n");
  CHECK(plan.consumers() == std::vector<std::string>{"processor/agg", "output/arch"});
  REQUIRE(plan.outputs.size() == 1);
  CHECK(plan.outputs[0].inputs == std::vector<std::string>{"a", "b"});
  CHECK(plan.derived_only() == std::vector<std::string>{"a"});
  CHECK(plan.explain().find("output file \"arch\"") != std::string::npos);
  // Nothing is left without a reader: no inputs at all, no cursors.
  plan = plan_of("[[outputs.file]]\ndirectory = \"/tmp/x\"\n");
  CHECK(plan.consumers().empty());
}
