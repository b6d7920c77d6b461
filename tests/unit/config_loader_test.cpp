#include <catch2/catch.hpp>

#include <algorithm>
#include <map>

#include "config/loader.hpp"
#include "support/helpers.hpp"

using namespace tank::config;
using namespace std::chrono_literals;

namespace {

constexpr std::string_view kColours[] = {"red", "green", "blue"};

const Option kCoreOptions[] = {
    {.name = "name", .type = Type::string, .default_value = "\"tank\"", .description = "A name."},
    {.name = "enabled", .type = Type::boolean, .default_value = "true", .description = "On or off."},
    {.name = "count", .type = Type::integer, .default_value = "3", .description = "How many.", .min = "1", .max = "10"},
    {.name = "ratio", .type = Type::number, .default_value = "0.5", .description = "A ratio.", .min = "0.1", .max = "1"},
    {.name = "limit", .type = Type::size, .default_value = "\"1MiB\"", .description = "A size.", .min = "1KiB"},
    {.name = "every", .type = Type::duration, .default_value = "\"1s\"", .description = "A period.", .min = "1ms",
     .max = "1h"},
    {.name = "tags", .type = Type::string_list, .default_value = "[]", .description = "Tags."},
    {.name = "colour", .type = Type::choice, .default_value = "\"red\"", .description = "A colour.",
     .choices = kColours},
    {.name = "password", .type = Type::string, .default_value = "", .description = "A secret.", .secret = true},
};

const Section kCore{.path = "core", .summary = "Core.", .options = kCoreOptions};

const Option kPluginOptions[] = {
    {.name = "url", .type = Type::string, .default_value = "", .description = "Where.", .required = true},
    {.name = "token", .type = Type::string, .default_value = "", .description = "Secret.", .required = true,
     .secret = true},
    {.name = "extra", .type = Type::property_table, .default_value = "{}", .description = "Pass-through."},
};
const Section kPlugin{.path = "inputs.probe", .summary = "A test plugin.", .options = kPluginOptions,
                      .repeated = true};

Schema schema() { return Schema{{&kCore, &kPlugin}, {}}; }

LoadOptions env(std::map<std::string, std::string> vars, std::filesystem::path base = "/nonexistent") {
  LoadOptions o;
  o.environment = [vars](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
  o.base_dir = base;
  return o;
}

std::vector<std::string> lines(const LoadResult& r) {
  std::vector<std::string> out;
  for (const auto& d : r.diagnostics.sorted()) out.push_back(d.to_string());
  return out;
}

bool has_line(const LoadResult& r, const std::string& needle) {
  auto all = lines(r);
  return std::any_of(all.begin(), all.end(), [&](const std::string& l) { return l.find(needle) != std::string::npos; });
}

}  // namespace

TEST_CASE("a file with no sections gets every default", "[config]") {
  auto r = load_text("", "t.toml", schema(), env({}));
  REQUIRE(r.document);
  const auto& core = r.document->section("core");
  CHECK(core.string("name") == "tank");
  CHECK(core.boolean("enabled"));
  CHECK(core.integer("count") == 3);
  CHECK(core.number("ratio") == 0.5);
  CHECK(core.size("limit") == 1ULL << 20);
  CHECK(core.duration("every") == 1s);
  CHECK(core.strings("tags").empty());
  CHECK(core.choice("colour") == "red");
  CHECK_FALSE(core.is_set("name"));
  CHECK_FALSE(core.has("password"));
  CHECK(r.document->instances("inputs.probe").empty());
}

TEST_CASE("values of every type are read and typed", "[config]") {
  auto r = load_text(R"(
[core]
name = "gw"
enabled = false
count = 7
ratio = 1
limit = "64MiB"
every = "200ms"
tags = ["a", "b"]
colour = "blue"
)",
                     "t.toml", schema(), env({}));
  REQUIRE(r.document);
  const auto& core = r.document->section("core");
  CHECK(core.string("name") == "gw");
  CHECK_FALSE(core.boolean("enabled"));
  CHECK(core.integer("count") == 7);
  CHECK(core.number("ratio") == 1.0);
  CHECK(core.size("limit") == 64ULL << 20);
  CHECK(core.duration("every") == 200ms);
  CHECK(core.strings("tags") == std::vector<std::string>{"a", "b"});
  CHECK(core.choice("colour") == "blue");
  CHECK(core.is_set("name"));
  CHECK(core.location_of("count").line == 5);
  CHECK(core.location_of("count").column == 9);
}

