// Secrets stay out of everything tank prints: a value planted in every secret option and in the
// userinfo of every URL (options and the proxy environment variables), wrong in many ways, is
// never in the output of the real binary's `tank check` and `tank run`.

#include <catch2/catch.hpp>

#include "support/input_helpers.hpp"
#include "support/tank_process.hpp"

using namespace tank::test;

namespace {

const std::string kSecret = "S3cr3tPw-planted";

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Fails the test when `output` shows the planted secret, with the lines that do.
void check_secret_absent(const std::string& what, const std::string& output) {
  INFO(what << ":\n" << output);
  CHECK_FALSE(contains(output, kSecret));
}

// A configuration with the agent logging everything (debug) and `extra` appended.
std::filesystem::path debug_config(const TempDir& dir, const std::string& extra) {
  const auto path = dir / "tank.toml";
  write_file(path, "[agent]\nid = \"secret-test\"\ndata_dir = \"" + (dir / "data").string() +
                       "\"\nlog_level = \"debug\"\nlog_format = \"text\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n" +
                       extra);
  return path;
}

// The proxy variables as tank reads them (lower case first): all four set, so the machine's own
// do not count.
std::map<std::string, std::string> proxy_environment(const std::string& https, const std::string& http) {
  return {{"HTTPS_PROXY", https}, {"https_proxy", https}, {"HTTP_PROXY", http},
          {"http_proxy", http},   {"NO_PROXY", ""},       {"no_proxy", ""}};
}

}  // namespace

TEST_CASE("tank check never shows a secret option's value nor a URL's credentials", "[cli][check][secrets]") {
  TempDir dir;
  const std::string& s = kSecret;
  // Each section fails in one way; an option's own error (substitution) keeps its section's
  // cross-option check from running, so the URLs that check reads are in other sections.
  const auto config = debug_config(
      dir,
      // Substitution errors in secret values: unterminated, invalid reference, both.
      "[[inputs.http]]\nname = \"h0\"\nlisten = \"127.0.0.1:0\"\nauth_token = \"" + s + "${UNTERMINATED\"\n\n"
      "[[inputs.mqtt]]\nname = \"m0\"\nservers = [\"tcp://127.0.0.1:1883\"]\ntopics = [\"a/#\"]\n"
      "password = \"x${" + s + "}\"\ntls_key_password = \"" + s + "${\"\n\n"
      // Broker URIs with credentials: with a bad port, and otherwise valid.
      "[[inputs.mqtt]]\nname = \"m1\"\nservers = [\"tcp://alice:" + s + "@broker.local:18x3\"]\ntopics = [\"a/#\"]\n"
      "password = \"" + s + "\"\n\n"
      "[[inputs.mqtt]]\nname = \"m2\"\nservers = [\"mqtt://" + s + "@broker.local\"]\ntopics = [\"a/#\"]\n\n"
      "[[outputs.mqtt]]\nname = \"q0\"\nservers = [\"tcp://127.0.0.1:1883\"]\npassword = \"" + s + "${\"\n"
      "tls_key_password = \"${" + s + "}\"\n\n"
      "[[outputs.mqtt]]\nname = \"q1\"\nservers = [\"ssl://alice:" + s + "@broker.local:0\"]\npassword = \"" + s +
      "\"\ntls_key_password = \"" + s + "\"\n\n"
      // outputs.http: a URL with a bad scheme, one without its ']', one with credentials; proxies
      // with a bad port and a bad scheme; a token that does not substitute.
      "[[outputs.http]]\nname = \"o0\"\nurl = \"ftp://alice:" + s + "@example.com/in\"\ntoken = \"" + s + "\"\n\n"
      "[[outputs.http]]\nname = \"o1\"\nurl = \"http://alice:" + s + "@[::1/in\"\n\n"
      "[[outputs.http]]\nname = \"o2\"\nurl = \"http://alice:" + s + "@example.com/in\"\n\n"
      "[[outputs.http]]\nname = \"o3\"\nurl = \"http://example.com/in\"\nproxy = \"http://alice:" + s +
      "@proxy.local:31x8\"\ntls_key_password = \"" + s + "\"\n\n"
      "[[outputs.http]]\nname = \"o4\"\nurl = \"http://example.com/in\"\nproxy = \"socks5://alice:" + s +
      "@proxy.local:1080\"\n\n"
      "[[outputs.http]]\nname = \"o5\"\nurl = \"https://example.com/in\"\ntoken = \"${" + s + "}\"\n\n"
      // A header that carries a credential, without its colon.
      "[[outputs.http]]\nname = \"o6\"\nurl = \"https://example.com/in\"\nheaders = [\"Authorization Bearer " + s +
      "\"]\n\n");
  auto r = run({tank_binary(), "check", "-c", config.string()});
  CHECK(r.exit_code == 2);
  check_secret_absent("tank check's stdout", r.out);
  check_secret_absent("tank check's stderr", r.err);
  // Every planted value was refused, each with a message that still says what is wrong.
  INFO(r.err);
  CHECK(contains(r.err, "inputs.http[0].auth_token: unterminated \"${\" in the secret value"));
  CHECK(contains(r.err, "inputs.mqtt[0].password: a \"${...}\" in the secret value is not a valid variable reference"));
  CHECK(contains(r.err, "inputs.mqtt[0].tls_key_password: unterminated \"${\" in the secret value"));
  CHECK(contains(r.err, "inputs.mqtt[1].servers: \"tcp://***@broker.local:18x3\": credentials in a broker URI"));
  CHECK(contains(r.err, "inputs.mqtt[2].servers: \"mqtt://***@broker.local\": credentials in a broker URI"));
  CHECK(contains(r.err, "outputs.mqtt[0].password: unterminated"));
  CHECK(contains(r.err, "outputs.mqtt[0].tls_key_password: a \"${...}\" in the secret value"));
  CHECK(contains(r.err, "outputs.mqtt[1].servers[0]: \"ssl://***@broker.local:0\": credentials in a broker URI"));
  CHECK(contains(r.err, "outputs.http[0].url: \"ftp://***@example.com/in\" is not an http:// or https:// URL"));
  CHECK(contains(r.err, "outputs.http[1].url: \"http://***@[::1/in\": an IPv6 address needs its closing ']'"));
  CHECK(contains(r.err, "outputs.http[2].url: credentials in the URL are not sent"));
  CHECK(contains(r.err, "outputs.http[3].proxy: \"http://***@proxy.local:31x8\" has no valid host and port"));
  CHECK(contains(r.err, "outputs.http[4].proxy: \"socks5://***@proxy.local:1080\" is not an http:// proxy URL"));
  CHECK(contains(r.err, "outputs.http[5].token: a \"${...}\" in the secret value"));
  CHECK(contains(r.err, "outputs.http[6].headers[0]: the header starting \"Authorization\" (37 bytes) is not \"Name: value\""));
  CHECK(contains(r.err, ": 15 errors; nothing was started"));
}

