#include "response.hpp"

#include <algorithm>
#include <charconv>
#include <ctime>
#include <string>

#include <fmt/format.h>

#include "common/strings.hpp"

namespace tank::plugins::http_output {

void limit_response(ResponseParser& parser) { parser.body_limit(kMaxResponseBodyBytes); }

std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value, std::int64_t now_ns) {
  std::uint64_t seconds = 0;
  auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
  if (ec == std::errc() && p == value.data() + value.size()) {
    return std::chrono::milliseconds(std::min<std::uint64_t>(seconds, 24 * 3600) * 1000);
  }
  std::tm tm{};
  const std::string owned(value);
  if (strptime(owned.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm) == nullptr) return std::nullopt;
  const std::int64_t at_ms = static_cast<std::int64_t>(timegm(&tm)) * 1000;
  const std::int64_t now_ms = now_ns / 1'000'000;
  return std::chrono::milliseconds(std::clamp<std::int64_t>(at_ms - now_ms, 0, 24 * 3600 * 1000));
}

namespace {

// The first bytes of `text`, at most `max`, without cutting a UTF-8 sequence in two.
std::string_view utf8_prefix(std::string_view text, std::size_t max) {
  if (text.size() <= max) return text;
  std::size_t cut = max;
  // A cut before a continuation byte moves back to the start of its sequence (4 bytes at most).
  for (int i = 0; i < 3 && cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xc0) == 0x80; ++i) --cut;
  return text.substr(0, cut);
}

}  // namespace

plugin::SendResult classify_response(const Response& r, std::int64_t now_ns) {
  const unsigned status = r.result_int();
  std::string excerpt(utf8_prefix(r.body(), kMaxExcerptBytes));
  if (strings::invalid_utf8_at(excerpt)) excerpt = "(a body that is not UTF-8 text)";
  const std::string detail =
      // The reason phrase as printable ASCII: it may hold any byte (found by fuzzing), and the
      // detail goes into logs and dead letters.
      fmt::format("HTTP {} {}{}{}", status, strings::printable(r.reason(), 128), excerpt.empty() ? "" : ": ", excerpt);
  if (status >= 200 && status < 300) return {plugin::SendStatus::delivered, detail, std::nullopt};
  if (status == 408 || status == 429 || status >= 500 || (status >= 300 && status < 400)) {
    std::optional<std::chrono::milliseconds> after;
    if (auto it = r.find(http::field::retry_after); it != r.end()) after = parse_retry_after(it->value(), now_ns);
    return {plugin::SendStatus::retry, detail, after};
  }
  return {plugin::SendStatus::rejected, detail, std::nullopt};
}

}  // namespace tank::plugins::http_output
