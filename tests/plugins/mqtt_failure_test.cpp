// inputs.mqtt when things go wrong, against a real mosquitto (or a silent listener): TLS with the
// wrong CA, a certificate for another name, a broker that wants a client certificate; refused
// credentials; refused subscriptions; a broker that accepts TCP but never answers; a broker that
// stops answering in the middle of a session. Each time the input must say what is wrong (log
// line and tank_input_errors_total{reason}), receive nothing it should not, and keep retrying.

#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <thread>

#include "common/log.hpp"
#include "support/input_helpers.hpp"
#include "support/mosquitto.hpp"

using namespace tank;
using namespace tank::test;
using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

// The log lines written while it lives.
class LogCapture {
 public:
  LogCapture() {
    log::set_sink([this](std::string_view line) {
      std::lock_guard lock(mutex_);
      lines_.emplace_back(line);
    });
  }
  ~LogCapture() { log::set_sink(nullptr); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  // How many lines hold every one of `parts`.
  std::size_t count(std::initializer_list<std::string_view> parts) const {
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(std::count_if(lines_.begin(), lines_.end(), [&](const std::string& line) {
      return std::all_of(parts.begin(), parts.end(),
                         [&](std::string_view p) { return line.find(p) != std::string::npos; });
    }));
  }
  bool has(std::initializer_list<std::string_view> parts) const { return count(parts) > 0; }
  std::string text() const {
    std::lock_guard lock(mutex_);
    std::string all;
    for (const auto& l : lines_) all += l + "\n";
    return all;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> lines_;
};

std::string input_config(const std::string& uri, const std::string& extra, const std::string& client_id = "tank-test") {
  return "[[inputs.mqtt]]\nname = \"plant\"\nservers = [\"" + uri + "\"]\nclient_id = \"" + client_id +
         "\"\nreconnect_min = \"20ms\"\nreconnect_max = \"200ms\"\n" + extra;
}

std::string toml_path(const std::filesystem::path& p) { return "\"" + p.string() + "\""; }

double errors(const InputRig& rig, const std::string& reason) {
  return counter(rig.registry, "tank_input_errors_total{input=\"plant\",reason=\"" + reason + "\",type=\"mqtt\"}");
}

double connections(const InputRig& rig) {
  return counter(rig.registry, "tank_input_connections{input=\"plant\",type=\"mqtt\"}");
}

bool connected(const InputRig& rig) {
  return wait_until([&] { return connections(rig) == 1; });
}

// Publishes `payloads` through the broker's plain listener and waits until the queue holds
// `expected` records in all.
bool delivered(const Mosquitto& broker, InputRig& rig, const std::string& topic,
               const std::vector<std::string>& payloads, std::uint64_t expected, const PublishOptions& options = {}) {
  if (publish_all(broker.plain_uri(), topic, payloads, options) != payloads.size()) return false;
  return wait_until([&] { return rig.queue->stats().records == expected; });
}

// The failures above must leave the input retrying: `reason` counted at least twice, never
// connected, nothing received.
void check_refused_and_retrying(const InputRig& rig, const std::string& reason) {
  CHECK(wait_until([&] { return errors(rig, reason) >= 2; }, milliseconds(10000)));
  CHECK(connections(rig) == 0);
  CHECK(rig.queue->stats().records == 0);
}

// A CA, and a mosquitto TLS listener with a certificate it signed for `alt_names`.
struct TlsBroker {
  explicit TlsBroker(const std::vector<std::string>& alt_names, bool require_client_certificate = false,
                     const std::string& extra = "")
      : ca(pki.path(), "ca"), server(ca.issue_server("broker", alt_names)),
        broker(extra, Mosquitto::Tls{ca.ca_file(), server.cert_file, server.key_file, require_client_certificate}) {}
  TempDir pki;
  TestCa ca;
  TestCa::Issued server;
  Mosquitto broker;
};

// A TCP listener on 127.0.0.1 that accepts connections and never answers (a broker that hangs
// after accept, or something else listening on the port). Keeps each connection open.
class SilentListener {
 public:
  SilentListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, 20) <= 0) continue;
        int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) continue;
        std::lock_guard lock(mutex_);
        accepted_.push_back({c, SteadyClock::now()});
      }
    });
  }
  ~SilentListener() {
    stop_ = true;
    thread_.join();
    for (const auto& c : accepted_) ::close(c.fd);
    ::close(fd_);
  }

  std::string uri() const { return "tcp://127.0.0.1:" + std::to_string(port_); }
  struct Accepted {
    int fd;
    SteadyClock::time_point at;
  };
  std::vector<Accepted> accepted() const {
    std::lock_guard lock(mutex_);
    return accepted_;
  }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::vector<Accepted> accepted_;
  std::thread thread_;
};