TEST_CASE("every problem is listed at once with file:line:column and key path", "[config]") {
  auto r = load_text(R"([core]
name = 5
enabled = "yes"
count = 11
ratio = "0.5"
limit = "64 megs"
every = 200
tags = ["a", 3]
colour = "gren"
colour_file = "x"
naem = "typo"

[qeueu]
)",
                     "cfg.toml", schema(), env({}));
  CHECK_FALSE(r.document);
  auto all = lines(r);
  CAPTURE(all);
  REQUIRE(r.diagnostics.error_count() == 11);
  CHECK(all[0] == "cfg.toml:2:8: core.name: expected a string, got 5");
  CHECK(all[1] == "cfg.toml:3:11: core.enabled: expected true or false, got \"yes\"");
  CHECK(all[2] == "cfg.toml:4:9: core.count: must be at most 10, got 11");
  CHECK(all[3] == "cfg.toml:5:9: core.ratio: expected a number, got \"0.5\" (write numbers without quotes)");
  CHECK(all[4].rfind("cfg.toml:6:9: core.limit: expected a size such as \"64MiB\"", 0) == 0);
  CHECK(all[5] == "cfg.toml:7:9: core.every: a duration needs a unit and quotes, such as \"200s\" or \"200ms\"; got 200");
  CHECK(all[6] == "cfg.toml:8:14: core.tags[1]: expected a string, got 3");
  CHECK(all[7] == "cfg.toml:9:10: core.colour: expected one of \"red\", \"green\" or \"blue\", got \"gren\" (did you "
                  "mean \"green\"?)");
  CHECK(all[8].rfind("cfg.toml:10:1: core.colour_file: unknown option in [core]", 0) == 0);
  CHECK(all[9] == "cfg.toml:11:1: core.naem: unknown option in [core]; did you mean \"name\"?");
  CHECK(all[10].rfind("cfg.toml:13:2: qeueu: unknown section; known sections: core", 0) == 0);
}

TEST_CASE("bounds are checked in the option's own units", "[config]") {
  auto r = load_text("[core]\nlimit = \"512B\"\nevery = \"2h\"\ncount = 0\nratio = 0.05\n", "b.toml", schema(), env({}));
  CHECK_FALSE(r.document);
  CHECK(has_line(r, "b.toml:2:9: core.limit: must be at least 1KiB, got 512B"));
  CHECK(has_line(r, "b.toml:3:9: core.every: must be at most 1h, got 2h"));
  CHECK(has_line(r, "b.toml:4:9: core.count: must be at least 1, got 0"));
  CHECK(has_line(r, "b.toml:5:9: core.ratio: must be at least 0.1, got 0.05"));
}

TEST_CASE("numbers must be finite", "[config]") {
  for (const char* bad : {"nan", "inf", "-inf"}) {
    auto r = load_text(std::string("[core]\nratio = ") + bad + "\n", "n.toml", schema(), env({}));
    INFO(bad);
    CHECK_FALSE(r.document);
    CHECK(has_line(r, "n.toml:2:9: core.ratio: expected a finite number"));
  }
  auto from_env = load_text("[core]\nratio = \"${R}\"\n", "n.toml", schema(), env({{"R", "nan"}}));
  CHECK_FALSE(from_env.document);
  CHECK(has_line(from_env, "core.ratio: expected a number, got \"nan\" after substitution"));
}

