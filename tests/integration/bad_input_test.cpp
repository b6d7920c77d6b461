// The real tank binary with every input at once, fed malformed and oversized input: each bad
// piece is dead-lettered with its reason (or refused with one, for HTTP), the good input
// around it still becomes records, and tank keeps running and stops cleanly. The inputs use
// each format: text (the socket and file default: garbage is a decode_error), json (the MQTT
// default), raw (any bytes are a record).

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <set>

#include "engine/run_state.hpp"
#include "queue/queue.hpp"
#include "support/input_helpers.hpp"
#include "support/mosquitto.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

// The records' payloads in the queue (read while tank runs).
std::set<std::string> payloads_in(const std::filesystem::path& queue_dir) {
  ManualClock clock;
  auto q = queue::Queue::open_read_only(queue_dir, clock);
  std::set<std::string> out;
  std::uint64_t position = 0;
  for (;;) {
    auto b = q->read(position, {10000, 16 << 20});
    if (b.empty()) break;
    for (const auto& r : b.records()) out.insert(std::string(r.payload));
    position = b.scanned_to();
  }
  return out;
}

// (input, reason) of every dead letter, from `tank dlq list --json`.
std::multiset<std::pair<std::string, std::string>> dead_letters(const std::filesystem::path& data_dir) {
  auto r = run({tank_binary(), "dlq", "list", "--data-dir", data_dir.string(), "--json", "--limit", "1000"});
  std::multiset<std::pair<std::string, std::string>> out;
  if (r.exit_code != 0) return out;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    auto v = boost::json::parse(line).as_object();
    out.emplace(std::string(v.at("input").as_string()), std::string(v.at("reason").as_string()));
  }
  return out;
}

}  // namespace

