#include "plugin/tls_options.hpp"

namespace tank::plugin {
namespace {

using config::Option;
using config::Type;

// A function's static, not a namespace one: plugins build their option lists during static
// initialisation, from other translation units.
std::span<const Option> tls_client() {
  static const Option kTlsClient[] = {
    {.name = "tls_ca_file",
     .type = Type::string,
     .default_value = "\"\"",
     .description = "PEM file of the CAs that sign the server's (broker's) certificate. Empty: the system's CA "
                    "store."},
    {.name = "tls_cert_file",
     .type = Type::string,
     .default_value = "\"\"",
     .description = "PEM client certificate (chain) for mutual TLS."},
    {.name = "tls_key_file",
     .type = Type::string,
     .default_value = "\"\"",
     .description = "PEM private key of the client certificate."},
    {.name = "tls_key_password",
     .type = Type::string,
     .default_value = "\"\"",
     .description = "Password of an encrypted private key.",
     .secret = true},
    {.name = "tls_verify",
     .type = Type::boolean,
     .default_value = "true",
     .description = "Verify the server's certificate and host name. Turn off only for testing."},
  };
  return kTlsClient;
}

}  // namespace

std::span<const config::Option> tls_client_options() { return tls_client(); }

std::vector<config::Option> with_tls_client_options(std::span<const config::Option> own) {
  std::vector<config::Option> all(own.begin(), own.end());
  const auto tls = tls_client();
  all.insert(all.end(), tls.begin(), tls.end());
  return all;
}

void check_tls_client_options(const config::SectionValues& values, config::Diagnostics& diagnostics) {
  if (values.string("tls_cert_file").empty() != values.string("tls_key_file").empty()) {
    const char* given = values.string("tls_cert_file").empty() ? "tls_key_file" : "tls_cert_file";
    diagnostics.error(values.location_of(given), values.path() + "." + given,
                      "mutual TLS needs both tls_cert_file and tls_key_file");
  }
}

tls::ClientSettings tls_client_settings(const config::SectionValues& values) {
  return {.ca_file = values.string("tls_ca_file"),
          .cert_file = values.string("tls_cert_file"),
          .key_file = values.string("tls_key_file"),
          .key_password = values.string("tls_key_password"),
          .verify = values.boolean("tls_verify")};
}

}  // namespace tank::plugin
