// popgate_loadgen: a POP3 load generator for benchmarking popgate against a direct
// connection and other proxies. See bench/README.md.
//
//   retr:   C sessions log in (USER/PASS), read LIST once, then RETR 1..N cycling for a
//           duration or a count. Every response must start "+OK", end in CRLF "." CRLF
//           with nothing after it, and carry exactly as many body octets as LIST gave
//           (the benchmark mailboxes have no lines starting with "."), and every message
//           must have the same size in every session. Prints one JSON object.
//   verify: like retr, but every session fetches every message exactly once and hashes
//           its wire bytes; prints a digest over all messages, so two targets can be
//           compared byte for byte.
//   idle:   K sessions log in and stay open for --hold seconds (to measure the
//           proxy's memory per idle logged-in session), then QUIT. Prints a JSON
//           "ready" line once all are logged in, and a final JSON object.
//
// One io_context run by --threads threads; one coroutine per session; TCP_NODELAY on
// every socket. MB means 10^6 octets; payload octets are the message body as sent
// (between the status line and the terminating "." line).
//
// --tls: implicit TLS (POP3S) to the target, OpenSSL through asio::ssl::stream, SNI
// --server-name (default localhost). With --ca FILE the chain is verified against FILE
// and the certificate must name --server-name; without it nothing is verified (a
// benchmark client). The JSON then says which protocol and cipher were negotiated.

#include <utility>  // before Asio: GCC 12 + Boost 1.74 awaitable.hpp (STYLE.md)

#include <boost/asio.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using Clock = std::chrono::steady_clock;

auto Capture(error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); }

// ---------------------------------------------------------------------------
// Options.

struct Options {
  std::string mode = "retr";
  std::string host = "127.0.0.1";
  unsigned short port = 110;
  std::string user;
  std::string pass;
  unsigned sessions = 1;
  unsigned threads = 1;
  double duration = 5.0;      // seconds (retr), unless count > 0
  std::uint64_t count = 0;    // RETRs per session (retr)
  unsigned messages = 0;      // cycle over the first N messages (0: all in LIST)
  double hold = 5.0;          // seconds (idle)
  double timeout = 30.0;      // seconds without data while a response is due: an error
  unsigned connect_parallel = 32;  // idle: logins in flight at once
  bool list_check = true;     // body octets must equal LIST's size
  std::string label;
  bool tls = false;           // implicit TLS to the target
  std::string ca_file;        // verify the target's chain against this (TLS; else no check)
  std::string server_name = "localhost";  // SNI, and the name checked with --ca
};

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr,
               "popgate_loadgen: %s\n"
               "usage: popgate_loadgen --port P --user U --pass P [--host H] [--mode retr|verify|idle]\n"
               "         [--sessions C] [--threads T] [--duration S | --count N] [--messages N]\n"
               "         [--hold S] [--connect-parallel N] [--timeout S] [--no-list-check]\n"
               "         [--label TEXT] [--tls [--ca FILE] [--server-name NAME]]\n",
               why);
  std::exit(2);
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) Usage(("missing value for " + std::string(a)).c_str());
      return argv[++i];
    };
    if (a == "--mode") o.mode = value();
    else if (a == "--host") o.host = value();
    else if (a == "--port") o.port = static_cast<unsigned short>(std::atoi(value()));
    else if (a == "--user") o.user = value();
    else if (a == "--pass") o.pass = value();
    else if (a == "--sessions") o.sessions = static_cast<unsigned>(std::atoi(value()));
    else if (a == "--threads") o.threads = static_cast<unsigned>(std::atoi(value()));
    else if (a == "--duration") o.duration = std::atof(value());
    else if (a == "--count") o.count = std::strtoull(value(), nullptr, 10);
    else if (a == "--messages") o.messages = static_cast<unsigned>(std::atoi(value()));
    else if (a == "--hold") o.hold = std::atof(value());
    else if (a == "--timeout") o.timeout = std::atof(value());
    else if (a == "--connect-parallel") o.connect_parallel = static_cast<unsigned>(std::atoi(value()));
    else if (a == "--no-list-check") o.list_check = false;
    else if (a == "--label") o.label = value();
    else if (a == "--tls") o.tls = true;
    else if (a == "--ca") o.ca_file = value();
    else if (a == "--server-name") o.server_name = value();
    else if (a == "-h" || a == "--help") Usage("help");
    else Usage(("unknown argument " + std::string(a)).c_str());
  }
  if (o.mode != "retr" && o.mode != "verify" && o.mode != "idle") Usage("bad --mode");
  if (o.user.empty()) Usage("--user is required");
  if (o.sessions == 0 || o.threads == 0 || o.connect_parallel == 0) Usage("zero count");
  if (!o.tls && !o.ca_file.empty()) Usage("--ca needs --tls");
  return o;
}

