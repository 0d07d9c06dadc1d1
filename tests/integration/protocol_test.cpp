// Bad input of every kind gets an error reply with a stable code; the connection stays usable
// while the stream can still be parsed; the server survives all of it.
#include <catch2/catch.hpp>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include "coserve/client.hpp"
#include "test_support.hpp"

using namespace coserve;
using namespace std::chrono_literals;
using asio::ip::tcp;

namespace {

std::string frame_bytes(std::string_view json_text, std::string_view body = {}) {
  std::string out(8, '\0');
  auto put = [&](std::size_t at, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out[at + i] = char(v >> (24 - 8 * i));
  };
  put(0, static_cast<std::uint32_t>(json_text.size()));
  put(4, static_cast<std::uint32_t>(body.size()));
  return out + std::string(json_text) + std::string(body);
}

// A raw connection: send exact bytes, read decoded frames back.
class RawConnection {
 public:
  explicit RawConnection(asio::any_io_executor ex) : socket_(ex), decoder_({1 << 20, 4 << 20}) {}
  awaitable<void> connect(const std::string& port) {
    co_await socket_.async_connect({asio::ip::make_address("127.0.0.1"),
                                    static_cast<unsigned short>(std::stoi(port))},
                                   use_awaitable);
  }
  awaitable<void> send(const std::string& bytes) {
    co_await asio::async_write(socket_, asio::buffer(bytes), use_awaitable);
  }
  // The next frame, or nullopt when the server closed the connection.
  awaitable<std::optional<Frame>> next() {
    for (;;) {
      if (auto item = decoder_.next()) co_return std::get<Frame>(std::move(*item));
      auto space = decoder_.prepare(65536);
      auto [ec, n] = co_await socket_.async_read_some(asio::buffer(space.data(), space.size()), use_nothrow);
      if (ec) co_return std::nullopt;
      decoder_.commit(n);
    }
  }
  awaitable<std::string> next_error_code() {
    auto f = co_await next();
    if (!f) co_return "<closed>";
    co_return f->head["error"]["code"].get<std::string>();
  }

 private:
  tcp::socket socket_;
  FrameDecoder decoder_;
};

}  // namespace

TEST_CASE("routing and validation errors have stable codes and keep the connection") {
  test::ServerProcess server;
  test::run([&]() -> awaitable<void> {
    RawConnection c(co_await asio::this_coro::executor);
    co_await c.connect(server.port("framed"));
    struct Case {
      std::string json;
      std::string code;
      coserve::json id;
    };
    std::vector<Case> cases = {
        {R"({"id":1,"service":"nope","op":"x"})", "unknown_service", 1},
        {R"({"id":2,"service":"echo","op":"nope"})", "unknown_op", 2},
        {R"({"service":"echo","op":"echo"})", "bad_request", nullptr},
        {R"({"id":3.5,"service":"echo","op":"echo"})", "bad_request", nullptr},
        {R"({"id":4,"service":"echo"})", "bad_request", 4},
        {R"({"id":5,"service":7,"op":"echo"})", "bad_request", 5},
        {R"({"id":6,"service":"echo","op":"echo","text":12})", "bad_request", 6},
        {R"({"id":7})", "bad_request", 7},  // no call in flight with this id
        {R"({"id":8,"service":"core","op":"cancel"})", "bad_request", 8},
        {"[1,2,3]", "bad_frame", nullptr},
        {"{\"id\":9,", "bad_frame", nullptr},
        {"", "bad_frame", nullptr},
    };
    for (auto& tc : cases) {
      INFO(tc.json);
      co_await c.send(frame_bytes(tc.json));
      auto f = co_await c.next();
      REQUIRE(f);
      CHECK(f->head["ok"] == false);
      CHECK(f->head["error"]["code"] == tc.code);
      CHECK(f->head["error"]["message"].get<std::string>().size() > 0);
      CHECK(f->head["id"] == tc.id);
    }
    co_await c.send(frame_bytes(R"({"id":"s","service":"core","op":"ping"})"));
    auto pong = co_await c.next();
    REQUIRE(pong);
    CHECK(pong->head["ok"] == true);
    CHECK(pong->head["id"] == "s");
  }());
  CHECK(server.running());
}

TEST_CASE("an oversize body is refused with its id and skipped, the stream goes on") {
  test::ServerProcess server({"--set", "limits.max_body=1000"});
  test::run([&]() -> awaitable<void> {
    RawConnection c(co_await asio::this_coro::executor);
    co_await c.connect(server.port("framed"));
    co_await c.send(frame_bytes(R"({"id":1,"service":"echo","op":"echo"})", std::string(1001, 'x')) +
                    frame_bytes(R"({"id":2,"service":"echo","op":"echo"})", std::string(1000, 'y')));
    auto err = co_await c.next();
    REQUIRE(err);
    CHECK(err->head["id"] == 1);
    CHECK(err->head["error"]["code"] == "too_large");
    auto ok = co_await c.next();
    REQUIRE(ok);
    CHECK(ok->head["id"] == 2);
    CHECK(ok->body == std::string(1000, 'y'));
  }());
}

