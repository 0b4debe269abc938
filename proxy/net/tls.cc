#include "net/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <stdexcept>

namespace popgate::net {
namespace {

std::string OpenSslError() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown error";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

void Require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what + ": " + OpenSslError());
}

void SecureDefaults(ssl::context& context) {
  SSL_CTX* ctx = context.native_handle();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  // No SSL_MODE_RELEASE_BUFFERS: it frees and allocates OpenSSL's buffers around every
  // record. net::Stream frees them instead when a connection waits with nothing
  // buffered, so an idle session still holds none (HAZARDS.md).
}

// RFC 7301 ALPN: accept "pop3" or no ALPN at all; a client that offers only other
// protocols (an HTTPS client sent here by a cross-protocol attack) is refused.
int SelectAlpn(SSL*, const unsigned char** out, unsigned char* out_length,
               const unsigned char* offered, unsigned int offered_length, void*) {
  static const unsigned char kPop3[] = {'p', 'o', 'p', '3'};
  for (unsigned int i = 0; i < offered_length;) {
    unsigned int length = offered[i];
    if (length == sizeof kPop3 && i + 1 + length <= offered_length &&
        std::memcmp(offered + i + 1, kPop3, length) == 0) {
      *out = offered + i + 1;
      *out_length = static_cast<unsigned char>(length);
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + length;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

bool IsIpLiteral(const std::string& name) {
  error_code ec;
  asio::ip::make_address(name, ec);
  return !ec;
}

}  // namespace

std::unique_ptr<ssl::context> MakeServerContext(const config::Listener& listener) {
  auto context = std::make_unique<ssl::context>(ssl::context::tls_server);
  SecureDefaults(*context);
  SSL_CTX* ctx = context->native_handle();
  // Errors name the setting's own file:line:key, like every other configuration error.
  Require(SSL_CTX_use_certificate_chain_file(ctx, listener.cert_file.c_str()) == 1,
          listener.cert_where + ": cannot load a certificate chain from " + listener.cert_file);
  Require(SSL_CTX_use_PrivateKey_file(ctx, listener.key_file.c_str(), SSL_FILETYPE_PEM) == 1,
          listener.key_where + ": cannot load a private key from " + listener.key_file);
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    throw std::runtime_error(listener.key_where + ": " + listener.key_file +
                             " is not the key of the certificate " + listener.cert_file);
  }
  SSL_CTX_set_alpn_select_cb(ctx, SelectAlpn, nullptr);
  return context;
}

std::unique_ptr<ssl::context> MakeClientContext(const config::Upstream& upstream) {
  auto context = std::make_unique<ssl::context>(ssl::context::tls_client);
  SecureDefaults(*context);
  SSL_CTX* ctx = context->native_handle();
  if (!upstream.verify) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    return context;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (!upstream.ca_file.empty()) {
    Require(SSL_CTX_load_verify_locations(ctx, upstream.ca_file.c_str(), nullptr) == 1,
            upstream.ca_file_where + ": cannot load CA certificates from " + upstream.ca_file);
  } else {
    Require(SSL_CTX_set_default_verify_paths(ctx) == 1, "system trust store");
  }
  return context;
}

void SetPeerName(SSL* ssl, const std::string& name, bool verify) {
  if (IsIpLiteral(name)) {
    // RFC 6066: no SNI for addresses; the certificate must name the IP instead.
    if (verify) X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str());
    return;
  }
  SSL_set_tlsext_host_name(ssl, name.c_str());
  if (verify) {
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    SSL_set1_host(ssl, name.c_str());
  }
}

std::string HandshakeFailure(SSL* ssl, const error_code& ec) {
  long result = SSL_get_verify_result(ssl);
  if (result != X509_V_OK) return X509_verify_cert_error_string(result);
  return ec.message();
}

}  // namespace popgate::net
