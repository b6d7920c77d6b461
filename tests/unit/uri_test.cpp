#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "config/loader.hpp"
#include "engine/agent_config.hpp"
#include "mqtt/broker_uri.hpp"
#include "net/uri.hpp"
#include "plugin/registry.hpp"

using namespace tank;

namespace {

constexpr net::Scheme kHttp[] = {{"http", 80, false}, {"https", 443, true}};

net::Uri parsed(std::string_view text, const net::UriRules& rules) {
  auto r = net::parse_uri(text, rules);
  if (const auto* e = std::get_if<net::UriError>(&r)) FAIL(e->message);
  return std::get<net::Uri>(r);
}

net::UriError refused(std::string_view text, const net::UriRules& rules) {
  auto r = net::parse_uri(text, rules);
  if (std::holds_alternative<net::Uri>(r)) FAIL("\"" << text << "\" was accepted");
  return std::get<net::UriError>(r);
}

// `tank check`'s diagnostics for a configuration, each "file:line:column: path: message".
std::vector<std::string> check(const std::string& text) {
  plugin::Registry plugins;
  plugin::register_builtin(plugins);
  config::LoadOptions options;
  options.environment = [](std::string_view) -> std::optional<std::string> { return std::nullopt; };
  auto r = config::load_text(text, "t.toml", engine::build_schema(plugins), options);
  std::vector<std::string> lines;
  for (const auto& d : r.diagnostics.sorted()) lines.push_back(d.to_string());
  return lines;
}

}  // namespace

TEST_CASE("uri: scheme, host, port, target and the scheme's default port", "[net][uri]") {
  auto u = parsed("https://example.com:8443/in/put?x=1#frag", {.schemes = kHttp});
  CHECK(u.scheme == "https");
  CHECK(u.tls);
  CHECK(u.host == "example.com");
  CHECK(u.port == "8443");
  CHECK(u.port_number == 8443);
  CHECK(u.target == "/in/put?x=1");  // a fragment is never sent
  CHECK_FALSE(u.has_userinfo);
  auto d = parsed("http://example.com", {.schemes = kHttp});
  CHECK_FALSE(d.tls);
  CHECK(d.port == "80");
  CHECK(d.target == "/");
  CHECK(parsed("http://example.com?q", {.schemes = kHttp}).target == "/?q");
  CHECK(parsed("http://www%2droot.example.com/", {.schemes = kHttp}).host == "www-root.example.com");
}

TEST_CASE("uri: an IPv6 literal loses its brackets, and one without its closing bracket is named", "[net][uri]") {
  auto u = parsed("https://[::1]:8443/x", {.schemes = kHttp});
  CHECK(u.host == "::1");
  CHECK(u.port == "8443");
  CHECK(parsed("http://[2001:db8::7]", {.schemes = kHttp}).host == "2001:db8::7");
  auto e = refused("http://alice:pw@[::1/in", {.schemes = kHttp, .userinfo = true});
  CHECK(e.problem == net::UriProblem::unclosed_ipv6);
  CHECK(e.message == "\"http://***@[::1/in\": an IPv6 address needs its closing ']'");
  CHECK(refused("http://[v1.x]/", {.schemes = kHttp}).problem == net::UriProblem::host);
}

TEST_CASE("uri: the user and password are percent-decoded", "[net][uri]") {
  auto u = parsed("http://al%20ice:p%40ss%3Aword@proxy.local:3128", {.schemes = kHttp, .userinfo = true});
  CHECK(u.has_userinfo);
  CHECK(u.user == "al ice");
  CHECK(u.password == "p@ss:word");
  CHECK(u.host == "proxy.local");
  auto e = refused("http://alice:pw@proxy.local", {.schemes = kHttp});
  CHECK(e.problem == net::UriProblem::userinfo);
  CHECK(e.message.find("pw") == std::string::npos);
}

TEST_CASE("uri: a bad port is an error however long it is, never an exception", "[net][uri]") {
  for (const char* text : {"http://h:0", "http://h:65536", "http://h:99999", "http://h:12345678901234567890",
                           "http://h:184467440737095516160000", "http://h:", "http://h:12a", "http://[::1]:x",
                           "http://alice:pw@proxy.local:31x8"}) {
    INFO(text);
    auto e = refused(text, {.schemes = kHttp, .userinfo = true});
    CHECK(e.problem == net::UriProblem::port);
    CHECK(e.message.find("has no valid port") != std::string::npos);
    CHECK(e.message.find("pw") == std::string::npos);
  }
  CHECK(parsed("http://h:65535", {.schemes = kHttp}).port_number == 65535);
  CHECK(parsed("http://h:0", {.schemes = kHttp, .port_zero = true}).port_number == 0);
}

