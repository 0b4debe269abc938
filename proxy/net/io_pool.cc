#include "net/io_pool.h"

#include <thread>

namespace popgate::net {

IoPool::IoPool(unsigned threads) {
  for (unsigned i = 0; i < std::max(1u, threads); ++i) {
    // Concurrency hint 1: each context is run by one thread, so Asio can skip locking.
    contexts_.push_back(std::make_unique<asio::io_context>(1));
    guards_.push_back(asio::make_work_guard(*contexts_.back()));
  }
}

asio::io_context& IoPool::Next() {
  return *contexts_[next_.fetch_add(1, std::memory_order_relaxed) % contexts_.size()];
}

void IoPool::Run() {
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < contexts_.size(); ++i) {
    threads.emplace_back([context = contexts_[i].get()] { context->run(); });
  }
  contexts_.front()->run();
  for (auto& thread : threads) thread.join();
}

void IoPool::Stop() {
  for (auto& context : contexts_) context->stop();
}

}  // namespace popgate::net
