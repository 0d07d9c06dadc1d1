#pragma once
// Runs one command's coroutine to completion on the CLI's io_context and returns its result or
// rethrows its exception. Only as much of the io_context runs as the command needs: the
// connection's read loop stays pending between the shell's commands.
#include <exception>
#include <optional>
#include <stdexcept>
#include <type_traits>

#include <boost/asio/io_context.hpp>

#include "coserve/asio.hpp"

namespace coserve::cli {

template <class T>
T run_sync(asio::io_context& io, awaitable<T> task) {
  io.restart();
  bool done = false;
  std::exception_ptr failure;
  std::optional<std::conditional_t<std::is_void_v<T>, bool, T>> result;
  if constexpr (std::is_void_v<T>) {
    asio::co_spawn(io, std::move(task), [&](std::exception_ptr e) {
      failure = e;
      done = true;
    });
  } else {
    asio::co_spawn(io, std::move(task), [&](std::exception_ptr e, T value) {
      failure = e;
      if (!e) result.emplace(std::move(value));
      done = true;
    });
  }
  while (!done && io.run_one() > 0) {
  }
  if (!done) throw std::logic_error("the command's coroutine never finished");
  if (failure) std::rethrow_exception(failure);
  if constexpr (!std::is_void_v<T>) return std::move(*result);
}

// Handles whatever is ready (pushes, a closed connection) without waiting.
inline void poll(asio::io_context& io) {
  io.restart();
  io.poll();
}

}  // namespace coserve::cli
