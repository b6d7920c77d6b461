// inputs.http: records POSTed as JSON, acknowledged with 200 only after the commit
// (see http_ingest.hpp).

#include <fmt/format.h>

#include "http_ingest.hpp"
#include "metrics/listen_address.hpp"
#include "plugin/registry.hpp"

namespace tank::plugins {
namespace {

using config::Option;
using config::Type;

const Option kOptions[] = {
    {.name = "listen",
     .type = Type::string,
     .default_value = "\"127.0.0.1:9880\"",
     .description = "Address to listen on, \"host:port\" (port 0 picks a free port)."},
    {.name = "path",
     .type = Type::string,
     .default_value = "\"/\"",
     .description = "The path records are POSTed to; other paths get 404."},
    {.name = "max_body_bytes",
     .type = Type::size,
     .default_value = "\"1MiB\"",
     .description = "The largest body accepted; a larger one gets 413. A body is split into records and "
                    "committed in one transaction when its records fit one commit of the queue.",
     .min = "64B",
     .max = "4MiB"},
    {.name = "max_connections",
     .type = Type::integer,
     .default_value = "256",
     .description = "Connections served at once; further ones are closed and counted.",
     .min = "1",
     .max = "65536"},
    {.name = "auth_token",
     .type = Type::string,
     .default_value = "",
     .description = "When set, requests must carry `Authorization: Bearer <token>`; others get 401.",
     .secret = true},
    {.name = "retry_after",
     .type = Type::duration,
     .default_value = "\"5s\"",
     .description = "The Retry-After sent with 503 while the queue refuses records.",
     .min = "1s",
     .max = "1h"},
    {.name = "idle_timeout",
     .type = Type::duration,
     .default_value = "\"60s\"",
     .description = "A connection that sends nothing for this long is closed: between requests, in the middle of a "
                    "header or body, or while it does not read the answer. Every read that brings bytes starts it "
                    "again, so a slow client that keeps sending is served whatever its body's size.",
     .min = "1s",
     .max = "1h"},
    {.name = "threads",
     .type = Type::integer,
     .default_value = "2",
     .description = "Threads serving requests.",
     .min = "1",
     .max = "64"},
};

void check(const config::SectionValues& values, config::Diagnostics& diagnostics) {
  std::string error;
  if (!metrics::parse_listen_address(values.string("listen"), &error)) {
    diagnostics.error(values.location_of("listen"), values.path() + ".listen", error);
  }
  const std::string& path = values.string("path");
  if (path.empty() || path.front() != '/') {
    diagnostics.error(values.location_of("path"), values.path() + ".path",
                      fmt::format("a path starts with '/', got \"{}\"", path));
  }
}

const config::Section kSection{
    .path = "inputs.http",
    .summary = "Records POSTed over HTTP: one JSON document, a JSON array (one record per element) or NDJSON "
               "(one record per line). The answer is 200 only after the records are committed; 400 with the "
               "reason for a body that is not JSON; 413 over max_body_bytes; 503 with Retry-After while the queue "
               "refuses records. The client's address is kept as the `peer` attribute.",
    .options = kOptions,
    .common = plugin::input_common_options(),
    .repeated = true,
    .check = check,
};

std::unique_ptr<plugin::Input> create(const config::SectionValues& v, const plugin::InputContext& context) {
  input::HttpIngestSettings s;
  s.listen = v.string("listen");
  s.path = v.string("path");
  s.max_body_bytes = v.size("max_body_bytes");
  s.max_connections = static_cast<std::size_t>(v.integer("max_connections"));
  if (v.has("auth_token")) s.auth_token = v.string("auth_token");
  s.retry_after = std::chrono::duration_cast<std::chrono::seconds>(v.duration("retry_after"));
  s.idle_timeout = std::chrono::duration_cast<std::chrono::seconds>(v.duration("idle_timeout"));
  s.threads = static_cast<unsigned>(v.integer("threads"));
  return input::make_http_ingest_input(s, context);
}

}  // namespace

void register_inputs_http(plugin::Registry& registry) {
  registry.add({.kind = plugin::Kind::input,
                .name = "http",
                .section = &kSection,
                .summary = "records POSTed as JSON, NDJSON or a JSON array",
                .create_input = create});
}

}  // namespace tank::plugins
