#pragma once
// One timer per io_context drives the periodic checks of every session on it (idle and write
// timeouts, a transport's keep-alive), instead of a timer and a watchdog coroutine per session:
// an idle session then holds no pending operation but its read, and less memory.
//
// Threading: an Asio service of one io_context; add, remove and the ticks all happen on that
// context's thread. The timer runs only while something is registered, so a context with no
// sessions runs out of work and can stop.
#include <chrono>
#include <optional>

#include <boost/asio/execution_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "coserve/asio.hpp"

namespace coserve {

class SessionClock : public asio::execution_context::service {
 public:
  using clock = std::chrono::steady_clock;

  // What the clock ticks. Registered with add(), unregistered with remove() before it dies.
  class Ticking {
   public:
    virtual void on_tick(clock::time_point now) = 0;

   protected:
    ~Ticking() = default;

   private:
    friend class SessionClock;
    Ticking* prev_ = nullptr;
    Ticking* next_ = nullptr;
  };

  inline static asio::execution_context::id id;

  explicit SessionClock(asio::execution_context& context) : service(context) {}
  // The clock of the execution context `executor` belongs to (created on first use).
  static SessionClock& of(const asio::any_io_executor& executor);

  // Ticks `ticking` every `period`, or more often when another registration asks for less.
  void add(Ticking& ticking, clock::duration period, const asio::any_io_executor& executor);
  void remove(Ticking& ticking) noexcept;

 private:
  void shutdown() override;
  void arm();

  std::optional<asio::steady_timer> timer_;
  Ticking* first_ = nullptr;
  Ticking* next_to_tick_ = nullptr;  // the tick loop's cursor, moved on by remove()
  clock::duration period_ = std::chrono::seconds(5);
  bool armed_ = false;
};

}  // namespace coserve