// The first byte the peer sent on `fd` (waiting up to `deadline`), or -1.
int first_byte(int fd, milliseconds deadline) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(deadline.count())) <= 0) return -1;
  unsigned char b = 0;
  return ::recv(fd, &b, 1, 0) == 1 ? b : -1;
}

std::string dynamic_security_plugin() {
  for (const char* dir : {"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib/arm-linux-gnueabihf",
                          "/usr/lib", "/usr/local/lib"}) {
    const std::filesystem::path p = std::filesystem::path(dir) / "mosquitto_dynamic_security.so";
    std::error_code ec;
    if (std::filesystem::exists(p, ec)) return p.string();
  }
  return {};
}

// mosquitto's dynamic security configuration: anonymous clients may publish anywhere and
// subscribe only to the filters in `allowed` (subscribePattern ACLs).
std::string dynamic_security(const std::vector<std::string>& allowed) {
  std::string acls;
  for (const auto& topic : allowed) {
    acls += std::string(acls.empty() ? "" : ",") + "{\"acltype\": \"subscribePattern\", \"topic\": \"" + topic +
            "\", \"priority\": 0, \"allow\": true}";
  }
  return "{\"defaultACLAccess\": {\"publishClientSend\": true, \"publishClientReceive\": true, \"subscribe\": false, "
         "\"unsubscribe\": true},\n \"clients\": [],\n \"groups\": [{\"groupname\": \"anonymous\", \"roles\": "
         "[{\"rolename\": \"subscriber\"}]}],\n \"roles\": [{\"rolename\": \"subscriber\", \"acls\": [" +
         acls + "]}],\n \"anonymousGroup\": \"anonymous\"}\n";
}

}  // namespace

// ---- TLS ----

TEST_CASE("mqtt tls: the broker's certificate verified with tls_ca_file, by host name and by IP address",
          "[input][mqtt][tls]") {
  TlsBroker tls({"DNS:localhost", "IP:127.0.0.1"});
  const std::string extra = "topics = [\"t\"]\ntls_ca_file = " + toml_path(tls.ca.ca_file()) + "\n";
  {
    InputRig rig(input_config(tls.broker.uri(), extra), input_queue_options("q"));  // ssl://localhost:PORT
    rig.input->start();
    REQUIRE(connected(rig));
    REQUIRE(delivered(tls.broker, rig, "t", {"over tls"}, 1));
    CHECK(all_payloads(*rig.queue) == std::vector<std::string>{"over tls"});
    CHECK(errors(rig, "tls_error") == -1);  // never counted
  }
  InputRig rig(input_config("ssl://127.0.0.1:" + std::to_string(tls.broker.port()), extra, "tank-test-ip"),
               input_queue_options("q"));
  rig.input->start();
  REQUIRE(connected(rig));
  REQUIRE(delivered(tls.broker, rig, "t", {"over tls by address"}, 1));
}

TEST_CASE("mqtt tls: a broker certificate from another CA is refused, said, and retried", "[input][mqtt][tls]") {
  TlsBroker tls({"DNS:localhost"});
  TestCa other(tls.pki / "other", "other-ca");
  LogCapture logs;
  InputRig rig(input_config(tls.broker.uri(), "topics = [\"t\"]\ntls_ca_file = " + toml_path(other.ca_file()) + "\n"),
               input_queue_options("q"));
  rig.input->start();
  check_refused_and_retrying(rig, "tls_error");
  INFO(logs.text());
  const std::string hint = "is the broker's certificate signed by a CA in tls_ca_file " + other.ca_file().string();
  // Which of the two depends on whether the broker sends its CA along with its certificate.
  CHECK((logs.has({"cannot connect", "TLS handshake with localhost:", "certificate verify failed",
                   "unable to get local issuer certificate", hint}) ||
         logs.has({"cannot connect", "TLS handshake with localhost:", "certificate verify failed",
                   "self-signed certificate in certificate chain", hint})));
  CHECK_FALSE(logs.has({"connected to"}));
  // Published while tank is refused: the broker has no subscription of tank's, so nothing.
  REQUIRE(publish_all(tls.broker.plain_uri(), "t", {"not for tank"}) == 1);
  CHECK(wait_until([&] { return errors(rig, "tls_error") >= 3; }, milliseconds(10000)));
  CHECK(rig.queue->stats().records == 0);
}

