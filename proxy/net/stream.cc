#include "net/stream.h"

#include <openssl/err.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <span>

namespace popgate::net {
namespace {

std::span<char> ThreadReadBuffer() {
  thread_local std::array<char, 64 * 1024> buffer;
  return buffer;
}

// A BIO on the connection's socket: what OpenSSL's socket BIO does, but with send()'s
// MSG_NOSIGNAL (a peer gone away is an error, not SIGPIPE), and looking the descriptor
// up on every call, so that after Close() OpenSSL meets a closed socket (EBADF), never
// a descriptor number the kernel has since handed to another connection.
template <typename State>
State& BioStateOf(BIO* bio) {
  return *static_cast<State*>(BIO_get_data(bio));
}

bool WouldBlock(int error) { return error == EAGAIN || error == EWOULDBLOCK || error == EINTR; }

template <typename State>
int BioWrite(BIO* bio, const char* data, int length) {
  State& state = BioStateOf<State>(bio);
  BIO_clear_retry_flags(bio);
  state.error = 0;
  ssize_t n =
      ::send(state.socket->native_handle(), data, static_cast<std::size_t>(length), MSG_NOSIGNAL);
  if (n < 0) {
    state.error = errno;
    if (WouldBlock(state.error)) BIO_set_retry_write(bio);
  }
  return static_cast<int>(n);
}

template <typename State>
int BioRead(BIO* bio, char* data, int length) {
  State& state = BioStateOf<State>(bio);
  BIO_clear_retry_flags(bio);
  state.error = 0;
  ssize_t n = ::recv(state.socket->native_handle(), data, static_cast<std::size_t>(length), 0);
  if (n < 0) {
    state.error = errno;
    if (WouldBlock(state.error)) BIO_set_retry_read(bio);
  } else if (n == 0 && length > 0) {
    state.eof = true;
  }
  return static_cast<int>(n);
}

long BioControl(BIO*, int command, long, void*) {
  return command == BIO_CTRL_FLUSH ? 1 : 0;  // writes are never buffered here
}

template <typename State>
BIO_METHOD* SocketBioMethod() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "popgate socket");
    BIO_meth_set_write(m, BioWrite<State>);
    BIO_meth_set_read(m, BioRead<State>);
    BIO_meth_set_ctrl(m, BioControl);
    return m;
  }();
  return method;
}

// What follows an SSL_* call that returned `result` (<= 0): wait for the socket to
// become readable or writable and call again, or stop with `ec` set, as Asio's TLS
// stream reported it: eof for the peer's close_notify, stream_truncated for an end
// without one, OpenSSL's or the system's error otherwise.
enum class Next { kWaitRead, kWaitWrite, kFail };

template <typename State>
Next AfterFailure(SSL* ssl, int result, const State& bio, error_code& ec) {
  int error = SSL_get_error(ssl, result);
  if (error == SSL_ERROR_WANT_READ) return Next::kWaitRead;
  if (error == SSL_ERROR_WANT_WRITE) return Next::kWaitWrite;
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (error == SSL_ERROR_ZERO_RETURN) {
    ec = asio::error::eof;
  } else if (code != 0) {
    ec = error_code(static_cast<int>(code), asio::error::get_ssl_category());
  } else if (error == SSL_ERROR_SYSCALL && bio.eof) {
    ec = ssl::error::stream_truncated;
  } else if (error == SSL_ERROR_SYSCALL && bio.error != 0) {
    ec = error_code(bio.error, asio::error::get_system_category());
  } else {
    ec = ssl::error::unspecified_system_error;
  }
  return Next::kFail;
}

tcp::socket::wait_type WaitFor(Next next) {
  return next == Next::kWaitRead ? tcp::socket::wait_read : tcp::socket::wait_write;
}

}  // namespace

Stream::Stream(tcp::socket socket) : socket_(std::move(socket)) {
  if (socket_.is_open()) ApplySocketOptions();
}

void Stream::ApplySocketOptions() {
  error_code ignored;
  socket_.set_option(tcp::no_delay(true), ignored);
  socket_.non_blocking(true, ignored);
}

asio::awaitable<std::string_view> Stream::ReadSome(error_code& ec) {
  std::span<char> buffer = ThreadReadBuffer();
  if (ssl_) {
    SSL* ssl = ssl_.get();
    for (;;) {
      ERR_clear_error();
      std::size_t n = 0;
      int result = SSL_read_ex(ssl, buffer.data(), buffer.size(), &n);
      if (result == 1) {
        // Take whatever else OpenSSL already holds (further records read ahead with
        // this one); stop at the first call that would need the socket again.
        std::size_t total = n;
        while (total < buffer.size() && SSL_has_pending(ssl)) {
          if (SSL_read_ex(ssl, buffer.data() + total, buffer.size() - total, &n) != 1) {
            ERR_clear_error();  // an error or the end shows again on the next call
            break;
          }
          total += n;
        }
        co_return std::string_view(buffer.data(), total);
      }
      Next next = AfterFailure(ssl, result, bio_state_, ec);
      if (next == Next::kFail) {
        co_return std::string_view{};
      }
      if (next == Next::kWaitRead) ReleaseBuffers();
      tcp::socket::wait_type wait = WaitFor(next);
      co_await socket_.async_wait(wait, Capture(ec));
      if (ec) {
        co_return std::string_view{};
      }
    }
  }
  for (;;) {
    co_await socket_.async_wait(tcp::socket::wait_read, Capture(ec));
    if (ec) {
      co_return std::string_view{};
    }
    std::size_t n = socket_.read_some(asio::buffer(buffer.data(), buffer.size()), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) continue;
    if (ec) {
      co_return std::string_view{};
    }
    co_return std::string_view(buffer.data(), n);
  }
}

