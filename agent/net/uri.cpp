#include "net/uri.hpp"

#include <algorithm>

#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <fmt/format.h>

#include "common/strings.hpp"

namespace tank::net {
namespace {

UriError refuse(UriProblem problem, const std::string& shown) {
  switch (problem) {
    case UriProblem::scheme:
      return {problem, fmt::format("\"{}\" does not start with a known scheme", shown)};
    case UriProblem::userinfo:
      return {problem, fmt::format("\"{}\": credentials (user:password@) are not accepted here", shown)};
    case UriProblem::unclosed_ipv6:
      return {problem, fmt::format("\"{}\": an IPv6 address needs its closing ']'", shown)};
    case UriProblem::host:
      return {problem, fmt::format("\"{}\" names no host", shown)};
    case UriProblem::port:
      return {problem, fmt::format("\"{}\" has no valid port", shown)};
    case UriProblem::path:
      return {problem, fmt::format("\"{}\": unexpected text after the address", shown)};
    case UriProblem::syntax:
      return {problem, fmt::format("\"{}\" is not a valid URI", shown)};
  }
  return {problem, shown};
}

// 1 to 65535 (or 0), from a string of digits of any length.
bool valid_port(std::string_view digits, bool zero_allowed, std::uint16_t& out) {
  if (digits.empty() || digits.size() > 5 || !std::all_of(digits.begin(), digits.end(), [](char c) {
        return c >= '0' && c <= '9';
      })) {
    return false;
  }
  unsigned value = 0;
  for (char c : digits) value = value * 10 + static_cast<unsigned>(c - '0');
  if (value > 65535 || (value == 0 && !zero_allowed)) return false;
  out = static_cast<std::uint16_t>(value);
  return true;
}

// Which part of a URI that Boost.URL refused is wrong, for the message: only a diagnosis, the
// value always comes from Boost.URL. `rest` is what follows "scheme://".
UriProblem diagnose(std::string_view rest) {
  // After the last '@' (as strings::redact_url_userinfo reads it), up to the path.
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) rest.remove_prefix(at + 1);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  if (rest.starts_with('[')) {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) return UriProblem::unclosed_ipv6;
    if (close == 1) return UriProblem::host;
    rest.remove_prefix(close + 1);
    return rest.starts_with(':') ? UriProblem::port : UriProblem::syntax;
  }
  const auto colon = rest.find(':');
  if (colon == 0 || rest.empty()) return UriProblem::host;
  return colon == std::string_view::npos ? UriProblem::syntax : UriProblem::port;
}

}  // namespace

UriResult parse_uri(std::string_view text, const UriRules& rules) {
  const std::string shown = strings::redact_url_userinfo(text);
  const auto separator = text.find("://");
  const std::string_view scheme_name = text.substr(0, separator);
  const auto scheme = std::find_if(rules.schemes.begin(), rules.schemes.end(),
                                   [&](const Scheme& s) { return s.name == scheme_name; });
  if (separator == std::string_view::npos || scheme == rules.schemes.end()) return refuse(UriProblem::scheme, shown);
  const std::string_view rest = text.substr(separator + 3);

  const auto parsed = boost::urls::parse_uri(text);
  if (!parsed) {
    if (!rules.userinfo && rest.find('@') != std::string_view::npos) return refuse(UriProblem::userinfo, shown);
    return refuse(diagnose(rest), shown);
  }
  const boost::urls::url_view& url = *parsed;
  if (!rules.userinfo && url.has_userinfo()) return refuse(UriProblem::userinfo, shown);
  // Boost.URL 1.81 lets a path that does not start with '/' follow the authority (RFC 3986 wants
  // path-abempty there): "h:12a" comes back as port "12" and path "a".
  if (!url.encoded_path().empty() && !url.encoded_path().starts_with('/')) {
    return refuse(url.has_port() ? UriProblem::port : UriProblem::syntax, shown);
  }

  Uri uri;
  uri.scheme = std::string(scheme->name);
  uri.tls = scheme->tls;
  if (url.host_type() == boost::urls::host_type::ipvfuture) return refuse(UriProblem::host, shown);
  uri.host = url.host_address();  // decoded; an IPv6 literal without its brackets
  if (uri.host.empty()) return refuse(UriProblem::host, shown);
  if (url.has_port()) {
    uri.port = std::string(url.port());
    if (!valid_port(uri.port, rules.port_zero, uri.port_number)) return refuse(UriProblem::port, shown);
  } else {
    uri.port_number = scheme->default_port;
    uri.port = std::to_string(scheme->default_port);
  }
  const bool bare = url.encoded_path().empty() || url.encoded_path() == "/";
  if (!rules.path && (!bare || url.has_query() || url.has_fragment())) return refuse(UriProblem::path, shown);
  if (url.has_userinfo()) {
    uri.has_userinfo = true;
    uri.user = url.user();
    uri.password = url.password();
  }
  const std::string_view target = url.encoded_target();
  uri.target = target.starts_with('/') ? std::string(target) : "/" + std::string(target);
  return uri;
}

}  // namespace tank::net
