// outputs.http meets real peers: a TLS server whose certificates the test makes with openssl
// (verification failures reported and retried, mutual TLS), tinyproxy as a forward proxy (CONNECT
// for https, absolute-form for http, Basic credentials, HTTPS_PROXY / NO_PROXY), and nginx as a
// reverse proxy in front of the test receiver.

#include <catch2/catch.hpp>

#include <boost/json.hpp>
#include <fmt/format.h>

#include <map>
#include <set>
#include <sstream>

#include "queue/queue.hpp"
#include "support/http_upstream.hpp"
#include "support/input_helpers.hpp"
#include "support/mosquitto.hpp"
#include "support/proxies.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

// `count` records {"n": first..} as JSON lines in dir/in.ndjson, read by the input "src".
std::string file_input(const TempDir& dir, int first, int count) {
  std::string text;
  for (int i = first; i < first + count; ++i) text += fmt::format(R"({{"n":{}}})", i) + "\n";
  write_file(dir / "in.ndjson", text);
  return fmt::format(
      "[[inputs.file]]\nname = \"src\"\npaths = [\"{}\"]\nformat = \"json\"\nread_from = \"beginning\"\n"
      "poll_interval = \"50ms\"\n\n",
      (dir / "in.ndjson").string());
}

// What a [[outputs.http]] named "cloud" to `url` has in common in these tests, plus `extra`.
std::string http_output(const std::string& url, const std::string& extra) {
  return fmt::format(
      "[[outputs.http]]\nname = \"cloud\"\nurl = \"{}\"\nbatch_max_records = 500\nlinger = \"0s\"\n"
      "retry_initial = \"20ms\"\nretry_max = \"200ms\"\nbreaker_failures = 1000\n{}\n",
      url, extra);
}

// The numbers delivered with a 200.
std::set<int> delivered(const HttpUpstream& upstream) {
  std::set<int> seen;
  for (const auto& r : upstream.received()) {
    if (r.answered != 200) continue;
    std::istringstream in(r.body);
    for (std::string line; std::getline(in, line);) seen.insert(static_cast<int>(boost::json::parse(line).at("n").as_int64()));
  }
  return seen;
}

double metric(const std::string& metrics_address, const std::string& sample) {
  return metric_value(scrape(metrics_address), sample).value_or(-1);
}

// Every key that came more than once came with the same content.
void check_keys_stable(const HttpUpstream& upstream) {
  std::map<std::string, std::string> content;
  for (const auto& r : upstream.received()) {
    auto [it, fresh] = content.emplace(r.key, r.body);
    if (!fresh) CHECK(it->second == r.body);
  }
}

struct Pki {
  TempDir dir;
  TestCa ca{dir / "ca", "tank-test-ca"};
  TestCa other{dir / "other", "another-ca"};
};

}  // namespace

TEST_CASE("outputs.http over TLS: the server is verified and a wrong name or CA is reported and retried until it is "
          "right",
          "[integration][outputs][http][tls]") {
  Pki pki;
  const auto wrong_name = pki.ca.issue_server("elsewhere", {"DNS:elsewhere.example"});
  const auto wrong_ca = pki.other.issue_server("impostor", {"IP:127.0.0.1"});
  const auto right = pki.ca.issue_server("receiver", {"DNS:localhost", "IP:127.0.0.1"});
  HttpUpstream upstream(HttpUpstream::Tls{wrong_name.cert_file, wrong_name.key_file});
  REQUIRE(upstream.url().starts_with("https://127.0.0.1:"));
  TempDir dir;
  const auto config = write_test_config(
      dir, file_input(dir, 0, 2000) +
               http_output(upstream.url(), fmt::format("tls_ca_file = \"{}\"\n", pki.ca.ca_file().string())));
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  auto logged = [&](const std::string& text) { return tank.process().err().find(text) != std::string::npos; };

  CHECK(wait_until([&] { return logged("certificate is not issued for \"127.0.0.1\""); }));
  // (The server counts a failed handshake after tank has given up on it: wait for it.)
  CHECK(wait_until([&] { return upstream.failed_handshakes() >= 1; }));
  const std::size_t after_name = upstream.failed_handshakes();
  upstream.set_tls({wrong_ca.cert_file, wrong_ca.key_file});
  CHECK(wait_until([&] { return logged("is the server's certificate signed by a CA in tls_ca_file"); }));
  CHECK(wait_until([&] { return upstream.failed_handshakes() >= after_name + 2; }));  // still retried
  CHECK(delivered(upstream).empty());
  CHECK(wait_until([&] {
    return metric(metrics, "tank_output_batches_total{output=\"cloud\",result=\"retried\",type=\"http\"}") >= 3;
  }));

  upstream.set_tls({right.cert_file, right.key_file});  // the server's certificate is renewed
  CHECK(wait_until([&] { return delivered(upstream).size() == 2000; }, std::chrono::seconds(60)));
  CHECK(tank.stop() == 0);
  INFO(tank.process().err());
  CHECK(tank.process().err().find("TLS handshake with 127.0.0.1:") != std::string::npos);
  CHECK(tank.process().err().find("delivering works again") != std::string::npos);
  check_keys_stable(upstream);
  for (const auto& r : upstream.received()) CHECK(r.client_subject.empty());  // no client certificate asked for
}

