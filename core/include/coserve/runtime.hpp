#pragma once
// Thread-per-core runtime: N worker threads, each running its own io_context, plus a separate
// thread pool for blocking work (hashing, fsync, Argon2id, process reaping).
//
// A session is placed on one context for its whole life (next_context() round-robin), so its
// state needs no locks. Shared state lives on a strand or is posted to its owner.
#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>

#include "coserve/asio.hpp"

namespace coserve {

// Process-wide: frame-sized buffers (up to 4 MiB) stay in malloc's heap instead of being mapped
// and unmapped one by one. A transfer allocates a 1 MiB body per chunk on one thread and frees
// it on another; with glibc's defaults each chunk was mapped afresh and paid its page faults
// again, a visible share of a transfer's time. Up to 32 MiB of free heap per arena is kept.
// Call once at the start of main(); the server and coserve-cli do.
void tune_malloc_for_frames();

class Runtime {
 public:
  // workers == 0 → hardware concurrency.
  Runtime(std::size_t workers, std::size_t blocking_threads);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  std::size_t size() const noexcept { return contexts_.size(); }
  asio::io_context& context(std::size_t i) { return *contexts_[i]; }
  asio::io_context& next_context();
  asio::thread_pool& blocking() noexcept { return blocking_; }

  // Runs context 0 on the calling thread and the others on their own threads; returns when
  // all contexts ran out of work (after release()) or were stopped.
  void run();
  // Lets the contexts finish once their work is done (graceful end).
  void release();
  // Hard stop: abandons pending work. Only after the shutdown grace period.
  void stop();

  // Runs `fn` on the blocking pool and resumes the caller on its own executor.
  template <class Fn>
  auto offload(Fn fn) -> awaitable<std::invoke_result_t<Fn&>>;

 private:
  std::vector<std::unique_ptr<asio::io_context>> contexts_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards_;
  std::atomic<std::size_t> next_{0};
  asio::thread_pool blocking_;
};

}  // namespace coserve

#include "coserve/offload.hpp"

namespace coserve {
template <class Fn>
auto Runtime::offload(Fn fn) -> awaitable<std::invoke_result_t<Fn&>> {
  return coserve::offload(blocking_, std::move(fn));
}
}  // namespace coserve
