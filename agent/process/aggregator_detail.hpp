#pragma once

// What the pieces of aggregator.hpp's implementation share; private to agent/process/aggregator*.cpp.
//   aggregator.cpp        Aggregator: the spec, add() (windows, watermark, the functions' running
//                         values), closing and emitting cells as JSON
//   aggregator_keys.cpp   group key bytes (writing and reading them back), JSON numbers
//   aggregator_state.cpp  persistence: take_changes() and restore(), the stored cell and meta values
//   aggregator_detail.hpp (this) the little-endian Writer and Reader of stored values, and the
//                         Aggregator's nested types (a kept value, a field's state, a cell, ...)

#include <bit>
#include <cstdint>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "common/strings.hpp"
#include "process/aggregator.hpp"

namespace tank::process {
namespace aggregator_detail {

constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
constexpr char kCellPrefix = 'c';
constexpr std::size_t kStartBytes = 8;

// Arithmetic (aggregator.cpp)

std::int64_t saturating_sub(std::int64_t a, std::int64_t b);

// Group key bytes and JSON numbers (aggregator_keys.cpp)

// Window starts as 8 bytes that sort (memcmp) like the signed numbers.
void write_start(char* p, std::int64_t start);
std::int64_t read_start(const char* p);

// Appends the group key bytes of one group_by value (nullptr: missing).
void put_group_value(std::string& out, const boost::json::value* v);

// A number as JSON: the shortest text that reads back as the same double; null if not finite.
void append_double(std::string& out, double d);
void append_number_or_null(std::string& out, bool present, double d);

// Reads one group key value from `in` and appends it as JSON to `json`. Returns nullptr, or what is
// wrong with the bytes.
const char* take_group_value(std::string_view& in, std::string& json, bool verify = false);

// Little-endian writer and bounds-checked reader of stored values.
class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}
  void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u16(std::uint16_t v) { le(v, 2); }
  void u32(std::uint32_t v) { le(v, 4); }
  void u64(std::uint64_t v) { le(v, 8); }
  void i64(std::int64_t v) { le(static_cast<std::uint64_t>(v), 8); }
  void f64(double v) { le(std::bit_cast<std::uint64_t>(v), 8); }
  void bytes(std::string_view s) {
    u32(static_cast<std::uint32_t>(s.size()));
    out_.append(s);
  }

 private:
  void le(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  }
  std::string& out_;
};

class Reader {
 public:
  Reader(std::string_view in, std::string_view key) : in_(in), key_(key) {}
  std::uint8_t u8() { return static_cast<std::uint8_t>(le(1)); }
  std::uint16_t u16() { return static_cast<std::uint16_t>(le(2)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(le(4)); }
  std::uint64_t u64() { return le(8); }
  std::int64_t i64() { return static_cast<std::int64_t>(le(8)); }
  double f64() { return std::bit_cast<double>(le(8)); }
  std::string_view bytes() {
    const std::uint32_t n = u32();
    need(n);
    std::string_view s = in_.substr(0, n);
    in_.remove_prefix(n);
    return s;
  }
  void finish() const {
    if (!in_.empty()) fail(fmt::format("{} unexpected bytes at the end", in_.size()));
  }
  [[noreturn]] void fail(std::string_view what) const {
    throw std::runtime_error(fmt::format("aggregation state entry {}: {}", printable_key(key_), what));
  }
  static std::string printable_key(std::string_view key) {
    std::string out;
    for (unsigned char c : key) {
      if (c >= 0x20 && c < 0x7F && c != '\\') {
        out.push_back(static_cast<char>(c));
      } else {
        fmt::format_to(std::back_inserter(out), "\\x{:02x}", c);
      }
    }
    return "\"" + out + "\"";
  }

 private:
  void need(std::size_t n) const {
    if (in_.size() < n) fail("truncated value");
  }
  std::uint64_t le(int n) {
    need(static_cast<std::size_t>(n));
    std::uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(in_[static_cast<std::size_t>(i)]);
    in_.remove_prefix(static_cast<std::size_t>(n));
    return v;
  }
  std::string_view in_;
  std::string_view key_;
};

}  // namespace aggregator_detail

// The nested types' inline members below use these.
using aggregator_detail::append_double;
using aggregator_detail::Reader;
using aggregator_detail::Writer;

// One kept JSON value (first / last): scalars without allocation, strings in a reused buffer,
// arrays and objects as their serialized text.
struct Aggregator::Value {
  enum class Kind : std::uint8_t { null = 0, false_ = 1, true_ = 2, int64 = 3, uint64 = 4, double_ = 5, string = 6, json = 7 };
  Kind kind = Kind::null;
  std::uint64_t bits = 0;
  std::string text;