TEST_CASE("mqtt tls: tls_verify = false connects to a broker whose CA is unknown", "[input][mqtt][tls]") {
  TlsBroker tls({"DNS:otherhost"});
  TestCa other(tls.pki / "other", "other-ca");
  InputRig rig(input_config(tls.broker.uri(), "topics = [\"t\"]\ntls_verify = false\ntls_ca_file = " +
                                                  toml_path(other.ca_file()) + "\n"),
               input_queue_options("q"));
  rig.input->start();
  REQUIRE(connected(rig));
  REQUIRE(delivered(tls.broker, rig, "t", {"unverified"}, 1));
}

TEST_CASE("mqtt tls: a broker certificate for another name is refused, said, and retried", "[input][mqtt][tls]") {
  TlsBroker tls({"DNS:otherhost", "IP:127.0.0.2"});  // signed by the right CA, for the wrong name
  const std::string extra = "topics = [\"t\"]\ntls_ca_file = " + toml_path(tls.ca.ca_file()) + "\n";
  SECTION("by host name") {
    LogCapture logs;
    InputRig rig(input_config(tls.broker.uri(), extra), input_queue_options("q"));
    rig.input->start();
    check_refused_and_retrying(rig, "tls_error");
    INFO(logs.text());
    CHECK(logs.has({"TLS handshake with localhost:", "hostname mismatch",
                    "the broker's certificate is not issued for \"localhost\""}));
  }
  SECTION("by IP address") {
    LogCapture logs;
    InputRig rig(input_config("ssl://127.0.0.1:" + std::to_string(tls.broker.port()), extra), input_queue_options("q"));
    rig.input->start();
    check_refused_and_retrying(rig, "tls_error");
    INFO(logs.text());
    CHECK(logs.has({"TLS handshake with 127.0.0.1:", "IP address mismatch",
                    "the broker's certificate is not issued for \"127.0.0.1\""}));
  }
}

TEST_CASE("mqtt tls: a broker that requires a client certificate refuses tank without one", "[input][mqtt][tls]") {
  TlsBroker tls({"DNS:localhost"}, true);
  LogCapture logs;
  InputRig rig(input_config(tls.broker.uri(), "topics = [\"t\"]\ntls_ca_file = " + toml_path(tls.ca.ca_file()) + "\n"),
               input_queue_options("q"));
  rig.input->start();
  check_refused_and_retrying(rig, "tls_error");
  INFO(logs.text());
  // The broker's alert says "certificate required", unless its reset overtook the alert.
  CHECK(logs.has({"cannot connect", "the broker ended the TLS session before CONNACK",
                  "does the broker require a client certificate? set tls_cert_file and tls_key_file"}));
}

TEST_CASE("mqtt tls: with tls_cert_file and tls_key_file a broker that requires a client certificate accepts tank",
          "[input][mqtt][tls]") {
  TlsBroker tls({"DNS:localhost"}, true);
  const auto client = tls.ca.issue_client("tank");
  InputRig rig(input_config(tls.broker.uri(), "topics = [\"t\"]\ntls_ca_file = " + toml_path(tls.ca.ca_file()) +
                                                  "\ntls_cert_file = " + toml_path(client.cert_file) +
                                                  "\ntls_key_file = " + toml_path(client.key_file) + "\n"),
               input_queue_options("q"));
  rig.input->start();
  REQUIRE(connected(rig));
  REQUIRE(delivered(tls.broker, rig, "t", {"mutual tls"}, 1));
}

// ---- credentials ----

namespace {

struct PasswordBroker {
  PasswordBroker() {
    auto made = run({"/usr/bin/mosquitto_passwd", "-b", "-c", (dir / "passwords").string(), "tank", "s3cret"});
    INFO(made.err);
    REQUIRE(made.exit_code == 0);
    broker.emplace("allow_anonymous false\npassword_file " + (dir / "passwords").string() + "\n");
  }
  TempDir dir;
  std::optional<Mosquitto> broker;
};

}  // namespace

