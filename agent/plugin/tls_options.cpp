#include "plugin/tls_options.hpp"

namespace tank::plugin {

// A function's static, not a namespace one: plugins build their option lists during static
// initialisation, from other translation units.
const config::Options<tls::ClientSettings>& tls_client_bindings() {
  using S = tls::ClientSettings;
  static const config::Options<S> kTlsClient{
      config::string("tls_ca_file", &S::ca_file)
          .default_value("")
          .describe("PEM file of the CAs that sign the server's (broker's) certificate. Empty: the system's CA "
                    "store."),
      config::string("tls_cert_file", &S::cert_file)
          .default_value("")
          .describe("PEM client certificate (chain) for mutual TLS."),
      config::string("tls_key_file", &S::key_file).default_value("").describe("PEM private key of the client certificate."),
      config::string("tls_key_password", &S::key_password)
          .default_value("")
          .describe("Password of an encrypted private key.")
          .secret(),
      config::boolean("tls_verify", &S::verify)
          .default_value(true)
          .describe("Verify the server's certificate and host name. Turn off only for testing."),
  };
  return kTlsClient;
}

std::span<const config::Option> tls_client_options() { return tls_client_bindings().all(); }

void check_tls_client_options(const config::SectionValues& values, config::Diagnostics& diagnostics) {
  if (values.string("tls_cert_file").empty() != values.string("tls_key_file").empty()) {
    const char* given = values.string("tls_cert_file").empty() ? "tls_key_file" : "tls_cert_file";
    diagnostics.error(values.location_of(given), values.path() + "." + given,
                      "mutual TLS needs both tls_cert_file and tls_key_file");
  }
}

tls::ClientSettings tls_client_settings(const config::SectionValues& values) {
  return tls_client_bindings().read(values);
}

}  // namespace tank::plugin