asio::awaitable<void> Stream::Write(std::string_view data, error_code& ec) {
  if (!ssl_) {
    co_await asio::async_write(socket_, asio::buffer(data.data(), data.size()), Capture(ec));
    co_return;
  }
  SSL* ssl = ssl_.get();
  // Without SSL_MODE_ENABLE_PARTIAL_WRITE one call writes everything; after a
  // WANT_WRITE it is repeated with the same arguments, as OpenSSL requires.
  while (!data.empty()) {
    ERR_clear_error();
    std::size_t n = 0;
    int result = SSL_write_ex(ssl, data.data(), data.size(), &n);
    if (result == 1) {
      data.remove_prefix(n);
      continue;
    }
    Next next = AfterFailure(ssl, result, bio_state_, ec);
    if (next == Next::kFail) {
      co_return;
    }
    tcp::socket::wait_type wait = WaitFor(next);
    co_await socket_.async_wait(wait, Capture(ec));
    if (ec) {
      co_return;
    }
  }
  // The write buffer goes too, or a connection idle after its last response keeps it.
  ReleaseBuffers();
}

void Stream::ReleaseBuffers() {
  // An idle TLS connection holds no OpenSSL buffers (HAZARDS.md: memory per idle
  // session), at the cost of one allocation per wait or write rather than per record
  // (SSL_MODE_RELEASE_BUFFERS). Never while OpenSSL holds input, processed or not:
  // freeing under a partly read record is CVE-2024-4741.
  if (!SSL_has_pending(ssl_.get())) SSL_free_buffers(ssl_.get());
}

asio::awaitable<void> Stream::Handshake(ssl::context& context,
                                        ssl::stream_base::handshake_type type,
                                        const std::string& peer_name, bool verify, error_code& ec,
                                        std::string& failure) {
  ssl_.reset(SSL_new(context.native_handle()));
  BIO* bio = ssl_ ? BIO_new(SocketBioMethod<BioState>()) : nullptr;
  if (!bio) {
    ec = ssl::error::unspecified_system_error;
    failure = "cannot create a TLS connection";
    ssl_.reset();
    co_return;
  }
  BIO_set_data(bio, &bio_state_);
  BIO_set_init(bio, 1);
  SSL* ssl = ssl_.get();
  SSL_set_bio(ssl, bio, bio);  // the SSL owns the BIO now
  // Records straight into OpenSSL's buffer, as many as one read brings.
  SSL_set_read_ahead(ssl, 1);
  if (type == ssl::stream_base::client) {
    SSL_set_connect_state(ssl);
    SetPeerName(ssl, peer_name, verify);
  } else {
    SSL_set_accept_state(ssl);
  }
  for (;;) {
    ERR_clear_error();
    int result = SSL_do_handshake(ssl);
    if (result == 1) break;
    Next next = AfterFailure(ssl, result, bio_state_, ec);
    if (next != Next::kFail) {
      tcp::socket::wait_type wait = WaitFor(next);
      co_await socket_.async_wait(wait, Capture(ec));
    }
    if (ec) {
      failure = HandshakeFailure(ssl, ec);
      co_return;
    }
  }
  tls_established_ = true;
}

asio::awaitable<void> Stream::Shutdown(std::chrono::milliseconds limit) {
  if (!tls_established_) co_return;
  tls_established_ = false;
  // The peer may never answer our close_notify: a timer closes the socket then.
  asio::steady_timer timer(socket_.get_executor(), limit);
  timer.async_wait([this](const error_code& ec) {
    if (!ec) Close();
  });
  SSL* ssl = ssl_.get();
  for (;;) {
    ERR_clear_error();
    // The first call sends close_notify (0: sent), a second one waits for the peer's.
    int result = SSL_shutdown(ssl);
    if (result == 0) result = SSL_shutdown(ssl);
    if (result == 1) break;
    error_code ec;
    Next next = AfterFailure(ssl, result, bio_state_, ec);
    if (next == Next::kFail) break;
    tcp::socket::wait_type wait = WaitFor(next);
    co_await socket_.async_wait(wait, Capture(ec));
    if (ec) break;
  }
  timer.cancel();
}

void Stream::Cancel() {
  error_code ignored;
  socket_.cancel(ignored);
}

void Stream::Close() {
  error_code ignored;
  socket_.close(ignored);
}

}  // namespace popgate::net
