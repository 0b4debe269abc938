#pragma once
// One side of a session: a TCP connection that may be upgraded to TLS (implicit TLS
// at once, or STLS later). The session reads and writes through this and never needs
// to know which it is.

#include <openssl/ssl.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "net/asio.h"
#include "net/tls.h"

namespace popgate::net {

class Stream {
 public:
  explicit Stream(tcp::socket socket);
  // OpenSSL's BIO points at this object: it never moves.
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  tcp::socket& socket() { return socket_; }
  // TCP_NODELAY (HAZARDS.md: without it a relay stalls ~40 ms per response against a
  // client that delays ACKs) and non-blocking reads. Call again after connecting.
  void ApplySocketOptions();
  bool is_tls() const { return ssl_ != nullptr; }
  // TLS is up: the handshake completed and Shutdown() has not begun.
  bool tls_established() const { return tls_established_; }
  auto get_executor() { return socket_.get_executor(); }

  // Waits for data and returns a view of what arrived, valid until the next co_await
  // on this session. Empty on end of stream or error (then `ec` says which). Both plain
  // TCP and TLS read into the I/O thread's buffer, so an idle connection holds no
  // buffer; TLS hands back every record OpenSSL already holds, not just one.
  asio::awaitable<std::string_view> ReadSome(error_code& ec);
  // Writes all of `data` (with TLS: in one SSL_write, as few records as it takes).
  asio::awaitable<void> Write(std::string_view data, error_code& ec);

  // Turns this connection into TLS and runs the handshake. As the server, `peer_name`
  // is ignored; as the client it is sent as SNI and checked when `verify` is set.
  // On failure `ec` is set and `failure` says why in words.
  asio::awaitable<void> Handshake(ssl::context& context, ssl::stream_base::handshake_type type,
                                  const std::string& peer_name, bool verify, error_code& ec,
                                  std::string& failure);

  // Ends TLS with a close_notify, so the peer can tell a complete session from a cut
  // one; waits at most `limit` for the peer's answer. Nothing to do for plain TCP.
  asio::awaitable<void> Shutdown(std::chrono::milliseconds limit = std::chrono::seconds(2));

  void Cancel();
  void Close();

 private:
  // TLS drives OpenSSL on the socket itself (stream.cc): no BIO pair and no copy
  // through Asio's buffers. OpenSSL reads and writes the non-blocking descriptor, and
  // where it would block the coroutine waits for the socket to become ready.
  struct SslFree {
    void operator()(SSL* ssl) const { SSL_free(ssl); }
  };
  // What OpenSSL's BIO sees of this stream: the socket, and how its last read or
  // write ended (the end of stream, or errno), for telling a cut connection from an error.
  struct BioState {
    tcp::socket* socket;
    bool eof = false;
    int error = 0;
  };
  // OpenSSL's buffers go back to the allocator when nothing is buffered in them.
  void ReleaseBuffers();

  tcp::socket socket_;
  BioState bio_state_{&socket_};
  std::unique_ptr<SSL, SslFree> ssl_;
  bool tls_established_ = false;
};

}  // namespace popgate::net