TEST_CASE("mqtt: a wrong password is refused, said, and retried", "[input][mqtt][auth]") {
  PasswordBroker auth;
  SECTION("MQTT 3.1.1") {
    LogCapture logs;
    InputRig rig(input_config(auth.broker->uri(), "topics = [\"t\"]\nusername = \"tank\"\npassword = \"wrong\"\n"),
                 input_queue_options("q"));
    rig.input->start();
    check_refused_and_retrying(rig, "connect_refused");
    INFO(logs.text());
    CHECK(logs.has({"cannot connect", "the broker refused the connection: not authorized (return code 5)",
                    "check username = \"tank\" and the password"}));
  }
  SECTION("MQTT 5") {
    LogCapture logs;
    InputRig rig(input_config(auth.broker->uri(), "topics = [\"t\"]\nusername = \"tank\"\npassword = \"wrong\"\n"
                                                  "protocol_version = \"5\"\n"),
                 input_queue_options("q"));
    rig.input->start();
    check_refused_and_retrying(rig, "connect_refused");
    INFO(logs.text());
    CHECK(logs.has({"the broker refused the connection: not authorized (reason code 0x87)",
                    "check username = \"tank\" and the password"}));
  }
  SECTION("no user name at all") {
    LogCapture logs;
    InputRig rig(input_config(auth.broker->uri(), "topics = [\"t\"]\n"), input_queue_options("q"));
    rig.input->start();
    check_refused_and_retrying(rig, "connect_refused");
    INFO(logs.text());
    CHECK(logs.has({"not authorized", "it wants a user name and password"}));
  }
}

TEST_CASE("mqtt: the right password, here from password_file, connects", "[input][mqtt][auth]") {
  PasswordBroker auth;
  write_file(auth.dir / "secret", "s3cret\n");
  InputRig rig(input_config(auth.broker->uri(), "topics = [\"t\"]\nusername = \"tank\"\npassword_file = " +
                                                    toml_path(auth.dir / "secret") + "\n"),
               input_queue_options("q"));
  rig.input->start();
  REQUIRE(connected(rig));
  PublishOptions publisher;
  publisher.username = "tank";
  publisher.password = "s3cret";
  REQUIRE(delivered(*auth.broker, rig, "t", {"authenticated"}, 1, publisher));
  CHECK(errors(rig, "connect_refused") == -1);
}

// ---- subscriptions ----

// mosquitto's acl_file never refuses a SUBSCRIBE (it filters at delivery: the SUBACK grants the
// QoS and nothing arrives); its dynamic security plugin does refuse, with SUBACK code 0x80
// (MQTT 5: 0x87). That is the refusal tank must not take for a subscription.
TEST_CASE("mqtt: a subscription the broker refuses is reported, not taken for granted, and retried at the next connect",
          "[input][mqtt][acl]") {
  const std::string plugin = dynamic_security_plugin();
  INFO("mosquitto's dynamic security plugin (mosquitto_dynamic_security.so, in the mosquitto package) is needed");
  REQUIRE(!plugin.empty());
  TempDir dir;
  const auto acl = dir / "dynamic-security.json";
  write_file(acl, dynamic_security({"allowed/#"}));
  Mosquitto broker("plugin " + plugin + "\nplugin_opt_config_file " + acl.string() + "\n");
  const std::string version = GENERATE(as<std::string>(), "3.1.1", "5");
  const std::string refusal = version == "5" ? "code 0x87: not authorized" : "code 0x80";
  LogCapture logs;
  InputRig rig(input_config(broker.uri(), "topics = [\"allowed/#\", \"denied/x\"]\nprotocol_version = \"" + version +
                                              "\"\n"),
               input_queue_options("q"));
  rig.input->start();
  REQUIRE(connected(rig));
  REQUIRE(wait_until([&] { return errors(rig, "subscription_refused") == 1; }));
  INFO(logs.text());
  CHECK(logs.has({"error", "the broker refused the subscription to \"denied/x\"", refusal,
                  "no message on it will arrive", "broker's ACL"}));
  CHECK(logs.has({"subscribed to \"allowed/#\" (QoS 1)"}));
  CHECK_FALSE(logs.has({"subscribed to", "\"denied/x\" (QoS"}));
  CHECK(connections(rig) == 1);  // the granted subscription still works
  REQUIRE(publish_all(broker.uri(), "denied/x", {"denied"}) == 1);
  REQUIRE(delivered(broker, rig, "allowed/a", {"allowed"}, 1));
  CHECK(all_payloads(*rig.queue) == std::vector<std::string>{"allowed"});

  // The ACL is fixed; at the next connect tank subscribes again, and the filter is granted.
  broker.stop();
  write_file(acl, dynamic_security({"allowed/#", "denied/#"}));
  broker.start();
  REQUIRE(wait_until([&] { return logs.has({"subscribed to", "\"denied/x\" (QoS 1)"}); }));
  CHECK(errors(rig, "subscription_refused") == 1);
  REQUIRE(delivered(broker, rig, "denied/x", {"granted now"}, 2));
  CHECK(all_payloads(*rig.queue) == std::vector<std::string>{"allowed", "granted now"});
}

// ---- timeouts ----