TEST_CASE("bad input on every input is dead-lettered or refused with a reason, and tank keeps running",
          "[integration][inputs][bad-input]") {
  Mosquitto broker;
  TempDir dir;
  std::filesystem::create_directories(dir / "logs");
  const auto stream_sock = dir / "stream.sock";
  const auto dgram_sock = dir / "dgram.sock";
  const auto config = write_test_config(
      dir, "[[inputs.tcp]]\nname = \"tcp\"\nlisten = \"127.0.0.1:0\"\nmax_line_bytes = \"1KiB\"\n\n"
           "[[inputs.udp]]\nname = \"udp\"\nlisten = \"127.0.0.1:0\"\nmax_message_bytes = \"1KiB\"\n\n"
           "[[inputs.unix]]\nname = \"unix\"\npath = \"" + stream_sock.string() + "\"\nmax_line_bytes = \"1KiB\"\n\n"
           "[[inputs.unix]]\nname = \"unixgram\"\npath = \"" + dgram_sock.string() +
           "\"\nsocket_type = \"datagram\"\nmax_message_bytes = \"1KiB\"\nformat = \"raw\"\n\n"
           "[[inputs.http]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = \"16KiB\"\n\n"
           "[[inputs.file]]\nname = \"file\"\npaths = [\"" + (dir / "logs" / "*.log").string() +
           "\"]\nmax_line_bytes = \"1KiB\"\npoll_interval = \"50ms\"\n\n"
           "[[inputs.mqtt]]\nname = \"mqtt\"\nservers = [\"" + broker.uri() +
           "\"]\ntopics = [\"bad/#\"]\nmax_message_bytes = \"1KiB\"\n");
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");
  auto state = engine::read_run_state(dir / "data" / "run.json", nullptr);
  REQUIRE(state);
  std::map<std::string, std::string> where(state->inputs.begin(), state->inputs.end());

  const std::string big(5000, 'A');
  const std::string garbage("\x00\xff\xfe\x01 not utf-8 \xc3\x28", 17);

  // Stream sockets: an oversize line and binary garbage between good lines; the connection
  // stays usable.
  for (const std::string name : {"tcp", "unix"}) {
    int fd = name == "tcp" ? tcp_connect(where.at("tcp")) : unix_connect(stream_sock.string());
    REQUIRE(fd >= 0);
    REQUIRE(send_all(fd, "good-" + name + "-1\n" + big + "\n" + garbage + "\r\ngood-" + name + "-2\n"));
    ::close(fd);
  }
  // Datagrams: one over max_message_bytes, one of garbage, one good.
  udp_send(where.at("udp"), big);
  udp_send(where.at("udp"), garbage);
  udp_send(where.at("udp"), "good-udp");
  unix_datagram_send(dgram_sock.string(), big);
  unix_datagram_send(dgram_sock.string(), garbage);  // format = "raw": a record as it is
  unix_datagram_send(dgram_sock.string(), "good-unixgram");
  // A file with an oversize line, an unterminated one is not taken until its newline comes.
  write_file(dir / "logs" / "app.log", "good-file-1\n" + big + "\n" + garbage + "\ngood-file-2\n");
  // MQTT (format = "json" by default): an oversize message, one that is not JSON, a good one.
  REQUIRE(publish_all(broker.uri(), "bad/x", {big, "{\"t\": 1,}", "{\"good\":\"mqtt\"}"}, 1,
                      std::chrono::seconds(30)) == 3);
  // HTTP: refused with a status and a reason, nothing stored; then a good body.
  auto too_big = http_request(where.at("http"), "POST", "/", std::string(20000, '['));
  REQUIRE(too_big);
  CHECK(too_big->status == 413);
  auto not_json = http_request(where.at("http"), "POST", "/", "{\"a\": [1, 2", {{"Content-Type", "application/json"}});
  REQUIRE(not_json);
  CHECK(not_json->status == 400);
  CHECK(!not_json->body.empty());
  auto bad_line = http_request(where.at("http"), "POST", "/", "{\"ok\":1}\n{broken\n",
                               {{"Content-Type", "application/x-ndjson"}});
  REQUIRE(bad_line);
  CHECK(bad_line->status == 400);
  auto garbage_body = http_request(where.at("http"), "POST", "/", garbage, {{"Content-Type", "application/json"}});
  REQUIRE(garbage_body);
  CHECK(garbage_body->status == 400);
  auto good = http_request(where.at("http"), "POST", "/", "{\"good\":\"http\"}", {{"Content-Type", "application/json"}});
  REQUIRE(good);
  CHECK(good->status == 200);

  const std::multiset<std::pair<std::string, std::string>> want_letters = {
      {"tcp", "line_too_long"},          {"unix", "line_too_long"}, {"udp", "message_too_large"},
      {"unixgram", "message_too_large"}, {"file", "line_too_long"}, {"mqtt", "message_too_large"},
      {"tcp", "decode_error"},           {"unix", "decode_error"},  {"udp", "decode_error"},
      {"file", "decode_error"},          {"mqtt", "decode_error"}};
  std::multiset<std::pair<std::string, std::string>> letters;
  CHECK(wait_until([&] {
    letters = dead_letters(dir / "data");
    return letters == want_letters;
  }, std::chrono::seconds(20)));
  for (const auto& [input, reason] : letters) UNSCOPED_INFO("dead letter " << input << " " << reason);

  const std::set<std::string> want_good = {"good-tcp-1", "good-tcp-2", "good-unix-1", "good-unix-2", "good-udp",
                                           "good-unixgram", "good-file-1", "good-file-2", "{\"good\":\"mqtt\"}",
                                           "{\"good\":\"http\"}"};
  std::set<std::string> payloads;
  CHECK(wait_until([&] {
    payloads = payloads_in(dir / "data" / "queue");
    return std::includes(payloads.begin(), payloads.end(), want_good.begin(), want_good.end());
  }, std::chrono::seconds(20)));
  // Garbage is a record as it is only where format = "raw"; the HTTP bodies that were refused
  // left nothing.
  CHECK(payloads.contains(garbage));  // from unixgram
  CHECK(payloads.size() == want_good.size() + 1);
  CHECK(!payloads.contains("{\"ok\":1}"));

  // A decode_error says where: the parser's message and byte offset, the first bad UTF-8 byte.
  auto listed = run({tank_binary(), "dlq", "list", "--data-dir", (dir / "data").string(), "--json", "--reason",
                     "decode_error", "--limit", "100"});
  CHECK(listed.exit_code == 0);
  CHECK(listed.out.find("not UTF-8 text: invalid byte 0xff at byte 1") != std::string::npos);
  CHECK(listed.out.find("not JSON: ") != std::string::npos);
  CHECK(listed.out.find("at byte 8") != std::string::npos);

  // Counted per input and reason; tank still runs and stops cleanly.
  const std::string exposition = scrape(metrics);
  CHECK(metric_value(exposition, "tank_input_errors_total{input=\"tcp\",reason=\"line_too_long\",type=\"tcp\"}") == 1);
  CHECK(metric_value(exposition, "tank_input_errors_total{input=\"http\",reason=\"body_too_large\",type=\"http\"}") == 1);
  CHECK(metric_value(exposition, "tank_input_errors_total{input=\"mqtt\",reason=\"message_too_large\",type=\"mqtt\"}") == 1);
  CHECK(metric_value(exposition, "tank_dead_letters_total{input=\"mqtt\",reason=\"decode_error\"}") == 1);
  CHECK(metric_value(exposition, "tank_dead_letters_total{input=\"tcp\",reason=\"decode_error\"}") == 1);
  CHECK(tank.process().running());
  CHECK(tank.stop() == 0);
}

