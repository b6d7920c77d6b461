#include "common/strings.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstring>

#include <fmt/format.h>
#include <openssl/evp.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace tank::strings {

std::size_t edit_distance(std::string_view a, std::string_view b) {
  const std::size_t n = a.size();
  const std::size_t m = b.size();
  std::vector<std::vector<std::size_t>> d(n + 1, std::vector<std::size_t>(m + 1));
  for (std::size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= n; ++i) {
    for (std::size_t j = 1; j <= m; ++j) {
      std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[n][m];
}

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

template <class T>
std::optional<std::string> closest_impl(std::string_view word, std::span<const T> candidates) {
  std::optional<std::string> best;
  double best_score = 1e9;
  const std::string lw = lower(word);
  for (const auto& candidate : candidates) {
    std::string_view c(candidate);
    double score = static_cast<double>(edit_distance(lw, lower(c)));
    if (lw == lower(c) && word != c) score = 0.5;
    if (score < best_score) {
      best_score = score;
      best = std::string(c);
    }
  }
  const double limit = word.size() <= 4 ? 1.0 : std::max(2.0, static_cast<double>(word.size()) / 3.0);
  if (best && best_score <= limit && best_score > 0) return best;
  return std::nullopt;
}

}  // namespace

std::optional<std::string> closest(std::string_view word, std::span<const std::string> candidates) {
  return closest_impl(word, candidates);
}

std::optional<std::string> closest(std::string_view word, std::span<const std::string_view> candidates) {
  return closest_impl(word, candidates);
}

std::string replace_all(std::string text, std::string_view what, std::string_view with) {
  if (what.empty()) return text;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + with.size())) {
    text.replace(at, what.size(), with);
  }
  return text;
}

std::string join_alternatives(std::span<const std::string> items, bool quote) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += (i + 1 == items.size()) ? " or " : ", ";
    out += quote ? "\"" + items[i] + "\"" : items[i];
  }
  return out;
}

std::string printable(std::string_view bytes, std::size_t limit) {
  std::string out;
  std::size_t shown = std::min(limit, bytes.size());
  for (std::size_t i = 0; i < shown; ++i) {
    unsigned char c = static_cast<unsigned char>(bytes[i]);
    if (c == '\\') {
      out += "\\\\";
    } else if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  if (shown < bytes.size()) out += "...";
  return out;
}

std::optional<std::size_t> invalid_utf8_at(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    // ASCII runs are the common case: skip 8 bytes at a time.
    while (i + 8 <= n) {
      std::uint64_t word;
      std::memcpy(&word, s + i, 8);
      if ((word & 0x8080808080808080ULL) != 0) break;
      i += 8;
    }
    if (i >= n) break;
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    else return i;
    if (n - i < len) return i;
    for (std::size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return i;
    }
    i += len;
  }
  return std::nullopt;
}

namespace {

// What a byte becomes in a JSON string: 0 itself, else the letter after the backslash ('u' for
// \u00XX).
constexpr std::array<char, 256> kJsonEscape = [] {
  std::array<char, 256> t{};
  for (int c = 0; c < 0x20; ++c) t[static_cast<std::size_t>(c)] = 'u';
  t['"'] = '"';
  t['\\'] = '\\';
  t['\n'] = 'n';
  t['\r'] = 'r';
  t['\t'] = 't';
  t['\b'] = 'b';
  t['\f'] = 'f';
  return t;
}();

// How many bytes its escape adds: 0, 1, or 5 for \u00XX.
constexpr std::array<unsigned char, 256> kJsonEscapeExtra = [] {
  std::array<unsigned char, 256> t{};
  for (std::size_t c = 0; c < t.size(); ++c) t[c] = kJsonEscape[c] == 0 ? 0 : kJsonEscape[c] == 'u' ? 5 : 1;
  return t;
}();

void append_escape(char*& p, unsigned char c) {
  static constexpr char kHex[] = "0123456789abcdef";
  const char e = kJsonEscape[c];
  if (e == 'u') {
    std::memcpy(p, "\\u00", 4);
    p[4] = kHex[c >> 4];
    p[5] = kHex[c & 0xF];
    p += 6;
  } else {
    p[0] = '\\';
    p[1] = e;
    p += 2;
  }
}

// Escapes s[i, n) into p, one byte at a time without a branch per byte: two bytes written for
// each, the second overwritten when the byte needs no escape (so p needs one byte of room past
// the escaped text).
void escape_bytes(char*& p, const char* s, std::size_t i, std::size_t n) {
  for (; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    const char e = kJsonEscape[c];
    if (e == 'u') [[unlikely]] {
      append_escape(p, c);
      continue;
    }
    p[0] = e != 0 ? '\\' : static_cast<char>(c);
    p[1] = e;
    p += e != 0 ? 2 : 1;
  }
}

#if defined(__SSE2__)
// Among the 16 bytes at v, 0xff where a byte is below 0x20, and where it is the quote or the
// backslash.
__m128i control_bytes(__m128i v) { return _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v); }
__m128i quote_or_backslash(__m128i v) {
  return _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\\')));
}

