#include "input/json_body.hpp"

#include <boost/json.hpp>
#include <fmt/format.h>

namespace tank::input {
namespace {

namespace json = boost::json;

std::string_view trim(std::string_view s) {
  const char* ws = " \t\r\n";
  auto b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  auto e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

// Parses `text` as exactly one JSON document; on failure says why and at which byte.
bool parse_one(std::string_view text, json::monotonic_resource& memory, std::string* why) {
  json::stream_parser p(&memory);
  boost::system::error_code ec;
  std::size_t used = p.write_some(text.data(), text.size(), ec);
  if (!ec && !p.done()) {
    p.finish(ec);
    used = text.size();
  }
  if (!ec && used < text.size() && !trim(text.substr(used)).empty()) {
    ec = json::error::extra_data;
  }
  if (ec) {
    *why = fmt::format("{} at byte {}", ec.message(), used + 1);
    return false;
  }
  return true;
}

void split_lines(std::string_view body, JsonBody& out) {
  unsigned char buffer[4096];
  json::monotonic_resource memory(buffer, sizeof buffer);
  std::size_t line_number = 0;
  while (!body.empty()) {
    ++line_number;
    auto nl = body.find('\n');
    std::string_view line = trim(body.substr(0, nl));
    body.remove_prefix(nl == std::string_view::npos ? body.size() : nl + 1);
    if (line.empty()) continue;
    std::string why;
    if (!parse_one(line, memory, &why)) {
      out.payloads.clear();
      out.error = fmt::format("line {} is not JSON: {}", line_number, why);
      return;
    }
    memory.release();
    out.payloads.push_back(line);
  }
}

}  // namespace

JsonBody split_json_body(std::string_view body, bool ndjson) {
  JsonBody out;
  std::string_view text = trim(body);
  if (text.empty()) {
    out.error = "the body is empty: send a JSON document, a JSON array or NDJSON";
    return out;
  }
  if (ndjson) {
    split_lines(text, out);
    return out;
  }
  json::monotonic_resource memory;
  json::stream_parser p(&memory);
  boost::system::error_code ec;
  std::size_t used = p.write_some(text.data(), text.size(), ec);
  if (!ec && !p.done()) {
    p.finish(ec);
    used = text.size();
  }
  if (ec) {
    out.error = fmt::format("the body is not JSON: {} at byte {}", ec.message(), used + 1);
    return out;
  }
  if (!trim(text.substr(used)).empty()) {
    // More than one document: NDJSON.
    split_lines(text, out);
    return out;
  }
  json::value v = p.release();
  if (v.is_array()) {
    out.owned.reserve(v.as_array().size());
    for (const auto& element : v.as_array()) out.owned.push_back(json::serialize(element));
    for (const auto& s : out.owned) out.payloads.emplace_back(s);
    return out;  // an empty array stores nothing, and is no error
  }
  out.payloads.push_back(text);
  return out;
}

}  // namespace tank::input
