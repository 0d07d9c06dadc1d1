// The client library's own bounds, against a real socket whose peer does not read.
#include <catch2/catch.hpp>

#include <stdexcept>

#include <boost/asio/ip/tcp.hpp>

#include "coserve/client.hpp"
#include "test_support.hpp"

using namespace coserve;
using namespace std::chrono_literals;

namespace {
// A coroutine function, not a capturing lambda: its parameters live in its own frame.
awaitable<void> wait_for_room(Client& client, bool& has_room) {
  co_await client.room();
  has_room = true;
}
}  // namespace

TEST_CASE("client: the out-queue is bounded; room() waits for the peer to read") {
  test::run([]() -> awaitable<void> {
    auto executor = co_await asio::this_coro::executor;
    asio::ip::tcp::acceptor acceptor(executor, {asio::ip::make_address("127.0.0.1"), 0});
    const auto port = std::to_string(acceptor.local_endpoint().port());
    constexpr std::size_t limit = 1 << 20;
    Client client(executor, FrameLimits{}, limit);
    co_await client.connect("127.0.0.1", port);
    auto peer = co_await acceptor.async_accept(use_awaitable);  // and never reads, for now

    // Far more than the kernel's socket buffers hold: the queue fills, then sends are refused.
    const std::string chunk(256 * 1024, 'x');
    bool refused = false;
    std::size_t sent = 0;
    for (int i = 0; i < 1024 && !refused; ++i) {
      try {
        json fields = {{"n", i}};
        client.send_frame(encode_frame(fields, chunk));
        sent += chunk.size();
        co_await test::sleep_for(1ms);  // let the writer hand what it can to the kernel
      } catch (const std::length_error&) {
        refused = true;
      }
    }
    CHECK(refused);
    CHECK(client.queued_bytes() > limit);
    CHECK(client.queued_bytes() < limit + 2 * chunk.size());
    CHECK(sent < 1024 * chunk.size());

    // room() waits while nobody reads, and returns once the peer drains the connection.
    bool has_room = false;
    asio::co_spawn(executor, wait_for_room(client, has_room), [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);
    });
    co_await test::sleep_for(200ms);
    CHECK_FALSE(has_room);
    std::string sink(1 << 20, '\0');
    while (!has_room) {
      auto [ec, n] = co_await peer.async_read_some(asio::buffer(sink), use_nothrow);
      REQUIRE(!ec);
    }
    CHECK(client.queued_bytes() <= limit);
    json fields = {{"after", true}};
    client.send_frame(encode_frame(fields, chunk));  // accepted again
  }());
}