// The client context for --tls (nullptr without it): TLS 1.2 or newer, OpenSSL's
// default cipher suites; verification only with --ca.
std::unique_ptr<ssl::context> MakeTlsContext(const Options& o) {
  if (!o.tls) return nullptr;
  auto context = std::make_unique<ssl::context>(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION);
  if (o.ca_file.empty()) {
    context->set_verify_mode(ssl::verify_none);
  } else {
    context->load_verify_file(o.ca_file);
    context->set_verify_mode(ssl::verify_peer);
  }
  return context;
}

// ---------------------------------------------------------------------------
// Results shared by all sessions.

struct Totals {
  std::atomic<std::uint64_t> messages{0};
  std::atomic<std::uint64_t> payload_bytes{0};
  std::atomic<std::uint64_t> wire_bytes{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> list_mismatches{0};
  std::atomic<std::uint64_t> logged_in{0};
  std::atomic<std::uint64_t> latency_ns_sum{0};
  std::atomic<std::uint64_t> latency_ns_max{0};
  std::mutex mutex;
  std::string first_error;
  std::string tls;  // "TLSv1.3 TLS_AES_256_GCM_SHA384" from the first handshake (--tls)
  // Per message: body size (and wire hash in verify mode) first seen by any session.
  std::vector<std::int64_t> sizes;
  std::vector<std::uint64_t> hashes;
  std::uint64_t size_mismatches = 0;
  std::uint64_t hash_mismatches = 0;

  void Error(std::string what) {
    errors.fetch_add(1);
    std::lock_guard lock(mutex);
    if (first_error.empty()) first_error = std::move(what);
  }
  void Latency(Clock::duration d) {
    auto ns = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
    latency_ns_sum.fetch_add(ns, std::memory_order_relaxed);
    auto prev = latency_ns_max.load(std::memory_order_relaxed);
    while (ns > prev && !latency_ns_max.compare_exchange_weak(prev, ns)) {
    }
  }
  // Returns false on a mismatch with what another session saw for the same message.
  bool Record(std::size_t index, std::int64_t size, std::optional<std::uint64_t> hash) {
    std::lock_guard lock(mutex);
    if (sizes.size() <= index) {
      sizes.resize(index + 1, -1);
      hashes.resize(index + 1, 0);
    }
    bool ok = true;
    if (sizes[index] < 0) {
      sizes[index] = size;
    } else if (sizes[index] != size) {
      ++size_mismatches;
      ok = false;
    }
    if (hash) {
      if (hashes[index] == 0) {
        hashes[index] = *hash;
      } else if (hashes[index] != *hash) {
        ++hash_mismatches;
        ok = false;
      }
    }
    return ok;
  }
};

// A streaming 64-bit hash over 8-octet words (verify mode only; any split gives the
// same value).
class StreamHash {
 public:
  void Update(const char* p, std::size_t n) {
    length_ += n;
    while (n > 0 && fill_ != 0) {
      Byte(static_cast<unsigned char>(*p++));
      --n;
    }
    while (n >= 8) {
      std::uint64_t w;
      std::memcpy(&w, p, 8);
      Word(w);
      p += 8;
      n -= 8;
    }
    while (n > 0) {
      Byte(static_cast<unsigned char>(*p++));
      --n;
    }
  }
  std::uint64_t Final() {
    std::uint64_t h = h_ ^ (length_ * 0x9E3779B97F4A7C15ull);
    if (fill_) h = Mix(h ^ Mix(partial_));
    return Mix(h) | 1;  // never 0: 0 marks "not seen" in Totals
  }