// Issue 18: a record too large for one commit used to spin the file input (~45,000 refused
// commits a second, the next lines never stored), wedge the MQTT input (never acknowledged,
// redelivered after every reconnect) and be dropped by the TCP input. Now it is dead-lettered
// with as much of it as fits, and each input goes on with the next record.
TEST_CASE("a line or message too large for one commit is dead-lettered and the input goes on",
          "[integration][inputs][bad-input][too-large]") {
  Mosquitto broker;
  TempDir dir;
  std::filesystem::create_directories(dir / "logs");
  // max_disk_bytes = 4 MiB: one commit holds 64 KiB.
  const auto config = write_test_config(
      dir, "[queue]\nmax_disk_bytes = \"4MiB\"\n\n"
           "[[inputs.tcp]]\nname = \"tcp\"\nlisten = \"127.0.0.1:0\"\nmax_line_bytes = \"32KiB\"\n\n"
           "[[inputs.file]]\nname = \"file\"\npaths = [\"" + (dir / "logs" / "*.log").string() +
           "\"]\nmax_line_bytes = \"32KiB\"\npoll_interval = \"50ms\"\n\n"
           "[[inputs.mqtt]]\nname = \"mqtt\"\nservers = [\"" + broker.uri() +
           "\"]\ntopics = [\"big/#\"]\nmax_message_bytes = \"62KiB\"\nformat = \"raw\"\n");
  auto check = run({tank_binary(), "check", "-c", config.string()});
  REQUIRE(check.exit_code == 0);
  TankProcess tank(config);
  const std::string metrics = tank.wait_running(dir / "data");

  // A file: a line of 100,000 bytes and one of exactly 65,536 (over max_line_bytes, and their
  // dead letters once kept more than one commit holds) between good lines.
  write_file(dir / "logs" / "app.log", "ok-before\n" + std::string(100000, 'x') + "\nok-after\n" +
                                           std::string(65536, 'y') + "\nok-last\n");
  // TCP: the same between two good lines, on one connection.
  int fd = tcp_connect(input_address(dir / "data", "tcp"));
  REQUIRE(fd >= 0);
  REQUIRE(send_all(fd, "ok-tcp-1\n" + std::string(100000, 'z') + "\nok-tcp-2\n"));
  ::close(fd);
  // MQTT, QoS 1: a message within max_message_bytes whose topic makes its record larger than one
  // commit, then a small one. Both must be acknowledged (publish_all waits for that).
  const std::string topic = "big/" + std::string(3000, 't');
  REQUIRE(publish_all(broker.uri(), topic, {std::string(62 * 1024, 'm'), "ok-mqtt"}, 1, std::chrono::seconds(30)) == 2);

  const std::set<std::string> want = {"ok-before", "ok-after", "ok-last", "ok-tcp-1", "ok-tcp-2", "ok-mqtt"};
  std::set<std::string> payloads;
  CHECK(wait_until([&] {
    payloads = payloads_in(dir / "data" / "queue");
    return std::includes(payloads.begin(), payloads.end(), want.begin(), want.end());
  }, std::chrono::seconds(20)));
  CHECK(payloads.size() == want.size());

  const std::multiset<std::pair<std::string, std::string>> want_letters = {
      {"file", "line_too_long"}, {"file", "line_too_long"}, {"tcp", "line_too_long"}, {"mqtt", "record_too_large"}};
  std::vector<boost::json::object> letters;
  CHECK(wait_until([&] {
    letters = dead_letters_in(dir / "data");
    std::multiset<std::pair<std::string, std::string>> got;
    for (const auto& l : letters) got.emplace(std::string(l.at("input").as_string()), std::string(l.at("reason").as_string()));
    return got == want_letters;
  }, std::chrono::seconds(20)));
  for (const auto& l : letters) {
    INFO(boost::json::serialize(l));
    // As much of the original as fits: most of one commit, marked truncated, with its size.
    CHECK(l.at("truncated").as_bool());
    CHECK(l.at("original_size").to_number<std::int64_t>() >= 62 * 1024);
  }
  // Nothing was refused as too large, so nothing was retried or dropped; tank still runs.
  const std::string exposition = scrape(metrics);
  CHECK(metric_value(exposition, "tank_queue_refused_batches_total{reason=\"too_large\"}").value_or(0) == 0);
  CHECK(metric_value(exposition, "tank_input_dropped_records_total{input=\"tcp\",reason=\"batch_too_large\",type=\"tcp\"}")
            .value_or(0) == 0);
  CHECK(tank.process().running());
  CHECK(tank.stop() == 0);
}

