// The real tank binary with a full queue that drops new records (overflow = "drop_newest"):
// what each party is told. An HTTP producer learns how many of its records were dropped, in the
// body and in a header, and the drop is counted per input; a dead-letter replay whose records
// are dropped leaves its entries in the store (issue 18).

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include "support/input_helpers.hpp"
#include "support/tank_process.hpp"

using namespace tank;
using namespace tank::test;

namespace {

std::string config_text(const TempDir& dir, const std::string& file_format) {
  // max_disk_bytes = 4 MiB: one commit holds 64 KiB. No output: nothing drains the queue.
  return "[queue]\nmax_disk_bytes = \"4MiB\"\noverflow = \"drop_newest\"\n\n"
         "[[inputs.http]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = \"60KiB\"\n\n"
         "[[inputs.file]]\nname = \"file\"\npaths = [\"" + (dir / "logs" / "*.log").string() +
         "\"]\nformat = \"" + file_format + "\"\nmax_line_bytes = \"1KiB\"\npoll_interval = \"50ms\"\n";
}

}  // namespace

TEST_CASE("drop_newest: an HTTP producer is told how many records were dropped, and a replay into the full queue "
          "keeps its dead letters",
          "[integration][overflow][dlq]") {
  TempDir dir;
  std::filesystem::create_directories(dir / "logs");
  const auto data = dir / "data";
  const auto config = write_test_config(dir, config_text(dir, "json"));
  {
    TankProcess tank(config);
    const std::string metrics = tank.wait_running(data);
    // Five lines that are not JSON: dead letters (decode_error) a replay can bring back once the
    // input takes raw lines.
    write_file(dir / "logs" / "app.log", "bad-1\nbad-2\nbad-3\nbad-4\nbad-5\n");
    REQUIRE(wait_until([&] { return dead_letters_in(data).size() == 5; }, std::chrono::seconds(20)));

    // Bodies of 50 records of 1 KiB until the queue drops some.
    const std::string address = input_address(data, "http");
    std::string body;
    for (int i = 0; i < 50; ++i) body += "{\"v\":\"" + std::string(1000, 'a' + i % 26) + "\"}\n";
    std::optional<HttpExchange> reply;
    std::uint64_t accepted = 0;
    boost::json::object answer;
    for (int i = 0; i < 500; ++i) {
      reply = http_request(address, "POST", "/", body, {{"Content-Type", "application/x-ndjson"}});
      REQUIRE(reply);
      REQUIRE(reply->status == 200);
      answer = boost::json::parse(reply->body).as_object();
      if (answer.contains("dropped")) break;
      REQUIRE(answer.at("accepted").as_int64() == 50);
      accepted += 50;
    }
    INFO(reply->body);
    REQUIRE(answer.contains("dropped"));
    const std::int64_t dropped = answer.at("dropped").as_int64();
    CHECK(dropped > 0);
    CHECK(answer.at("accepted").as_int64() + dropped == 50);
    CHECK(reply->headers["tank-dropped-records"] == std::to_string(dropped));
    // Another body: all of it dropped, and said so.
    reply = http_request(address, "POST", "/", body, {{"Content-Type", "application/x-ndjson"}});
    REQUIRE(reply);
    CHECK(reply->status == 200);
    answer = boost::json::parse(reply->body).as_object();
    CHECK(answer.at("accepted").as_int64() == 0);
    CHECK(answer.at("dropped").as_int64() == 50);
    CHECK(reply->headers["tank-dropped-records"] == "50");
    const std::string exposition = scrape(metrics);
    CHECK(metric_value(exposition,
                       "tank_input_dropped_records_total{input=\"http\",reason=\"overflow_drop_newest\",type=\"http\"}") ==
          static_cast<double>(dropped + 50));
    CHECK(metric_value(exposition, "tank_input_records_total{input=\"http\",type=\"http\"}") ==
          static_cast<double>(accepted + static_cast<std::uint64_t>(50 - dropped)));
    // Then single small records until even those are dropped: no room is left for any record.
    bool small_dropped = false;
    for (int i = 0; i < 5000 && !small_dropped; ++i) {
      reply = http_request(address, "POST", "/", "{\"s\":" + std::to_string(i) + "}", {{"Content-Type", "application/json"}});
      REQUIRE(reply);
      small_dropped = reply->headers.contains("tank-dropped-records");
    }
    REQUIRE(small_dropped);
    CHECK(tank.stop() == 0);
  }

  // The input takes raw lines now: the dead letters could be replayed, but the queue drops new
  // records. The replay says so, and every entry stays.
  write_file(config, read_file(config).substr(0, read_file(config).find("[queue]")) + config_text(dir, "raw"));
  auto r = run({tank_binary(), "dlq", "replay", "--all", "-c", config.string(), "--json"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 1);
  CHECK((r.out + r.err).find("drop_newest") != std::string::npos);
  CHECK(dead_letters_in(data).size() == 5);
}
