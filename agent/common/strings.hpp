#pragma once

// Small string helpers shared by the configuration, the command line, logging and processing.

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tank::strings {

// Optimal string alignment distance (Levenshtein plus adjacent transpositions), case-sensitive.
std::size_t edit_distance(std::string_view a, std::string_view b);

// The candidate closest to `word`, if it is close enough to be what the user meant: at most
// one edit for words of up to 4 characters, otherwise two edits or a third of the word's length,
// whichever is more.
// Case differences count as half an edit, so "Fsync" suggests "fsync".
std::optional<std::string> closest(std::string_view word, std::span<const std::string> candidates);
std::optional<std::string> closest(std::string_view word, std::span<const std::string_view> candidates);

// "a", "a or b", "a, b or c" (each item quoted when `quote`).
std::string join_alternatives(std::span<const std::string> items, bool quote = true);

// `text` with every `what` replaced by `with` (left to right, not rescanning what was put in).
std::string replace_all(std::string text, std::string_view what, std::string_view with);

// Renders `bytes` for a terminal: printable ASCII as is, everything else as \xNN, at most
// `limit` bytes shown, followed by "..." when cut.
std::string printable(std::string_view bytes, std::size_t limit);

// The offset of the first byte of `text` that is not part of valid UTF-8 (RFC 3629: no overlong
// forms, no surrogates, nothing past U+10FFFF, no truncated sequence), or nullopt when all of
// it is valid. ASCII runs are checked 8 bytes at a time.
std::optional<std::size_t> invalid_utf8_at(std::string_view text);

// Appends `s` as a JSON string (quotes included): '"', '\\' and control characters escaped,
// everything else copied as it is (the caller vouches that `s` is UTF-8).
void append_json_string(std::string& out, std::string_view s);

// Standard base64 (RFC 4648, with padding) of `bytes`.
std::string base64(std::string_view bytes);

// `url` as a message or a log line may show it: the userinfo ("user:password@") replaced by
// "***@", so "http://alice:pw@proxy:3128" becomes "http://***@proxy:3128". The userinfo is
// everything between "scheme://" (or the start, without a scheme, as in HTTPS_PROXY=
// alice:pw@proxy:3128) and the last '@', even past a '/', '?' or '#' (a password with one of
// them unescaped): a URL whose path has an '@' is then shown cut short, never with a password.
// Text without an '@' comes back as it is. Works on any text, valid URL or not: it is meant
// for the error messages about invalid ones.
std::string redact_url_userinfo(std::string_view url);

}  // namespace tank::strings
