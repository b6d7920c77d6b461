#pragma once

// HTTP ingest (Boost.Beast), for producers that need an acknowledgement.
//
// POST <path> with a body that is
//   - one JSON document: one record (the body as sent, without surrounding whitespace);
//   - a JSON array: one record per element (each element serialized compactly);
//   - NDJSON (several documents, one per line; or Content-Type application/x-ndjson): one record
//     per line.
// Answers:
//   200 {"accepted": N}     once the records are committed to the queue (not before)
//   400 {"error": ...}      a body that is not JSON, with where it failed; nothing is stored
//   401                     a missing or wrong bearer token (when auth_token is set)
//   404 / 405               another path / another method
//   413                     a body over max_body_bytes
//   503 + Retry-After       while the queue refuses records (overflow = "block"), or when a
//                           commit failed; nothing of the request is stored... except when a
//                           large body of many small records needed several commits and a
//                           later one was refused: then the earlier part is stored and a
//                           retry duplicates it (at-least-once).

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "plugin/input.hpp"

namespace tank::input {

struct HttpIngestSettings {
  std::string listen;  // "host:port"
  std::string path = "/";
  std::size_t max_body_bytes = 1 << 20;
  std::size_t max_connections = 256;
  std::string auth_token;  // "" = no authentication
  std::chrono::seconds retry_after{5};
  std::chrono::seconds idle_timeout{60};
  unsigned threads = 2;
};

std::unique_ptr<plugin::Input> make_http_ingest_input(const HttpIngestSettings& settings,
                                                      const plugin::InputContext& context);

}  // namespace tank::input
