#pragma once
// Listeners, the session registry, and graceful shutdown.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "net/asio.h"
#include "net/filtering.h"
#include "net/io_pool.h"
#include "net/session.h"
#include "net/tls.h"

namespace popgate::net {

class Session;

// Sessions live on different threads; this is the only state they share.
class SessionRegistry {
 public:
  void Add(std::uint64_t id, std::weak_ptr<Session> session);
  void Remove(std::uint64_t id);
  std::size_t size() const;
  // Ends every live session (after the drain timeout).
  void StopAll();

 private:
  mutable std::mutex mutex_;
  std::unordered_map<std::uint64_t, std::weak_ptr<Session>> sessions_;
};

class Server {
 public:
  Server(IoPool& io, const config::Config& config, FilterContext filters = {});

  // Resolves the upstream, loads every listener's certificate and key, then binds every
  // listener, and only then announces them and starts accepting: a bad setting of any
  // listener stops start-up before a socket is bound. Throws std::runtime_error with a
  // one-line reason ("FILE:LINE: listen[2].cert: ...") when that fails.
  void Start();
  // Stops accepting; calls `done` once every session has ended or the drain timeout
  // has passed (remaining sessions are then closed).
  void Shutdown(std::function<void()> done);

 private:
  struct Listening {
    std::unique_ptr<tcp::acceptor> acceptor;
    std::unique_ptr<ssl::context> tls;
    ListenerContext context;
    tcp::endpoint endpoint;
  };

  void ResolveUpstream();
  std::unique_ptr<Listening> Prepare(const config::Listener& listener);
  void Bind(Listening& listening);
  void Announce(const Listening& listening) const;
  bool IsTrusted(const asio::ip::address& address) const;
  asio::awaitable<void> Accept(Listening& listening);
  asio::awaitable<void> Refuse(tcp::socket socket, ssl::context* implicit_tls);
  asio::awaitable<void> Drain(std::function<void()> done);

  IoPool& pool_;
  asio::io_context& io_;  // pool_.main(): listeners and the drain
  const config::Config& config_;
  UpstreamContext upstream_;
  FilterContext filters_;
  std::unique_ptr<ssl::context> upstream_tls_;
  std::vector<std::unique_ptr<Listening>> listening_;
  std::vector<asio::ip::network_v4> trusted_v4_;
  std::vector<asio::ip::network_v6> trusted_v6_;
  SessionRegistry registry_;
  std::atomic<std::uint64_t> next_id_{1};
  std::atomic<bool> stopping_{false};
};

}  // namespace popgate::net
