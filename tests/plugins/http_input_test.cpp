// inputs.http in-process: a real Beast server, a real queue, raw HTTP requests.

#include <catch2/catch.hpp>

#include <chrono>
#include <random>
#include <thread>

#include "inputs_http/json_body.hpp"
#include "support/input_helpers.hpp"

using namespace tank;
using namespace tank::test;

namespace {

InputRig http_rig(const std::string& extra = "", queue::Options options = input_queue_options("q")) {
  return InputRig("[[inputs.http]]\nname = \"ingest\"\nlisten = \"127.0.0.1:0\"\n" + extra, options);
}

}  // namespace

TEST_CASE("http: a JSON document, an array and NDJSON become records, 200 only after the commit",
          "[input][http]") {
  InputRig rig = http_rig();
  rig.input->start();
  std::string at = rig.input->listening_on();
  auto one = http_request(at, "POST", "/", "  {\"temp\": 21.5}\n");
  REQUIRE(one);
  CHECK(one->status == 200);
  CHECK(one->body == "{\"accepted\":1}\n");
  CHECK(rig.queue->stats().records == 1);  // already committed when 200 arrived
  auto array = http_request(at, "POST", "/", "[{\"a\":1}, {\"b\" : [2, 3]}, 4]");
  REQUIRE(array);
  CHECK(array->body == "{\"accepted\":3}\n");
  auto nd = http_request(at, "POST", "/", "{\"n\":1}\n\n{\"n\":2}\r\n{\"n\":3}", {{"Content-Type", "application/x-ndjson"}});
  REQUIRE(nd);
  CHECK(nd->body == "{\"accepted\":3}\n");
  auto detected = http_request(at, "POST", "/", "{\"m\":1}\n{\"m\":2}\n");
  REQUIRE(detected);
  CHECK(detected->body == "{\"accepted\":2}\n");
  CHECK(all_payloads(*rig.queue) ==
        std::vector<std::string>{"{\"temp\": 21.5}", "{\"a\":1}", "{\"b\":[2,3]}", "4", "{\"n\":1}", "{\"n\":2}",
                                 "{\"n\":3}", "{\"m\":1}", "{\"m\":2}"});
  auto r = rig.queue->read(0, {});
  CHECK(r.records()[0].input == "ingest");
  CHECK(r.records()[0].attribute("peer").value_or("").rfind("127.0.0.1:", 0) == 0);
  CHECK(counter(rig.registry, "tank_input_records_total{input=\"ingest\",type=\"http\"}") == 9);
}

TEST_CASE("http: bad bodies get 400 with the reason and nothing is stored", "[input][http]") {
  InputRig rig = http_rig();
  rig.input->start();
  std::string at = rig.input->listening_on();
  auto bad = http_request(at, "POST", "/", "{\"a\": 1,}");
  REQUIRE(bad);
  CHECK(bad->status == 400);
  CHECK(bad->body.find("the body is not JSON") != std::string::npos);
  CHECK(bad->body.find("at byte") != std::string::npos);
  auto bad_line = http_request(at, "POST", "/", "{\"ok\":1}\n{\"ok\":2}\n{broken\n{\"ok\":4}\n");
  REQUIRE(bad_line);
  CHECK(bad_line->status == 400);
  CHECK(bad_line->body.find("line 3 is not JSON") != std::string::npos);
  auto empty = http_request(at, "POST", "/", "   ");
  REQUIRE(empty);
  CHECK(empty->status == 400);
  CHECK(rig.queue->stats().records == 0);
  CHECK(counter(rig.registry, "tank_input_errors_total{input=\"ingest\",reason=\"bad_request\",type=\"http\"}") == 3);
  auto empty_array = http_request(at, "POST", "/", "[]");
  REQUIRE(empty_array);
  CHECK(empty_array->status == 200);
  CHECK(empty_array->body == "{\"accepted\":0}\n");
}

TEST_CASE("http: 413 over max_body_bytes, 404 elsewhere, 405 for other methods", "[input][http]") {
  InputRig rig = http_rig("max_body_bytes = \"1KiB\"\npath = \"/ingest\"\n");
  rig.input->start();
  std::string at = rig.input->listening_on();
  auto big = http_request(at, "POST", "/ingest", "[" + std::string(5000, '1') + "]");
  REQUIRE(big);
  CHECK(big->status == 413);
  CHECK(big->body.find("max_body_bytes = 1KiB") != std::string::npos);
  auto elsewhere = http_request(at, "POST", "/", "{}");
  REQUIRE(elsewhere);
  CHECK(elsewhere->status == 404);
  auto get = http_request(at, "GET", "/ingest");
  REQUIRE(get);
  CHECK(get->status == 405);
  CHECK(get->headers["allow"] == "POST");
  CHECK(rig.queue->stats().records == 0);
}

TEST_CASE("http: a bearer token is required when auth_token is set", "[input][http]") {
  InputRig rig = http_rig("auth_token = \"s3cret\"\n");
  rig.input->start();
  std::string at = rig.input->listening_on();
  auto none = http_request(at, "POST", "/", "{}");
  REQUIRE(none);
  CHECK(none->status == 401);
  auto wrong = http_request(at, "POST", "/", "{}", {{"Authorization", "Bearer nope"}});
  REQUIRE(wrong);
  CHECK(wrong->status == 401);
  auto right = http_request(at, "POST", "/", "{}", {{"Authorization", "Bearer s3cret"}});
  REQUIRE(right);
  CHECK(right->status == 200);
  CHECK(rig.queue->stats().records == 1);
}

