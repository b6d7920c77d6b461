// config/bind.hpp: options bound to the members of a Settings struct.
//
// What cannot be tested here, because it does not compile (on purpose): binding an option to a
// member of the wrong type, e.g. config::size("n", &Settings::name) with a std::string member, or
// config::duration("d", &Settings::count) with an int; a setter whose value parameter is not the
// option's type; a choice whose table of values is not as long as its choices.

#include <catch2/catch.hpp>

#include <chrono>

#include "config/bind.hpp"
#include "config/loader.hpp"

using namespace tank::config;
using namespace std::chrono_literals;

namespace {

enum class Colour { red, green, blue };
constexpr std::string_view kColours[] = {"red", "green", "blue"};

struct Tls {
  std::string ca_file;
  bool verify = true;
};

struct Settings {
  std::string name;
  std::filesystem::path dir;
  bool enabled = false;
  unsigned count = 0;
  double ratio = 0;
  std::size_t limit = 0;
  std::chrono::seconds every{0};
  std::vector<std::string> tags;
  Colour colour = Colour::red;
  std::string colour_name;
  unsigned mode = 0;
  std::string token = "unset";
  Tls tls;
};

const Options<Tls> kTlsOptions{
    string("tls_ca_file", &Tls::ca_file).default_value("").describe("CAs."),
    boolean("tls_verify", &Tls::verify).default_value(true).describe("Verify."),
};

const Options<Settings> kOptions{
    string("name", &Settings::name).default_value("tank").describe("A name."),
    string("dir", &Settings::dir).required().describe("Where."),
    boolean("enabled", &Settings::enabled).default_value(true).describe("On or off."),
    integer("count", &Settings::count).default_value(3).min("1").max("10").describe("How many."),
    number("ratio", &Settings::ratio).default_value("0.5").min("0.1").max("1").describe("A ratio."),
    size("limit", &Settings::limit).default_value("1MiB").min("1KiB").describe("A size."),
    duration("every", &Settings::every).default_value("1s").min("1ms").max("1h").describe("A period."),
    string_list("tags", &Settings::tags).default_value("[]").describe("Tags."),
    choice("colour", kColours, &Settings::colour, {Colour::red, Colour::green, Colour::blue})
        .default_value("red")
        .describe("A colour."),
    choice("colour_name", kColours, &Settings::colour_name).default_value("blue").describe("Its name."),
    string("mode", [](Settings& s, const std::string& text) { s.mode = static_cast<unsigned>(std::stoul(text, nullptr, 8)); })
        .default_value("0660")
        .describe("Octal."),
    string("token", &Settings::token).secret().describe("A secret."),
    integer("unbound").default_value(1).describe("Read by name elsewhere."),
    nested(&Settings::tls, kTlsOptions),
};

// The same table, written by hand.
const Option kHandWritten[] = {
    {.name = "name", .type = Type::string, .default_value = "\"tank\"", .description = "A name."},
    {.name = "dir", .type = Type::string, .default_value = "", .description = "Where.", .required = true},
    {.name = "enabled", .type = Type::boolean, .default_value = "true", .description = "On or off."},
    {.name = "count", .type = Type::integer, .default_value = "3", .description = "How many.", .min = "1", .max = "10"},
    {.name = "ratio", .type = Type::number, .default_value = "0.5", .description = "A ratio.", .min = "0.1", .max = "1"},
    {.name = "limit", .type = Type::size, .default_value = "\"1MiB\"", .description = "A size.", .min = "1KiB"},
    {.name = "every", .type = Type::duration, .default_value = "\"1s\"", .description = "A period.", .min = "1ms",
     .max = "1h"},
    {.name = "tags", .type = Type::string_list, .default_value = "[]", .description = "Tags."},
    {.name = "colour", .type = Type::choice, .default_value = "\"red\"", .description = "A colour.",
     .choices = kColours},
    {.name = "colour_name", .type = Type::choice, .default_value = "\"blue\"", .description = "Its name.",
     .choices = kColours},
    {.name = "mode", .type = Type::string, .default_value = "\"0660\"", .description = "Octal."},
    {.name = "token", .type = Type::string, .default_value = "", .description = "A secret.", .secret = true},
    {.name = "unbound", .type = Type::integer, .default_value = "1", .description = "Read by name elsewhere."},
    {.name = "tls_ca_file", .type = Type::string, .default_value = "\"\"", .description = "CAs."},
    {.name = "tls_verify", .type = Type::boolean, .default_value = "true", .description = "Verify."},
};

const Section kSection{.path = "inputs.probe", .summary = "A probe.", .options = kOptions.all(), .repeated = true};

Schema schema() { return Schema{{&kSection}, {}}; }

bool same(const Option& a, const Option& b) {
  return a.name == b.name && a.type == b.type && a.default_value == b.default_value &&
         a.description == b.description && a.min == b.min && a.max == b.max &&
         std::equal(a.choices.begin(), a.choices.end(), b.choices.begin(), b.choices.end()) &&
         a.required == b.required && a.secret == b.secret && a.default_note == b.default_note;
}

LoadResult load(std::string_view text) {
  LoadOptions o;
  o.environment = [](std::string_view) -> std::optional<std::string> { return std::nullopt; };
  o.base_dir = "/nonexistent";
  return load_text(text, "t.toml", schema(), o);
}

}  // namespace