TEST_CASE("outputs.http mutual TLS: without a client certificate the server refuses and tank says why but with one it "
          "delivers",
          "[integration][outputs][http][tls]") {
  Pki pki;
  const auto server = pki.ca.issue_server("receiver", {"DNS:localhost", "IP:127.0.0.1"});
  const auto client = pki.ca.issue_client("gw-0042");
  HttpUpstream upstream(HttpUpstream::Tls{server.cert_file, server.key_file, pki.ca.ca_file()});
  TempDir dir;
  // https://localhost: the name is checked against DNS:localhost, and sent as SNI.
  const std::string url = "https://localhost:" + upstream.url().substr(upstream.url().rfind(':') + 1);
  const std::string input = file_input(dir, 0, 1000);
  const std::string ca = fmt::format("tls_ca_file = \"{}\"\n", pki.ca.ca_file().string());
  {
    TankProcess tank(write_test_config(dir, input + http_output(url, ca)));
    tank.wait_running(dir / "data");
    CHECK(wait_until([&] { return upstream.failed_handshakes() >= 2; }));
    CHECK(wait_until([&] {
      return tank.process().err().find("does the server require a client certificate? set tls_cert_file and "
                                       "tls_key_file") != std::string::npos;
    }));
    CHECK(tank.stop() == 0);
    INFO(tank.process().err());
    CHECK(delivered(upstream).empty());
  }
  // The records waited in the queue; with the client certificate they go.
  TankProcess tank(write_test_config(
      dir, input + http_output(url, ca + fmt::format("tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                                                     client.cert_file.string(), client.key_file.string()))));
  tank.wait_running(dir / "data");
  CHECK(wait_until([&] { return delivered(upstream).size() == 1000; }, std::chrono::seconds(60)));
  CHECK(tank.stop() == 0);
  INFO(tank.process().err());
  for (const auto& r : upstream.received()) {
    if (r.answered == 200) CHECK(r.client_subject == "gw-0042");
  }
  check_keys_stable(upstream);
}

// An encrypted copy of the PEM key `key` under `password`, written by openssl: "pkcs8" (PKCS#8,
// PBKDF2 + AES-256-CBC, what `openssl genpkey -aes256` writes) or "traditional" (the older PEM
// form with Proc-Type/DEK-Info headers, DES-EDE3-CBC, what `openssl ec -des3` writes).
std::filesystem::path encrypted_key(const std::filesystem::path& key, const std::string& form,
                                    const std::string& password) {
  const auto out = key.parent_path() / (key.stem().string() + "-" + form + ".key");
  const auto r = form == "pkcs8"
                     ? run({"/usr/bin/openssl", "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", key.string(), "-out",
                            out.string(), "-passout", "pass:" + password})
                     : run({"/usr/bin/openssl", "ec", "-in", key.string(), "-out", out.string(), "-des3", "-passout",
                            "pass:" + password});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  REQUIRE(read_file(out).find(form == "pkcs8" ? "BEGIN ENCRYPTED PRIVATE KEY" : "DEK-Info: DES-EDE3-CBC") !=
          std::string::npos);
  return out;
}

TEST_CASE("outputs.http mutual TLS with an encrypted client key: a wrong tls_key_password stops the start with the "
          "reason and the right one delivers",
          "[integration][outputs][http][tls]") {
  Pki pki;
  const auto server = pki.ca.issue_server("receiver", {"IP:127.0.0.1"});
  const auto client = pki.ca.issue_client("gw-0043");
  HttpUpstream upstream(HttpUpstream::Tls{server.cert_file, server.key_file, pki.ca.ca_file()});
  TempDir dir;
  const std::string input = file_input(dir, 0, 300);
  for (const std::string form : {"pkcs8", "traditional"}) {
    DYNAMIC_SECTION("key form " << form) {
      const auto key = encrypted_key(client.key_file, form, "s3cret-" + form);
      auto tls = [&](const std::string& password) {
        return fmt::format("tls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n"
                           "tls_key_password = \"{}\"\n",
                           pki.ca.ca_file().string(), client.cert_file.string(), key.string(), password);
      };
      const auto wrong = write_test_config(dir, input + http_output(upstream.url(), tls("not-the-password")),
                                           "wrong-" + form + ".toml");
      auto r = run({tank_binary(), "run", "-c", wrong.string()});
      CHECK(r.exit_code != 0);
      CHECK(r.err.find("cannot load tls_key_file " + key.string()) != std::string::npos);
      CHECK(r.err.find("is its password right?") != std::string::npos);
      CHECK(r.err.find("not-the-password") == std::string::npos);  // a secret is never logged
      INFO(r.err);

      TankProcess tank(write_test_config(dir, input + http_output(upstream.url(), tls("s3cret-" + form)),
                                         "right-" + form + ".toml"));
      tank.wait_running(dir / "data");
      CHECK(wait_until([&] { return delivered(upstream).size() == 300; }, std::chrono::seconds(60)));
      CHECK(tank.stop() == 0);
      INFO(tank.process().err());
      for (const auto& rec : upstream.received()) {
        if (rec.answered == 200) CHECK(rec.client_subject == "gw-0043");
      }
    }
  }
}

TEST_CASE("outputs.http through tinyproxy: CONNECT for https and absolute-form for http with credentials and the "
          "environment's HTTPS_PROXY and NO_PROXY",
          "[integration][outputs][http][proxy]") {
  Pki pki;
  const auto server = pki.ca.issue_server("receiver", {"IP:127.0.0.1"});
  const std::string ca = fmt::format("tls_ca_file = \"{}\"\n", pki.ca.ca_file().string());
  Tinyproxy proxy("tank:s3cret");
  const std::string proxy_url = fmt::format("http://tank:s3cret@127.0.0.1:{}", proxy.port());

  SECTION("https through the proxy option: a CONNECT tunnel") {
    HttpUpstream upstream(HttpUpstream::Tls{server.cert_file, server.key_file});
    TempDir dir;
    TankProcess tank(write_test_config(
        dir, file_input(dir, 0, 1000) + http_output(upstream.url(), ca + fmt::format("proxy = \"{}\"\n", proxy_url))));
    tank.wait_running(dir / "data");
    CHECK(wait_until([&] { return delivered(upstream).size() == 1000; }, std::chrono::seconds(60)));
    CHECK(tank.stop() == 0);
    INFO(tank.process().err() << proxy.log());
    const std::string port = upstream.url().substr(upstream.url().rfind(':') + 1);
    CHECK(proxy.log().find("): CONNECT 127.0.0.1:" + port.substr(0, port.find('/'))) != std::string::npos);
    CHECK(tank.process().err().find(fmt::format("sends through the proxy 127.0.0.1:{}", proxy.port())) !=
          std::string::npos);
    CHECK(tank.process().err().find("s3cret") == std::string::npos);  // credentials are not logged
  }
  SECTION("http through HTTP_PROXY from the environment: absolute-form requests") {
    HttpUpstream upstream;
    TempDir dir;
    TankProcess tank(write_test_config(dir, file_input(dir, 0, 1000) + http_output(upstream.url(), "")),
                     {{"HTTP_PROXY", proxy_url}, {"NO_PROXY", "example.com"}});
    tank.wait_running(dir / "data");
    CHECK(wait_until([&] { return delivered(upstream).size() == 1000; }, std::chrono::seconds(60)));
    CHECK(tank.stop() == 0);
    INFO(tank.process().err() << proxy.log());
    CHECK(proxy.log().find("): POST " + upstream.url()) != std::string::npos);
    CHECK(tank.process().err().find("(from HTTP_PROXY)") != std::string::npos);
    for (const auto& r : upstream.received()) CHECK(r.key.starts_with("test-agent/cloud/"));
  }
  SECTION("HTTPS_PROXY with NO_PROXY naming the host: straight to the server") {
    HttpUpstream upstream(HttpUpstream::Tls{server.cert_file, server.key_file});
    TempDir dir;
    TankProcess tank(write_test_config(dir, file_input(dir, 0, 500) + http_output(upstream.url(), ca)),
                     {{"HTTPS_PROXY", proxy_url}, {"NO_PROXY", "localhost, 127.0.0.1"}});
    tank.wait_running(dir / "data");
    CHECK(wait_until([&] { return delivered(upstream).size() == 500; }, std::chrono::seconds(60)));
    CHECK(tank.stop() == 0);
    CHECK(proxy.log().find("): CONNECT ") == std::string::npos);  // tinyproxy logs requests as "Request (fd): ..."
  }
  SECTION("a proxy that wants credentials: said clearly, retried") {
    HttpUpstream upstream(HttpUpstream::Tls{server.cert_file, server.key_file});
    TempDir dir;
    TankProcess tank(write_test_config(
        dir, file_input(dir, 0, 100) +
                 http_output(upstream.url(), ca + fmt::format("proxy = \"127.0.0.1:{}\"\n", proxy.port()))));
    const std::string metrics = tank.wait_running(dir / "data");
    CHECK(wait_until([&] {
      return tank.process().err().find(fmt::format("the proxy 127.0.0.1:{} refused to CONNECT to 127.0.0.1:",
                                                   proxy.port())) != std::string::npos;
    }));
    CHECK(tank.process().err().find("407") != std::string::npos);
    CHECK(tank.process().err().find("it wants credentials") != std::string::npos);
    CHECK(wait_until([&] { return metric(metrics, "tank_output_batches_total{output=\"cloud\",result=\"retried\",type=\"http\"}") >= 2; }));
    CHECK(tank.stop() == 0);
    CHECK(upstream.received().empty());
  }
}

TEST_CASE("outputs.http: a proxy password written percent-encoded in the proxy URL is sent decoded",
          "[integration][outputs][http][proxy]") {
  // A password with '@' or ':' has to be percent-encoded in a URL ("p%40ss"). tinyproxy's
  // configuration takes only letters, digits, '-', '.' and '_', so the test encodes a '-' that
  // needs no encoding: "s3%2Dcret" must reach tinyproxy as "s3-cret" (before issue 19 the userinfo
  // was sent as written, and tinyproxy answered 407).
  Tinyproxy proxy("tank:s3-cret");
  HttpUpstream upstream;
  TempDir dir;
  TankProcess tank(write_test_config(
      dir, file_input(dir, 0, 100) +
               http_output(upstream.url(), fmt::format("proxy = \"http://tank:s3%2Dcret@127.0.0.1:{}\"\n", proxy.port()))));
  tank.wait_running(dir / "data");
  CHECK(wait_until([&] { return delivered(upstream).size() == 100; }, std::chrono::seconds(60)));
  CHECK(tank.stop() == 0);
  INFO(tank.process().err() << proxy.log());
  CHECK(proxy.log().find("): POST " + upstream.url()) != std::string::npos);
  CHECK(tank.process().err().find("HTTP 407") == std::string::npos);
}

TEST_CASE("outputs.http through nginx as a reverse proxy: keys and headers pass and 503/429/400 are classified "
          "and a reset behind nginx is retried",
          "[integration][outputs][http][nginx]") {
  HttpUpstream upstream;
  using R = HttpUpstream::Reply;
  upstream.script({R{.status = 503, .body = "overloaded"}, R{.status = 429, .retry_after = "1"}, R{},
                   R{.status = 400, .body = "field n: too large"}, R{.reset = true}, R{}});
  const std::string upstream_port = upstream.url().substr(upstream.url().rfind(':') + 1);
  Nginx nginx(std::stoi(upstream_port.substr(0, upstream_port.find('/'))));
  TempDir dir;
  TankProcess tank(write_test_config(dir, file_input(dir, 0, 5000) + http_output(nginx.url(), "token = \"t0k\"\n")));
  const std::string metrics = tank.wait_running(dir / "data");
  auto accounted = [&] {
    std::size_t letters = 0;
    ManualClock clock;
    auto q = queue::Queue::open_read_only(dir / "data" / "queue", clock);
    queue::DeadLetterQuery query;
    query.limit = 100000;
    letters = q->dead_letters(query).size();
    return delivered(upstream).size() + letters;
  };
  CHECK(wait_until([&] { return accounted() == 5000; }, std::chrono::seconds(60)));
  CHECK(metric(metrics, "tank_output_batches_total{output=\"cloud\",result=\"rejected\",type=\"http\"}") == 1);
  CHECK(tank.stop() == 0);
  INFO(tank.process().err() << nginx.error_log());
  const auto received = upstream.received();
  REQUIRE(received.size() >= 6);
  CHECK(received[0].answered == 503);
  CHECK(received[0].key == received[2].key);  // 503, 429, then 200: one batch, one key
  CHECK(received[2].at - received[1].at >= std::chrono::milliseconds(950));  // Retry-After through nginx
  CHECK(received[3].answered == 400);
  for (const auto& r : received) {
    CHECK(r.key.starts_with("test-agent/cloud/"));
    CHECK(r.header("Authorization") == "Bearer t0k");
    CHECK(r.encoding == "zstd");
  }
  check_keys_stable(upstream);
  // nginx answered 502 for the reset, which tank retried.
  CHECK(nginx.access_log().find("\" 502 ") != std::string::npos);
}
