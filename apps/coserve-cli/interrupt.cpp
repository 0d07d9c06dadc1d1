#include "interrupt.hpp"

namespace coserve::cli {

Interrupt::Interrupt(asio::any_io_executor executor, std::function<void()> on_interrupt)
    : state_(std::make_shared<State>(executor)) {
  state_->on_interrupt = std::move(on_interrupt);
  asio::co_spawn(executor, wait(state_), [](std::exception_ptr) {});
}

Interrupt::~Interrupt() {
  // The waiter may already be queued to run: `active` keeps it from calling a callback whose
  // captures are gone.
  state_->active = false;
  state_->on_interrupt = nullptr;
  error_code ignored;
  state_->signals.cancel(ignored);
  state_->signals.clear(ignored);
}

awaitable<void> Interrupt::wait(std::shared_ptr<State> state) {
  for (;;) {
    auto [ec, signal] = co_await state->signals.async_wait(use_nothrow);
    (void)signal;
    if (ec || !state->active) co_return;
    state->hit = true;
    if (state->on_interrupt) state->on_interrupt();
  }
}

}  // namespace coserve::cli