TEST_CASE("mqtt: a listener that never answers is given up after connect_timeout, and retried",
          "[input][mqtt][timeout]") {
  SilentListener silent;
  LogCapture logs;
  InputRig rig(input_config(silent.uri(), "topics = [\"t\"]\nconnect_timeout = \"1s\"\n"), input_queue_options("q"));
  rig.input->start();
  REQUIRE(wait_until([&] { return silent.accepted().size() >= 2; }, milliseconds(5000)));
  const auto accepted = silent.accepted();
  // The first attempt got as far as CONNECT, then was given up after connect_timeout (not
  // earlier), its connection closed, and the next one followed after a short backoff.
  CHECK(first_byte(accepted[0].fd, milliseconds(1000)) == 0x10);
  CHECK(wait_closed(accepted[0].fd, milliseconds(1000)));
  const auto gap = accepted[1].at - accepted[0].at;
  CHECK(gap >= milliseconds(900));
  CHECK(gap <= milliseconds(2000));
  CHECK(errors(rig, "connect_timeout") >= 1);
  CHECK(connections(rig) == 0);
  INFO(logs.text());
  CHECK(logs.has({"cannot connect", silent.uri(), "no CONNACK within connect_timeout = 1s"}));
}

TEST_CASE("mqtt: a broker that stops answering is found dead within 1.5 x keep_alive, and reconnected to",
          "[input][mqtt][timeout]") {
  Mosquitto broker;
  LogCapture logs;
  InputRig rig(input_config(broker.uri(), "topics = [\"k\"]\nkeep_alive = \"1s\"\nconnect_timeout = \"1s\"\n"),
               input_queue_options("q"));
  rig.input->start();
  REQUIRE(connected(rig));
  REQUIRE(delivered(broker, rig, "k", {"before"}, 1));
  {
    PausedBroker paused(broker);  // resumed whatever way this block is left
    const auto stopped = SteadyClock::now();
    // 1.5 x keep_alive, plus a second for the ping's timing and the scheduler.
    REQUIRE(wait_until([&] { return connections(rig) == 0; }, milliseconds(2500)));
    const auto found = SteadyClock::now() - stopped;
    CHECK(found >= milliseconds(500));  // a silence shorter than keep_alive / 2 is no proof
    CHECK(errors(rig, "keep_alive_timeout") == 1);
    CHECK(errors(rig, "connection_lost") == 1);
    INFO(logs.text());
    CHECK(logs.has({"lost the connection to " + broker.uri(), "nothing from the broker for 1.5s",
                    "the connection is dead", "reconnecting"}));
    // It tries again at once; the paused broker's kernel accepts, nothing answers.
    CHECK(wait_until([&] { return errors(rig, "connect_timeout") >= 1; }, milliseconds(3000)));
  }
  REQUIRE(connected(rig));
  REQUIRE(delivered(broker, rig, "k", {"after"}, 2));
  CHECK(all_payloads(*rig.queue) == std::vector<std::string>{"before", "after"});
}

// ---- sessions taken over ----

// Two agents with one client_id (a cloned SD card keeps the host name, which the default
// client_id contains): the broker gives the session to the newer connection and drops the
// older one. Each must wait (backoff) before taking it back, or the two take it from each other
// in a tight loop, flooding the broker and the logs.
TEST_CASE("mqtt: two inputs with one client_id take the session from each other with backoff, not in a tight loop",
          "[input][mqtt][timeout]") {
  Mosquitto broker;
  const std::string version = GENERATE(as<std::string>(), "3.1.1", "5");
  const std::string extra = "topics = [\"t\"]\nreconnect_min = \"200ms\"\nreconnect_max = \"400ms\"\n"
                            "protocol_version = \"" + version + "\"\n";
  LogCapture logs;
  auto config = [&] {
    // Not input_config(): its reconnect_* are too short to tell backoff from a tight loop.
    return "[[inputs.mqtt]]\nname = \"plant\"\nservers = [\"" + broker.uri() + "\"]\nclient_id = \"twin\"\n" + extra;
  };
  InputRig first(config(), input_queue_options("q"));
  InputRig second(config(), input_queue_options("q"));
  const auto lost = [&] { return errors(first, "connection_lost") + errors(second, "connection_lost"); };
  const auto start = SteadyClock::now();
  first.input->start();
  second.input->start();
  REQUIRE(wait_until([&] { return lost() >= 6; }));
  const auto elapsed = SteadyClock::now() - start;
  // One of the two lost the session at least 3 times: 2 backoffs of at least reconnect_min / 2.
  CHECK(elapsed >= milliseconds(200));
  CHECK(lost() <= 12);  // no burst right after the sixth
  INFO(logs.text());
  CHECK(logs.has({"lost the connection", "the session lasted only", "is another client using client_id \"twin\"?"}));
}