 private:
  static std::uint64_t Mix(std::uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
  }
  void Word(std::uint64_t w) {
    h_ = (h_ ^ (w * 0x87c37b91114253d5ull)) * 0x4cf5ad432745937full + 0x52dce729;
    h_ = (h_ << 27) | (h_ >> 37);
  }
  void Byte(unsigned char c) {
    partial_ |= static_cast<std::uint64_t>(c) << (8 * fill_);
    if (++fill_ == 8) {
      std::uint64_t w = partial_;
      partial_ = 0;
      fill_ = 0;
      Word(w);
    }
  }
  std::uint64_t h_ = 0x2545F4914F6CDD1Dull;
  std::uint64_t length_ = 0;
  std::uint64_t partial_ = 0;
  unsigned fill_ = 0;
};

// ---------------------------------------------------------------------------
// One POP3 connection, no pipelining: each response is all that is in flight.

class Conn {
 public:
  // `tls`: implicit TLS with this context (nullptr: plain TCP).
  Conn(asio::any_io_executor ex, Totals& totals, std::size_t buffer_size,
       ssl::context* tls = nullptr, const Options* options = nullptr)
      : socket_(ex), totals_(totals), tls_context_(tls), options_(options),
        buffer_(buffer_size), chunk_(buffer_.data()) {}

  tcp::socket& socket() { return socket_; }

  // Called from the watchdog thread: a read that has seen no data for `limit` ends the
  // connection (shutdown(2) is safe from any thread; the pending read then fails).
  void CheckStall(std::int64_t now_ns, std::int64_t limit_ns) {
    std::int64_t since = waiting_since_.load();
    if (since != 0 && now_ns - since > limit_ns && !timed_out_.exchange(true)) {
      ::shutdown(socket_.native_handle(), SHUT_RDWR);
    }
  }

  asio::awaitable<bool> Connect(const tcp::endpoint& ep) {
    error_code ec;
    co_await socket_.async_connect(ep, Capture(ec));
    if (ec) co_return Fail("connect: " + ec.message());
    socket_.set_option(tcp::no_delay(true), ec);
    if (tls_context_) {
      tls_ = std::make_unique<ssl::stream<tcp::socket&>>(socket_, *tls_context_);
      SSL* ssl = tls_->native_handle();
      const std::string& name = options_->server_name;
      SSL_set_tlsext_host_name(ssl, name.c_str());
      if (!options_->ca_file.empty()) SSL_set1_host(ssl, name.c_str());
      waiting_since_.store(NowNs());  // the handshake is watched like a read
      co_await tls_->async_handshake(ssl::stream_base::client, Capture(ec));
      waiting_since_.store(0);
      if (timed_out_.load()) ec = asio::error::timed_out;
      if (ec) {
        long verify = SSL_get_verify_result(ssl);
        co_return Fail("TLS handshake: " + (verify != X509_V_OK
                                                ? std::string(X509_verify_cert_error_string(verify))
                                                : ec.message()));
      }
      std::lock_guard lock(totals_.mutex);
      if (totals_.tls.empty()) {
        totals_.tls = std::string(SSL_get_version(ssl)) + " " + SSL_get_cipher_name(ssl);
      }
    }
    co_return true;
  }

  asio::awaitable<bool> Send(std::string_view command) {
    error_code ec;
    if (tls_) {
      co_await asio::async_write(*tls_, asio::buffer(command.data(), command.size()), Capture(ec));
    } else {
      co_await asio::async_write(socket_, asio::buffer(command.data(), command.size()), Capture(ec));
    }
    if (ec) co_return Fail("write: " + ec.message());
    co_return true;
  }

