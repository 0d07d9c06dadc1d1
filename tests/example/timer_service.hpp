#pragma once
// A service written only against the toolkit's public API (service.hpp, server.hpp): the
// second example of docs/writing-a-service.md, and the slow op the multiplexing tests need.
//   timer.sleep {ms}      → waits, then {slept_ms}; cancellable with core.cancel
//   timer.countdown {from} → events "tick" {n} from `from` down to 1, then {ticks}
//   timer.check {ms}       → {fits}: whether sleep would take it (an inline op: a plain function)
// and a raw listener of its own, listeners.timer_line (off unless set): each line "MS" sent to it
// is answered "slept MS" after MS milliseconds, for nc.
#include <array>
#include <charconv>
#include <chrono>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/write.hpp>

#include "coserve/listeners.hpp"
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
  // Its own listener: the key listeners.timer_line, "" (off) unless the operator sets it.
  static constexpr auto listeners() {
    return std::array{coserve::ListenerSpec{"timer_line", ""}};
  }

  explicit TimerService(coserve::ServiceContext& ctx)
      : max_ms_(ctx.settings.at("max_ms").get<std::int64_t>()) {}

  // Binds listeners.timer_line (when not ""); each connection runs serve_line.
  void add_listeners(coserve::Listeners& listeners) override {
    listeners.tcp("timer_line", [max_ms = max_ms_](boost::asio::ip::tcp::socket socket) {
      return serve_line(std::move(socket), max_ms);
    });
  }

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

  // One coroutine per connection, owning its socket. Lines are bounded (a hostile client cannot
  // grow the buffer); a bad line gets an error line.
  static awaitable<void> serve_line(boost::asio::ip::tcp::socket socket, std::int64_t max_ms) {
    std::string buffer;
    for (;;) {
      auto [ec, n] = co_await boost::asio::async_read_until(
          socket, boost::asio::dynamic_buffer(buffer, 64), '\n', coserve::use_nothrow);
      if (ec) co_return;  // closed, too long a line, or shutting down
      std::int64_t ms = -1;
      std::from_chars(buffer.data(), buffer.data() + n - 1, ms);
      buffer.erase(0, n);
      std::string reply = "error: send a number of milliseconds, 0.." + std::to_string(max_ms) + "\n";
      if (ms >= 0 && ms <= max_ms) {
        boost::asio::steady_timer timer(socket.get_executor(), std::chrono::milliseconds(ms));
        co_await timer.async_wait(coserve::use_nothrow);
        reply = "slept " + std::to_string(ms) + "\n";
      }
      auto [write_ec, written] =
          co_await boost::asio::async_write(socket, boost::asio::buffer(reply), coserve::use_nothrow);
      if (write_ec) co_return;
    }
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
