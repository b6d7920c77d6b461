#pragma once

// TLS for tank's clients (inputs.mqtt, outputs.http, outputs.mqtt): OpenSSL through Boost.Asio,
// configured the same way everywhere and failing with the same clear messages.
//
// What a client gets: TLS 1.2 or later; the server's certificate chain verified against a CA
// file or the system's store; the server's name checked (a DNS name, or an IP address that its
// subjectAltName lists); SNI sent for DNS names; a client certificate and key for mutual TLS
// (the key may be encrypted). With verify = false none of the checks are made (testing only).

#include <string>

#include <boost/asio/ssl/context.hpp>
#include <boost/system/error_code.hpp>

typedef struct ssl_st SSL;

namespace tank::tls {

struct ClientSettings {
  std::string ca_file;  // PEM CA certificates; empty: the system's CA store
  std::string cert_file;  // PEM client certificate (chain) for mutual TLS; empty: none
  std::string key_file;  // its private key (PEM); required with cert_file
  std::string key_password;  // for an encrypted key
  bool verify = true;  // verify the server's certificate and its name
};

// A client context with those settings. Throws std::runtime_error naming the file that could not
// be loaded and why (a missing file, not PEM, a key that does not match or whose password is
// wrong), so a plugin's start can report it as it is.
boost::asio::ssl::context make_client_context(const ClientSettings& settings);

// Prepares one connection (before its handshake) to `host`: SNI for a DNS name, and with verify
// the check that the certificate is issued for host (a DNS name or an IP address). Returns an
// empty string, or what could not be set.
std::string prepare_client(SSL* ssl, const std::string& host, bool verify);

// Explains a failed handshake with host:port in one sentence: OpenSSL's error, the certificate
// check that failed (with what to change: the CA, the name, the dates, a client certificate),
// e.g. "TLS handshake with 127.0.0.1:8443 failed: certificate verify failed: self-signed
// certificate in certificate chain (is the server's certificate signed by a CA in tls_ca_file
// /etc/tank/ca.pem?)". `peer` names the other side in the hints ("server", "broker").
std::string explain_handshake_failure(SSL* ssl, const boost::system::error_code& error, const ClientSettings& settings,
                                      const std::string& host, const std::string& port, const std::string& peer);

}  // namespace tank::tls
