#pragma once
// TLS contexts, built once at start-up from the configuration: one server context per
// TLS listener, one client context for the upstream. Everything that can be wrong with
// a certificate or key is found here, before the first client connects.

#include <boost/asio/ssl.hpp>
#include <memory>
#include <string>

#include "config/config.h"
#include "net/asio.h"

namespace popgate::net {

namespace ssl = asio::ssl;

// A listener's context: certificate chain and key from files (the key must match),
// TLS 1.2 or newer, ALPN "pop3" or none (ALPACA: a client asking for another protocol
// is refused). Throws std::runtime_error naming the file and what is wrong.
std::unique_ptr<ssl::context> MakeServerContext(const config::Listener& listener);

// The upstream's context: TLS 1.2 or newer; with `verify`, the chain is checked against
// `ca_file` or the system store. Throws std::runtime_error.
std::unique_ptr<ssl::context> MakeClientContext(const config::Upstream& upstream);

// Sets SNI and the name OpenSSL checks the certificate against (host name or IP).
void SetPeerName(SSL* ssl, const std::string& name, bool verify);

// Why the last handshake on `ssl` failed, in words ("certificate has expired",
// "hostname mismatch"...), or the error's own message.
std::string HandshakeFailure(SSL* ssl, const error_code& ec);

}  // namespace popgate::net
