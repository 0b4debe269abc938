#pragma once
// One side of a session: a TCP connection that may be upgraded to TLS (implicit TLS
// at once, or STLS later). The session reads and writes through this and never needs
// to know which it is.

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

  tcp::socket& socket() { return tls_ ? tls_->next_layer() : socket_; }
  // TCP_NODELAY (HAZARDS.md: without it a relay stalls ~40 ms per response against a
  // client that delays ACKs) and non-blocking reads. Call again after connecting.
  void ApplySocketOptions();
  bool is_tls() const { return tls_ != nullptr; }
  // TLS is up: the handshake completed and Shutdown() has not begun.
  bool tls_established() const { return tls_established_; }
  auto get_executor() { return socket().get_executor(); }

  // Waits for data and returns a view of what arrived, valid until the next co_await
  // on this session. Empty on end of stream or error (then `ec` says which).
  //  - plain TCP waits for readability, then reads into the I/O thread's buffer, so an
  //    idle connection holds no buffer;
  //  - TLS reads through OpenSSL into a buffer of this stream's own.
  asio::awaitable<std::string_view> ReadSome(error_code& ec);
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
  tcp::socket socket_;  // moved into tls_ once TLS starts
  std::unique_ptr<ssl::stream<tcp::socket>> tls_;
  std::unique_ptr<char[]> tls_buffer_;
  bool tls_established_ = false;
};

}  // namespace popgate::net
