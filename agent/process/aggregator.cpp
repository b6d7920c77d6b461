#include "process/aggregator.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <set>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "common/strings.hpp"

namespace tank::process {
namespace {

constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
constexpr std::uint8_t kFormatVersion = 1;
constexpr char kCellPrefix = 'c';
constexpr std::string_view kMetaKey = "meta";
constexpr std::size_t kStartBytes = 8;

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

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

std::int64_t saturating_sub(std::int64_t a, std::int64_t b) {
  std::int64_t out;
  if (__builtin_sub_overflow(a, b, &out)) return b > 0 ? kMin : kMax;
  return out;
}

void put_be64(std::string& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xFF));
}

std::uint64_t get_be64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// Window starts as 8 bytes that sort (memcmp) like the signed numbers.
void write_start(char* p, std::int64_t start) {
  const std::uint64_t v = static_cast<std::uint64_t>(start) ^ (1ULL << 63);
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (56 - 8 * i)) & 0xFF);
}

std::int64_t read_start(const char* p) { return static_cast<std::int64_t>(get_be64(p) ^ (1ULL << 63)); }

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

// Reads one group key value from `in` and appends it as JSON to `json`. Returns nullptr, or what is
// wrong with the bytes.
const char* take_group_value(std::string_view& in, std::string& json, bool verify = false) {
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

bool is_numeric_function(AggFunction f) {
  switch (f) {
    case AggFunction::sum:
    case AggFunction::min:
    case AggFunction::max:
    case AggFunction::mean:
    case AggFunction::stddev: return true;
    case AggFunction::count:
    case AggFunction::first:
    case AggFunction::last: return false;
  }
  return false;
}

std::string json_name(std::string_view name) {
  std::string out;
  strings::append_json_string(out, name);
  return out;
}

}  // namespace

std::optional<AggFunction> parse_agg_function(std::string_view text) {
  if (text == "count") return AggFunction::count;
  if (text == "sum") return AggFunction::sum;
  if (text == "min") return AggFunction::min;
  if (text == "max") return AggFunction::max;
  if (text == "mean") return AggFunction::mean;
  if (text == "first") return AggFunction::first;
  if (text == "last") return AggFunction::last;
  if (text == "stddev") return AggFunction::stddev;
  return std::nullopt;
}

std::string_view to_string(AggFunction function) {
  switch (function) {
    case AggFunction::count: return "count";
    case AggFunction::sum: return "sum";
    case AggFunction::min: return "min";
    case AggFunction::max: return "max";
    case AggFunction::mean: return "mean";
    case AggFunction::first: return "first";
    case AggFunction::last: return "last";
    case AggFunction::stddev: return "stddev";
  }
  return "?";
}