TEST_CASE("a TOML syntax error is reported with its position", "[config]") {
  auto r = load_text("[core]\nname = \"unterminated\n", "s.toml", schema(), env({}));
  CHECK_FALSE(r.document);
  REQUIRE(r.diagnostics.error_count() == 1);
  auto line = lines(r)[0];
  CHECK(line.rfind("s.toml:2:", 0) == 0);
  CHECK(line.find("TOML syntax error") != std::string::npos);
  auto dup = load_text("[core]\nname = \"a\"\nname = \"b\"\n", "d.toml", schema(), env({}));
  CHECK_FALSE(dup.document);
  CHECK(lines(dup)[0].rfind("d.toml:3:", 0) == 0);
}

TEST_CASE("environment variables are substituted in strings", "[config][env]") {
  auto lookup = env({{"NAME", "gw-7"}, {"EMPTY", ""}, {"COUNT", "4"}, {"ON", "false"}, {"SIZE", "2MiB"}}).environment;
  CHECK(*substitute_environment("id-${NAME}", lookup).value == "id-gw-7");
  CHECK(*substitute_environment("${UNSET:-fallback}", lookup).value == "fallback");
  CHECK(*substitute_environment("${EMPTY:-fallback}", lookup).value == "fallback");
  CHECK(*substitute_environment("${NAME:-fallback}", lookup).value == "gw-7");
  CHECK(*substitute_environment("${UNSET:-}", lookup).value == "");
  CHECK(*substitute_environment("$${NAME} costs $5", lookup).value == "${NAME} costs $5");
  CHECK(substitute_environment("${UNSET}", lookup).error ==
        "environment variable UNSET is not set (write ${UNSET:-default} to give a default)");
  CHECK(substitute_environment("${1BAD}", lookup).error.find("not a valid variable reference") != std::string::npos);
  CHECK(substitute_environment("${OPEN", lookup).error.find("unterminated") != std::string::npos);

  auto r = load_text(R"([core]
name = "${NAME}"
count = "${COUNT}"
enabled = "${ON}"
limit = "${SIZE}"
tags = ["${NAME}", "x"]
every = "${MISSING}"
ratio = "${NAME}"
)",
                     "e.toml", schema(), env({{"NAME", "gw-7"}, {"COUNT", "4"}, {"ON", "false"}, {"SIZE", "2MiB"}}));
  CHECK(r.diagnostics.error_count() == 2);
  CHECK(has_line(r, "e.toml:7:9: core.every: environment variable MISSING is not set"));
  CHECK(has_line(r, "e.toml:8:9: core.ratio: expected a number, got \"gw-7\" after substitution"));
  auto ok = load_text("[core]\nname = \"${NAME}\"\ncount = \"${COUNT}\"\nenabled = \"${ON}\"\nlimit = \"${SIZE}\"\n"
                      "tags = [\"${NAME}\"]\n",
                      "e.toml", schema(), env({{"NAME", "gw-7"}, {"COUNT", "4"}, {"ON", "false"}, {"SIZE", "2MiB"}}));
  REQUIRE(ok.document);
  const auto& core = ok.document->section("core");
  CHECK(core.string("name") == "gw-7");
  CHECK(core.integer("count") == 4);
  CHECK_FALSE(core.boolean("enabled"));
  CHECK(core.size("limit") == 2ULL << 20);
  CHECK(core.strings("tags") == std::vector<std::string>{"gw-7"});
}