TEST_CASE("a bound table declares the options a hand-written table does", "[config][bind]") {
  const auto all = kOptions.all();
  REQUIRE(all.size() == std::size(kHandWritten));
  for (std::size_t i = 0; i < all.size(); ++i) {
    INFO(all[i].name);
    CHECK(same(all[i], kHandWritten[i]));
  }
}

TEST_CASE("defaults are read into the members", "[config][bind]") {
  auto r = load("[[inputs.probe]]\ndir = \"/d\"\n");
  REQUIRE(r.document);
  const Settings s = kOptions.read(r.document->instances("inputs.probe").at(0));
  CHECK(s.name == "tank");
  CHECK(s.dir == "/d");
  CHECK(s.enabled);
  CHECK(s.count == 3);
  CHECK(s.ratio == 0.5);
  CHECK(s.limit == 1u << 20);
  CHECK(s.every == 1s);
  CHECK(s.tags.empty());
  CHECK(s.colour == Colour::red);
  CHECK(s.colour_name == "blue");
  CHECK(s.mode == 0660);
  CHECK(s.token == "unset");  // no default, not set: the member keeps its own value
  CHECK(s.tls.verify);
}

TEST_CASE("values from the file are read into the members, converted", "[config][bind]") {
  auto r = load(R"([[inputs.probe]]
name = "gw"
dir = "/var/x"
enabled = false
count = 7
ratio = 1
limit = "64KiB"
every = "1500ms"
tags = ["a", "b"]
colour = "blue"
colour_name = "green"
mode = "0600"
token = "t0k"
tls_ca_file = "/ca.pem"
tls_verify = false
)");
  REQUIRE(r.document);
  Settings s = kOptions.read(r.document->instances("inputs.probe").at(0));
  CHECK(s.name == "gw");
  CHECK(s.dir == "/var/x");
  CHECK_FALSE(s.enabled);
  CHECK(s.count == 7u);
  CHECK(s.ratio == 1.0);
  CHECK(s.limit == 64u * 1024);
  CHECK(s.every == 1s);  // duration_cast truncates, as the hand-written reads did
  CHECK(s.tags == std::vector<std::string>{"a", "b"});
  CHECK(s.colour == Colour::blue);
  CHECK(s.colour_name == "green");
  CHECK(s.mode == 0600);
  CHECK(s.token == "t0k");
  CHECK(s.tls.ca_file == "/ca.pem");
  CHECK_FALSE(s.tls.verify);
}

TEST_CASE("a default of the wrong kind is a bug found when the table is built", "[config][bind]") {
  CHECK_THROWS_AS(size("n").default_value(3), std::logic_error);
  CHECK_THROWS_AS(integer("n").default_value(true), std::logic_error);
  CHECK(string("s").default_value("a \"b\" \\").option().default_value == R"("a \"b\" \\")");
}
