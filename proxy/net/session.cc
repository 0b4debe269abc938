#include "net/session.h"

#include <spdlog/spdlog.h>

#include "net/log_text.h"
#include "net/rate_limited_log.h"
#include "net/server.h"
#include "net/session_internal.h"
#include "pop3/response.h"
#include "text/one_line.h"

namespace popgate::net {

using pop3::Verb;
using namespace session_internal;

namespace {

std::string RemoteEndpointText(const tcp::socket& socket) {
  error_code ec;
  auto ep = socket.remote_endpoint(ec);
  if (ec) return "?";
  return EndpointText(ep);
}

}  // namespace

const char* ToString(EndReason reason) {
  switch (reason) {
    case EndReason::kQuit:
      return "quit";
    case EndReason::kClientClosed:
      return "client-closed";
    case EndReason::kIdleTimeout:
      return "idle-timeout";
    case EndReason::kUpstreamTimeout:
      return "upstream-timeout";
    case EndReason::kUpstreamClosed:
      return "upstream-closed";
    case EndReason::kUpstreamInvalid:
      return "upstream-invalid";
    case EndReason::kUpstreamUnavailable:
      return "upstream-unavailable";
    case EndReason::kUpstreamTls:
      return "upstream-tls";
    case EndReason::kClientTls:
      return "client-tls";
    case EndReason::kStopped:
      return "stopped";
    case EndReason::kClientError:
      return "client-error";
    case EndReason::kFilterUnavailable:
      return "filter-unavailable";
    case EndReason::kFilterLate:
      return "filter-late";
    case EndReason::kNoResources:
      return "no-resources";
  }
  return "?";
}

Session::Session(tcp::socket client, const ListenerContext& listener,
                 const UpstreamContext& upstream, const FilterContext& filters,
                 const config::Config& config, SessionRegistry& registry, std::uint64_t id)
    : client_(std::move(client)),
      upstream_(tcp::socket(client_.get_executor())),
      listener_(listener),
      upstream_context_(upstream),
      filters_(filters),
      config_(config),
      registry_(registry),
      id_(id),
      // Command lines are capped at 255 octets after reading (RFC 2449 §4); the reader
      // allows AUTH's longer lines (getmail6's XOAUTH2 initial response exceeds 255).
      client_lines_(config.limits.max_auth_line),
      upstream_lines_(config.limits.max_upstream_line),
      notify_(client_.get_executor()),
      watchdog_timer_(client_.get_executor()),
      upstream_written_(client_.get_executor()) {
  if (filters_.pool != nullptr) chain_strand_.emplace(asio::make_strand(*filters_.pool));
  client_address_ = RemoteEndpointText(client_.socket());
  error_code ec;
  auto peer = client_.socket().remote_endpoint(ec);
  client_trusted_ = !ec && listener_.trusted && listener_.trusted(peer.address());
}

Session::~Session() {
  auto elapsed = std::chrono::duration<double>(Clock::now() - started_).count();
  spdlog::info("session {} end client={} user={} in={} out={} duration={:.3f}s reason={}", id_,
               client_address_, user_.empty() ? "-" : text::Escaped(user_, 64), bytes_from_client_,
               bytes_to_client_, elapsed, ToString(end_reason_.value_or(EndReason::kStopped)));
  if (chain_) {
    // The user is the session's last word on it: SessionEnd records name whoever logged
    // in, whatever hooks ran before (none may have, in a session that fetched nothing).
    // The hooks end after this session: the chain holds itself until they have (and waits
    // for a message job of this session still running).
    chain_->info().user = user_;
    chain_->EndAsync([chain = chain_] {});
  }
  registry_.Remove(id_);
}

void Session::Start() {
  auto self = shared_from_this();
  asio::co_spawn(
      client_.get_executor(), [self]() { return self->Run(); }, asio::detached);
}

void Session::Stop() {
  auto self = shared_from_this();
  asio::post(client_.get_executor(), [self]() { self->End(EndReason::kStopped); });
}

void Session::End(EndReason reason) {
  if (!end_reason_) end_reason_ = reason;
  if (ended_) return;
  ended_ = true;
  // Closing the upstream connection without QUIT leaves the mailbox as it was: the
  // server deletes nothing (RFC 1939 §6).
  upstream_.Close();
  notify_.cancel();
  watchdog_timer_.cancel();
  upstream_written_.cancel();
  if (!client_.tls_established()) {
    client_.Close();
    return;
  }
  // TLS ends with close_notify (RFC 8446 §6.1), whatever ended the session; what is
  // still pending on the client is cancelled first. The session lives until it's sent.
  client_.Cancel();
  auto self = shared_from_this();
  asio::co_spawn(
      client_.get_executor(),
      [self]() -> asio::awaitable<void> {
        co_await self->client_.Shutdown();
        self->client_.Close();
      },
      asio::detached);
}

// ---------------------------------------------------------------------------
// Start: connect upstream, relay the greeting, then run both sides.

asio::awaitable<void> Session::Run() {
  auto self = shared_from_this();
  spdlog::info("session {} start client={}", id_, client_address_);
  asio::co_spawn(
      client_.get_executor(), [self]() { return self->Watchdog(); }, asio::detached);

  // Implicit TLS: nothing before the handshake is protocol, and the upstream is not
  // contacted for a client that cannot complete one.
  // GCC 12 miscompiles some coroutines (GCC PR 106188): no co_await inside && or ||, and
  // braces around every co_return or co_await in an if.
  if (listener_.listener->tls == config::TlsMode::kImplicit) {
    if (!co_await StartClientTls()) {
      co_return;
    }
  }
  if (!co_await ConnectUpstream()) {
    const char* reply = end_reason_ == EndReason::kUpstreamTimeout ? kUpstreamTimedOut
                        : end_reason_ == EndReason::kUpstreamTls   ? kUpstreamTlsFailed
                        : end_reason_ == EndReason::kNoResources   ? kNoResources
                                                                   : kUpstreamUnavailable;
    co_await WriteClient(reply);
    End(EndReason::kUpstreamUnavailable);
    co_return;
  }

  // Transparent mode: the greeting goes to the client unchanged, so its APOP
  // timestamp is the upstream's own (RFC 1939 §7).
  auto greeting = co_await ReadUpstreamLine();
  if (!greeting) {
    co_return;
  }
  if (!pop3::IsValidGreeting(*greeting)) {
    spdlog::warn("session {} upstream greeting refused: {}", id_, text::Escaped(*greeting));
    co_await WriteClient(kUpstreamUnavailable);
    End(EndReason::kUpstreamInvalid);
    co_return;
  }
  if (config_.upstream.tls == config::TlsMode::kStartTls) {
    if (!co_await NegotiateUpstreamStls()) {
      co_return;
    }
    // That greeting came over plaintext: an attacker could have chosen its APOP
    // timestamp (CVE-2007-1558), so it is not passed on, and APOP is not offered.
    greeting = pop3::StripApopTimestamp(*greeting);
    upstream_via_stls_ = true;
  }
  // Plugins start before the client is greeted: one that must run and cannot start
  // refuses the session now, not after the client has logged in.
  if (!co_await StartFilters()) {
    co_return;
  }
  if (!co_await WriteClient(*greeting + "\r\n")) {
    co_return;
  }
  SetClientDeadline(Clock::now() + config_.timeouts.idle);

  asio::co_spawn(
      client_.get_executor(),
      [self]() -> asio::awaitable<void> {
        try {
          co_await self->RelayResponses();
        } catch (const std::exception& e) {
          spdlog::error("session {} upstream side failed: {}", self->id_, e.what());
          self->End(EndReason::kUpstreamInvalid);
        }
      },
      asio::detached);

  try {
    co_await ReadCommands();
  } catch (const std::exception& e) {
    spdlog::error("session {} client side failed: {}", id_, e.what());
    End(EndReason::kClientError);
  }
}

asio::awaitable<bool> Session::ConnectUpstream() {
  SetUpstreamDeadline(Clock::now() + config_.timeouts.upstream);
  // Each address in turn, the socket opened here: asio's range connect reports a socket
  // it could not open (EMFILE) as "Operation canceled", which hid the cause.
  error_code ec = asio::error::host_not_found;
  std::string tried;
  tcp::socket& socket = upstream_.socket();
  for (const tcp::endpoint& endpoint : upstream_context_.endpoints) {
    error_code ignored;
    socket.close(ignored);
    tried = EndpointText(endpoint);
    socket.open(endpoint.protocol(), ec);
    if (ec) break;  // no descriptor for this address: none for the next either
    co_await socket.async_connect(endpoint, Capture(ec));
    if (!ec || end_reason_) break;
  }
  SetUpstreamDeadline(Clock::time_point::max());
  if (ec || ended_) {
    if (end_reason_ == EndReason::kUpstreamTimeout) {
      spdlog::warn("session {} cannot connect upstream {}: timed out after {}s", id_, tried,
                   config_.timeouts.upstream.count());
    } else if (end_reason_) {
      spdlog::info("session {} upstream connect abandoned: {}", id_, ToString(*end_reason_));
    } else {
      if (IsResourceExhaustion(ec)) end_reason_ = EndReason::kNoResources;
      // While the upstream is down, or descriptors run out, every session fails alike:
      // one line per interval, with a count.
      WarnRateLimited(
          "upstream-connect:" + tried + ":" + ec.message(),
          fmt::format("session {} cannot connect upstream {}: {}", id_, tried, DescribeError(ec)));
    }
    co_return false;
  }
  upstream_.ApplySocketOptions();
  if (config_.upstream.tls == config::TlsMode::kImplicit)
    co_return co_await StartUpstreamTls(false);
  co_return true;
}

// ---------------------------------------------------------------------------
// Deadlines: one timer for both, re-armed whenever a deadline moves earlier.

void Session::SetClientDeadline(Clock::time_point when) {
  client_deadline_ = when;
  if (when < watchdog_timer_.expiry()) watchdog_timer_.cancel();
}

void Session::SetUpstreamDeadline(Clock::time_point when) {
  upstream_deadline_ = when;
  if (when < watchdog_timer_.expiry()) watchdog_timer_.cancel();
}

asio::awaitable<void> Session::Watchdog() {
  auto self = shared_from_this();
  while (!ended_) {
    watchdog_timer_.expires_at(std::min(client_deadline_, upstream_deadline_));
    error_code ec;
    co_await watchdog_timer_.async_wait(Capture(ec));
    if (ended_) break;
    auto now = Clock::now();
    if (upstream_deadline_ <= now) {
      // Closing the upstream socket wakes whichever side waits on it; that side tells
      // the client, if the protocol still allows it.
      if (!end_reason_) end_reason_ = EndReason::kUpstreamTimeout;
      upstream_deadline_ = Clock::time_point::max();
      spdlog::warn("session {} upstream timed out after {}s", id_,
                   config_.timeouts.upstream.count());
      upstream_.Close();
    } else if (client_deadline_ <= now) {
      if (!end_reason_) end_reason_ = EndReason::kIdleTimeout;
      client_deadline_ = Clock::time_point::max();
      client_.Cancel();
    }
  }
}

void Session::Notify() { notify_.cancel(); }

asio::awaitable<void> Session::WaitForNotify() {
  notify_.expires_at(Clock::time_point::max());
  error_code ec;
  co_await notify_.async_wait(Capture(ec));
}

// ---------------------------------------------------------------------------
// I/O helpers.

asio::awaitable<std::size_t> Session::ReadAvailable(Stream& stream, std::string& into,
                                                    error_code& ec) {
  std::string_view data = co_await stream.ReadSome(ec);
  into.append(data);
  co_return data.size();
}

asio::awaitable<bool> Session::WriteClient(std::string_view bytes) {
  if (ended_) {
    co_return false;
  }
  error_code ec;
  co_await client_.Write(bytes, ec);
  if (ec) {
    ClientFailed(ec);
    co_return false;
  }
  bytes_to_client_ += bytes.size();
  co_return true;
}

std::string Session::During() const {
  if (pending_.empty() || !pending_.front().command || pending_.front().internal) return {};
  return " during " + pending_.front().command->keyword + " response";
}

void Session::ClientFailed(const error_code& ec) {
  // Once the session has ended, a failing client operation is its consequence, not news;
  // operation_aborted is popgate's own cancel (idle timeout, shutdown), said elsewhere.
  if (!ended_ && ec != asio::error::operation_aborted) {
    if (IsResourceExhaustion(ec)) {
      spdlog::warn("session {} client connection failed{}: {}", id_, During(), DescribeError(ec));
    } else if (std::string during = During(); !during.empty()) {
      spdlog::info("session {} client closed the connection{}: {}", id_, during, DescribeError(ec));
    } else {
      spdlog::debug("session {} client closed the connection: {}", id_, DescribeError(ec));
    }
  }
  End(EndReason::kClientClosed);
}

}  // namespace popgate::net
