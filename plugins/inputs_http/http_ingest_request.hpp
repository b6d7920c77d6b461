#pragma once

// One request of inputs.http (http_ingest.hpp), apart from the connection and the queue: the
// server's limits, what the header decides (path, method, token, pause, size), and the decoding
// of the body. net::HttpServer reads with Beast and http_ingest.cpp acts on each Step; the fuzz
// target fuzz/http_ingest_fuzz.cpp feeds bytes through the same functions.
//
//   server_options() -> read the header -> after_header() -> read_body? -> read the body
//                                                   |                              |
//                                             reply / close                 after_body()
//                                                                         store / reply / close

#include <string>
#include <utility>
#include <vector>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "http_ingest.hpp"
#include "json_body.hpp"
#include "net/http_server.hpp"

namespace tank::input::ingest {

namespace http = boost::beast::http;
using net::RequestParser;

// The most bytes of a request header.
inline constexpr std::size_t kMaxHeaderBytes = 16 * 1024;

struct Step {
  enum class Next {
    read_body,  // the header is acceptable: read the body, then call after_body()
    store,      // the body is decoded: store `decoded`, answer with the outcome
    reply,      // answer with `status`, `body` and `headers`, nothing stored
    close,      // close the connection without an answer (a broken or abandoned request)
  };
  Next next = Next::close;
  http::status status = http::status::ok;
  std::string body;
  std::vector<std::pair<http::field, std::string>> headers;
  bool keep_alive = false;  // whether the connection serves another request after the answer
  JsonBody decoded;         // Next::store: the records, views into the parser's body
  std::string error;        // the reason to count in the input's errors ("" = none)
};

// The HTTP server's options for the input: its threads, connections, limits (kMaxHeaderBytes,
// max_body_bytes) and timeouts (idle_timeout between reads; no bound on a whole request, so a
// slow client that keeps sending is served; no bound on a connection's age; 2 s of linger after
// an answer that closes).
net::HttpServerOptions server_options(const HttpIngestSettings& settings);

// After reading the header ended with `ec`. `paused`: the queue refuses records for now.
Step after_header(boost::system::error_code ec, const RequestParser& parser, const HttpIngestSettings& settings,
                  bool paused);

// After reading the body ended with `ec`. A Step::store keeps views into `parser`'s body.
Step after_body(boost::system::error_code ec, const RequestParser& parser, const HttpIngestSettings& settings);

// {"error":"<message>"}, with "accepted":N when some records of the body were stored before the
// failure (a body larger than one commit): resending the whole body then repeats those N.
std::string json_error(std::string_view message, std::size_t accepted = 0);

}  // namespace tank::input::ingest
