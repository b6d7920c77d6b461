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

TEST_CASE("a read batch holds every record appended across its buffer's growth, reports the bad ones, and keeps its memory when cleared",
          "[record]") {
  // Records of every size from empty to 20 KB (the buffer grows many times while views exist),
  // with a malformed one among them, then the batch emptied and filled again.
  EncodedRecords src;
  Attribute attrs[] = {{"topic", "t/1"}};
  constexpr std::size_t kRecords = 300;
  for (std::size_t i = 0; i < kRecords; ++i) {
    src.add("in" + std::to_string(i % 7), static_cast<std::int64_t>(i), std::string(i * i % 20011, 'a' + i % 26), attrs);
  }
  ReadBatch batch;
  for (int round = 0; round < 2; ++round) {
    batch.clear();
    for (std::size_t i = 0; i < kRecords; ++i) {
      batch.append(100 + i, src.encoded(i));
      if (i == 150) batch.append(9999, std::string_view("\x07garbage", 8));
    }
    batch.set_scanned_to(100 + kRecords - 1);
    std::vector<std::pair<std::uint64_t, std::string>> bad;
    batch.finish(&bad);
    REQUIRE(batch.size() == kRecords);
    REQUIRE(bad.size() == 1);
    CHECK(bad[0].first == 9999);
    CHECK(bad[0].second.find("record 9999") != std::string::npos);
    std::size_t stored = 0;
    for (std::size_t i = 0; i < kRecords; ++i) {
      const RecordView& r = batch.records()[i];
      CHECK(r.seq == 100 + i);
      CHECK(r.ingest_ns == static_cast<std::int64_t>(i));
      CHECK(r.input == "in" + std::to_string(i % 7));
      CHECK(r.payload == std::string(i * i % 20011, 'a' + i % 26));
      CHECK(r.attribute("topic") == "t/1");
      stored += src.encoded(i).size();
    }
    CHECK(batch.bytes() == stored + 8);
    CHECK(batch.scanned_to() == 100 + kRecords - 1);
  }
  const std::size_t held = batch.capacity_bytes();
  batch.clear();
  CHECK(batch.empty());
  CHECK(batch.bytes() == 0);
  CHECK(batch.capacity_bytes() == held);
}
