#pragma once
// A wake-up between coroutines on one executor. notify() wakes every coroutine waiting in
// wait(), or, when none waits yet, the next wait() returns at once: a wake-up is never lost.
// Waiters must re-check their condition after waking (several notify() calls may count as one,
// and every waiter wakes).
//
// A timer that never expires does the waiting. Unlike a buffered Asio channel (which allocates
// its queue when constructed) it allocates nothing until someone waits, and idle connections
// hold several of these.
//
// Threading: not thread-safe; use it on the executor it was made with.
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include "coserve/asio.hpp"

namespace coserve {

class Signal {
 public:
  explicit Signal(const asio::any_io_executor& executor)
      : timer_(executor, asio::steady_timer::time_point::max()) {}

  void notify() {
    pending_ = true;
    timer_.cancel();
  }

  // Returns after a notify(); operation_aborted when the waiting coroutine itself was cancelled.
  awaitable<error_code> wait() {
    if (!pending_) {
      co_await timer_.async_wait(use_nothrow);
      auto state = co_await asio::this_coro::cancellation_state;
      if (state.cancelled() != asio::cancellation_type::none)
        co_return asio::error::operation_aborted;
    }
    pending_ = false;
    co_return error_code{};
  }

 private:
  asio::steady_timer timer_;
  bool pending_ = false;
};

}  // namespace coserve