  // A single-line response; it must start "+OK".
  asio::awaitable<std::optional<std::string>> ReadOk(std::string_view what) {
    std::string line;
    for (;;) {
      std::size_t crlf = line.find("\r\n");
      if (crlf != std::string::npos) {
        if (crlf + 2 != line.size()) {
          Fail(std::string(what) + ": data after the response line");
          co_return std::nullopt;
        }
        line.resize(crlf);
        break;
      }
      if (line.size() > 4096) {
        Fail(std::string(what) + ": response line too long");
        co_return std::nullopt;
      }
      error_code ec;
      std::size_t n = co_await Read(ec);
      if (ec) {
        Fail(std::string(what) + ": read: " + ec.message());
        co_return std::nullopt;
      }
      line.append(chunk_, n);
    }
    if (!line.starts_with("+OK")) {
      Fail(std::string(what) + ": " + Printable(line));
      co_return std::nullopt;
    }
    co_return line;
  }

  asio::awaitable<bool> Command(std::string_view command, std::string_view what) {
    bool sent = co_await Send(command);
    if (!sent) co_return false;
    std::optional<std::string> reply = co_await ReadOk(what);
    co_return reply.has_value();
  }

  asio::awaitable<bool> Login(const Options& o) {
    std::optional<std::string> greeting = co_await ReadOk("greeting");
    if (!greeting) co_return false;
    std::string user = "USER " + o.user + "\r\n";
    bool ok = co_await Command(user, "USER");
    if (!ok) co_return false;
    std::string pass = "PASS " + o.pass + "\r\n";
    ok = co_await Command(pass, "PASS");
    if (!ok) co_return false;
    co_return true;
  }

  // A multi-line response to `command`. Returns the body octets (between the status
  // line and the "." line), or -1 on error. `keep` receives the whole response if
  // given; `hash` hashes the body's wire bytes.
  asio::awaitable<std::int64_t> MultiLine(std::string_view command, std::string* keep,
                                          StreamHash* hash) {
    bool sent = co_await Send(command);
    if (!sent) co_return -1;
    std::size_t total = 0;          // octets of the response so far
    std::size_t status_len = 0;     // status line incl. CRLF, once known
    std::string status;             // the status line while incomplete
    char tail[5] = {0, 0, 0, 0, 0}; // the response's last 5 octets
    for (;;) {
      error_code ec;
      std::size_t n = co_await Read(ec);
      if (ec) {
        Fail(std::string(command.substr(0, command.size() - 2)) + ": read: " + ec.message() +
             " after " + std::to_string(total) + " octets (no terminator)");
        co_return -1;
      }
      const char* data = chunk_;
      if (keep) keep->append(data, n);
      std::size_t body_from = 0;  // offset in this chunk where the body starts
      if (status_len == 0) {
        std::size_t old = status.size();
        status.append(data, std::min<std::size_t>(n, 4096));
        std::size_t crlf = status.find("\r\n");
        if (crlf == std::string::npos) {
          if (status.size() >= 4096) {
            Fail("status line too long");
            co_return -1;
          }
        } else {
          status.resize(crlf);
          if (!status.starts_with("+OK")) {
            Fail(std::string(command.substr(0, command.size() - 2)) + ": " + Printable(status));
            co_return -1;
          }
          status_len = crlf + 2;
          body_from = status_len - old;
        }
      }
      if (hash && status_len != 0 && n > body_from) hash->Update(data + body_from, n - body_from);
      total += n;
      // Keep the last five octets of the response.
      if (n >= 5) {
        std::memcpy(tail, data + n - 5, 5);
      } else {
        std::memmove(tail, tail + n, 5 - n);
        std::memcpy(tail + 5 - n, data, n);
      }
      // No pipelining, so the terminator can only be at the very end of what has
      // arrived; inside the body it cannot occur (a "." line is stuffed to "..").
      // An empty body ("+OK\r\n.\r\n") shares the status line's CRLF.
      if (status_len != 0 && total >= status_len + 3 && std::memcmp(tail, "\r\n.\r\n", 5) == 0) {
        co_return static_cast<std::int64_t>(total - status_len - 3);
      }
    }
  }

