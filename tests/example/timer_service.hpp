#pragma once
// A service written only against the toolkit's public API (service.hpp, server.hpp): the
// second example of docs/writing-a-service.md, and the slow op the multiplexing tests need.
//   timer.sleep {ms}      → waits, then {slept_ms}; cancellable with core.cancel
//   timer.countdown {from} → events "tick" {n} from `from` down to 1, then {ticks}
//   timer.check {ms}       → {fits}: whether sleep would take it (an inline op: a plain function)
#include <array>
#include <chrono>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include "coserve/server.hpp"
#include "coserve/service.hpp"

namespace example {

using coserve::awaitable;
using coserve::Call;
using coserve::Outcome;

class TimerService final : public coserve::BasicService<TimerService> {
 public:
  static constexpr std::string_view kName = "timer";
  static constexpr auto ops() {
    return std::array{op("sleep", &TimerService::sleep), op("countdown", &TimerService::countdown),
                      op("check", &TimerService::check)};
  }
  // Config keys under services.timer.*, overridable with --set like any other.
  static coserve::json defaults() { return {{"max_ms", 60000}}; }

  explicit TimerService(coserve::ServiceContext& ctx)
      : max_ms_(ctx.settings.at("max_ms").get<std::int64_t>()) {}

  awaitable<Outcome> sleep(Call& call) {
    auto ms = call.get<std::int64_t>("ms");
    if (ms < 0 || ms > max_ms_)
      co_return Outcome::fail(coserve::errc::bad_request,
                              "ms must be between 0 and " + std::to_string(max_ms_));
    boost::asio::steady_timer timer(call.executor(), std::chrono::milliseconds(ms));
    co_await timer.async_wait(coserve::use_awaitable);  // core.cancel aborts this wait
    co_return Outcome::ok({{"slept_ms", ms}});
  }

  // Never waits, so a plain function: the connection's reader runs it without a coroutine.
  Outcome check(Call& call) {
    auto ms = call.get<std::int64_t>("ms");  // missing → bad_request, as in a coroutine op
    return Outcome::ok({{"fits", ms >= 0 && ms <= max_ms_}});
  }

  awaitable<Outcome> countdown(Call& call) {
    auto from = call.get<int>("from");
    if (from < 0 || from > 10000) co_return Outcome::fail(coserve::errc::bad_request, "from: 0..10000");
    for (int n = from; n > 0; --n) {
      // Built outside the co_await: g++ 12 rejects braced JSON inside a co_await expression.
      coserve::json tick = {{"n", n}};
      co_await call.emit("tick", std::move(tick));
    }
    co_return Outcome::ok({{"ticks", from}});
  }

 private:
  std::int64_t max_ms_;
};

}  // namespace example