TEST_CASE("http: Expect: 100-continue gets 100 Continue once the header is accepted, a refusal at once",
          "[input][http]") {
  using namespace std::chrono_literals;
  InputRig rig = http_rig("auth_token = \"s3cret\"\n");
  rig.input->start();
  const std::string at = rig.input->listening_on();
  const std::string body = "{\"continued\":true}";
  auto request = [&](const std::string& token) {
    return "POST / HTTP/1.1\r\nHost: tank\r\nExpect: 100-continue\r\nAuthorization: Bearer " + token +
           "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  };
  // Accepted: "100 Continue", then (the body sent) the answer after the commit.
  int ok = tcp_connect(at);
  REQUIRE(ok >= 0);
  REQUIRE(send_all(ok, request("s3cret") + body));
  auto answer = receive_until_closed(ok, 10s);
  ::close(ok);
  REQUIRE(answer);
  CHECK(answer->rfind("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ", 0) == 0);
  CHECK(answer->ends_with("{\"accepted\":1}\n"));
  // Refused on its header: 401 without "100 Continue", so the client never sends the body.
  int refused = tcp_connect(at);
  REQUIRE(refused >= 0);
  REQUIRE(send_all(refused, request("wrong")));
  auto refusal = receive_until_closed(refused, 10s);
  ::close(refused);
  REQUIRE(refusal);
  CHECK(refusal->rfind("HTTP/1.1 401 ", 0) == 0);
  CHECK(refusal->find("100 Continue") == std::string::npos);
  CHECK(all_payloads(*rig.queue) == std::vector<std::string>{body});
}

TEST_CASE("http: 503 with Retry-After while the queue refuses records", "[input][http][backpressure]") {
  auto options = input_queue_options("q");
  options.max_disk_bytes = 256 << 10;
  options.low_watermark = 0.5;
  InputRig rig = http_rig("retry_after = \"7s\"\n", options);
  rig.connect_pressure();
  rig.input->start();
  std::string at = rig.input->listening_on();
  std::string body;
  for (int i = 0; i < 300; ++i) body += "{\"filler\":\"" + std::string(100, 'f') + "\"}\n";
  int accepted = 0;
  std::optional<HttpExchange> last;
  for (int i = 0; i < 100; ++i) {
    last = http_request(at, "POST", "/", body);
    REQUIRE(last);
    if (last->status != 200) break;
    ++accepted;
  }
  REQUIRE(last->status == 503);
  CHECK(last->headers["retry-after"] == "7");
  CHECK(rig.queue->blocked());
  std::uint64_t stored = rig.queue->stats().records;
  CHECK(stored == static_cast<std::uint64_t>(accepted) * 300);  // a refused request stored nothing
  // Drained below the low watermark, requests are accepted again.
  REQUIRE(rig.queue->ack("out", rig.queue->stats().last_seq).ok());
  auto again = http_request(at, "POST", "/", "{\"again\":true}");
  REQUIRE(again);
  CHECK(again->status == 200);
}

TEST_CASE("http: idle_timeout is the longest silence: a slow request is served, a silent one closed",
          "[input][http][timeout]") {
  using namespace std::chrono_literals;
  InputRig rig = http_rig("idle_timeout = \"1s\"\n");
  rig.input->start();
  const std::string at = rig.input->listening_on();
  const std::string body = "{\"sent\":\"slowly, a few bytes at a time, over a link that is slow\"}";
  const std::string header = "POST / HTTP/1.1\r\nHost: tank\r\nContent-Type: application/json\r\nContent-Length: " +
                             std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  // The header in 7 pieces and the body in 7, 0.2 s apart: each part takes 1.2 s, longer than
  // idle_timeout, with no silence as long (a loaded machine may stretch a pause by 0.8 s).
  std::vector<std::string> pieces;
  for (const std::string* part : {&header, &body}) {
    const std::size_t step = (part->size() + 6) / 7;
    for (std::size_t i = 0; i < part->size(); i += step) pieces.push_back(part->substr(i, step));
  }
  int slow = tcp_connect(at);
  REQUIRE(slow >= 0);
  const auto started = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    if (i > 0) std::this_thread::sleep_for(200ms);  // the pace of the slow client, not a wait for tank
    REQUIRE(send_all(slow, pieces[i]));
  }
  CHECK(std::chrono::steady_clock::now() - started > 2s);
  auto answer = receive_until_closed(slow, 10s);
  ::close(slow);
  REQUIRE(answer);
  CHECK(answer->rfind("HTTP/1.1 200 ", 0) == 0);
  CHECK(answer->ends_with("{\"accepted\":1}\n"));
  CHECK(all_payloads(*rig.queue) == std::vector<std::string>{body});

  // Silent for idle_timeout in the middle of the body: closed without an answer, nothing stored.
  int silent = tcp_connect(at);
  REQUIRE(silent >= 0);
  REQUIRE(send_all(silent, header + body.substr(0, 10)));
  const auto went_silent = std::chrono::steady_clock::now();
  auto nothing = receive_until_closed(silent, 10s);
  ::close(silent);
  REQUIRE(nothing);
  CHECK(nothing->empty());
  CHECK(std::chrono::steady_clock::now() - went_silent >= 900ms);
  CHECK(rig.queue->stats().records == 1);
}

TEST_CASE("http body splitting survives random bytes", "[input][http]") {
  std::mt19937_64 rng(7);
  const char alphabet[] = "{}[],:\"\\ \n\r\t0123456789.eE+-truefalsn";
  for (int i = 0; i < 20000; ++i) {
    std::string body(rng() % 80, ' ');
    for (char& c : body) c = alphabet[rng() % (sizeof alphabet - 1)];
    auto r = input::split_json_body(body, rng() % 2 == 0);
    CHECK((r.error.empty() || r.payloads.empty()));
  }
}
