// The HTTP output's handling of an upstream's answer (plugins/outputs_http/response.hpp): the
// bytes of the answer read by Beast's parser with the output's limit, then classified (status
// class, Retry-After as seconds or an HTTP date, the detail with its body excerpt).
//
// Input: [read size] bytes of the answer...
// Properties: the detail is valid UTF-8 (it becomes a dead letter's detail, shown as JSON), starts
// with "HTTP <status>", and a Retry-After wait is within 24 hours.

#include <string>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>

#include "common/strings.hpp"
#include "fuzz_support.hpp"
#include "../plugins/outputs_http/response.hpp"
#include "targets.hpp"

namespace tank::fuzz {

int http_response_target(const std::uint8_t* data, std::size_t size) {
  namespace http = boost::beast::http;
  namespace out = plugins::http_output;
  Controls controls(data, size);
  const std::size_t read_size = 1 + controls.byte() * 16;
  const std::string_view bytes = as_text(data, size);
  constexpr std::int64_t kNow = 1'700'000'000'000'000'000;

  MemoryStream stream(bytes, read_size);
  boost::beast::flat_buffer buffer;
  out::ResponseParser parser;
  out::limit_response(parser);
  boost::system::error_code ec;
  http::read(stream, buffer, parser, ec);
  if (!ec) {
    const plugin::SendResult r = out::classify_response(parser.get(), kNow);
    require(!strings::invalid_utf8_at(r.detail), "the detail is UTF-8 text");
    require(r.detail.starts_with("HTTP " + std::to_string(parser.get().result_int())), "the detail names the status");
    if (r.retry_after) {
      require(r.status == plugin::SendStatus::retry, "only a retry carries a Retry-After");
      require(*r.retry_after >= std::chrono::milliseconds(0) && *r.retry_after <= std::chrono::hours(24),
              "a Retry-After wait is within 24 hours");
    }
  }
  // Retry-After values on their own (the header above is only reached through a whole answer).
  if (auto wait = out::parse_retry_after(bytes.substr(0, 64), kNow)) {
    require(*wait >= std::chrono::milliseconds(0) && *wait <= std::chrono::hours(24),
            "a Retry-After wait is within 24 hours");
  }
  return 0;
}

}  // namespace tank::fuzz

TANK_FUZZ_TARGET(tank::fuzz::http_response_target)
