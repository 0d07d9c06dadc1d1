// Starting, refusing, timing out and stopping: the server as an operator sees it.
#include <catch2/catch.hpp>

#include <signal.h>

#include <fstream>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>

#include "coserve/client.hpp"
#include "test_support.hpp"

using namespace coserve;
using namespace std::chrono_literals;
using asio::ip::tcp;

namespace {

tcp::endpoint local(const std::string& port) {
  return {asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(std::stoi(port))};
}

// True when the server closed the connection (EOF or reset) within `within`.
awaitable<bool> closed_by_peer(tcp::socket& socket, std::chrono::milliseconds within) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(socket.get_executor(), within);
  char byte;
  auto first = co_await (socket.async_read_some(asio::buffer(&byte, 1), use_nothrow) ||
                         timer.async_wait(use_nothrow));
  if (first.index() != 0) co_return false;
  auto [ec, n] = std::get<0>(first);
  co_return ec == asio::error::eof || ec == asio::error::connection_reset;
}

}  // namespace

TEST_CASE("the ready file names every bound listener") {
  test::ServerProcess server;
  auto& b = server.bound();
  for (auto key : {"framed", "echo_tcp", "echo_udp", "echo_unix", "echo_unix_dgram"})
    CHECK(b.contains(key));
  CHECK(b["framed"].get<std::string>().rfind("127.0.0.1:", 0) == 0);
  CHECK(b["framed"] != "127.0.0.1:0");
  CHECK(b["echo_unix"] == (server.data_dir() / "run" / "echo.sock").string());
}

TEST_CASE("the access filter refuses over the per-address limit and denied networks") {
  test::ServerProcess limited({"--set", "access.max_per_address=2"});
  test::ServerProcess denied({"--set", R"(access.deny=["127.0.0.0/8"])"});
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    tcp::socket a(ex), b(ex), c(ex);
    for (auto* s : {&a, &b, &c}) co_await s->async_connect(local(limited.port("echo_tcp")), use_awaitable);
    auto awaited7 = co_await closed_by_peer(c, 2000ms);
    CHECK(static_cast<bool>(awaited7));
    auto awaited8 = co_await closed_by_peer(a, 200ms);
    CHECK_FALSE(static_cast<bool>(awaited8));
    a.close();
    co_await test::sleep_for(100ms);
    tcp::socket d(ex);  // a place was freed
    co_await d.async_connect(local(limited.port("echo_tcp")), use_awaitable);
    auto awaited9 = co_await closed_by_peer(d, 300ms);
    CHECK_FALSE(static_cast<bool>(awaited9));

    tcp::socket e(ex);
    co_await e.async_connect(local(denied.port("framed")), use_awaitable);
    auto awaited10 = co_await closed_by_peer(e, 2000ms);
    CHECK(static_cast<bool>(awaited10));
  }());
  CHECK(limited.log().find("refused a connection: too many connections from this address") !=
        std::string::npos);
}

TEST_CASE("an idle framed session gets a shutdown event and is closed") {
  test::ServerProcess server({"--set", "limits.idle_timeout_ms=300"});
  test::run([&]() -> awaitable<void> {
    Client client(co_await asio::this_coro::executor);
    co_await client.connect("127.0.0.1", server.port("framed"));
    auto start = std::chrono::steady_clock::now();
    auto push = co_await client.next_push();
    CHECK(push.head["event"] == "shutdown");
    CHECK(push.head["reason"] == "idle timeout");
    CHECK(std::chrono::steady_clock::now() - start >= 250ms);
    while (client.is_open()) co_await test::sleep_for(10ms);
  }(), 10s);
}

TEST_CASE("a client that stops reading is closed after the write timeout") {
  test::ServerProcess server({"--set", "limits.write_timeout_ms=400"});
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    tcp::socket socket(ex);
    co_await socket.async_connect(local(server.port("framed")), use_awaitable);
    // Echo requests of 1 MiB, never reading a reply: the server's writes stall once the socket
    // buffers and its out-queue are full. Sent without waiting, until our own side is full too.
    socket.non_blocking(true);
    const std::string body(1 << 20, 'x');
    std::size_t sent_frames = 0;
    for (int i = 0; i < 256; ++i) {
      json request = {{"id", i}, {"service", "echo"}, {"op", "echo"}};
      auto frame = encode_frame(request, body);
      std::string bytes = frame->head + frame->body;
      std::size_t done = 0;
      error_code ec;
      while (done < bytes.size()) {
        done += socket.write_some(asio::buffer(bytes.data() + done, bytes.size() - done), ec);
        if (ec == asio::error::would_block) {
          co_await test::sleep_for(20ms);
          if (server.log().find("write timeout") != std::string::npos) break;
          ec = {};
          continue;
        }
        if (ec) break;
      }
      if (ec || done < bytes.size()) break;
      ++sent_frames;
    }
    CHECK(sent_frames > 0);
    for (int i = 0; i < 200 && server.log().find("write timeout") == std::string::npos; ++i)
      co_await test::sleep_for(20ms);
  }(), 20s);
  CHECK(server.log().find("write timeout, closing") != std::string::npos);
}