  void assign(const boost::json::value& v) {
    switch (v.kind()) {
      case boost::json::kind::null: kind = Kind::null; return;
      case boost::json::kind::bool_: kind = v.get_bool() ? Kind::true_ : Kind::false_; return;
      case boost::json::kind::int64:
        kind = Kind::int64;
        bits = static_cast<std::uint64_t>(v.get_int64());
        return;
      case boost::json::kind::uint64:
        kind = Kind::uint64;
        bits = v.get_uint64();
        return;
      case boost::json::kind::double_:
        kind = Kind::double_;
        bits = std::bit_cast<std::uint64_t>(v.get_double());
        return;
      case boost::json::kind::string: {
        const auto& s = v.get_string();
        kind = Kind::string;
        text.assign(s.data(), s.size());
        return;
      }
      case boost::json::kind::array:
      case boost::json::kind::object:
        kind = Kind::json;
        text = boost::json::serialize(v);
        return;
    }
  }

  void write_json(std::string& out) const {
    switch (kind) {
      case Kind::null: out += "null"; return;
      case Kind::false_: out += "false"; return;
      case Kind::true_: out += "true"; return;
      case Kind::int64: fmt::format_to(std::back_inserter(out), "{}", static_cast<std::int64_t>(bits)); return;
      case Kind::uint64: fmt::format_to(std::back_inserter(out), "{}", bits); return;
      case Kind::double_: append_double(out, std::bit_cast<double>(bits)); return;
      case Kind::string: strings::append_json_string(out, text); return;
      case Kind::json: out += text; return;
    }
  }

  void encode(Writer& w) const {
    w.u8(static_cast<std::uint8_t>(kind));
    switch (kind) {
      case Kind::int64:
      case Kind::uint64:
      case Kind::double_: w.u64(bits); break;
      case Kind::string:
      case Kind::json: w.bytes(text); break;
      case Kind::null:
      case Kind::false_:
      case Kind::true_: break;
    }
  }

  void decode(Reader& r) {
    const std::uint8_t k = r.u8();
    if (k > static_cast<std::uint8_t>(Kind::json)) r.fail(fmt::format("unknown value kind {}", k));
    kind = static_cast<Kind>(k);
    switch (kind) {
      case Kind::int64:
      case Kind::uint64:
      case Kind::double_: bits = r.u64(); break;
      case Kind::string: {
        auto s = r.bytes();
        if (strings::invalid_utf8_at(s)) r.fail("a kept string is not UTF-8");
        text.assign(s.data(), s.size());
        break;
      }
      case Kind::json: {
        auto s = r.bytes();
        boost::json::error_code ec;
        (void)boost::json::parse(boost::json::string_view(s.data(), s.size()), ec);
        if (ec) r.fail("a kept value is not JSON");
        text.assign(s.data(), s.size());
        break;
      }
      case Kind::null:
      case Kind::false_:
      case Kind::true_: break;
    }
  }
};

struct Aggregator::FieldState {
  std::uint64_t present = 0;  // non-null values
  std::uint64_t numeric = 0;  // numeric values
  double sum = 0;
  double min = 0;
  double max = 0;
  double mean = 0;  // Welford's running mean and sum of squared differences
  double m2 = 0;
  std::int64_t first_t = 0;
  std::int64_t last_t = 0;
  Value first;
  Value last;

  void reset() {
    present = numeric = 0;
    sum = min = max = mean = m2 = 0;
    first_t = last_t = 0;
    first.kind = last.kind = Value::Kind::null;
    first.text.clear();
    last.text.clear();
  }
};

struct Aggregator::Cell {
  const std::string* key = nullptr;  // the index_ key (start bytes + group bytes); stable
  std::int64_t start = 0;
  std::uint64_t count = 0;
  std::uint32_t generation = 0;  // bumped when the slot is released
  bool live = false;
  bool dirty = false;   // changed since the last take_changes()
  bool stored = false;  // handed out by a take_changes() (so its removal is a delete)
  std::vector<FieldState> fields;
};

struct Aggregator::FieldPlan {
  FieldPath path;
  std::vector<AggFunction> functions;
  std::vector<std::string> prefixes;  // ,"temp_min":
  bool numeric = false;
  bool first = false;
  bool last = false;

  std::uint8_t flags() const { return (numeric ? 1 : 0) | (first ? 2 : 0) | (last ? 4 : 0); }
};

// What one record holds for one field, found once per record.
struct Aggregator::FieldInput {
  const boost::json::value* value = nullptr;  // nullptr: missing or null
  double number = 0;
  bool is_number = false;
};

}  // namespace tank::process
