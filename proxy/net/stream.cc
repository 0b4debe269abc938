#include "net/stream.h"

#include <array>
#include <span>

namespace popgate::net {
namespace {

constexpr std::size_t kTlsBufferSize = 16 * 1024;  // one TLS record

std::span<char> ThreadReadBuffer() {
  thread_local std::array<char, 64 * 1024> buffer;
  return buffer;
}

}  // namespace

Stream::Stream(tcp::socket socket) : socket_(std::move(socket)) {
  if (socket_.is_open()) ApplySocketOptions();
}

void Stream::ApplySocketOptions() {
  error_code ignored;
  socket().set_option(tcp::no_delay(true), ignored);
  socket().non_blocking(true, ignored);
}

asio::awaitable<std::string_view> Stream::ReadSome(error_code& ec) {
  if (tls_) {
    std::size_t n = co_await tls_->async_read_some(asio::buffer(tls_buffer_.get(), kTlsBufferSize),
                                                   Capture(ec));
    if (ec) {
      co_return std::string_view{};
    }
    co_return std::string_view(tls_buffer_.get(), n);
  }
  for (;;) {
    co_await socket_.async_wait(tcp::socket::wait_read, Capture(ec));
    if (ec) {
      co_return std::string_view{};
    }
    std::span<char> buffer = ThreadReadBuffer();
    std::size_t n = socket_.read_some(asio::buffer(buffer.data(), buffer.size()), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) continue;
    if (ec) {
      co_return std::string_view{};
    }
    co_return std::string_view(buffer.data(), n);
  }
}

asio::awaitable<void> Stream::Write(std::string_view data, error_code& ec) {
  if (tls_) {
    co_await asio::async_write(*tls_, asio::buffer(data.data(), data.size()), Capture(ec));
  } else {
    co_await asio::async_write(socket_, asio::buffer(data.data(), data.size()), Capture(ec));
  }
}

asio::awaitable<void> Stream::Handshake(ssl::context& context,
                                        ssl::stream_base::handshake_type type,
                                        const std::string& peer_name, bool verify, error_code& ec,
                                        std::string& failure) {
  tls_ = std::make_unique<ssl::stream<tcp::socket>>(std::move(socket_), context);
  tls_buffer_ = std::make_unique<char[]>(kTlsBufferSize);
  if (type == ssl::stream_base::client) SetPeerName(tls_->native_handle(), peer_name, verify);
  co_await tls_->async_handshake(type, Capture(ec));
  if (ec) {
    failure = HandshakeFailure(tls_->native_handle(), ec);
  } else {
    tls_established_ = true;
  }
}

asio::awaitable<void> Stream::Shutdown(std::chrono::milliseconds limit) {
  if (!tls_established_) co_return;
  tls_established_ = false;
  // The peer may never answer our close_notify: a timer closes the socket then.
  asio::steady_timer timer(socket().get_executor(), limit);
  timer.async_wait([this](const error_code& ec) {
    if (!ec) Close();
  });
  error_code ec;
  co_await tls_->async_shutdown(Capture(ec));
  timer.cancel();
}

void Stream::Cancel() {
  error_code ignored;
  socket().cancel(ignored);
}

void Stream::Close() {
  error_code ignored;
  socket().close(ignored);
}

}  // namespace popgate::net