// The bytes to escape in the 16 at v: a bit each.
unsigned escape_mask(__m128i v) {
  return static_cast<unsigned>(_mm_movemask_epi8(_mm_or_si128(quote_or_backslash(v), control_bytes(v))));
}

// What escaping adds to each of the 16 bytes at v (kJsonEscapeExtra): 1 for a two-byte escape
// (\" \\ \n \r \t \b \f), 5 for another control byte (\u00XX), else 0.
__m128i escape_extra_lanes(__m128i v) {
  __m128i two = quote_or_backslash(v);
  for (const char c : {'\n', '\r', '\t', '\b', '\f'}) two = _mm_or_si128(two, _mm_cmpeq_epi8(v, _mm_set1_epi8(c)));
  return _mm_or_si128(_mm_and_si128(two, _mm_set1_epi8(1)),
                      _mm_andnot_si128(two, _mm_and_si128(control_bytes(v), _mm_set1_epi8(5))));
}
#endif

// How many bytes the escapes of s add.
std::size_t escaped_extra(const char* s, std::size_t n) {
  std::size_t extra = 0, i = 0;
#if defined(__SSE2__)
  // Summed 16 lanes at a time into two 64-bit halves (psadbw): counting the bits of movemask
  // results instead called libgcc's __popcountdi2 (no POPCNT in the x86-64 baseline), 3 % of
  // tank in the e2e benchmark.
  __m128i sums = _mm_setzero_si128();
  for (; n - i >= 16; i += 16) {
    const __m128i lanes = escape_extra_lanes(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
    sums = _mm_add_epi64(sums, _mm_sad_epu8(lanes, _mm_setzero_si128()));
  }
  std::uint64_t halves[2];
  _mm_storeu_si128(reinterpret_cast<__m128i*>(halves), sums);
  extra = static_cast<std::size_t>(halves[0] + halves[1]);
#endif
  for (; i < n; ++i) extra += kJsonEscapeExtra[static_cast<unsigned char>(s[i])];
  return extra;
}

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  // The escaped length first, then the bytes written in place into room for them plus 16 bytes
  // (for whole 16-byte stores), trimmed at the end. JSON lines taken as text are full of quotes,
  // and appending run by run cost two appends per quote. x86-64: 16 bytes at a time with SSE2
  // (stored whole, then each escape written and the rest of the 16 stored again after it); other
  // targets one byte at a time without a branch. A loop over varied JSON lines of 50-80 bytes
  // (docs/BENCHMARKS.md, issue 23): 157 ns a line run by run, 115-121 byte by byte, 66 with SSE2.
  const std::size_t n = s.size();
  const char* d = s.data();
  const std::size_t extra = escaped_extra(d, n);
  const std::size_t at = out.size();
  out.resize(at + n + extra + 2 + 16);
  char* p = out.data() + at;
  *p++ = '"';
  std::size_t i = 0;
  if (extra == 0) {
    std::memcpy(p, d, n);
    p += n;
    i = n;
  }
#if defined(__SSE2__)
  for (; n - i >= 16; i += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(d + i));
    unsigned m = escape_mask(v);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v);
    if (m == 0) {
      p += 16;
      continue;
    }
    alignas(16) char chunk[32] = {};
    _mm_store_si128(reinterpret_cast<__m128i*>(chunk), v);
    unsigned pos = 0;
    while (m != 0) {
      const auto b = static_cast<unsigned>(__builtin_ctz(m));
      m &= m - 1;
      p += b - pos;  // the bytes before it are in place
      append_escape(p, static_cast<unsigned char>(chunk[b]));
      pos = b + 1;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_loadu_si128(reinterpret_cast<const __m128i*>(chunk + pos)));
    }
    p += 16 - pos;
  }
#endif
  escape_bytes(p, d, i, n);
  *p++ = '"';
  out.resize(static_cast<std::size_t>(p - out.data()));
}

std::string base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string redact_url_userinfo(std::string_view url) {
  const std::size_t at = url.rfind('@');
  if (at == std::string_view::npos) return std::string(url);
  // A scheme is a letter, then letters, digits, '+', '-' or '.' (RFC 3986, section 3.1); a
  // "://" after anything else is part of the userinfo.
  std::size_t start = 0;
  if (const std::size_t sep = url.find("://"); sep != std::string_view::npos && sep < at && sep > 0) {
    bool scheme = std::isalpha(static_cast<unsigned char>(url[0])) != 0;
    for (char c : url.substr(0, sep)) {
      scheme = scheme && (std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '+' || c == '-' || c == '.');
    }
    if (scheme) start = sep + 3;
  }
  return std::string(url.substr(0, start)) + "***" + std::string(url.substr(at));
}

}  // namespace tank::strings
