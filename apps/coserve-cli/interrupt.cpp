#include "interrupt.hpp"

#include <pthread.h>

#include <atomic>

namespace coserve::cli {

namespace {

// Lock-free atomics: safe in a signal handler, and between threads.
std::atomic<pthread_t> prompt_thread;
std::atomic<bool> interrupted{false};
static_assert(std::atomic<pthread_t>::is_always_lock_free);

void on_prompt_sigint(int signo) {
  const pthread_t waiting = prompt_thread.load();
  if (!pthread_equal(pthread_self(), waiting)) {
    pthread_kill(waiting, signo);
    return;
  }
  interrupted = true;
}

}  // namespace

struct sigaction catch_sigint_at_prompt() {
  prompt_thread = pthread_self();
  interrupted = false;
  struct sigaction on_int{}, previous{};
  on_int.sa_handler = on_prompt_sigint;  // no SA_RESTART: the read must end
  sigemptyset(&on_int.sa_mask);
  ::sigaction(SIGINT, &on_int, &previous);
  return previous;
}

bool prompt_interrupted() noexcept { return interrupted; }

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