TEST_CASE("secrets can come from *_file options", "[config][secrets]") {
  tank::test::TempDir dir;
  tank::test::write_file(dir / "pw", "s3cret\n");
  tank::test::write_file(dir / "pw-crlf", "s3cret\r\n");
  tank::test::write_file(dir / "empty", "");
  auto r = load_text("[core]\npassword_file = \"pw\"\n", "s.toml", schema(), env({}, dir.path()));
  REQUIRE(r.document);
  CHECK(r.document->section("core").string("password") == "s3cret");
  auto crlf = load_text("[core]\npassword_file = \"" + (dir / "pw-crlf").string() + "\"\n", "s.toml", schema(), env({}));
  REQUIRE(crlf.document);
  CHECK(crlf.document->section("core").string("password") == "s3cret");

  auto both = load_text("[core]\npassword = \"x\"\npassword_file = \"pw\"\n", "s.toml", schema(), env({}, dir.path()));
  CHECK_FALSE(both.document);
  CHECK(has_line(both, "core.password_file: give either password or password_file, not both"));
  auto missing = load_text("[core]\npassword_file = \"nope\"\n", "s.toml", schema(), env({}, dir.path()));
  CHECK_FALSE(missing.document);
  CHECK(has_line(missing, "s.toml:2:17: core.password_file: cannot read " + (dir / "nope").string() +
                              ": No such file or directory"));
  auto empty = load_text("[core]\npassword_file = \"empty\"\n", "s.toml", schema(), env({}, dir.path()));
  CHECK_FALSE(empty.document);
  CHECK(has_line(empty, "is empty"));
  tank::test::write_file(dir / "huge", std::string(70000, 'x'));
  auto huge = load_text("[core]\npassword_file = \"huge\"\n", "s.toml", schema(), env({}, dir.path()));
  CHECK_FALSE(huge.document);
  CHECK(has_line(huge, "has 70000 bytes; a secret file may have at most 65536"));
}

TEST_CASE("a secret option's value is never shown in a diagnostic", "[config][secrets]") {
  auto r = load_text("[core]\npassword = 987654321\n[[inputs.probe]]\nurl = \"x\"\ntoken = \"S3cr3t${OPEN\"\n"
                     "[[inputs.probe]]\nurl = \"x\"\ntoken = \"S3cr3t${not valid}\"\n"
                     "[[inputs.probe]]\nurl = \"x\"\ntoken = \"${UNSET_TOKEN}\"\n"
                     "[[inputs.probe]]\nurl = \"x\"\ntoken = true\n",
                     "s.toml", schema(), env({}));
  CHECK(r.diagnostics.error_count() == 5);
  for (const std::string& line : lines(r)) {
    INFO(line);
    CHECK(line.find("987654321") == std::string::npos);
    CHECK(line.find("S3cr3t") == std::string::npos);
    CHECK(line.find("not valid") == std::string::npos);
  }
  CHECK(has_line(r, "s.toml:2:12: core.password: expected a string, got an integer (not shown: the option is secret)"));
  CHECK(has_line(r, "s.toml:5:9: inputs.probe[0].token: unterminated \"${\" in the secret value (write \"$${\" for a "
                    "literal \"${\")"));
  CHECK(has_line(r, "inputs.probe[1].token: a \"${...}\" in the secret value is not a valid variable reference"));
  // A reference is configuration, not the secret: the variable is named.
  CHECK(has_line(r, "inputs.probe[2].token: environment variable UNSET_TOKEN is not set"));
  CHECK(has_line(r, "inputs.probe[3].token: expected a string, got true or false (not shown: the option is secret)"));
  // Other options still show what they got.
  auto plain = load_text("[core]\nname = 987654321\ntags = [\"${OPEN\"]\n", "p.toml", schema(), env({}));
  CHECK(has_line(plain, "core.name: expected a string, got 987654321"));
  CHECK(has_line(plain, "core.tags[0]: unterminated \"${\" in \"${OPEN\""));
  auto lookup = env({}).environment;
  CHECK(substitute_environment("pw${OPEN", lookup, true).error.find("pw") == std::string::npos);
  CHECK(substitute_environment("pw${a b}", lookup, true).error.find("a b") == std::string::npos);
}

