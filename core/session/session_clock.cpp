#include "coserve/session_clock.hpp"

#include <boost/asio/execution/context.hpp>
#include <boost/asio/query.hpp>

namespace coserve {

SessionClock& SessionClock::of(const asio::any_io_executor& executor) {
  return asio::use_service<SessionClock>(asio::query(executor, asio::execution::context));
}

void SessionClock::add(Ticking& ticking, clock::duration period,
                       const asio::any_io_executor& executor) {
  ticking.prev_ = nullptr;
  ticking.next_ = first_;
  if (first_) first_->prev_ = &ticking;
  first_ = &ticking;
  if (period < period_) period_ = period;
  if (!timer_) timer_.emplace(executor);
  if (!armed_) arm();
}

void SessionClock::remove(Ticking& ticking) noexcept {
  if (next_to_tick_ == &ticking) next_to_tick_ = ticking.next_;
  if (ticking.prev_) ticking.prev_->next_ = ticking.next_;
  else if (first_ == &ticking) first_ = ticking.next_;
  if (ticking.next_) ticking.next_->prev_ = ticking.prev_;
  ticking.prev_ = ticking.next_ = nullptr;
  // Nothing left: a pending wait would keep the context running until it expires.
  if (!first_ && armed_ && timer_) timer_->cancel();
}

void SessionClock::arm() {
  armed_ = true;
  timer_->expires_after(period_);
  timer_->async_wait([this](error_code ec) {
    armed_ = false;
    if (!timer_ || !first_) return;  // shut down, or nothing left to tick: the context may stop
    if (!ec) {
      const auto now = clock::now();
      // A session may end (and remove itself) inside another's tick: the cursor follows.
      for (Ticking* t = first_; t; t = next_to_tick_) {
        next_to_tick_ = t->next_;
        t->on_tick(now);
      }
      next_to_tick_ = nullptr;
    }
    // Also after a cancel (the last session left) that a new session's add() raced with.
    if (first_ && !armed_) arm();
  });
}

void SessionClock::shutdown() {
  // Sessions still registered die later, with the handlers the context destroys: unlinked now,
  // their remove() touches none of the others.
  for (Ticking* t = first_; t;) {
    Ticking* next = t->next_;
    t->prev_ = t->next_ = nullptr;
    t = next;
  }
  first_ = next_to_tick_ = nullptr;
  timer_.reset();
}

}  // namespace coserve
