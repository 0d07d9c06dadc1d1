#pragma once
// Runs a blocking function on a thread pool and resumes the awaiting coroutine on its own
// executor, so I/O threads never block. Exceptions thrown by the function reach the awaiter.
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include "coserve/asio.hpp"

namespace coserve {
namespace detail {

// Completes with (exception, optional result) on the handler's own executor.
template <class R, class Fn>
auto post_to_pool(asio::thread_pool& pool, Fn fn) {
  using Result = std::conditional_t<std::is_void_v<R>, bool, std::optional<R>>;
  return asio::async_initiate<decltype(use_awaitable), void(std::exception_ptr, Result)>(
      [&pool](auto handler, Fn fn) {
        auto work = asio::make_work_guard(asio::get_associated_executor(handler));
        asio::post(pool, [handler = std::move(handler), fn = std::move(fn),
                          work = std::move(work)]() mutable {
          std::exception_ptr failure;
          Result result{};
          {
            // Destroyed, with everything it captured, before the awaiter resumes: a resource
            // it held (an open file, a claim) is released by the time the caller goes on.
            Fn job = std::move(fn);
            try {
              if constexpr (std::is_void_v<R>) {
                job();
                result = true;
              } else {
                result.emplace(job());
              }
            } catch (...) {
              failure = std::current_exception();
            }
          }
          // The exception moves on with the handler: the awaiter's thread holds its last
          // reference and destroys it, not this one while the awaiter may still read it.
          auto home = work.get_executor();
          asio::dispatch(home, [handler = std::move(handler), failure = std::move(failure),
                                result = std::move(result)]() mutable {
            std::move(handler)(failure, std::move(result));
          });
        });
      },
      use_awaitable, std::move(fn));
}

}  // namespace detail

template <class Fn>
auto offload(asio::thread_pool& pool, Fn fn) -> awaitable<std::invoke_result_t<Fn&>> {
  using R = std::invoke_result_t<Fn&>;
  if constexpr (std::is_void_v<R>) {
    co_await detail::post_to_pool<R>(pool, std::move(fn));
  } else {
    co_return std::move(*(co_await detail::post_to_pool<R>(pool, std::move(fn))));
  }
}

}  // namespace coserve
