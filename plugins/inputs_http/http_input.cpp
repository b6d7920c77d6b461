// inputs.http: records POSTed as JSON, acknowledged with 200 only after the commit
// (see http_ingest.hpp).

#include <fmt/format.h>

#include "http_ingest.hpp"
#include "plugin/listen_options.hpp"
#include "plugin/registry.hpp"

namespace tank::plugins {
namespace {

using S = input::HttpIngestSettings;

const config::Options<S> kOptions{
    plugin::listen_option(&S::listen, "127.0.0.1:9880"),
    config::string("path", &S::path)
        .default_value("/")
        .describe("The path records are POSTed to; other paths get 404."),
    config::size("max_body_bytes", &S::max_body_bytes)
        .default_value("1MiB")
        .describe("The largest body accepted; a larger one gets 413. A body is split into records and "
                  "committed in one transaction when its records fit one commit of the queue.")
        .min("64B")
        .max("4MiB"),
    config::integer("max_connections", &S::max_connections)
        .default_value(256)
        .describe("Connections served at once; further ones are closed and counted.")
        .min("1")
        .max("65536"),
    config::string("auth_token", &S::auth_token)
        .describe("When set, requests must carry `Authorization: Bearer <token>`; others get 401.")
        .secret(),
    config::duration("retry_after", &S::retry_after)
        .default_value("5s")
        .describe("The Retry-After sent with 503 while the queue refuses records.")
        .min("1s")
        .max("1h"),
    config::duration("idle_timeout", &S::idle_timeout)
        .default_value("60s")
        .describe("A connection that sends nothing for this long is closed: between requests, in the middle of a "
                  "header or body, or while it does not read the answer. Every read that brings bytes starts it "
                  "again, so a slow client that keeps sending is served whatever its body's size.")
        .min("1s")
        .max("1h"),
    config::integer("threads", &S::threads)
        .default_value(2)
        .describe("Threads serving requests.")
        .min("1")
        .max("64"),
};

void check(const config::SectionValues& values, config::Diagnostics& diagnostics) {
  plugin::check_listen_option(values, diagnostics);
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
    .options = kOptions.all(),
    .common = plugin::input_common_options(),
    .repeated = true,
    .check = check,
};

std::unique_ptr<plugin::Input> create(const config::SectionValues& v, const plugin::InputContext& context) {
  return input::make_http_ingest_input(kOptions.read(v), context);
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
