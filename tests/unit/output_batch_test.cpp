#include <catch2/catch.hpp>

#include <boost/json.hpp>
#include <zlib.h>
#include <zstd.h>

#include <fmt/format.h>

#include "common/strings.hpp"
#include "output/batch.hpp"

#include <random>

using namespace tank::output;

namespace {

std::string unzstd(const std::string& in) {
  std::string out(ZSTD_getFrameContentSize(in.data(), in.size()), '\0');
  const std::size_t n = ZSTD_decompress(out.data(), out.size(), in.data(), in.size());
  REQUIRE_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

std::string gunzip(const std::string& in) {
  z_stream z{};
  REQUIRE(inflateInit2(&z, 15 + 32) == Z_OK);
  std::string out(1 << 20, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  REQUIRE(inflate(&z, Z_FINISH) == Z_STREAM_END);
  out.resize(out.size() - z.avail_out);
  inflateEnd(&z);
  return out;
}

}  // namespace

TEST_CASE("output batch: NDJSON keeps JSON records as they are and wraps text and raw ones", "[unit][output]") {
  BodyEncoder e(Encoding::ndjson);
  e.add(R"({"a":1})", PayloadKind::json);
  e.add("line with \"quotes\" and\ttab", PayloadKind::text);
  e.add(std::string("\x00\xff", 2), PayloadKind::raw);
  CHECK(e.records() == 3);
  CHECK(e.finish() == "{\"a\":1}\n{\"message\":\"line with \\\"quotes\\\" and\\ttab\"}\n{\"message_base64\":\"AP8=\"}\n");
  // Every line is JSON.
  std::istringstream lines(e.finish());
  for (std::string line; std::getline(lines, line);) CHECK_NOTHROW(boost::json::parse(line));
  CHECK(content_type(Encoding::ndjson) == "application/x-ndjson");
}

TEST_CASE("output batch: text records escape every control character, quote and backslash", "[unit][output]") {
  // Every ASCII byte, each beside quotes and backslashes, and runs of them: the body parses back
  // to exactly the text (bytes from 0x80 on are the input's UTF-8 and pass as they are).
  std::string text;
  for (int c = 0; c < 0x80; ++c) {
    text.push_back(static_cast<char>(c));
    text += "a\"\\";
  }
  text += "\"\"\\\\\n\n\x01\x1f plain tail é";
  for (const std::string& t : {text, std::string(), std::string("no escapes at all"), std::string("\"")}) {
    BodyEncoder e(Encoding::ndjson);
    e.add(t, PayloadKind::text);
    std::string line = e.finish();
    REQUIRE(line.back() == '\n');
    line.pop_back();
    const boost::json::value v = boost::json::parse(line);
    CHECK(std::string(v.as_object().at("message").as_string()) == t);
    CHECK(line.find('\n') == std::string::npos);
  }
  BodyEncoder e(Encoding::ndjson);
  e.add(std::string("\x00\x1f\x7f", 3), PayloadKind::text);
  CHECK(e.finish() == "{\"message\":\"\\u0000\\u001f\x7f\"}\n");
}

TEST_CASE("output batch: the JSON string encoder matches a byte-by-byte reference at every length and position",
          "[unit][output]") {
  // The encoder works 16 bytes at a time where it can: escapes at each place in a chunk, runs of
  // them, chunks without any, and every tail length, appended after text already in the body.
  auto reference = [](std::string_view s) {
    std::string r = "\"";
    for (const char ch : s) {
      const auto c = static_cast<unsigned char>(ch);
      switch (c) {
        case '"': r += "\\\""; break;
        case '\\': r += "\\\\"; break;
        case '\n': r += "\\n"; break;
        case '\r': r += "\\r"; break;
        case '\t': r += "\\t"; break;
        case '\b': r += "\\b"; break;
        case '\f': r += "\\f"; break;
        default:
          if (c < 0x20) {
            r += fmt::format("\\u{:04x}", c);
          } else {
            r += ch;
          }
      }
    }
    return r + "\"";
  };
  std::mt19937 rng(23);
  const std::string alphabet = std::string("\"\\\n\r\t\b\f\x01\x1f\x7f\x80\xff", 12) + "abcxyz{}:,0";
  for (std::size_t len = 0; len < 100; ++len) {
    for (int density = 0; density < 4; ++density) {
      std::string text;
      for (std::size_t k = 0; k < len; ++k) {
        const bool special = static_cast<int>(rng() % 4) < density;
        text.push_back(special ? alphabet[rng() % 12] : alphabet[12 + rng() % (alphabet.size() - 12)]);
      }
      std::string out = "prefix";
      tank::strings::append_json_string(out, text);
      INFO("length " << len << ", density " << density);
      REQUIRE(out == "prefix" + reference(text));
    }
  }
}

TEST_CASE("output batch: a JSON array body is one JSON value", "[unit][output]") {
  BodyEncoder e(Encoding::json_array);
  CHECK(e.finish() == "[]");
  e.clear();
  e.add("1", PayloadKind::json);
  e.add("x", PayloadKind::text);
  const std::string body = e.finish();
  CHECK(body == R"([1,{"message":"x"}])");
  CHECK(e.finish() == body);  // finish() is idempotent
  CHECK(boost::json::parse(body).as_array().size() == 2);
  CHECK(content_type(Encoding::json_array) == "application/json");
}

TEST_CASE("output batch: compression round-trips and names its Content-Encoding", "[unit][output]") {
  std::string body;
  for (int i = 0; i < 2000; ++i) body += R"({"device":"d)" + std::to_string(i % 50) + R"(","v":)" + std::to_string(i) + "}\n";
  std::string out;
  compress(Compression::zstd, body, out);
  CHECK(out.size() < body.size() / 3);
  CHECK(unzstd(out) == body);
  compress(Compression::gzip, body, out);
  CHECK(out.size() < body.size() / 3);
  CHECK(gunzip(out) == body);
  compress(Compression::none, body, out);
  CHECK(out == body);
  compress(Compression::zstd, "", out);
  CHECK(unzstd(out).empty());
  CHECK(content_encoding(Compression::zstd) == "zstd");
  CHECK(content_encoding(Compression::gzip) == "gzip");
  CHECK(content_encoding(Compression::none).empty());
  CHECK(parse_compression("gzip") == Compression::gzip);
  CHECK_FALSE(parse_compression("lz4"));
  CHECK(parse_encoding("json_array") == Encoding::json_array);
  CHECK_FALSE(parse_encoding("csv"));
}

TEST_CASE("output batch: the idempotency key is deterministic and changes with every input", "[unit][output]") {
  const std::string key = idempotency_key("gw-1", "cloud", 0xabcdef, 101, 200, "body");
  CHECK(key == idempotency_key("gw-1", "cloud", 0xabcdef, 101, 200, "body"));
  CHECK(key.starts_with("gw-1/cloud/0000000000abcdef/101-200/"));
  CHECK(key.size() == std::string("gw-1/cloud/0000000000abcdef/101-200/").size() + 16);
  CHECK(key != idempotency_key("gw-2", "cloud", 0xabcdef, 101, 200, "body"));
  CHECK(key != idempotency_key("gw-1", "other", 0xabcdef, 101, 200, "body"));
  CHECK(key != idempotency_key("gw-1", "cloud", 0xabcde0, 101, 200, "body"));
  CHECK(key != idempotency_key("gw-1", "cloud", 0xabcdef, 102, 200, "body"));
  CHECK(key != idempotency_key("gw-1", "cloud", 0xabcdef, 101, 201, "body"));
  CHECK(key != idempotency_key("gw-1", "cloud", 0xabcdef, 101, 200, "bodY"));
  // Safe in an HTTP header as it is.
  for (char c : key) CHECK((std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '-' || c == '.' || c == '_'));
}

TEST_CASE("output batch: the batch in flight survives its encoding, and damage is refused", "[unit][output]") {
  const InFlightBatch b{.first_seq = 7, .last_seq = 1000, .ack_seq = 1005, .records = 900};
  const std::string bytes = encode_in_flight_batch(b);
  CHECK(decode_in_flight_batch(bytes) == b);
  std::string error;
  CHECK_FALSE(decode_in_flight_batch(bytes.substr(1), &error));
  CHECK(error.find("bytes") != std::string::npos);
  std::string other = bytes;
  other[0] = 9;
  CHECK_FALSE(decode_in_flight_batch(other, &error));
  CHECK(error.find("format 9") != std::string::npos);
  CHECK_FALSE(decode_in_flight_batch(encode_in_flight_batch({.first_seq = 5, .last_seq = 4, .ack_seq = 5, .records = 1}), &error));
  CHECK_FALSE(decode_in_flight_batch(encode_in_flight_batch({.first_seq = 1, .last_seq = 4, .ack_seq = 3, .records = 1})));
  CHECK_FALSE(decode_in_flight_batch(encode_in_flight_batch({.first_seq = 1, .last_seq = 4, .ack_seq = 4, .records = 5})));
  CHECK_FALSE(decode_in_flight_batch(encode_in_flight_batch({.first_seq = 0, .last_seq = 4, .ack_seq = 4, .records = 1})));
}

TEST_CASE("output batch: a list of open batches with done flags survives its encoding and disorder is refused",
          "[unit][output]") {
  const std::vector<tank::output::InFlightBatch> list{{.first_seq = 1, .last_seq = 3, .ack_seq = 4, .records = 3},
                                            {.first_seq = 5, .last_seq = 9, .ack_seq = 9, .records = 2, .done = true},
                                            {.first_seq = 10, .last_seq = 12, .ack_seq = 12, .records = 3, .rejected_through = 11}};
  const std::string bytes = tank::output::encode_in_flight_batches(list);
  auto back = tank::output::decode_in_flight_batches(bytes);
  REQUIRE(back);
  CHECK(*back == list);
  // Format 1 (one batch) reads as a list of one, not done.
  auto one = tank::output::decode_in_flight_batches(tank::output::encode_in_flight_batch(list[0]));
  REQUIRE(one);
  REQUIRE(one->size() == 1);
  CHECK(one->front() == list[0]);
  CHECK(tank::output::decode_in_flight_batches(tank::output::encode_in_flight_batches({}))->empty());
  // The state's choice: format 1 only for one plain batch.
  CHECK(tank::output::encode_open_state({list[0]}) == tank::output::encode_in_flight_batch(list[0]));
  CHECK(tank::output::decode_in_flight_batches(tank::output::encode_open_state({list[2]}))->front().rejected_through == 11);
  std::string error;
  CHECK_FALSE(tank::output::decode_in_flight_batches(bytes.substr(0, bytes.size() - 1), &error));
  CHECK(error.find("bytes for 3 batches") != std::string::npos);
  auto swapped = list;
  std::swap(swapped[0], swapped[2]);
  CHECK_FALSE(tank::output::decode_in_flight_batches(tank::output::encode_in_flight_batches(swapped), &error));
  CHECK(error == "batch 2: out of order");
  CHECK_FALSE(tank::output::decode_in_flight_batches("", &error));
  CHECK_FALSE(tank::output::decode_in_flight_batches(std::string(1, '\x07') + "xxxx", &error));
}