TEST_CASE("tank run never shows a proxy variable's credentials when the variable is refused",
          "[integration][secrets]") {
  // HTTPS_PROXY for https:// URLs (a bad port), HTTP_PROXY for http:// ones (no scheme, bad port).
  for (const auto& [url, https_proxy, http_proxy, variable] : std::vector<std::tuple<std::string, std::string, std::string,
                                                                                     std::string>>{
           {"https://127.0.0.1:9/in", "http://alice:" + kSecret + "@proxy.local:31x8", "", "HTTPS_PROXY"},
           {"http://127.0.0.1:9/in", "", "alice:" + kSecret + "@proxy.local:bad", "HTTP_PROXY"},
       }) {
    TempDir dir;
    const auto config = debug_config(dir, "[[inputs.http]]\nname = \"in\"\nlisten = \"127.0.0.1:0\"\n\n"
                                          "[[outputs.http]]\nname = \"up\"\nurl = \"" + url + "\"\n");
    INFO(variable);
    auto check = run({tank_binary(), "check", "-c", config.string()}, proxy_environment(https_proxy, http_proxy));
    CHECK(check.exit_code == 0);  // the environment is read at start
    auto r = run({tank_binary(), "run", "-c", config.string()}, proxy_environment(https_proxy, http_proxy));
    CHECK(r.exit_code == 1);
    CHECK(contains(r.err, "the environment's " + variable + " is not usable: \"http://***@proxy.local:"));
    check_secret_absent("tank run's stdout", r.out);
    check_secret_absent("tank run's stderr", r.err);
  }
}

TEST_CASE("tank run never logs a secret while its upstreams, proxy and brokers are unreachable",
          "[integration][secrets]") {
  TempDir dir;
  const std::string closed = "127.0.0.1:" + std::to_string(free_tcp_port());  // nothing listens there
  const std::string& s = kSecret;
  const auto config = debug_config(
      dir, "[[inputs.http]]\nname = \"in\"\nlisten = \"127.0.0.1:0\"\nauth_token = \"" + s + "\"\n\n"
           "[[inputs.mqtt]]\nname = \"plant\"\nservers = [\"tcp://" + closed + "\"]\ntopics = [\"a/#\"]\n"
           "username = \"alice\"\npassword = \"" + s + "\"\nconnect_timeout = \"1s\"\n\n"
           "[[outputs.http]]\nname = \"cloud\"\nurl = \"http://" + closed + "/in\"\nproxy = "
           "\"http://alice:" + s + "@" + closed + "\"\ntoken = \"" + s + "\"\nlinger = \"10ms\"\n\n"
           "[[outputs.mqtt]]\nname = \"broker\"\nservers = [\"tcp://" + closed + "\"]\n"
           "username = \"alice\"\npassword = \"" + s + "\"\nlinger = \"10ms\"\n");
  TankProcess tank(config);
  tank.wait_running(dir / "data");
  const std::string in = input_address(dir / "data", "in");
  auto refused = http_request(in, "POST", "/", "{\"a\":1}", {{"Authorization", "Bearer wrong"}});
  REQUIRE(refused);
  CHECK(refused->status == 401);
  auto accepted = http_request(in, "POST", "/", "{\"a\":1}", {{"Authorization", "Bearer " + s}});
  REQUIRE(accepted);
  CHECK(accepted->status == 200);
  // Each of them failed and said so.
  CHECK(wait_until([&] {
    const std::string err = tank.process().err();
    return contains(err, "connecting to the proxy " + closed) && contains(err, "input plant") &&
           contains(err, "output broker") && contains(err, "connecting to tcp://" + closed);
  }));
  CHECK(tank.stop() == 0);
  check_secret_absent("tank run's stdout", tank.process().out());
  check_secret_absent("tank run's stderr", tank.process().err());
}
