#include "common/tls.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <boost/asio/ip/address.hpp>
#include <fmt/format.h>

namespace tank::tls {

namespace ssl = boost::asio::ssl;

namespace {

// OpenSSL's password callback (pem_password_cb) for tls_key_password: userdata is the password.
// A plain function that cannot throw, instead of Asio's set_password_callback (whose std::string
// copy can): the static builds compile OpenSSL without unwind tables (cross/README.md), so no C++
// exception may pass through OpenSSL's frames. Like Asio's, it gives at most size - 1 bytes.
int copy_key_password(char* buf, int size, int /*rwflag*/, void* userdata) {
  const auto* password = static_cast<const std::string*>(userdata);
  if (password == nullptr || size <= 0) return 0;
  const std::size_t n = std::min(password->size(), static_cast<std::size_t>(size - 1));
  std::memcpy(buf, password->data(), n);
  buf[n] = '\0';
  return static_cast<int>(n);
}

}  // namespace

ssl::context make_client_context(const ClientSettings& settings) {
  ssl::context c(ssl::context::tls_client);
  boost::system::error_code ec;
  c.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  if (!settings.ca_file.empty()) {
    c.load_verify_file(settings.ca_file, ec);
    if (ec) {
      throw std::runtime_error(
          fmt::format("cannot load tls_ca_file {}: {} (a PEM file of CA certificates)", settings.ca_file, ec.message()));
    }
  } else {
    c.set_default_verify_paths(ec);
  }
  if (!settings.cert_file.empty()) {
    c.use_certificate_chain_file(settings.cert_file, ec);
    if (ec) throw std::runtime_error(fmt::format("cannot load tls_cert_file {}: {}", settings.cert_file, ec.message()));
    // The password is read only while the key is loaded. The callback's data is then cleared: it
    // points into `settings`, and Asio's context deletes a non-null one as its own callback object.
    SSL_CTX* native = c.native_handle();
    if (!settings.key_password.empty()) {
      SSL_CTX_set_default_passwd_cb(native, copy_key_password);
      SSL_CTX_set_default_passwd_cb_userdata(native, const_cast<std::string*>(&settings.key_password));
    }
    c.use_private_key_file(settings.key_file, ssl::context::pem, ec);
    SSL_CTX_set_default_passwd_cb(native, nullptr);
    SSL_CTX_set_default_passwd_cb_userdata(native, nullptr);
    if (ec) {
      throw std::runtime_error(fmt::format(
          "cannot load tls_key_file {}: {} (does it match the certificate? is its password right?)", settings.key_file,
          ec.message()));
    }
  }
  c.set_verify_mode(settings.verify ? ssl::verify_peer : ssl::verify_none);
  return c;
}

std::string prepare_client(SSL* ssl, const std::string& host, bool verify) {
  boost::system::error_code not_ip;
  boost::asio::ip::make_address(host, not_ip);
  // SNI carries host names only (RFC 6066, section 3).
  if (not_ip && !SSL_set_tlsext_host_name(ssl, host.c_str())) {
    return fmt::format("cannot set the TLS server name \"{}\"", host);
  }
  if (verify) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    const int set =
        not_ip ? X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0) : X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
    if (set != 1) return fmt::format("cannot check the certificate against \"{}\"", host);
  }
  return {};
}

std::string explain_handshake_failure(SSL* ssl, const boost::system::error_code& error, const ClientSettings& settings,
                                      const std::string& host, const std::string& port, const std::string& peer) {
  const long verify = SSL_get_verify_result(ssl);
  std::string why = error.message();
  std::string hint;
  if (settings.verify && verify != X509_V_OK) {
    why += fmt::format(": {}", X509_verify_cert_error_string(verify));
    const std::string cas =
        settings.ca_file.empty() ? std::string("the system's CA store") : "tls_ca_file " + settings.ca_file;
    switch (verify) {
      case X509_V_ERR_HOSTNAME_MISMATCH:
      case X509_V_ERR_IP_ADDRESS_MISMATCH:
        hint = fmt::format("the {}'s certificate is not issued for \"{}\": connect with a name that its "
                           "subjectAltName lists, or give the {} a certificate for this name",
                           peer, host, peer);
        break;
      case X509_V_ERR_CERT_HAS_EXPIRED:
      case X509_V_ERR_CERT_NOT_YET_VALID:
        hint = fmt::format("check the {}'s certificate dates and this device's clock", peer);
        break;
      default:
        hint = fmt::format("is the {}'s certificate signed by a CA in {}?", peer, cas);
        break;
    }
  } else if (settings.verify) {
    hint = fmt::format("does the {} speak TLS on this port, and does it accept this client?", peer);
  }
  return fmt::format("TLS handshake with {}:{} failed: {}{}", host, port, why, hint.empty() ? "" : " (" + hint + ")");
}

}  // namespace tank::tls
