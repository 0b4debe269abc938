#include "net/server.h"

#include <spdlog/spdlog.h>

#include <functional>
#include <stdexcept>

#include "net/fd_limit.h"
#include "net/log_text.h"
#include "net/rate_limited_log.h"
#include "net/session.h"
#include "net/stream.h"

namespace popgate::net {
namespace {

// Bursts of logins must not be refused by the kernel (HAZARDS.md: listen backlog).
constexpr int kListenBacklog = 1024;

}  // namespace

void SessionRegistry::Add(std::uint64_t id, std::weak_ptr<Session> session) {
  std::lock_guard lock(mutex_);
  sessions_.emplace(id, std::move(session));
}

void SessionRegistry::Remove(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  sessions_.erase(id);
}

std::size_t SessionRegistry::size() const {
  std::lock_guard lock(mutex_);
  return sessions_.size();
}

void SessionRegistry::StopAll() {
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, weak] : sessions_) {
      if (auto session = weak.lock()) live.push_back(std::move(session));
    }
  }
  for (auto& session : live) session->Stop();
}

Server::Server(IoPool& io, const config::Config& config, FilterContext filters)
    : pool_(io), io_(io.main()), config_(config), filters_(filters) {}

void Server::Start() {
  for (const auto& cidr : config_.trusted_networks) {
    // Validated by the config parser; both families are kept apart for matching.
    if (cidr.find(':') == std::string::npos) {
      trusted_v4_.push_back(asio::ip::make_network_v4(cidr));
    } else {
      trusted_v6_.push_back(asio::ip::make_network_v6(cidr));
    }
  }
  CheckDescriptorLimit(config_.limits.max_sessions);
  ResolveUpstream();
  for (const auto& listener : config_.listeners) listening_.push_back(Prepare(listener));
  for (auto& listening : listening_) Bind(*listening);
  for (const auto& listening : listening_) Announce(*listening);
  const auto& up = config_.upstream;
  spdlog::info("upstream {} tls={}{}", config::FormatEndpoint(up.address.host, up.address.port),
               config::ToString(up.tls),
               up.tls != config::TlsMode::kNone && !up.verify ? " (certificate NOT verified)" : "");
  for (auto& listening : listening_) {
    asio::co_spawn(io_, Accept(*listening), asio::detached);
  }
}

void Server::ResolveUpstream() {
  // The upstream is resolved once, at start-up, like nginx's proxy_pass without a
  // resolver: a name that doesn't resolve stops start-up instead of failing each client.
  const auto& up = config_.upstream;
  tcp::resolver resolver(io_);
  error_code ec;
  auto results = resolver.resolve(up.address.host, std::to_string(up.address.port), ec);
  if (ec) {
    throw std::runtime_error("upstream " + up.address.host + ": cannot resolve: " + ec.message());
  }
  for (const auto& entry : results) upstream_.endpoints.push_back(entry.endpoint());
  if (up.tls != config::TlsMode::kNone) {
    upstream_tls_ = MakeClientContext(up);
    upstream_.tls = upstream_tls_.get();
    upstream_.server_name = up.server_name.empty() ? up.address.host : up.server_name;
  }
}

std::unique_ptr<Server::Listening> Server::Prepare(const config::Listener& listener) {
  auto listening = std::make_unique<Listening>();
  if (listener.tls != config::TlsMode::kNone) listening->tls = MakeServerContext(listener);
  listening->context = ListenerContext{&listener, listening->tls.get(),
                                       [this](const asio::ip::address& a) { return IsTrusted(a); }};
  error_code ec;
  auto address = asio::ip::make_address(listener.address.host, ec);
  if (ec) {  // the config checked it is an address; kept for a config made another way
    throw std::runtime_error(listener.address_where + ": " + listener.address.host + ": " +
                             ec.message());
  }
  listening->endpoint = tcp::endpoint(address, listener.address.port);
  return listening;
}

void Server::Bind(Listening& listening) {
  auto acceptor = std::make_unique<tcp::acceptor>(io_);
  error_code ec;
  acceptor->open(listening.endpoint.protocol(), ec);
  if (!ec) acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor->bind(listening.endpoint, ec);
  if (!ec) acceptor->listen(kListenBacklog, ec);
  if (ec) {
    throw std::runtime_error(listening.context.listener->address_where + ": cannot listen on " +
                             EndpointText(listening.endpoint) + ": " + ec.message());
  }
  listening.acceptor = std::move(acceptor);
}