TEST_CASE("plugins are arrays of tables with required options", "[config][plugins]") {
  tank::test::TempDir dir;
  tank::test::write_file(dir / "token", "abc\n");
  auto r = load_text(R"(
[[inputs.probe]]
url = "a"
token = "t"

[[inputs.probe]]
url = "b"
token_file = "token"
)",
                     "p.toml", schema(), env({}, dir.path()));
  REQUIRE(r.document);
  const auto& probes = r.document->instances("inputs.probe");
  REQUIRE(probes.size() == 2);
  CHECK(probes[0].string("url") == "a");
  CHECK(probes[1].string("token") == "abc");
  CHECK(probes[1].path() == "inputs.probe[1]");

  auto bad = load_text(R"(
[[inputs.probe]]
url = "a"

[[inputs.prob]]
url = "b"

[inputs.probe2]
x = 1

[[outputs.http]]
url = "c"
)",
                       "p.toml", schema(), env({}));
  CHECK_FALSE(bad.document);
  auto all = lines(bad);
  CAPTURE(all);
  CHECK(has_line(bad, "p.toml:2:1: inputs.probe[0].token: required option is missing (or token_file): Secret."));
  CHECK(has_line(bad, "p.toml:5:10: inputs.prob: unknown input plugin \"prob\"; did you mean \"probe\"?; this build "
                      "has: probe"));
  CHECK(has_line(bad, "inputs.probe2: unknown input plugin \"probe2\""));
  CHECK(has_line(bad, "outputs.http: unknown output plugin \"http\"; this build has no output plugins"));

  auto single = load_text("[inputs.probe]\nurl = \"a\"\ntoken = \"t\"\n", "p.toml", schema(), env({}));
  CHECK_FALSE(single.document);
  CHECK(has_line(single, "inputs.probe: write [[inputs.probe]] (double brackets)"));
}

TEST_CASE("a property table takes a sub-table, dotted keys and scalars, in file order", "[config][plugins]") {
  auto r = load_text(R"(
[[inputs.probe]]
url = "a"
token = "t"
[inputs.probe.extra]
linger.ms = 20
"batch.size" = "${SIZE}"
socket.keepalive.enable = true
ratio = 0.25

[[inputs.probe]]
url = "b"
token = "t"
extra = { "x.y" = "z" }

[[inputs.probe]]
url = "c"
token = "t"
)",
                     "p.toml", schema(), env({{"SIZE", "1000"}}));
  REQUIRE(r.document);
  const auto& probes = r.document->instances("inputs.probe");
  REQUIRE(probes.size() == 3);
  const PropertyTable expected{
      {"linger.ms", "20"}, {"batch.size", "1000"}, {"socket.keepalive.enable", "true"}, {"ratio", "0.25"}};
  CHECK(probes[0].property_table("extra") == expected);
  CHECK(probes[1].property_table("extra") == PropertyTable{{"x.y", "z"}});
  CHECK(probes[2].property_table("extra").empty());

  auto bad = load_text("[[inputs.probe]]\nurl = \"a\"\ntoken = \"t\"\nextra = [\"a=b\"]\n"
                       "[[inputs.probe]]\nurl = \"a\"\ntoken = \"t\"\n[inputs.probe.extra]\nlist = [1]\n"
                       "when = 1979-05-27\n",
                       "p.toml", schema(), env({}));
  CHECK_FALSE(bad.document);
  CAPTURE(lines(bad));
  CHECK(has_line(bad, "p.toml:4:9: inputs.probe[0].extra: expected a table such as { \"linger.ms\" = 20 }"));
  CHECK(has_line(bad, "p.toml:9:8: inputs.probe[1].extra.list: expected a string, number or boolean, got"));
  CHECK(has_line(bad, "p.toml:10:8: inputs.probe[1].extra.when: expected a string, number or boolean, got"));
}

TEST_CASE("a missing file is one clear error", "[config]") {
  auto r = load_file("/nonexistent/tank.toml", schema(), env({}));
  CHECK_FALSE(r.document);
  REQUIRE(r.diagnostics.error_count() == 1);
  CHECK(lines(r)[0] == "/nonexistent/tank.toml: cannot read /nonexistent/tank.toml: No such file or directory");
}

TEST_CASE("every declared default and bound parses under its own type", "[config]") {
  // A broken declaration would otherwise only show when an option is left unset.
  for (const Section* s : schema().sections) {
    for (const Option& o : s->options) {
      INFO(s->path << "." << o.name);
      CHECK((o.type != Type::choice || !o.choices.empty()));
    }
  }
  CHECK(load_text("", "x", schema(), env({})).document.has_value());
}
