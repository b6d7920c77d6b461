// Bugs the fuzz targets (fuzz/) found, or that writing their properties showed, each fed through
// the real function. The inputs are also kept in fuzz/corpus/<target>/ (see fuzz/README.md).

#include <catch2/catch.hpp>

#include <string>
#include <utility>
#include <vector>

#include "../../plugins/outputs_http/response.hpp"
#include "common/strings.hpp"
#include "config/loader.hpp"
#include "engine/agent_config.hpp"
#include "inputs_http/json_body.hpp"
#include "input/line_framer.hpp"
#include "plugin/registry.hpp"

using namespace tank;

namespace {

struct Framed {
  std::vector<std::string> lines;
  std::vector<std::pair<std::string, std::uint64_t>> oversize;
};

// Frames `bytes` with reads of `read_size` bytes, then the end of the stream.
Framed frame(std::string_view bytes, std::size_t max_line, std::size_t read_size) {
  Framed out;
  input::LineFramer framer(max_line);
  auto on_line = [&](std::string_view line) { out.lines.emplace_back(line); };
  auto on_oversize = [&](std::string_view head, std::uint64_t length) { out.oversize.emplace_back(head, length); };
  for (std::size_t at = 0; at < bytes.size(); at += read_size) framer.feed(bytes.substr(at, read_size), on_line, on_oversize);
  framer.finish(on_line, on_oversize);
  return out;
}

}  // namespace

// fuzz/corpus/line_framer/regression-unterminated-max-plus-one: the last line of a stream,
// without '\n', one byte over max_line_bytes was taken as a record.
TEST_CASE("line framing: an unterminated last line over max_line_bytes is oversize, not a record", "[fuzz][input]") {
  for (std::size_t read_size : {1, 2, 100}) {
    const Framed f = frame("ok\naaaaa", 4, read_size);
    CHECK(f.lines == std::vector<std::string>{"ok"});
    REQUIRE(f.oversize.size() == 1);
    CHECK(f.oversize[0] == std::pair<std::string, std::uint64_t>{"aaaaa", 5});
  }
  // A final '\r' is not part of the line, as for terminated lines.
  CHECK(frame("aaaa\r", 4, 1).lines == std::vector<std::string>{"aaaa"});
  CHECK(frame("aaaa\r", 4, 10).lines == std::vector<std::string>{"aaaa"});
}

// fuzz/corpus/line_framer/regression-oversize-cr-split: an oversize line ending in "\r\n" was
// reported one byte longer when the '\r' came in the same read as the rest of the line than when
// the whole line came at once.
TEST_CASE("line framing: an oversize line has the same length however it is read", "[fuzz][input]") {
  for (std::size_t read_size : {1, 3, 7, 100}) {
    INFO(read_size);
    const Framed f = frame("aaaaaa\r\nb\nccccccc\r", 4, read_size);
    CHECK(f.lines == std::vector<std::string>{"b"});
    REQUIRE(f.oversize.size() == 2);
    CHECK(f.oversize[0].second == 6);
    CHECK(f.oversize[1].second == 7);
  }
}

// A *_file secret was read whole whatever it was: a device or a FIFO has no size to check first,
// so `auth_token_file = "/dev/zero"` read until memory ran out. (Seen while writing the config
// target, which skips inputs naming /dev so that the fuzzer reads no devices: no corpus entry.)
TEST_CASE("config: a secret file is read only up to its bound, also from a device", "[fuzz][config]") {
  plugin::Registry plugins;
  plugin::register_builtin(plugins);
  const config::Schema schema = engine::build_schema(plugins);
  const auto r = config::load_text("[[inputs.http]]\nauth_token_file = \"/dev/zero\"\n", "t.toml", schema);
  CHECK_FALSE(r.document);
  const auto d = r.diagnostics.sorted();
  REQUIRE(d.size() == 1);
  CHECK(d[0].key == "inputs.http[0].auth_token_file");
  CHECK(d[0].message == "/dev/zero has more than 65536 bytes");
}

// fuzz/corpus/http_response/regression-utf8-cut-at-512: an answer whose body is UTF-8 text was
// quoted as "(a body that is not UTF-8 text)" when the 512-byte excerpt cut a character in two.
TEST_CASE("outputs.http: the excerpt of an answer does not cut a UTF-8 character", "[fuzz][output]") {
  plugins::http_output::Response r;
  r.result(422);
  r.reason("Unprocessable Entity");
  std::string body = "x";
  for (int i = 0; i < 300; ++i) body += "\xc3\xa9";  // é: byte 512 is the second byte of one
  r.body() = body;
  const auto result = plugins::http_output::classify_response(r, 0);
  CHECK(result.status == plugin::SendStatus::rejected);
  CHECK(result.detail == "HTTP 422 Unprocessable Entity: " + body.substr(0, 511));
  CHECK_FALSE(strings::invalid_utf8_at(result.detail));
}

// fuzz/corpus/json/big-numbers: an inputs.http body that is a JSON array holding 1e999 (valid
// JSON, a number beyond a double's range) was split into records, the element serialized by
// Boost.JSON as `Infinity`, which is not JSON: stored as a record without being decoded (the
// body had been), it would have reached the outputs as it was. The body is now refused whole.
TEST_CASE("http body splitting: an array element beyond a double's range is refused, not stored as Infinity",
          "[fuzz][input]") {
  const auto r = input::split_json_body("[1, 1e999]", false);
  CHECK(r.payloads.empty());
  CHECK(r.error.find("element 1 of the array has a number beyond the range of a double") == 0);
  // As one document or NDJSON the text is kept as sent, which is JSON.
  CHECK(input::split_json_body("1e999", false).payloads.size() == 1);
  CHECK(input::split_json_body("[1e999]\n{\"t\":-1e999}\n", true).payloads.size() == 2);
  // "Infinity" inside a string is no number.
  CHECK(input::split_json_body("[\"Infinity\"]", false).payloads.size() == 1);
}

// fuzz/corpus/json/regression-nan-element: 0e999 in an array parses as NaN with Boost.JSON 1.81,
// serialized as `NaN`, not JSON either.
TEST_CASE("http body splitting: an array element that parses as NaN (0e999) is refused, not stored as NaN",
          "[fuzz][input]") {
  const auto r = input::split_json_body("[1, 0e999]", false);
  CHECK(r.payloads.empty());
  CHECK(r.error.find("element 1 of the array") == 0);
  CHECK(input::split_json_body("[\"NaN\", 0e5]", false).payloads.size() == 2);
}