void Server::Announce(const Listening& listening) const {
  const config::Listener& listener = *listening.context.listener;
  tcp::endpoint bound = listening.acceptor->local_endpoint();
  spdlog::info("listening on {} tls={}", EndpointText(bound), config::ToString(listener.tls));
  if (listener.tls == config::TlsMode::kNone && !bound.address().is_loopback()) {
    spdlog::warn("listener {} is plaintext only: passwords cross the network in the clear",
                 EndpointText(bound));
  }
}

bool Server::IsTrusted(const asio::ip::address& address) const {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return IsTrusted(asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()));
  }
  if (address.is_v4()) {
    auto host = asio::ip::network_v4(address.to_v4(), 32);
    for (const auto& net : trusted_v4_) {
      if (host == net || host.is_subnet_of(net)) return true;
    }
    return false;
  }
  auto host = asio::ip::network_v6(address.to_v6(), 128);
  for (const auto& net : trusted_v6_) {
    if (host == net || host.is_subnet_of(net)) return true;
  }
  return false;
}

asio::awaitable<void> Server::Accept(Listening& listening) {
  tcp::acceptor& acceptor = *listening.acceptor;
  while (!stopping_) {
    error_code ec;
    // Sessions are dealt out to the I/O threads in turn; each gets its own strand, so
    // its coroutines never run concurrently whatever the threading.
    tcp::socket socket =
        co_await acceptor.async_accept(asio::make_strand(pool_.Next()), Capture(ec));
    if (ec) {
      if (stopping_ || ec == asio::error::operation_aborted) break;
      // EMFILE and friends: log, pause briefly, go on (the listener must survive). The
      // client waits in the backlog meanwhile, so this repeats every pause while it
      // lasts: one line per interval, with a count.
      error_code ignored;
      const std::string where = EndpointText(acceptor.local_endpoint(ignored));
      WarnRateLimited("accept:" + where + ":" + ec.message(),
                      fmt::format("cannot accept a client on {}: {}", where, DescribeError(ec)));
      asio::steady_timer pause(io_, std::chrono::milliseconds(100));
      co_await pause.async_wait(Capture(ec));
      continue;
    }
    if (registry_.size() >= config_.limits.max_sessions) {
      ssl::context* implicit_tls = listening.context.listener->tls == config::TlsMode::kImplicit
                                       ? listening.tls.get()
                                       : nullptr;
      asio::co_spawn(socket.get_executor(), Refuse(std::move(socket), implicit_tls),
                     asio::detached);
      continue;
    }
    auto id = next_id_++;
    auto session = std::make_shared<Session>(std::move(socket), listening.context, upstream_,
                                             filters_, config_, registry_, id);
    registry_.Add(id, session);
    session->Start();
  }
}

asio::awaitable<void> Server::Refuse(tcp::socket socket, ssl::context* implicit_tls) {
  // A burst over the limit refuses every client alike: one line per interval, with a count.
  WarnRateLimited("max-sessions", fmt::format("max_sessions ({}) reached: refusing a client",
                                              config_.limits.max_sessions));
  static const std::string kReply = "-ERR [SYS/TEMP] Too many connections, try again later\r\n";
  Stream stream(std::move(socket));
  // A POP3S port never speaks plaintext: the refusal goes over TLS, within a bound.
  asio::steady_timer limit(stream.get_executor(), std::chrono::seconds(10));
  limit.async_wait([&stream](const error_code& ec) {
    if (!ec) stream.Close();
  });
  error_code ec;
  if (implicit_tls) {
    std::string failure;
    co_await stream.Handshake(*implicit_tls, ssl::stream_base::server, "", false, ec, failure);
  }
  if (!ec) co_await stream.Write(kReply, ec);
  if (!ec) co_await stream.Shutdown();
  limit.cancel();
  stream.Close();
}

void Server::Shutdown(std::function<void()> done) {
  if (stopping_.exchange(true)) return;
  for (auto& listening : listening_) {
    error_code ignored;
    listening->acceptor->close(ignored);
  }
  spdlog::info("shutting down: {} session(s) may finish within {}s", registry_.size(),
               config_.timeouts.drain.count());
  asio::co_spawn(io_, Drain(std::move(done)), asio::detached);
}

asio::awaitable<void> Server::Drain(std::function<void()> done) {
  auto deadline = std::chrono::steady_clock::now() + config_.timeouts.drain;
  asio::steady_timer tick(io_);
  bool forced = false;
  while (registry_.size() > 0) {
    if (!forced && std::chrono::steady_clock::now() >= deadline) {
      spdlog::warn("drain timeout: closing {} session(s)", registry_.size());
      registry_.StopAll();
      forced = true;
    }
    tick.expires_after(std::chrono::milliseconds(50));
    error_code ec;
    co_await tick.async_wait(Capture(ec));
  }
  done();
}

}  // namespace popgate::net
