#include "net/server.h"

#include <spdlog/spdlog.h>

#include <functional>
#include <stdexcept>

#include "net/session.h"

namespace popgate::net {
namespace {

// Bursts of logins must not be refused by the kernel (HAZARDS.md: listen backlog).
constexpr int kListenBacklog = 1024;

std::string ToString(const tcp::endpoint& ep) {
  if (ep.address().is_v6())
    return "[" + ep.address().to_string() + "]:" + std::to_string(ep.port());
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

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

Server::Server(asio::io_context& io, const config::Config& config) : io_(io), config_(config) {}

void Server::Start() {
  // The upstream is resolved once, at start-up, like nginx's proxy_pass without a
  // resolver: a name that doesn't resolve stops start-up instead of failing each client.
  tcp::resolver resolver(io_);
  error_code ec;
  const auto& up = config_.upstream.address;
  auto results = resolver.resolve(up.host, std::to_string(up.port), ec);
  if (ec) {
    throw std::runtime_error("upstream " + up.host + ": cannot resolve: " + ec.message());
  }
  for (const auto& entry : results) upstream_.push_back(entry.endpoint());

  for (const auto& listener : config_.listeners) {
    if (listener.tls != config::TlsMode::kNone) {
      throw std::runtime_error("listener " + listener.address.host + ": tls = \"" +
                               config::ToString(listener.tls) +
                               "\" is not implemented yet; only \"none\" works");
    }
    auto address = asio::ip::make_address(listener.address.host, ec);
    if (ec) {
      throw std::runtime_error("listen address " + listener.address.host + ": " + ec.message());
    }
    tcp::endpoint endpoint(address, listener.address.port);
    auto acceptor = std::make_unique<tcp::acceptor>(io_);
    acceptor->open(endpoint.protocol());
    acceptor->set_option(tcp::acceptor::reuse_address(true));
    acceptor->bind(endpoint, ec);
    if (ec) {
      throw std::runtime_error("cannot listen on " + ToString(endpoint) + ": " + ec.message());
    }
    acceptor->listen(kListenBacklog);
    spdlog::info("listening on {}", ToString(acceptor->local_endpoint()));
    acceptors_.push_back(std::move(acceptor));
  }
  spdlog::info("upstream {}:{} ({})", up.host, up.port, config::ToString(config_.upstream.tls));
  for (auto& acceptor : acceptors_) {
    asio::co_spawn(io_, Accept(*acceptor), asio::detached);
  }
}

asio::awaitable<void> Server::Accept(tcp::acceptor& acceptor) {
  while (!stopping_) {
    error_code ec;
    // Each session gets its own strand: its coroutines never run concurrently.
    tcp::socket socket = co_await acceptor.async_accept(asio::make_strand(io_), Capture(ec));
    if (ec) {
      if (stopping_ || ec == asio::error::operation_aborted) break;
      // EMFILE and friends: log, pause briefly, go on (the listener must survive).
      spdlog::warn("accept failed: {}", ec.message());
      asio::steady_timer pause(io_, std::chrono::milliseconds(100));
      co_await pause.async_wait(Capture(ec));
      continue;
    }
    if (registry_.size() >= config_.limits.max_sessions) {
      asio::co_spawn(socket.get_executor(), Refuse(std::move(socket)), asio::detached);
      continue;
    }
    auto id = next_id_++;
    auto session = std::make_shared<Session>(std::move(socket), upstream_, config_, registry_, id);
    registry_.Add(id, session);
    session->Start();
  }
}

asio::awaitable<void> Server::Refuse(tcp::socket socket) {
  spdlog::warn("max_sessions ({}) reached: refusing a client", config_.limits.max_sessions);
  error_code ec;
  static const std::string kReply = "-ERR [SYS/TEMP] Too many connections, try again later\r\n";
  co_await asio::async_write(socket, asio::buffer(kReply), Capture(ec));
  socket.shutdown(tcp::socket::shutdown_both, ec);
  socket.close(ec);
}

void Server::Shutdown(std::function<void()> done) {
  if (stopping_.exchange(true)) return;
  for (auto& acceptor : acceptors_) {
    error_code ignored;
    acceptor->close(ignored);
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