TEST_CASE("an oversize JSON part or garbage closes the connection after the error") {
  test::ServerProcess server({"--set", "limits.max_json=100"});
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    RawConnection c(ex);
    co_await c.connect(server.port("framed"));
    co_await c.send(frame_bytes(R"({"id":1,"pad":")" + std::string(200, 'p') + "\"}"));
    auto awaited1 = co_await c.next_error_code();
    CHECK(awaited1 == "too_large");
    auto awaited2 = co_await c.next();
    CHECK_FALSE(static_cast<bool>(awaited2));

    RawConnection http(ex);
    co_await http.connect(server.port("framed"));
    co_await http.send("GET / HTTP/1.1\r\nHost: example\r\n\r\n");
    auto awaited3 = co_await http.next_error_code();
    CHECK(awaited3 == "too_large");
    auto awaited4 = co_await http.next();
    CHECK_FALSE(static_cast<bool>(awaited4));

    // And the server still serves everyone else.
    Client client(ex);
    co_await client.connect("127.0.0.1", server.port("framed"));
    json request5 = {{"service", "echo"}, {"op", "echo"}, {"text", "still here"}};
    auto r = co_await client.call(request5);
    CHECK(r.head["text"] == "still here");
  }());
  CHECK(server.running());
}

TEST_CASE("hello names the server, its services and limits") {
  test::ServerProcess server;
  test::run([&]() -> awaitable<void> {
    Client client(co_await asio::this_coro::executor);
    co_await client.connect("127.0.0.1", server.port("framed"));
    json request6 = {{"service", "core"}, {"op", "hello"}};
    auto r = co_await client.call(request6);
    CHECK(r.head["server"] == "coserve");
    CHECK(r.head["version"].is_string());
    CHECK(r.head["services"]["core"] == json::array({"hello", "ping", "cancel"}));
    CHECK(r.head["services"]["echo"] == json::array({"echo"}));
    CHECK(r.head["limits"]["max_body"] == 1048576);
    CHECK(r.head["limits"]["max_json"] == 65536);
  }());
}

TEST_CASE("too many requests in flight on one connection get `busy`") {
  test::ServerProcess server({"--set", "limits.max_inflight=1"});
  test::run([&]() -> awaitable<void> {
    RawConnection c(co_await asio::this_coro::executor);
    co_await c.connect(server.port("framed"));
    // Pipelined in one write: the first may still be in flight when the rest arrive.
    std::string burst;
    for (int i = 0; i < 50; ++i)
      burst += frame_bytes(R"({"id":)" + std::to_string(i) + R"(,"service":"echo","op":"echo"})",
                           std::string(100000, 'b'));
    co_await c.send(burst);
    int ok = 0, busy = 0;
    for (int i = 0; i < 50; ++i) {
      auto f = co_await c.next();
      REQUIRE(f);
      if (f->head["ok"] == true) ++ok;
      else if (f->head["error"]["code"] == "busy") ++busy;
    }
    CHECK(ok >= 1);
    CHECK(ok + busy == 50);
  }());
}

TEST_CASE("a client whose reader falls behind stops reading at 16 MiB of untaken bodies") {
  test::run([]() -> awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    auto ex = co_await asio::this_coro::executor;
    tcp::acceptor acceptor(ex, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    const auto port = std::to_string(acceptor.local_endpoint().port());
    tcp::socket peer(ex);
    Client client(ex);
    auto accepting = acceptor.async_accept(peer, use_awaitable);
    auto connecting = client.connect("127.0.0.1", port);
    co_await (std::move(accepting) && std::move(connecting));
    // This end plays a server pushing 1 MiB frames as fast as the connection takes them.
    peer.non_blocking(true);
    const std::string blob =
        frame_bytes(R"({"service":"test","event":"blob"})", std::string(1 << 20, 'b'));
    std::size_t written = 0;
    auto write_more = [&] {
      error_code ec;
      while (!ec) {
        const auto at = written % blob.size();
        written += peer.write_some(asio::buffer(blob.data() + at, blob.size() - at), ec);
      }
    };
    // Nobody takes the pushes: the writes stall once the client stops reading.
    std::size_t before = 0;
    do {
      before = written;
      write_more();
      co_await test::sleep_for(200ms);
      write_more();
    } while (written != before && written < (512u << 20));
    CHECK(written > (16u << 20));  // it read up to its limit
    CHECK(written < (64u << 20));  // and no further (the rest is in the kernel's buffers)
    // Taking bodies lets it read again.
    for (int i = 0; i < 8; ++i) {
      auto push = co_await client.next_push();
      CHECK(push.body.size() == (1u << 20));
    }
    const auto stalled_at = written;
    for (int i = 0; i < 100 && written == stalled_at; ++i) {
      co_await test::sleep_for(20ms);
      write_more();
    }
    CHECK(written > stalled_at);
    client.close();
  }());
}
