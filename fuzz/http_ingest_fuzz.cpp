// The request handling of inputs.http (inputs_http/http_ingest_request.hpp): the bytes a
// client sends on one connection, read by Beast's parser with the input's limits, each request
// decided (path, method, token, pause, size) and its body decoded into records, request after
// request while the connection is kept alive -- what net::HttpServer and the input do, without the
// socket and the queue.
//
// Input: [flags] [read size] bytes...
//   flags bit 0: auth_token set; bit 1: the queue is paused; bit 2: a small max_body_bytes

#include <string>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>

#include "fuzz_support.hpp"
#include "inputs_http/http_ingest_request.hpp"
#include "targets.hpp"

namespace tank::fuzz {

int http_ingest_target(const std::uint8_t* data, std::size_t size) {
  namespace http = boost::beast::http;
  using input::ingest::Step;
  Controls controls(data, size);
  const std::uint8_t flags = controls.byte();
  const std::size_t read_size = 1 + controls.byte() * 16;

  input::HttpIngestSettings settings;
  settings.listen = "127.0.0.1:0";
  settings.path = "/ingest";
  if (flags & 1) settings.auth_token = "s3cret";
  const bool paused = (flags & 2) != 0;
  settings.max_body_bytes = (flags & 4) ? 64 : 64 * 1024;

  MemoryStream stream(as_text(data, size), read_size);
  boost::beast::flat_buffer buffer;
  for (int request = 0; request < 64; ++request) {
    input::ingest::RequestParser parser;
    const net::HttpServerOptions options = input::ingest::server_options(settings);
    parser.header_limit(static_cast<std::uint32_t>(options.max_header_bytes));
    parser.body_limit(options.max_body_bytes);
    boost::system::error_code ec;
    http::read_header(stream, buffer, parser, ec);
    Step step = input::ingest::after_header(ec, parser, settings, paused);
    if (step.next == Step::Next::read_body) {
      http::read(stream, buffer, parser, ec);
      step = input::ingest::after_body(ec, parser, settings);
    }
    switch (step.next) {
      case Step::Next::read_body:
        require(false, "after_body() never asks to read the body again");
        break;
      case Step::Next::store:
        require(step.decoded.error.empty(), "a body to store was decoded without error");
        for (std::string_view payload : step.decoded.payloads) {
          require(!payload.empty(), "no empty record");
        }
        break;
      case Step::Next::reply:
        require(static_cast<unsigned>(step.status) >= 400, "a reply without storing is an error status");
        require(!step.error.empty(), "every refusal is counted with a reason");
        break;
      case Step::Next::close:
        return 0;
    }
    if (!step.keep_alive) return 0;
  }
  return 0;
}

}  // namespace tank::fuzz

TANK_FUZZ_TARGET(tank::fuzz::http_ingest_target)
