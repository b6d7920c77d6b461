// Group key bytes (see "Persistence" in aggregator.hpp): writing them from group_by values,
// reading them back as JSON; and JSON numbers. Part of aggregator.hpp's implementation
// (aggregator_detail.hpp lists the pieces).

#include <bit>
#include <cmath>
#include <iterator>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "common/strings.hpp"
#include "process/aggregator_detail.hpp"

namespace tank::process {
using namespace aggregator_detail;
namespace {

// Group key value tags. Their order is the order groups of different kinds are emitted in.
enum GroupTag : std::uint8_t {
  kTagNull = 0x01,
  kTagFalse = 0x02,
  kTagTrue = 0x03,
  kTagInt = 0x04,     // int64, and uint64 / integral doubles that fit one
  kTagUint = 0x05,    // integers above INT64_MAX
  kTagDouble = 0x06,  // other doubles
  kTagString = 0x07,  // bytes, 0x00 escaped as 0x00 0xFF, ended by 0x00
  kTagJson = 0x08,    // serialized array or object, escaped and ended as strings
};

void put_be64(std::string& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xFF));
}

std::uint64_t get_be64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

void put_escaped(std::string& out, std::string_view bytes) {
  std::size_t from = 0;
  while (true) {
    const std::size_t zero = bytes.find('\0', from);
    if (zero == std::string_view::npos) {
      out.append(bytes.data() + from, bytes.size() - from);
      break;
    }
    out.append(bytes.data() + from, zero - from + 1);
    out.push_back(static_cast<char>(0xFF));
    from = zero + 1;
  }
  out.push_back('\0');
}

void put_int_tag(std::string& out, std::int64_t v) {
  out.push_back(static_cast<char>(kTagInt));
  put_be64(out, static_cast<std::uint64_t>(v) ^ (1ULL << 63));
}

// Reads an escaped string of the group key, appending its bytes to `out`; false if malformed.
bool take_escaped(std::string_view& in, std::string& out) {
  while (true) {
    const std::size_t zero = in.find('\0');
    if (zero == std::string_view::npos) return false;
    out.append(in.data(), zero);
    if (zero + 1 < in.size() && static_cast<unsigned char>(in[zero + 1]) == 0xFF) {
      out.push_back('\0');
      in.remove_prefix(zero + 2);
      continue;
    }
    in.remove_prefix(zero + 1);
    return true;
  }
}

}  // namespace

namespace aggregator_detail {

// Window starts as 8 bytes that sort (memcmp) like the signed numbers.
void write_start(char* p, std::int64_t start) {
  const std::uint64_t v = static_cast<std::uint64_t>(start) ^ (1ULL << 63);
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (56 - 8 * i)) & 0xFF);
}

std::int64_t read_start(const char* p) { return static_cast<std::int64_t>(get_be64(p) ^ (1ULL << 63)); }

// Appends the group key bytes of one group_by value (nullptr: missing).
void put_group_value(std::string& out, const boost::json::value* v) {
  if (v == nullptr) {
    out.push_back(static_cast<char>(kTagNull));
    return;
  }
  switch (v->kind()) {
    case boost::json::kind::null: out.push_back(static_cast<char>(kTagNull)); return;
    case boost::json::kind::bool_: out.push_back(static_cast<char>(v->get_bool() ? kTagTrue : kTagFalse)); return;
    case boost::json::kind::int64: put_int_tag(out, v->get_int64()); return;
    case boost::json::kind::uint64: {
      const std::uint64_t u = v->get_uint64();
      if (u <= static_cast<std::uint64_t>(kMax)) {
        put_int_tag(out, static_cast<std::int64_t>(u));
      } else {
        out.push_back(static_cast<char>(kTagUint));
        put_be64(out, u);
      }
      return;
    }
    case boost::json::kind::double_: {
      const double d = v->get_double();
      if (std::isfinite(d) && d == std::trunc(d)) {
        if (d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
          put_int_tag(out, static_cast<std::int64_t>(d));
          return;
        }
        if (d >= 0 && d < 18446744073709551616.0) {
          out.push_back(static_cast<char>(kTagUint));
          put_be64(out, static_cast<std::uint64_t>(d));
          return;
        }
      }
      // Order-preserving bits: flip all of a negative number, only the sign of a positive one.
      std::uint64_t bits = std::bit_cast<std::uint64_t>(d);
      bits = (bits & (1ULL << 63)) != 0 ? ~bits : bits | (1ULL << 63);
      out.push_back(static_cast<char>(kTagDouble));
      put_be64(out, bits);
      return;
    }
    case boost::json::kind::string: {
      const auto& s = v->get_string();
      out.push_back(static_cast<char>(kTagString));
      put_escaped(out, std::string_view(s.data(), s.size()));
      return;
    }
    case boost::json::kind::array:
    case boost::json::kind::object:
      out.push_back(static_cast<char>(kTagJson));
      put_escaped(out, boost::json::serialize(*v));
      return;
  }
}

// A number as JSON: the shortest text that reads back as the same double; null if not finite.
void append_double(std::string& out, double d) {
  if (!std::isfinite(d)) {
    out += "null";
    return;
  }
  fmt::format_to(std::back_inserter(out), "{}", d);
}

void append_number_or_null(std::string& out, bool present, double d) {
  if (present) {
    append_double(out, d);
  } else {
    out += "null";
  }
}

// Reads one group key value from `in` and appends it as JSON to `json`. Returns nullptr, or what is
// wrong with the bytes.
const char* take_group_value(std::string_view& in, std::string& json, bool verify) {
  if (in.empty()) return "ends before its last group value";
  const auto tag = static_cast<std::uint8_t>(in[0]);
  in.remove_prefix(1);
  switch (tag) {
    case kTagNull: json += "null"; return nullptr;
    case kTagFalse: json += "false"; return nullptr;
    case kTagTrue: json += "true"; return nullptr;
    case kTagInt:
    case kTagUint:
    case kTagDouble: {
      if (in.size() < 8) return "has a truncated number in its group";
      const std::uint64_t bits = get_be64(in.data());
      in.remove_prefix(8);
      if (tag == kTagInt) {
        fmt::format_to(std::back_inserter(json), "{}", static_cast<std::int64_t>(bits ^ (1ULL << 63)));
      } else if (tag == kTagUint) {
        fmt::format_to(std::back_inserter(json), "{}", bits);
      } else {
        append_double(json, std::bit_cast<double>((bits & (1ULL << 63)) != 0 ? bits & ~(1ULL << 63) : ~bits));
      }
      return nullptr;
    }
    case kTagString: {
      std::string raw;
      if (!take_escaped(in, raw)) return "has an unterminated string in its group";
      if (strings::invalid_utf8_at(raw)) return "has a group string that is not UTF-8";
      strings::append_json_string(json, raw);
      return nullptr;
    }
    case kTagJson: {
      std::string raw;
      if (!take_escaped(in, raw)) return "has an unterminated JSON value in its group";
      json += raw;
      if (verify) {
        boost::json::error_code ec;
        (void)boost::json::parse(raw, ec);
        if (ec) return "has a group value that is not JSON";
      }
      return nullptr;
    }
    default: return "has an unknown group value tag";
  }
}

}  // namespace aggregator_detail
}  // namespace tank::process