  void Close() {
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

  bool Fail(std::string what) {
    totals_.Error(std::move(what));
    return false;
  }

  static std::string Printable(std::string_view s) {
    std::string out;
    for (char c : s.substr(0, 200)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
    return out;
  }

 private:
  tcp::socket socket_;
  Totals& totals_;
  ssl::context* tls_context_;
  const Options* options_;
  std::unique_ptr<ssl::stream<tcp::socket&>> tls_;  // on socket_, once connected (--tls)
  static std::int64_t NowNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
  }
  // One read, with stall detection (see CheckStall).
  asio::awaitable<std::size_t> Read(error_code& ec) {
    waiting_since_.store(NowNs());
    std::size_t n = tls_ ? co_await tls_->async_read_some(asio::buffer(chunk_, buffer_.size()), Capture(ec))
                         : co_await socket_.async_read_some(asio::buffer(chunk_, buffer_.size()), Capture(ec));
    waiting_since_.store(0);
    if (timed_out_.load()) ec = asio::error::timed_out;
    co_return n;
  }

  std::vector<char> buffer_;
  char* chunk_;
  std::atomic<std::int64_t> waiting_since_{0};  // steady-clock ns; 0 while not reading
  std::atomic<bool> timed_out_{false};
};

// Ends connections whose reads stall (a proxy that hangs, or a response whose
// terminator never comes) so that a run always finishes, with an error.
class Watchdog {
 public:
  Watchdog(std::vector<std::unique_ptr<Conn>>& conns, double timeout)
      : conns_(conns), limit_ns_(static_cast<std::int64_t>(timeout * 1e9)), thread_([this] { Run(); }) {}
  ~Watchdog() {
    stop_.store(true);
    thread_.join();
  }

 private:
  void Run() {
    while (!stop_.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
      for (auto& c : conns_) c->CheckStall(now, limit_ns_);
    }
  }
  std::vector<std::unique_ptr<Conn>>& conns_;
  std::int64_t limit_ns_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Parses a LIST response into sizes (index 0 is message 1). Empty on a bad response.
std::vector<std::int64_t> ParseList(const std::string& response) {
  std::vector<std::int64_t> sizes;
  std::size_t pos = response.find("\r\n");
  if (pos == std::string::npos) return {};
  pos += 2;
  while (pos < response.size()) {
    std::size_t eol = response.find("\r\n", pos);
    if (eol == std::string::npos) return {};
    std::string_view line(response.data() + pos, eol - pos);
    pos = eol + 2;
    if (line == ".") return sizes;
    unsigned long long number = 0, size = 0;
    if (std::sscanf(std::string(line).c_str(), "%llu %llu", &number, &size) != 2) return {};
    if (number != sizes.size() + 1) return {};
    sizes.push_back(static_cast<std::int64_t>(size));
  }
  return {};
}

void RunThreads(asio::io_context& io, unsigned threads) {
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : pool) t.join();
  io.restart();
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// ---------------------------------------------------------------------------
// retr / verify

int RunRetr(const Options& o, const tcp::endpoint& ep) {
  asio::io_context io(static_cast<int>(o.threads));
  std::unique_ptr<ssl::context> tls = MakeTlsContext(o);
  Totals totals;
  const bool verify = o.mode == "verify";
  std::vector<std::unique_ptr<Conn>> conns;
  std::vector<std::vector<std::int64_t>> lists(o.sessions);
  for (unsigned i = 0; i < o.sessions; ++i) {
    conns.push_back(std::make_unique<Conn>(io.get_executor(), totals, 256 * 1024, tls.get(), &o));
  }

  Watchdog watchdog(conns, o.timeout);
  // Phase 1: every session connects, logs in and reads LIST.
  auto login_start = Clock::now();
  for (unsigned i = 0; i < o.sessions; ++i) {
    asio::co_spawn(
        io,
        [&, i]() -> asio::awaitable<void> {
          Conn& c = *conns[i];
          bool ok = co_await c.Connect(ep);
          if (ok) ok = co_await c.Login(o);
          if (!ok) co_return;
          std::string list;
          std::int64_t listed = co_await c.MultiLine("LIST\r\n", &list, nullptr);
          if (listed < 0) co_return;
          lists[i] = ParseList(list);
          if (lists[i].empty()) {
            c.Fail("LIST: empty or malformed");
            co_return;
          }
          totals.logged_in.fetch_add(1);
        },
        asio::detached);
  }
  RunThreads(io, o.threads);
  double login_seconds = Seconds(Clock::now() - login_start);

  // Phase 2: the timed part, only with sessions that made it through phase 1.
  std::atomic<bool> stop{false};
  auto start = Clock::now();
  auto deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration));
  std::atomic<std::int64_t> last_end{0};
  for (unsigned i = 0; i < o.sessions; ++i) {
    if (lists[i].empty()) continue;
    asio::co_spawn(
        io,
        [&, i]() -> asio::awaitable<void> {
          Conn& c = *conns[i];
          const auto& list = lists[i];
          std::size_t n = o.messages ? std::min<std::size_t>(o.messages, list.size()) : list.size();
          std::size_t index = verify ? 0 : i % n;
          std::uint64_t done = 0;
          for (;;) {
            if (verify) {
              if (done == n) break;
            } else if (o.count ? done >= o.count : (stop.load(std::memory_order_relaxed) || Clock::now() >= deadline)) {
              break;
            }
            std::string command = "RETR " + std::to_string(index + 1) + "\r\n";
            StreamHash hash;
            auto t0 = Clock::now();
            std::int64_t body = co_await c.MultiLine(command, nullptr, verify ? &hash : nullptr);
            if (body < 0) co_return;
            totals.Latency(Clock::now() - t0);
            ++done;
            totals.messages.fetch_add(1, std::memory_order_relaxed);
            totals.payload_bytes.fetch_add(static_cast<std::uint64_t>(body), std::memory_order_relaxed);
            if (o.list_check && body != list[index]) {
              totals.list_mismatches.fetch_add(1);
              c.Fail("RETR " + std::to_string(index + 1) + ": " + std::to_string(body) +
                     " body octets, LIST said " + std::to_string(list[index]));
            }
            std::optional<std::uint64_t> h;
            if (verify) h = hash.Final();
            if (!totals.Record(index, body, h)) {
              c.Fail("RETR " + std::to_string(index + 1) + ": differs from another session");
            }
            index = (index + 1) % n;
          }
          auto end = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
          auto prev = last_end.load();
          while (end > prev && !last_end.compare_exchange_weak(prev, end)) {
          }
          // Leave without QUIT's side effects being relevant (RETR deletes nothing).
          bool quit = co_await c.Command("QUIT\r\n", "QUIT");
          if (quit) c.Close();
        },
        asio::detached);
  }
  RunThreads(io, o.threads);
  double elapsed = static_cast<double>(last_end.load()) / 1e9;
  if (elapsed <= 0) elapsed = Seconds(Clock::now() - start);

