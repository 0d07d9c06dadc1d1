#include "coserve/runtime.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace coserve {

void tune_malloc_for_frames() {
#if defined(__GLIBC__)
  ::mallopt(M_MMAP_THRESHOLD, 4 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 32 << 20);
#endif
}

Runtime::Runtime(std::size_t workers, std::size_t blocking_threads)
    : blocking_(blocking_threads == 0 ? 1 : blocking_threads) {
  if (workers == 0) workers = std::max(1u, std::thread::hardware_concurrency());
  for (std::size_t i = 0; i < workers; ++i) {
    // concurrency hint 1: each context is only ever run by its own thread.
    contexts_.push_back(std::make_unique<asio::io_context>(1));
    guards_.emplace_back(contexts_.back()->get_executor());
  }
}

Runtime::~Runtime() {
  stop();
  blocking_.join();
}

asio::io_context& Runtime::next_context() {
  return *contexts_[next_.fetch_add(1, std::memory_order_relaxed) % contexts_.size()];
}

void Runtime::run() {
  std::vector<std::jthread> threads;
  for (std::size_t i = 1; i < contexts_.size(); ++i)
    threads.emplace_back([ctx = contexts_[i].get()] { ctx->run(); });
  contexts_[0]->run();
}

void Runtime::release() {
  for (auto& guard : guards_) guard.reset();
}

void Runtime::stop() {
  for (auto& ctx : contexts_) ctx->stop();
}

}  // namespace coserve
