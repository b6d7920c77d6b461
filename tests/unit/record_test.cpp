#include <catch2/catch.hpp>

#include <random>

#include "queue/record.hpp"

using namespace tank::queue;

TEST_CASE("records round-trip through their encoding", "[record]") {
  EncodedRecords b;
  Attribute attrs[] = {{"topic", "sensors/1/telemetry"}, {"peer", "10.0.0.7:5555"}, {"", ""}};
  b.add("plant", 1234567890123, "{\"t\":21.5}", attrs);
  b.add("x", -5, "");
  b.add(std::string(kMaxInputNameBytes, 'n'), 0, std::string(100000, 'p'));
  REQUIRE(b.size() == 3);
  CHECK(b.bytes() == b.encoded(0).size() + b.encoded(1).size() + b.encoded(2).size());

  auto r0 = decode_record(7, b.encoded(0));
  REQUIRE(r0);
  CHECK(r0->seq == 7);
  CHECK(r0->input == "plant");
  CHECK(r0->ingest_ns == 1234567890123);
  CHECK(r0->payload == "{\"t\":21.5}");
  CHECK(r0->attribute("topic") == "sensors/1/telemetry");
  CHECK(r0->attribute("peer") == "10.0.0.7:5555");
  CHECK(r0->attribute("") == "");
  CHECK_FALSE(r0->attribute("missing"));
  std::vector<std::string> keys;
  r0->for_each_attribute([&](std::string_view k, std::string_view) { keys.emplace_back(k); });
  CHECK(keys == std::vector<std::string>{"topic", "peer", ""});
  CHECK(peek_input(b.encoded(0)) == "plant");

  auto r1 = decode_record(8, b.encoded(1));
  REQUIRE(r1);
  CHECK(r1->ingest_ns == -5);
  CHECK(r1->payload.empty());
  auto r2 = decode_record(9, b.encoded(2));
  REQUIRE(r2);
  CHECK(r2->input.size() == kMaxInputNameBytes);
  CHECK(r2->payload.size() == 100000);

  CHECK_THROWS_AS(b.add(std::string(kMaxInputNameBytes + 1, 'n'), 0, "x"), std::invalid_argument);
}

TEST_CASE("malformed record bytes are refused with a reason, never read out of bounds", "[record]") {
  std::string error;
  CHECK_FALSE(decode_record(1, "", &error));
  CHECK(error.find("shorter than") != std::string::npos);
  EncodedRecords b;
  Attribute attrs[] = {{"k", "v"}};
  b.add("in", 1, "payload", attrs);
  std::string good(b.encoded(0));
  std::string bad_format = good;
  bad_format[0] = 9;
  CHECK_FALSE(decode_record(1, bad_format, &error));
  CHECK(error.find("unknown record format 9") != std::string::npos);
  for (std::size_t cut = 0; cut < kRecordHeaderBytes + 2 + 7; ++cut) {
    // Every truncation that cuts into the header, the input name or the attributes is refused.
    CHECK_FALSE(decode_record(1, good.substr(0, cut), &error));
  }
  // Random bytes: decoding either fails cleanly or yields views inside the buffer (ASan checks).
  std::mt19937_64 rng(42);
  for (int i = 0; i < 20000; ++i) {
    std::string junk(rng() % 64, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    if (!junk.empty() && rng() % 2) junk[0] = 1;
    if (auto v = decode_record(1, junk, &error)) {
      std::size_t total = 0;
      v->for_each_attribute([&](std::string_view k, std::string_view val) { total += k.size() + val.size(); });
      CHECK(v->payload.size() + v->input.size() + total <= junk.size());
    }
    (void)peek_input(junk);
  }
}
