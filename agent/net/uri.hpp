#pragma once

// URIs of the servers tank connects to (outputs.http's url and proxy, the MQTT brokers), parsed
// once, by Boost.URL (RFC 3986), into what a client needs to connect.
//
// What parse_uri promises: it never throws for any text (a 20-digit port is an error like any
// other); the value it returns has a scheme from the caller's list, a non-empty host (an IPv6
// literal without its brackets, a name percent-decoded), a port of 1 to 65535 (0 only where the
// rules allow it; the scheme's default when the URI has none), and the user and password
// percent-decoded ("p%40ss" is "p@ss"). Its errors name the problem in a UriProblem, so that each
// caller can word it for its users, and carry a default message that shows the URI without its
// userinfo (strings::redact_url_userinfo): a URI's password never reaches a log or a diagnostic.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace tank::net {

struct Scheme {
  std::string_view name;        // lower case, as written before "://"
  std::uint16_t default_port;   // when the URI gives none
  bool tls;                     // the connection is made over TLS
};

struct UriRules {
  std::span<const Scheme> schemes;  // the accepted schemes (matched exactly: "HTTP://" is not "http://")
  bool userinfo = false;            // user[:password]@ may be given
  bool path = true;                 // a path and query may follow the authority ("/" is always allowed)
  bool port_zero = false;           // port 0 is accepted
};

struct Uri {
  std::string scheme;
  bool tls = false;  // from the scheme's entry in UriRules
  std::string host;  // "example.com", "10.0.0.1", "::1" (no brackets)
  std::string port;  // decimal digits, never empty
  std::uint16_t port_number = 0;
  bool has_userinfo = false;
  std::string user;      // percent-decoded
  std::string password;  // percent-decoded
  std::string target;    // the path and query for an HTTP request line ("/" at least); no fragment
};

// Each way a URI can be refused, in the order they are checked.
enum class UriProblem {
  scheme,         // no "scheme://", or a scheme not in the rules
  userinfo,       // user:password@ where the rules do not allow it
  unclosed_ipv6,  // "[::1" without its ']'
  host,           // no host, or one that is not a host (an IPvFuture literal)
  port,           // not digits, 0 (unless allowed) or above 65535, however many digits
  path,           // a path, query or fragment where the rules allow none
  syntax,         // anything else RFC 3986 does not allow
};

struct UriError {
  UriProblem problem;
  std::string message;  // e.g. "\"tcp://h:99999\" has no valid port"; shows the URI redacted
};

using UriResult = std::variant<Uri, UriError>;

// Parses `text` by `rules`. Never throws but std::bad_alloc.
UriResult parse_uri(std::string_view text, const UriRules& rules);

}  // namespace tank::net
