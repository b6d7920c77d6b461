// JSON pointers (RFC 6901) for json_schema*.cpp: building them and resolving $ref fragments.

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "process/json_schema_detail.hpp"

namespace tank::process {
namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

namespace schema_detail {


void append_pointer_token(std::string& pointer, std::string_view token) {
  pointer += '/';
  for (char c : token) {
    if (c == '~') {
      pointer += "~0";
    } else if (c == '/') {
      pointer += "~1";
    } else {
      pointer += c;
    }
  }
}

std::string pointer_child(const std::string& pointer, std::string_view token) {
  std::string out = pointer;
  append_pointer_token(out, token);
  return out;
}

// A $ref fragment is URI-encoded ("#/definitions/a%25b"): decode %XX first, then ~0/~1 per token.
std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      const int hi = hex_digit(s[i + 1]);
      const int lo = hex_digit(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

// Resolves an (already percent-decoded) JSON pointer in `root`. On failure returns nullptr and
// says why in `why`.
const json::value* resolve_pointer(const json::value& root, std::string_view pointer, std::string* why) {
  const json::value* at = &root;
  std::string where;
  std::size_t i = 0;
  while (i < pointer.size()) {
    if (pointer[i] != '/') {
      *why = "a JSON pointer starts with '/'";
      return nullptr;
    }
    const std::size_t end = std::min(pointer.find('/', i + 1), pointer.size());
    std::string token;
    for (std::size_t j = i + 1; j < end; ++j) {
      if (pointer[j] == '~' && j + 1 < end && (pointer[j + 1] == '0' || pointer[j + 1] == '1')) {
        token += pointer[j + 1] == '0' ? '~' : '/';
        ++j;
      } else {
        token += pointer[j];
      }
    }
    if (const json::object* o = at->if_object()) {
      at = o->if_contains(token);
      if (at == nullptr) {
        *why = fmt::format("\"{}\" has no member \"{}\"", where.empty() ? "#" : where, token);
        return nullptr;
      }
    } else if (const json::array* a = at->if_array()) {
      std::size_t index = 0;
      const bool digits = !token.empty() && token.size() < 10 &&
                          std::all_of(token.begin(), token.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (digits) index = std::stoul(token);
      if (!digits || index >= a->size()) {
        *why = fmt::format("\"{}\" has no element \"{}\"", where.empty() ? "#" : where, token);
        return nullptr;
      }
      at = &(*a)[index];
    } else {
      *why = fmt::format("\"{}\" is neither an object nor an array", where.empty() ? "#" : where);
      return nullptr;
    }
    append_pointer_token(where, token);
    i = end;
  }
  return at;
}

std::string shown_pointer(const std::string& pointer) { return pointer.empty() ? "/" : pointer; }

}  // namespace schema_detail
}  // namespace tank::process