TEST_CASE("tank check refuses a line or message limit whose largest record cannot fit one commit, and says what fits",
          "[integration][inputs][too-large][check]") {
  TempDir dir;
  // max_disk_bytes = 64 MiB: one commit holds 1 MiB, and the default max_message_bytes is 1 MiB.
  const auto config = write_test_config(
      dir, "[queue]\nmax_disk_bytes = \"64MiB\"\n\n"
           "[[inputs.mqtt]]\nname = \"plant\"\nservers = [\"tcp://127.0.0.1:1883\"]\ntopics = [\"t\"]\n\n"
           "[[inputs.tcp]]\nname = \"tcp\"\nlisten = \"127.0.0.1:0\"\nmax_line_bytes = \"1MiB\"\n");
  auto r = run({tank_binary(), "check", "-c", config.string()});
  CHECK(r.exit_code != 0);
  INFO(r.err);
  CHECK(r.err.find("inputs.mqtt[0].max_message_bytes: 1MiB (the default) is more than one record") != std::string::npos);
  CHECK(r.err.find("the largest max_message_bytes that fits is 1047527 bytes: set max_message_bytes = \"1022KiB\" or less") !=
        std::string::npos);
  CHECK(r.err.find("inputs.tcp[0].max_line_bytes: 1MiB is more than one record") != std::string::npos);
  CHECK(r.err.find("the largest max_line_bytes that fits is 1047529 bytes") != std::string::npos);
}