std::string_view to_string(AddOutcome outcome) {
  switch (outcome) {
    case AddOutcome::absorbed: return "absorbed";
    case AddOutcome::late: return "late";
    case AddOutcome::not_object: return "not_object";
    case AddOutcome::bad_time: return "bad_time";
    case AddOutcome::cell_limit: return "cell_limit";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// State

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

std::size_t Aggregator::KeyHash::operator()(std::string_view s) const noexcept {
  return std::hash<std::string_view>{}(s);
}

namespace {

FieldPath parse_path(std::string_view text, std::string_view what) {
  std::string error;
  auto path = FieldPath::parse(text, &error);
  if (!path) throw std::invalid_argument(fmt::format("{}: {}", what, error));
  return std::move(*path);
}

std::string make_fingerprint(const AggregateSpec& spec) {
  boost::json::object o;
  o["window_ns"] = spec.window_ns;
  o["hop_ns"] = spec.hop_ns;
  o["time_field"] = spec.time_field;
  o["time_format"] = to_string(spec.time_format);
  boost::json::array group;
  for (const auto& g : spec.group_by) group.emplace_back(g);
  o["group_by"] = std::move(group);
  boost::json::array fields;
  for (const auto& [name, functions] : spec.fields) {
    boost::json::array fns;
    for (AggFunction f : functions) fns.emplace_back(to_string(f));
    fields.emplace_back(boost::json::array{boost::json::value(name), std::move(fns)});
  }
  o["fields"] = std::move(fields);
  return boost::json::serialize(o);
}

}  // namespace

Aggregator::Aggregator(AggregateSpec spec)
    : spec_(std::move(spec)),
      time_path_(parse_path(spec_.time_field, "time_field")),
      max_event_time_(kMin),
      watermark_(kMin) {
  if (spec_.window_ns <= 0) throw std::invalid_argument("window must be longer than 0");
  if (spec_.hop_ns <= 0 || spec_.hop_ns > spec_.window_ns) {
    throw std::invalid_argument("hop must be longer than 0 and at most the window");
  }
  if (spec_.allowed_lateness_ns < 0) throw std::invalid_argument("allowed_lateness must not be negative");
  if (spec_.max_cells == 0) throw std::invalid_argument("max_cells must be at least 1");
  if (spec_.max_cells > std::numeric_limits<std::uint32_t>::max() - 1) {
    throw std::invalid_argument("max_cells must be below 2^32");
  }
  std::set<std::string_view> seen;
  for (const auto& g : spec_.group_by) {
    if (!seen.insert(g).second) throw std::invalid_argument(fmt::format("group_by lists \"{}\" twice", g));
    group_paths_.push_back(parse_path(g, fmt::format("group_by \"{}\"", g)));
    group_prefixes_.push_back("," + json_name(g) + ":");
  }
  seen.clear();
  for (const auto& [name, functions] : spec_.fields) {
    if (!seen.insert(name).second) throw std::invalid_argument(fmt::format("fields lists \"{}\" twice", name));
    if (functions.empty()) throw std::invalid_argument(fmt::format("field \"{}\" has no functions", name));
    FieldPlan plan{parse_path(name, fmt::format("field \"{}\"", name)), functions, {}, false, false, false};
    std::set<AggFunction> fns;
    for (AggFunction f : functions) {
      if (!fns.insert(f).second) {
        throw std::invalid_argument(fmt::format("field \"{}\" lists {} twice", name, to_string(f)));
      }
      plan.numeric = plan.numeric || is_numeric_function(f);
      plan.first = plan.first || f == AggFunction::first;
      plan.last = plan.last || f == AggFunction::last;
      plan.prefixes.push_back("," + json_name(fmt::format("{}_{}", name, to_string(f))) + ":");
    }
    plans_.push_back(std::move(plan));
  }
  fingerprint_ = make_fingerprint(spec_);
}

Aggregator::~Aggregator() = default;

void Aggregator::set_max_event_time(std::int64_t t) {
  if (t <= max_event_time_) return;
  max_event_time_ = t;
  meta_dirty_ = true;
  const std::int64_t w = saturating_sub(t, spec_.allowed_lateness_ns);
  if (w > watermark_) watermark_ = w;
}

AddOutcome Aggregator::add(const boost::json::value& record, std::string* detail) {
  if (!record.is_object()) {
    if (detail != nullptr) {
      *detail = fmt::format("the record is not a JSON object but {}",
                            record.is_array() ? "an array" : record.is_string() ? "a string" : "a scalar");
    }
    return AddOutcome::not_object;
  }
  const boost::json::value* time_value = time_path_.find(record);
  if (time_value == nullptr) {
    if (detail != nullptr) *detail = fmt::format("no time field \"{}\"", spec_.time_field);
    return AddOutcome::bad_time;
  }
  const auto t_opt = event_time_ns(*time_value, spec_.time_format, detail, spec_.time_field);
  if (!t_opt) return AddOutcome::bad_time;
  const std::int64_t t = *t_opt;

  // Its windows: starts s, multiples of hop with t - window < s <= t. Times whose windows do not
  // fit in int64 (within a window of the ends of the range) are refused instead of wrapping.
  const std::int64_t hop = spec_.hop_ns;
  const std::int64_t window = spec_.window_ns;
  std::int64_t first_start = 0;
  std::int64_t last = 0;
  std::int64_t before = 0;
  std::int64_t last_end = 0;
  if (__builtin_sub_overflow(t, window, &before) || __builtin_mul_overflow(floor_div(before, hop) + 1, hop, &first_start) ||
      __builtin_mul_overflow(floor_div(t, hop), hop, &last) || __builtin_add_overflow(last, window, &last_end)) {
    if (detail != nullptr) {
      *detail = fmt::format("\"{}\" is {}: its windows do not fit the representable time range", spec_.time_field,
                            format_rfc3339_ns(t));
    }
    return AddOutcome::bad_time;
  }

  set_max_event_time(t);

  // Open windows: end = s + window > watermark.
  std::int64_t s = first_start;
  if (watermark_ != kMin) {
    while (s <= last && s + window <= watermark_) s += hop;
  }
  if (s > last) {
    if (detail != nullptr) {
      *detail = fmt::format("event time {} is late: its windows closed at watermark {}", format_rfc3339_ns(t),
                            format_rfc3339_ns(watermark_));
    }
    return AddOutcome::late;
  }

  key_.assign(kStartBytes, '\0');
  for (const FieldPath& g : group_paths_) put_group_value(key_, g.find(record));

  starts_.clear();
  found_.clear();
  std::size_t missing = 0;
  for (std::int64_t start = s; start <= last; start += hop) {
    write_start(key_.data(), start);
    auto it = index_.find(std::string_view(key_));
    starts_.push_back(start);
    if (it == index_.end()) {
      found_.push_back(std::numeric_limits<std::uint32_t>::max());
      ++missing;
    } else {
      found_.push_back(it->second);
    }
    if (start > kMax - hop) break;
  }
  if (missing > 0 && index_.size() + missing > spec_.max_cells) {
    if (detail != nullptr) {
      *detail = fmt::format("needs {} new window cell{} but max_cells ({}) are held", missing, missing == 1 ? "" : "s",
                            spec_.max_cells);
    }
    return AddOutcome::cell_limit;
  }

  // The fields, looked up once for all windows.
  inputs_.resize(plans_.size());
  for (std::size_t i = 0; i < plans_.size(); ++i) {
    FieldInput& in = inputs_[i];
    const boost::json::value* v = plans_[i].path.find(record);
    in.value = v != nullptr && !v->is_null() ? v : nullptr;
    in.is_number = false;
    if (in.value == nullptr) continue;
    switch (v->kind()) {
      case boost::json::kind::int64: in.number = static_cast<double>(v->get_int64()); in.is_number = true; break;
      case boost::json::kind::uint64: in.number = static_cast<double>(v->get_uint64()); in.is_number = true; break;
      case boost::json::kind::double_: in.number = v->get_double(); in.is_number = true; break;
      default:
        if (plans_[i].numeric) ++ignored_values_;
        break;
    }
  }

  for (std::size_t w = 0; w < starts_.size(); ++w) {
    std::uint32_t slot = found_[w];
    if (slot == std::numeric_limits<std::uint32_t>::max()) {
      write_start(key_.data(), starts_[w]);
      slot = new_cell(key_, starts_[w]);
    }
    Cell& cell = cells_[slot];
    ++cell.count;
    for (std::size_t i = 0; i < plans_.size(); ++i) {
      const FieldInput& in = inputs_[i];
      if (in.value == nullptr) continue;
      const FieldPlan& plan = plans_[i];
      FieldState& f = cell.fields[i];
      ++f.present;
      if (plan.numeric && in.is_number) {
        const double x = in.number;
        ++f.numeric;
        f.sum += x;
        if (f.numeric == 1) {
          f.min = f.max = x;
        } else {
          f.min = std::min(f.min, x);
          f.max = std::max(f.max, x);
        }
        const double delta = x - f.mean;
        f.mean += delta / static_cast<double>(f.numeric);
        f.m2 += delta * (x - f.mean);
      }
      if (plan.first && (f.present == 1 || t < f.first_t)) {
        f.first_t = t;
        f.first.assign(*in.value);
      }
      if (plan.last && (f.present == 1 || t >= f.last_t)) {
        f.last_t = t;
        f.last.assign(*in.value);
      }
    }
    if (!cell.dirty) {
      cell.dirty = true;
      dirty_.emplace_back(slot, cell.generation);
    }
  }
  return AddOutcome::absorbed;
}

std::uint32_t Aggregator::new_cell(std::string_view key, std::int64_t start) {
  std::uint32_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slot = static_cast<std::uint32_t>(cells_.size());
    cells_.emplace_back();
    cells_.back().fields.resize(plans_.size());
  }
  auto [it, inserted] = index_.emplace(std::string(key), slot);
  (void)inserted;
  Cell& cell = cells_[slot];
  cell.key = &it->first;
  cell.start = start;
  cell.count = 0;
  cell.live = true;
  cell.dirty = false;
  cell.stored = false;
  windows_[start].push_back(slot);
  return slot;
}

void Aggregator::release_cell(std::uint32_t slot) {
  Cell& cell = cells_[slot];
  if (cell.stored) {
    std::string stored_key;
    stored_key.reserve(cell.key->size() + 1);
    stored_key.push_back(kCellPrefix);
    stored_key += *cell.key;
    removed_.push_back(std::move(stored_key));
  }
  index_.erase(index_.find(std::string_view(*cell.key)));
  cell.key = nullptr;
  cell.live = false;
  cell.dirty = false;
  cell.stored = false;
  ++cell.generation;
  for (FieldState& f : cell.fields) f.reset();
  free_slots_.push_back(slot);
}

void Aggregator::write_output(const Cell& cell, std::string& out) const {
  out.clear();
  out += "{\"window_start\":\"";
  append_rfc3339_ns(out, cell.start);
  out += "\",\"window_end\":\"";
  append_rfc3339_ns(out, cell.start + spec_.window_ns);
  out += "\",\"count\":";
  fmt::format_to(std::back_inserter(out), "{}", cell.count);
  std::string_view group = std::string_view(*cell.key).substr(kStartBytes);
  for (const std::string& prefix : group_prefixes_) {
    out += prefix;
    take_group_value(group, out);  // checked when the key was made or restored
  }
  for (std::size_t i = 0; i < plans_.size(); ++i) {
    const FieldPlan& plan = plans_[i];
    const FieldState& f = cell.fields[i];
    for (std::size_t j = 0; j < plan.functions.size(); ++j) {
      out += plan.prefixes[j];
      const bool any = f.numeric > 0;
      switch (plan.functions[j]) {
        case AggFunction::count: fmt::format_to(std::back_inserter(out), "{}", f.present); break;
        case AggFunction::sum: append_number_or_null(out, any, f.sum); break;
        case AggFunction::min: append_number_or_null(out, any, f.min); break;
        case AggFunction::max: append_number_or_null(out, any, f.max); break;
        case AggFunction::mean: append_number_or_null(out, any, f.sum / static_cast<double>(f.numeric)); break;
        case AggFunction::stddev:
          append_number_or_null(out, f.numeric >= 2,
                                std::sqrt(f.m2 / static_cast<double>(f.numeric >= 2 ? f.numeric - 1 : 1)));
          break;
        case AggFunction::first:
          if (f.present > 0) f.first.write_json(out); else out += "null";
          break;
        case AggFunction::last:
          if (f.present > 0) f.last.write_json(out); else out += "null";
          break;
      }
    }
  }
  out.push_back('}');
}

// Emits the first `limit` cells of `window` in group key order (the rest stay, still sorted);
// erases the window once it is empty. Returns how many it emitted.
std::size_t Aggregator::emit_window(std::map<std::int64_t, std::vector<std::uint32_t>>::iterator window,
                                    std::vector<Emitted>* out, std::size_t limit) {
  std::vector<std::uint32_t>& slots = window->second;
  std::sort(slots.begin(), slots.end(),
            [this](std::uint32_t a, std::uint32_t b) { return *cells_[a].key < *cells_[b].key; });
  const std::size_t n = std::min(limit, slots.size());
  for (std::size_t i = 0; i < n; ++i) {
    const Cell& cell = cells_[slots[i]];
    Emitted e;
    write_output(cell, e.json);
    e.window_start_ns = cell.start;
    e.window_end_ns = cell.start + spec_.window_ns;
    e.count = cell.count;
    out->push_back(std::move(e));
    release_cell(slots[i]);
  }
  slots.erase(slots.begin(), slots.begin() + static_cast<std::ptrdiff_t>(n));
  if (slots.empty()) windows_.erase(window);
  return n;
}

bool Aggregator::close_ready(std::vector<Emitted>* out, std::size_t limit) {
  while (!windows_.empty() && windows_.begin()->first + spec_.window_ns <= watermark_) {
    if (limit == 0) return false;
    limit -= emit_window(windows_.begin(), out, limit);
  }
  return true;
}

bool Aggregator::close_all(std::vector<Emitted>* out, std::size_t limit) {
  while (!windows_.empty()) {
    if (limit == 0) return false;
    const std::int64_t end = windows_.begin()->first + spec_.window_ns;
    if (end > watermark_) {
      watermark_ = end;
      meta_dirty_ = true;
    }
    limit -= emit_window(windows_.begin(), out, limit);
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Persistence

std::string Aggregator::encode_cell(const Cell& cell) const {
  std::string out;
  out.reserve(16 + plans_.size() * 64);
  Writer w(out);
  w.u8(kFormatVersion);
  w.u64(cell.count);
  w.u16(static_cast<std::uint16_t>(plans_.size()));
  for (std::size_t i = 0; i < plans_.size(); ++i) {
    const FieldPlan& plan = plans_[i];
    const FieldState& f = cell.fields[i];
    w.u8(plan.flags());
    w.u64(f.present);
    if (plan.numeric) {
      w.u64(f.numeric);
      w.f64(f.sum);
      w.f64(f.min);
      w.f64(f.max);
      w.f64(f.mean);
      w.f64(f.m2);
    }
    if (plan.first) {
      w.i64(f.first_t);
      f.first.encode(w);
    }
    if (plan.last) {
      w.i64(f.last_t);
      f.last.encode(w);
    }
  }
  return out;
}

void Aggregator::take_changes(std::vector<std::pair<std::string, std::string>>* puts,
                              std::vector<std::string>* deletes) {
  for (const auto& [slot, generation] : dirty_) {
    Cell& cell = cells_[slot];
    if (!cell.live || cell.generation != generation || !cell.dirty) continue;
    cell.dirty = false;
    cell.stored = true;
    std::string key;
    key.reserve(cell.key->size() + 1);
    key.push_back(kCellPrefix);
    key += *cell.key;
    puts->emplace_back(std::move(key), encode_cell(cell));
  }
  dirty_.clear();
  for (std::string& key : removed_) deletes->push_back(std::move(key));
  removed_.clear();
  if (meta_dirty_) {
    std::string value;
    Writer w(value);
    w.u8(kFormatVersion);
    w.i64(max_event_time_);
    w.i64(watermark_);
    w.bytes(fingerprint_);
    puts->emplace_back(std::string(kMetaKey), std::move(value));
    meta_dirty_ = false;
  }
}

void Aggregator::restore(const std::vector<std::pair<std::string, std::string>>& entries) {
  // Built aside, then swapped in: a throw leaves the current state as it was.
  std::int64_t max_event_time = kMin;
  std::int64_t watermark = kMin;
  bool have_meta = false;
  for (const auto& [key, value] : entries) {
    if (key != kMetaKey) continue;
    if (have_meta) Reader(value, key).fail("appears twice");
    have_meta = true;
    Reader r(value, key);
    const std::uint8_t version = r.u8();
    if (version != kFormatVersion) {
      r.fail(fmt::format("format version {} is not {} (written by another tank version)", version, kFormatVersion));
    }
    max_event_time = r.i64();
    watermark = r.i64();
    const std::string_view stored = r.bytes();
    r.finish();
    if (stored != fingerprint_) {
      throw SpecMismatch(fmt::format(
          "the stored aggregation state was written for another configuration: stored {}, now {}", stored,
          fingerprint_));
    }
  }

  CellIndex index;
  std::vector<Cell> cells;
  std::map<std::int64_t, std::vector<std::uint32_t>> windows;
  for (const auto& [key, value] : entries) {
    if (key == kMetaKey) continue;
    Reader r(value, key);
    if (key.empty() || key[0] != kCellPrefix) r.fail("is not an aggregation state key");
    if (!have_meta) r.fail("is a window cell, but there is no \"meta\" entry");
    std::string_view cell_key = std::string_view(key).substr(1);
    if (cell_key.size() < kStartBytes) r.fail("is too short for a window cell key");
    const std::int64_t start = read_start(cell_key.data());
    if (start % spec_.hop_ns != 0 || start > kMax - spec_.window_ns) {
      r.fail(fmt::format("window start {} is not a window of this configuration", start));
    }
    std::string_view group = cell_key.substr(kStartBytes);
    std::string scratch;
    for (std::size_t g = 0; g < group_paths_.size(); ++g) {
      if (const char* problem = take_group_value(group, scratch, true)) r.fail(problem);
    }
    if (!group.empty()) r.fail("has more group values than group_by");

    Cell cell;
    cell.start = start;
    cell.live = true;
    cell.stored = true;
    cell.fields.resize(plans_.size());
    const std::uint8_t version = r.u8();
    if (version != kFormatVersion) r.fail(fmt::format("format version {} is not {}", version, kFormatVersion));
    cell.count = r.u64();
    if (cell.count == 0) r.fail("a window cell with no records");
    if (r.u16() != plans_.size()) r.fail("the number of fields does not match the configuration");
    for (std::size_t i = 0; i < plans_.size(); ++i) {
      const FieldPlan& plan = plans_[i];
      FieldState& f = cell.fields[i];
      if (r.u8() != plan.flags()) r.fail("the functions of a field do not match the configuration");
      f.present = r.u64();
      if (f.present > cell.count) r.fail("a field has more values than the cell has records");
      if (plan.numeric) {
        f.numeric = r.u64();
        if (f.numeric > f.present) r.fail("a field has more numbers than values");
        f.sum = r.f64();
        f.min = r.f64();
        f.max = r.f64();
        f.mean = r.f64();
        f.m2 = r.f64();
      }
      if (plan.first) {
        f.first_t = r.i64();
        f.first.decode(r);
      }
      if (plan.last) {
        f.last_t = r.i64();
        f.last.decode(r);
      }
    }
    r.finish();
    const auto slot = static_cast<std::uint32_t>(cells.size());
    auto [it, inserted] = index.emplace(std::string(cell_key), slot);
    if (!inserted) r.fail("appears twice");
    cell.key = &it->first;
    cells.push_back(std::move(cell));
    windows[start].push_back(slot);
  }

  // allowed_lateness may have changed since the state was written; the watermark never goes back.
  const std::int64_t derived = max_event_time == kMin ? kMin : saturating_sub(max_event_time, spec_.allowed_lateness_ns);
  const bool raised = derived > watermark;

  index_.swap(index);
  cells_.swap(cells);
  windows_.swap(windows);
  free_slots_.clear();
  dirty_.clear();
  removed_.clear();
  max_event_time_ = max_event_time;
  watermark_ = std::max(watermark, derived);
  meta_dirty_ = !have_meta || raised;
}

}  // namespace tank::process
