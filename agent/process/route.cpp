#include "process/route.hpp"

#include "common/strings.hpp"

#include <cstring>

#include <fmt/format.h>

#include "process/json_schema.hpp"

namespace tank::process {

std::optional<Format> parse_format(std::string_view text) {
  if (text == "json") return Format::json;
  if (text == "text") return Format::text;
  if (text == "raw") return Format::raw;
  return std::nullopt;
}

std::string_view to_string(Format format) {
  switch (format) {
    case Format::json: return "json";
    case Format::text: return "text";
    case Format::raw: return "raw";
  }
  return "?";
}

Route::Route(std::string input, Format format, std::vector<Check> checks)
    : input_(std::move(input)), format_(format), checks_(std::move(checks)) {}

Route::Session::Session(const Route& route) : route_(route) {
  for (const Check& c : route.checks_) {
    checks_.push_back(c.check->session());
    needs_document_ = needs_document_ || c.check->needs_document();
  }
  if (route.format_ == Format::json) decoder_ = std::make_unique<JsonDecoder>();
}

Route::Session::~Session() = default;

bool Route::Session::admit(std::string_view payload, plugin::Rejection& rejection, bool known_json) {
  const boost::json::value* document = nullptr;
  switch (route_.format_) {
    case Format::json:
      if (!known_json || needs_document_) {
        DecodeError error;
        document = decoder_->decode(payload, &error);
        if (document == nullptr) {
          rejection.reason = "decode_error";
          rejection.detail = fmt::format("not JSON: {} at byte {}", error.message, error.offset);
          return false;
        }
      }
      break;
    case Format::text:
      if (auto at = strings::invalid_utf8_at(payload)) {
        rejection.reason = "decode_error";
        rejection.detail = fmt::format("not UTF-8 text: invalid byte 0x{:02x} at byte {}",
                                       static_cast<unsigned>(static_cast<unsigned char>(payload[*at])), *at);
        return false;
      }
      break;
    case Format::raw:
      break;
  }
  for (std::size_t i = 0; i < checks_.size(); ++i) {
    const Check& c = route_.checks_[i];
    c.metrics->in();
    if (!checks_[i]->check(payload, document, rejection)) {
      c.metrics->dead_lettered(rejection.reason);
      rejection.detail = fmt::format("processor \"{}\": {}", c.processor, rejection.detail);
      return false;
    }
    c.metrics->out();
  }
  return true;
}

}  // namespace tank::process