TEST_CASE("SIGTERM: connected clients are told, the server exits 0 within the grace period") {
  test::ServerProcess server({"--set", "server.shutdown_grace_ms=2000"});
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    Client client(ex);
    co_await client.connect("127.0.0.1", server.port("framed"));
    tcp::socket raw(ex);
    co_await raw.async_connect(local(server.port("echo_tcp")), use_awaitable);
    json request11 = {{"service", "core"}, {"op", "ping"}};
    co_await client.call(request11);
    ::kill(server.pid(), SIGTERM);
    auto push = co_await client.next_push();
    CHECK(push.head["event"] == "shutdown");
    auto awaited12 = co_await closed_by_peer(raw, 3000ms);
    CHECK(static_cast<bool>(awaited12));
  }(), 10s);
  auto start = std::chrono::steady_clock::now();
  CHECK(server.wait(5s) == 0);
  CHECK(std::chrono::steady_clock::now() - start < 3s);
  CHECK(server.log().find("shutting down (SIGTERM)") != std::string::npos);
}

TEST_CASE("a client that ignores shutdown is closed when the grace period ends") {
  test::ServerProcess server({"--set", "server.shutdown_grace_ms=300"});
  test::run([&]() -> awaitable<void> {
    Client client(co_await asio::this_coro::executor);
    co_await client.connect("127.0.0.1", server.port("framed"));
    json request13 = {{"service", "core"}, {"op", "ping"}};
    co_await client.call(request13);
  }());
  CHECK(server.stop(SIGINT, 5s) == 0);
}

TEST_CASE("startup errors: one clear line and a non-zero exit") {
  std::string err;
  SECTION("port in use") {
    test::ServerProcess first;
    test::TempDir dir;
    CHECK(test::run_binary({"--data-dir", dir.path().string(), "--set",
                            "listeners.framed=" + first.address("framed"), "--set",
                            "listeners.echo_unix=", "--set", "listeners.echo_unix_dgram="},
                           &err) == 1);
    CHECK(err.find("listener 'framed' cannot bind") != std::string::npos);
    CHECK(err.find("Address already in use") != std::string::npos);
  }
  SECTION("bad address") {
    test::TempDir dir;
    CHECK(test::run_binary({"--data-dir", dir.path().string(), "--set", "listeners.framed=nowhere"},
                           &err) == 1);
    CHECK(err.find("listener 'framed': cannot parse 'nowhere'") != std::string::npos);
  }
  SECTION("unknown config key") {
    CHECK(test::run_binary({"--set", "listeners.ftp=1"}, &err) == 2);
    CHECK(err.find("unknown config key 'listeners.ftp'") != std::string::npos);
  }
  SECTION("config file with a wrong type") {
    test::TempDir dir;
    auto file = dir.path() / "c.json";
    std::ofstream(file) << R"({"limits": {"max_body": "lots"}})";
    CHECK(test::run_binary({"--config", file.string()}, &err) == 2);
    CHECK(err.find("limits.max_body") != std::string::npos);
  }
  SECTION("unwritable socket path") {
    test::TempDir dir;
    CHECK(test::run_binary({"--data-dir", dir.path().string(), "--set", "listeners.framed=",
                            "--set", "listeners.echo_tcp=", "--set", "listeners.echo_udp=",
                            "--set", "listeners.chat_line=", "--set", "listeners.http=",
                            "--set", "listeners.echo_unix=/proc/nope/echo.sock"},
                           &err) == 1);
    CHECK(err.find("listener 'echo_unix'") != std::string::npos);
  }
  CHECK(err.find("terminate") == std::string::npos);
}

TEST_CASE("a stale Unix socket file is replaced, a live one is not stolen") {
  test::TempDir dir;
  auto path = dir.path() / "run" / "echo.sock";
  std::filesystem::create_directories(path.parent_path());
  {
    // Bound and closed without unlinking: what a crashed server leaves behind.
    asio::io_context io;
    asio::local::stream_protocol::acceptor stale(io, {path.string()});
  }
  REQUIRE(std::filesystem::exists(path));
  test::ServerProcess server({}, dir.path());
  CHECK(server.address("echo_unix") == path.string());
  std::string err;
  CHECK(test::run_binary({"--data-dir", dir.path().string(), "--set", "listeners.framed=127.0.0.1:0",
                          "--set", "listeners.echo_tcp=127.0.0.1:0", "--set", "listeners.echo_udp=127.0.0.1:0",
                          "--set", "listeners.chat_line=127.0.0.1:0", "--set", "listeners.http=127.0.0.1:0"},
                         &err) == 1);
  CHECK(err.find("in use by a running server") != std::string::npos);
  CHECK(server.running());
}

TEST_CASE("print-config and version flags") {
  auto r = test::run_program({test::binary("coserve").string(), "--print-config", "--set", "server.workers=3"});
  CHECK(r.status == 0);
  auto config = json::parse(r.out);
  CHECK(config["server"]["workers"] == 3);
  CHECK(config["listeners"]["framed"] == "127.0.0.1:7070");
  auto v = test::run_program({test::binary("coserve").string(), "--version"});
  CHECK(v.status == 0);
  CHECK(v.out.find("coserve ") == 0);
}