TEST_CASE("uri: a missing host, an unknown scheme, a path where none belongs", "[net][uri]") {
  for (const char* text : {"http://", "http://:80/", "http:///x"}) {
    INFO(text);
    CHECK(refused(text, {.schemes = kHttp}).problem == net::UriProblem::host);
  }
  for (const char* text : {"ftp://x", "HTTP://x", "http:/x", "x", "", "proxy.local:3128"}) {
    INFO(text);
    CHECK(refused(text, {.schemes = kHttp}).problem == net::UriProblem::scheme);
  }
  CHECK(refused("http://h/a", {.schemes = kHttp, .path = false}).problem == net::UriProblem::path);
  CHECK(refused("http://h?a", {.schemes = kHttp, .path = false}).problem == net::UriProblem::path);
  CHECK(parsed("http://h/", {.schemes = kHttp, .path = false}).host == "h");
  CHECK(refused("http://ho st/", {.schemes = kHttp}).problem == net::UriProblem::syntax);
  CHECK(refused("http://[::1]x", {.schemes = kHttp}).problem == net::UriProblem::syntax);
}

TEST_CASE("uri: broker URIs (inputs.mqtt, outputs.mqtt)", "[net][uri][mqtt]") {
  std::string error;
  auto a = input::parse_broker_uri("mqtts://[::1]", error);
  REQUIRE(a);
  CHECK(a->tls);
  CHECK(a->host == "::1");
  CHECK(a->port == "8883");
  auto b = input::parse_broker_uri("tcp://broker.local:1884/", error);
  REQUIRE(b);
  CHECK_FALSE(b->tls);
  CHECK(b->port == "1884");
  CHECK_FALSE(input::parse_broker_uri("http://x", error));
  CHECK(error == "\"http://x\" is not a broker URI: write tcp://host:1883 or ssl://host:8883 (also mqtt://, mqtts://)");
  CHECK_FALSE(input::parse_broker_uri("ssl://alice:pw@broker.local:0", error));
  CHECK(error == "\"ssl://***@broker.local:0\": credentials in a broker URI are not sent; give them as username and "
                 "password (or password_file)");
  CHECK_FALSE(input::parse_broker_uri("tcp://alice:pw@broker.local:18x3", error));
  CHECK(error.find("credentials in a broker URI") != std::string::npos);
  CHECK_FALSE(input::parse_broker_uri("tcp://:1883", error));
  CHECK(error == "\"tcp://:1883\" names no host");
  CHECK_FALSE(input::parse_broker_uri("tcp://h/topic", error));
  CHECK(error == "\"tcp://h/topic\": unexpected text after the address");
  CHECK_FALSE(input::parse_broker_uri("tcp://[::1", error));
  CHECK(error == "\"tcp://[::1\": an IPv6 address needs its closing ']'");
}

TEST_CASE("uri: tank check reports a bad URI at its file:line:column, for each option that holds one",
          "[net][uri][config]") {
  const auto lines = check(
      "[[inputs.tcp]]\nlisten = \"127.0.0.1:0\"\n\n"
      "[[inputs.mqtt]]\nservers = [\"tcp://h:12345678901234567890\"]\ntopics = [\"t\"]\n\n"
      "[[outputs.mqtt]]\nservers = [\"mqtt://h:65536\"]\ntopic = \"t\"\n\n"
      "[[outputs.http]]\nname = \"a\"\nurl = \"http://h:0/in\"\n\n"
      "[[outputs.http]]\nname = \"b\"\nurl = \"http://h/in\"\nproxy = \"http://u:p%40w@p:123456\"\n\n"
      "[[outputs.http]]\nname = \"c\"\nurl = \"gopher://h/\"\n");
  INFO(Catch::Detail::stringify(lines));
  REQUIRE(lines.size() == 5);
  CHECK(lines[0] == "t.toml:5:11: inputs.mqtt[0].servers: \"tcp://h:12345678901234567890\" has no valid port");
  CHECK(lines[1] == "t.toml:9:11: outputs.mqtt[0].servers[0]: \"mqtt://h:65536\" has no valid port");
  CHECK(lines[2] == "t.toml:14:7: outputs.http[0].url: \"http://h:0/in\" has no valid host and port");
  CHECK(lines[3] == "t.toml:19:9: outputs.http[1].proxy: \"http://***@p:123456\" has no valid host and port");
  CHECK(lines[4] == "t.toml:23:7: outputs.http[2].url: \"gopher://h/\" is not an http:// or https:// URL");
}
