// A user's own service in an in-process Server: registration, config defaults, streaming
// events, multiplexing (a slow request does not hold back a fast one) and cancellation.
#include <catch2/catch.hpp>

#include <thread>

#include <algorithm>

#include <boost/asio/write.hpp>

#include "coserve/client.hpp"
#include "coserve/server.hpp"
#include "in_process_server.hpp"
#include "test_support.hpp"
#include "timer_service.hpp"

using namespace coserve;
using namespace std::chrono_literals;

namespace {

using InProcessServer = test::InProcessServer<example::TimerService>;

}  // namespace

TEST_CASE("a slow request does not delay a later fast one on the same connection") {
  InProcessServer server;
  test::run([&]() -> awaitable<void> {
    Client client(co_await asio::this_coro::executor);
    co_await client.connect("127.0.0.1", server.port());
    auto slow = client.open({{"service", "timer"}, {"op", "sleep"}, {"ms", 1500}});
    auto start = std::chrono::steady_clock::now();
    json request19 = {{"service", "core"}, {"op", "ping"}};
    auto pong = co_await client.call(request19);
    CHECK(pong.head["ok"] == true);
    CHECK(std::chrono::steady_clock::now() - start < 1000ms);
    CHECK_FALSE(slow.done());
    auto slept = co_await slow.next();
    CHECK(slept.head["slept_ms"] == 1500);
  }());
}

TEST_CASE("core.cancel ends a request in flight with `cancelled`") {
  InProcessServer server;
  test::run([&]() -> awaitable<void> {
    Client client(co_await asio::this_coro::executor);
    co_await client.connect("127.0.0.1", server.port());
    auto slow = client.open({{"service", "timer"}, {"op", "sleep"}, {"ms", 30000}});
    co_await test::sleep_for(50ms);
    json request20 = {{"service", "core"}, {"op", "cancel"}, {"target", slow.id()}};
    auto cancel = co_await client.call(request20);
    CHECK(cancel.head["ok"] == true);
    auto reply = co_await slow.next();
    CHECK(error_code_of(reply) == "cancelled");
    json request21 = {{"service", "core"}, {"op", "cancel"}, {"target", slow.id()}};
    auto again = co_await client.call(request21);
    CHECK(error_code_of(again) == "not_found");
  }(), 10s);
}

TEST_CASE("a request id already in flight is refused") {
  InProcessServer server;
  test::run([&]() -> awaitable<void> {
    Client client(co_await asio::this_coro::executor);
    co_await client.connect("127.0.0.1", server.port());
    auto first = client.open({{"id", 5}, {"service", "timer"}, {"op", "sleep"}, {"ms", 300}});
    // The duplicate's error carries id 5 too; it is the first frame for id 5 to arrive.
    client.send_frame(encode_frame({{"id", 5}, {"service", "core"}, {"op", "ping"}}));
    auto dup = co_await first.next();
    CHECK(error_code_of(dup) == "bad_request");
    CHECK(dup.head["error"]["message"].get<std::string>().find("in flight") != std::string::npos);
  }());
}

TEST_CASE("streamed events arrive in order before the final reply") {
  InProcessServer server;
  test::run([&]() -> awaitable<void> {
    Client client(co_await asio::this_coro::executor);
    co_await client.connect("127.0.0.1", server.port());
    auto stream = client.open({{"service", "timer"}, {"op", "countdown"}, {"from", 500}});
    int expect = 500;
    for (;;) {
      auto f = co_await stream.next();
      if (stream.done()) {
        CHECK(f.head["ticks"] == 500);
        break;
      }
      CHECK(f.head["event"] == "tick");
      CHECK(f.head["n"] == expect--);
    }
    CHECK(expect == 0);
  }());
}

TEST_CASE("a service's config defaults are overridable and its errors reach the client") {
  InProcessServer server({"services.timer.max_ms=100"});
  test::run([&]() -> awaitable<void> {
    Client client(co_await asio::this_coro::executor);
    co_await client.connect("127.0.0.1", server.port());
    json request22 = {{"service", "timer"}, {"op", "sleep"}, {"ms", 101}};
    auto r = co_await client.call(request22);
    CHECK(error_code_of(r) == "bad_request");
    json request23 = {{"service", "timer"}, {"op", "sleep"}};
    auto missing = co_await client.call(request23);
    CHECK(error_code_of(missing) == "bad_request");
    CHECK(missing.head["error"]["message"] == "missing field 'ms'");
    json request24 = {{"service", "core"}, {"op", "hello"}};
    auto hello = co_await client.call(request24);
    CHECK(hello.head["services"]["timer"] == json::array({"sleep", "countdown", "check"}));
  }());
}

TEST_CASE("an inline op answers while a coroutine op waits, and its errors are error replies") {
  InProcessServer server({"services.timer.max_ms=5000"});
  test::run([&]() -> awaitable<void> {
    Client client(co_await asio::this_coro::executor);
    co_await client.connect("127.0.0.1", server.port());
    auto slow = client.open({{"service", "timer"}, {"op", "sleep"}, {"ms", 1000}});
    json fits = {{"service", "timer"}, {"op", "check"}, {"ms", 4000}};
    auto yes = co_await client.call(fits);
    CHECK(yes.head["fits"] == true);
    CHECK_FALSE(slow.done());
    json too_long = {{"service", "timer"}, {"op", "check"}, {"ms", 6000}};
    auto no = co_await client.call(too_long);
    CHECK(no.head["fits"] == false);
    json no_ms = {{"service", "timer"}, {"op", "check"}};
    auto missing = co_await client.call(no_ms);
    CHECK(error_code_of(missing) == "bad_request");
    CHECK(missing.head["error"]["message"] == "missing field 'ms'");
    json wrong_type = {{"service", "timer"}, {"op", "check"}, {"ms", "soon"}};
    auto mistyped = co_await client.call(wrong_type);
    CHECK(error_code_of(mistyped) == "bad_request");
    // The connection is still in order: the slow op ends normally.
    auto slept = co_await slow.next();
    CHECK(slept.head["slept_ms"] == 1000);
  }());
}

TEST_CASE("a service declares its own listener: off by default, bound when set") {
  {
    InProcessServer off;
    CHECK_FALSE(off.bound().contains("timer_line"));
  }
  InProcessServer server({"listeners.timer_line=127.0.0.1:0", "services.timer.max_ms=1000"});
  test::run([&]() -> awaitable<void> {
    asio::ip::tcp::socket socket(co_await asio::this_coro::executor);
    co_await socket.async_connect(
        {asio::ip::make_address("127.0.0.1"),
         static_cast<unsigned short>(std::stoi(server.port("timer_line")))},
        use_awaitable);
    std::string lines = "20\nlots\n5000\n";
    co_await asio::async_write(socket, asio::buffer(lines), use_awaitable);
    std::string in;
    while (std::count(in.begin(), in.end(), '\n') < 3) {
      char chunk[256];
      auto n = co_await socket.async_read_some(asio::buffer(chunk), use_awaitable);
      in.append(chunk, n);
    }
    CHECK(in.starts_with("slept 20\nerror: send a number of milliseconds, 0..1000\nerror:"));
  }());
}
