#include "json_body.hpp"

#include <boost/json.hpp>
#include <boost/json/basic_parser_impl.hpp>
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

// Checks that text is JSON without building a value (Boost.JSON's basic_parser with a handler
// that keeps nothing, as in Boost.JSON's validate example): NDJSON bodies are checked line by
// line at the speed of the parser alone. One Validator is reused for every line of a body.
class Validator {
  struct Handler {
    static constexpr std::size_t max_object_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_array_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_key_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_string_size = static_cast<std::size_t>(-1);
    using ec_t = boost::system::error_code;
    bool on_document_begin(ec_t&) { return true; }
    bool on_document_end(ec_t&) { return true; }
    bool on_array_begin(ec_t&) { return true; }
    bool on_array_end(std::size_t, ec_t&) { return true; }
    bool on_object_begin(ec_t&) { return true; }
    bool on_object_end(std::size_t, ec_t&) { return true; }
    bool on_string_part(std::string_view, std::size_t, ec_t&) { return true; }
    bool on_string(std::string_view, std::size_t, ec_t&) { return true; }
    bool on_key_part(std::string_view, std::size_t, ec_t&) { return true; }
    bool on_key(std::string_view, std::size_t, ec_t&) { return true; }
    bool on_number_part(std::string_view, ec_t&) { return true; }
    bool on_int64(std::int64_t, std::string_view, ec_t&) { return true; }
    bool on_uint64(std::uint64_t, std::string_view, ec_t&) { return true; }
    bool on_double(double, std::string_view, ec_t&) { return true; }
    bool on_bool(bool, ec_t&) { return true; }
    bool on_null(ec_t&) { return true; }
    bool on_comment_part(std::string_view, ec_t&) { return true; }
    bool on_comment(std::string_view, ec_t&) { return true; }
  };
  json::basic_parser<Handler> parser_{json::parse_options()};

 public:
  // True when `text` is exactly one JSON document (whitespace around it allowed); otherwise
  // says why and at which byte.
  bool check(std::string_view text, std::string* why) {
    parser_.reset();
    boost::system::error_code ec;
    std::size_t used = parser_.write_some(false, text.data(), text.size(), ec);
    if (!ec && used < text.size() && !trim(text.substr(used)).empty()) ec = json::error::extra_data;
    if (ec) {
      *why = fmt::format("{} at byte {}", ec.message(), used + 1);
      return false;
    }
    return true;
  }
};

void split_lines(std::string_view body, JsonBody& out) {
  Validator validator;
  std::size_t line_number = 0;
  while (!body.empty()) {
    ++line_number;
    auto nl = body.find('\n');
    std::string_view line = trim(body.substr(0, nl));
    body.remove_prefix(nl == std::string_view::npos ? body.size() : nl + 1);
    if (line.empty()) continue;
    std::string why;
    if (!validator.check(line, &why)) {
      out.payloads.clear();
      out.error = fmt::format("line {} is not JSON: {}", line_number, why);
      return;
    }
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
    Validator validator;
    for (const auto& element : v.as_array()) {
      out.owned.push_back(json::serialize(element));
      // A number beyond a double's range (1e999) parses as infinity, and 0e999 as NaN (found by
      // fuzzing), which Boost.JSON 1.81 serializes as `Infinity` / `NaN`: not JSON, so such an
      // element could not be stored as a record.
      std::string why;
      const std::string& element_text = out.owned.back();
      if ((element_text.find("Infinity") != std::string::npos || element_text.find("NaN") != std::string::npos) &&
          !validator.check(element_text, &why)) {
        out.error = fmt::format("element {} of the array has a number beyond the range of a double (or 0e999, "
                                "which parses as NaN): send it as a string, or the body as NDJSON (records kept "
                                "as sent)",
                                out.owned.size() - 1);
        out.owned.clear();
        return out;
      }
    }
    for (const auto& s : out.owned) out.payloads.emplace_back(s);
    return out;  // an empty array stores nothing, and is no error
  }
  out.payloads.push_back(text);
  return out;
}

}  // namespace tank::input
