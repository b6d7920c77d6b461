#pragma once

// The TLS options every plugin that connects as a TLS client shares (inputs.mqtt, outputs.http,
// outputs.mqtt): declared once, so they are named, checked and documented alike.
//
//   tls_ca_file, tls_cert_file, tls_key_file, tls_key_password (secret), tls_verify

#include <span>
#include <vector>

#include "common/tls.hpp"
#include "config/bind.hpp"
#include "config/document.hpp"
#include "config/schema.hpp"

namespace tank::plugin {

// The TLS options bound to a tls::ClientSettings: a plugin's table takes them with
// config::nested(&Settings::tls, plugin::tls_client_bindings()).
const config::Options<tls::ClientSettings>& tls_client_bindings();

std::span<const config::Option> tls_client_options();

// Adds an error when only one of tls_cert_file and tls_key_file is given.
void check_tls_client_options(const config::SectionValues& values, config::Diagnostics& diagnostics);

tls::ClientSettings tls_client_settings(const config::SectionValues& values);

}  // namespace tank::plugin
