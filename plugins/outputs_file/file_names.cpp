#include "file_names.hpp"

#include <ctime>

#include <fmt/format.h>

namespace tank::plugins::file_output {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Consumes `count` digits from the front of `s`.
bool take_digits(std::string_view& s, std::size_t count) {
  if (s.size() < count) return false;
  for (std::size_t i = 0; i < count; ++i) {
    if (!is_digit(s[i])) return false;
  }
  s.remove_prefix(count);
  return true;
}

bool take(std::string_view& s, char c) {
  if (s.empty() || s.front() != c) return false;
  s.remove_prefix(1);
  return true;
}

}  // namespace

std::string_view extension_of(std::string_view compression) {
  if (compression == "zstd") return ".ndjson.zst";
  if (compression == "gzip") return ".ndjson.gz";
  return ".ndjson";
}

std::string file_name(std::string_view output, std::int64_t wall_ns, int sequence, std::string_view extension) {
  const std::time_t seconds = static_cast<std::time_t>(wall_ns / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  const std::string stamp = fmt::format("{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                                        tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (wall_ns / 1'000'000) % 1000);
  return fmt::format("{}-{}{}{}", output, stamp, sequence == 0 ? "" : fmt::format("-{}", sequence), extension);
}

bool is_file_of(std::string_view name, std::string_view output, std::string_view extension) {
  if (!name.starts_with(output)) return false;
  name.remove_prefix(output.size());
  if (!name.ends_with(extension)) return false;
  name.remove_suffix(extension.size());
  // "-YYYYMMDDTHHMMSS.mmmZ", then "-<n>" with n >= 1 (no leading zero) or nothing.
  if (!take(name, '-') || !take_digits(name, 8) || !take(name, 'T') || !take_digits(name, 6) || !take(name, '.') ||
      !take_digits(name, 3) || !take(name, 'Z')) {
    return false;
  }
  if (name.empty()) return true;
  if (!take(name, '-') || name.empty() || name.front() == '0') return false;
  for (char c : name) {
    if (!is_digit(c)) return false;
  }
  return true;
}

bool created_before(std::string_view a, std::string_view b, std::string_view output) {
  // After "<output>-": the stamp (fixed length, sorts as text), then "-<n>" or the extension.
  constexpr std::size_t kStamp = 20;  // YYYYMMDDTHHMMSS.mmmZ
  auto key = [&](std::string_view name) {
    name.remove_prefix(std::min(name.size(), output.size() + 1));
    std::string_view stamp = name.substr(0, std::min(name.size(), kStamp));
    name.remove_prefix(stamp.size());
    std::uint64_t sequence = 0;
    if (take(name, '-')) {
      while (!name.empty() && is_digit(name.front()) && sequence < (1ULL << 60)) {
        sequence = sequence * 10 + static_cast<std::uint64_t>(name.front() - '0');
        name.remove_prefix(1);
      }
    }
    return std::pair{stamp, sequence};
  };
  return key(a) < key(b);
}

}  // namespace tank::plugins::file_output
