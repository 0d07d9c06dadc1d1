#pragma once
// Ctrl-C while a command runs: the guard turns SIGINT into a call on the I/O thread (exec sends
// `core.cancel`, a transfer closes the connection and leaves a resumable partial, chat mode
// returns to the prompt). Outside a guard SIGINT has its default meaning.
// Threading: created, used and destroyed on the CLI's I/O thread.
#include <signal.h>

#include <functional>
#include <memory>

#include <boost/asio/signal_set.hpp>

#include "coserve/asio.hpp"

namespace coserve::cli {

class Interrupt {
 public:
  Interrupt(asio::any_io_executor executor, std::function<void()> on_interrupt);
  ~Interrupt();
  Interrupt(const Interrupt&) = delete;
  Interrupt& operator=(const Interrupt&) = delete;
  bool hit() const noexcept { return state_->hit; }

 private:
  struct State {
    explicit State(asio::any_io_executor executor) : signals(executor, SIGINT) {}
    asio::signal_set signals;
    std::function<void()> on_interrupt;
    bool hit = false;
    bool active = true;
  };
  static awaitable<void> wait(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

// Ctrl-C at a prompt that blocks in read() on this thread (the shell's line editor, the password
// prompt): the read fails with EINTR and prompt_interrupted() turns true. The kernel may hand
// SIGINT to any thread (the file pool, asio's resolver): the handler passes it on to this one.
// Returns the action it replaced.
struct sigaction catch_sigint_at_prompt();
bool prompt_interrupted() noexcept;

}  // namespace coserve::cli
