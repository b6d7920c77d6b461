#include "common/strings.hpp"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

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

}  // namespace tank::strings
