// Boost's assertion handler for builds without NDEBUG (Debug, the sanitizer build, fuzzing):
// the top-level CMakeLists.txt defines BOOST_ENABLE_ASSERT_DEBUG_HANDLER, so a failed
// BOOST_ASSERT comes here instead of to assert(). Release builds have no Boost assertions at
// all, as before. Every assertion aborts with the usual message, except one that is known to be
// wrong.

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace boost {

void assertion_failed(char const* expr, char const* function, char const* file, long line) {
  // Beast 1.81 (basic_parser::parse_chunk_header) asserts n >= 5 where 3 is valid: the final
  // chunk of a chunked request read in pieces ("0\r\n", then "\r", then "\n"). The code after it
  // asks for more bytes, correctly; upstream dropped the assertion (boostorg/beast#2861). Any
  // client could abort a debug build of tank with it (found by fuzzing inputs.http).
  if (std::string_view(expr) == "n >= 5" && std::string_view(file).ends_with("beast/http/impl/basic_parser.ipp")) {
    return;
  }
  std::fprintf(stderr, "%s:%ld: %s: Assertion `%s' failed.\n", file, line, function, expr);
  std::abort();
}

void assertion_failed_msg(char const* expr, char const* msg, char const* function, char const* file, long line) {
  std::fprintf(stderr, "%s:%ld: %s: Assertion `%s' failed: %s\n", file, line, function, expr, msg);
  std::abort();
}

}  // namespace boost
