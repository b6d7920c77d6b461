#pragma once

// How outputs.http reads an upstream's answer to a batch (net::HttpClient does the I/O):
//
//   2xx                                   delivered
//   408, 429, 5xx, 3xx (not followed)     retry, after Retry-After when the answer has one
//   any other status                      rejected (the batch is dead-lettered)
//
// The fuzz target fuzz/http_response_fuzz.cpp feeds bytes through the same parser settings and
// classify_response().

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "plugin/output.hpp"

namespace tank::plugins::http_output {

namespace http = boost::beast::http;
using Response = http::response<http::string_body>;
using ResponseParser = http::response_parser<http::string_body>;

// The most bytes of an answer's body that are read; a longer answer fails the attempt (retry).
inline constexpr std::uint64_t kMaxResponseBodyBytes = 1 << 20;
// The most bytes of an answer's body quoted in SendResult::detail.
inline constexpr std::size_t kMaxExcerptBytes = 512;

// Sets the limits of a fresh parser for one answer.
void limit_response(ResponseParser& parser);

// Retry-After: delta-seconds or an HTTP date (RFC 9110, section 10.2.3), as a wait from `now_ns`
// (wall clock), at most 24 hours; nullopt when the value is neither.
std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value, std::int64_t now_ns);

// The outcome of a batch from the answer. `detail` is "HTTP <status> <reason>: <body excerpt>",
// always valid UTF-8: a reason or an excerpt that is not UTF-8 text is replaced by a note.
plugin::SendResult classify_response(const Response& response, std::int64_t now_ns);

}  // namespace tank::plugins::http_output