  // Digest over all messages' wire hashes (verify mode).
  std::uint64_t digest = 0xcbf29ce484222325ull;
  std::uint64_t total_size = 0;
  for (std::size_t i = 0; i < totals.sizes.size(); ++i) {
    digest = (digest ^ totals.hashes[i]) * 0x100000001b3ull;
    digest = (digest ^ static_cast<std::uint64_t>(totals.sizes[i])) * 0x100000001b3ull;
    total_size += static_cast<std::uint64_t>(std::max<std::int64_t>(0, totals.sizes[i]));
  }

  std::uint64_t messages = totals.messages.load();
  std::uint64_t payload = totals.payload_bytes.load();
  std::uint64_t errors = totals.errors.load();
  std::printf(
      "{\"mode\":%s,\"label\":%s,\"sessions\":%u,\"sessions_ok\":%" PRIu64 ",\"threads\":%u,"
      "\"seconds\":%.3f,\"login_seconds\":%.3f,\"messages\":%" PRIu64 ",\"messages_per_s\":%.1f,"
      "\"payload_bytes\":%" PRIu64 ",\"mb_per_s\":%.2f,\"latency_ms_avg\":%.3f,\"latency_ms_max\":%.3f,"
      "\"distinct_messages\":%zu,\"mailbox_bytes\":%" PRIu64 ",\"digest\":\"%016" PRIx64 "\","
      "\"errors\":%" PRIu64 ",\"list_mismatches\":%" PRIu64 ",\"size_mismatches\":%" PRIu64
      ",\"hash_mismatches\":%" PRIu64 ",\"tls\":%s,\"first_error\":%s}\n",
      JsonString(o.mode).c_str(), JsonString(o.label).c_str(), o.sessions, totals.logged_in.load(),
      o.threads, elapsed, login_seconds, messages, messages / elapsed, payload, payload / elapsed / 1e6,
      messages ? totals.latency_ns_sum.load() / 1e6 / static_cast<double>(messages) : 0.0,
      totals.latency_ns_max.load() / 1e6, totals.sizes.size(), total_size, digest, errors,
      totals.list_mismatches.load(), totals.size_mismatches, totals.hash_mismatches,
      JsonString(totals.tls).c_str(), JsonString(totals.first_error).c_str());
  std::fflush(stdout);
  return errors == 0 && totals.logged_in.load() == o.sessions ? 0 : 1;
}

// ---------------------------------------------------------------------------
// idle

int RunIdle(const Options& o, const tcp::endpoint& ep) {
  asio::io_context io(static_cast<int>(o.threads));
  std::unique_ptr<ssl::context> tls = MakeTlsContext(o);
  Totals totals;
  std::vector<std::unique_ptr<Conn>> conns;
  std::vector<bool> ok(o.sessions, false);
  for (unsigned i = 0; i < o.sessions; ++i) {
    conns.push_back(std::make_unique<Conn>(io.get_executor(), totals, 4096, tls.get(), &o));
  }

  Watchdog watchdog(conns, o.timeout);
  // Log in with at most connect_parallel logins in flight, so a burst does not
  // measure the servers' accept queues.
  auto start = Clock::now();
  std::atomic<unsigned> next{0};
  unsigned workers = std::min(o.connect_parallel, o.sessions);
  for (unsigned w = 0; w < workers; ++w) {
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          for (unsigned i = next.fetch_add(1); i < o.sessions; i = next.fetch_add(1)) {
            Conn& c = *conns[i];
            bool logged_in = co_await c.Connect(ep);
            if (logged_in) logged_in = co_await c.Login(o);
            if (logged_in) {
              ok[i] = true;
              totals.logged_in.fetch_add(1);
            }
          }
        },
        asio::detached);
  }
  RunThreads(io, o.threads);
  double login_seconds = Seconds(Clock::now() - start);
  std::printf("{\"event\":\"ready\",\"label\":%s,\"sessions\":%u,\"logged_in\":%" PRIu64
              ",\"login_seconds\":%.3f,\"errors\":%" PRIu64 "}\n",
              JsonString(o.label).c_str(), o.sessions, totals.logged_in.load(), login_seconds,
              totals.errors.load());
  std::fflush(stdout);

  std::this_thread::sleep_for(std::chrono::duration<double>(o.hold));

  // Every session must still be alive: QUIT gets +OK.
  std::atomic<std::uint64_t> quit_ok{0};
  next = 0;
  for (unsigned w = 0; w < workers; ++w) {
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          for (unsigned i = next.fetch_add(1); i < o.sessions; i = next.fetch_add(1)) {
            if (!ok[i]) continue;
            bool quit = co_await conns[i]->Command("QUIT\r\n", "QUIT");
            if (quit) quit_ok.fetch_add(1);
            conns[i]->Close();
          }
        },
        asio::detached);
  }
  RunThreads(io, o.threads);
  std::uint64_t errors = totals.errors.load();
  std::printf("{\"mode\":\"idle\",\"label\":%s,\"sessions\":%u,\"logged_in\":%" PRIu64
              ",\"quit_ok\":%" PRIu64 ",\"login_seconds\":%.3f,\"hold_seconds\":%.1f,"
              "\"errors\":%" PRIu64 ",\"first_error\":%s}\n",
              JsonString(o.label).c_str(), o.sessions, totals.logged_in.load(), quit_ok.load(),
              login_seconds, o.hold, errors, JsonString(totals.first_error).c_str());
  std::fflush(stdout);
  return errors == 0 && quit_ok.load() == o.sessions ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = ParseArgs(argc, argv);
  error_code ec;
  auto address = asio::ip::make_address(o.host, ec);
  if (ec) Usage("--host must be an IP address");
  tcp::endpoint ep(address, o.port);
  try {
    return o.mode == "idle" ? RunIdle(o, ep) : RunRetr(o, ep);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "popgate_loadgen: %s\n", e.what());
    return 1;
  }
}
