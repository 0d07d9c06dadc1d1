// Echo on every socket kind, through the real server binary.
#include <catch2/catch.hpp>

#include <random>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/local/datagram_protocol.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>

#include "coserve/client.hpp"
#include "test_support.hpp"

using namespace coserve;
using namespace std::chrono_literals;
using asio::ip::tcp;

namespace {

std::string random_bytes(std::size_t n, unsigned seed = 1) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(gen());
  return s;
}

// Writes `data` while reading the echo back concurrently (a stream echo never buffers it all).
template <class Socket>
awaitable<std::string> pump(Socket& socket, const std::string& data) {
  using namespace asio::experimental::awaitable_operators;
  std::string back(data.size(), '\0');
  auto writer = [](Socket& s, const std::string& d) -> awaitable<void> {
    co_await asio::async_write(s, asio::buffer(d), use_awaitable);
  };
  auto reader = [](Socket& s, std::string& b) -> awaitable<void> {
    co_await asio::async_read(s, asio::buffer(b), use_awaitable);
  };
  co_await (writer(socket, data) && reader(socket, back));
  co_return back;
}

std::pair<std::string, std::string> split(const std::string& address) {
  auto colon = address.rfind(':');
  auto host = address.substr(0, colon);
  if (host.front() == '[') host = host.substr(1, host.size() - 2);
  return {host, address.substr(colon + 1)};
}

}  // namespace

TEST_CASE("framed echo returns text and body, up to the 1 MiB body limit") {
  test::ServerProcess server;
  test::run([&]() -> awaitable<void> {
    Client client(co_await asio::this_coro::executor);
    co_await client.connect("127.0.0.1", server.port("framed"));
    json request14 = {{"service", "echo"}, {"op", "echo"}, {"text", "héllo"}};
    auto r = co_await client.call(request14);
    CHECK(r.head["ok"] == true);
    CHECK(r.head["text"] == "héllo");
    CHECK(r.body.empty());
    auto big = random_bytes(1 << 20);
    json request15 = {{"service", "echo"}, {"op", "echo"}};
    auto r2 = co_await client.call(request15, big);
    CHECK(r2.head["text"] == "");
    CHECK(r2.body == big);
  }());
}

TEST_CASE("200 concurrent framed clients each get their own echoes") {
  test::ServerProcess server;
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    int finished = 0;
    auto one = [](std::string port, int n, int& done) -> awaitable<void> {
      Client client(co_await asio::this_coro::executor);
      co_await client.connect("127.0.0.1", port);
      for (int i = 0; i < 5; ++i) {
        auto text = std::to_string(n) + "/" + std::to_string(i);
        json request16 = {{"service", "echo"}, {"op", "echo"}, {"text", text}};
        auto r = co_await client.call(request16, text);
        if (r.head["text"] != text || r.body != text) throw std::runtime_error("wrong echo");
      }
      ++done;
    };
    for (int n = 0; n < 200; ++n)
      asio::co_spawn(ex, one(server.port("framed"), n, finished), [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
    while (finished < 200) co_await test::sleep_for(10ms);
    CHECK(finished == 200);
  }());
}

TEST_CASE("raw TCP echo over IPv4 and IPv6, 1 MiB through, and 200 clients at once") {
  test::ServerProcess server({"--set", "listeners.echo_unix=", "--set", "listeners.echo_unix_dgram="});
  test::ServerProcess server6({"--set", "listeners.echo_tcp=[::1]:0", "--set", "listeners.echo_unix=",
                               "--set", "listeners.echo_unix_dgram="});
  CHECK(server6.address("echo_tcp").rfind("[::1]:", 0) == 0);
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    for (auto* s : {&server, &server6}) {
      auto [host, port] = split(s->address("echo_tcp"));
      tcp::socket socket(ex);
      co_await socket.async_connect({asio::ip::make_address(host), static_cast<unsigned short>(std::stoi(port))},
                                    use_awaitable);
      auto data = random_bytes(1 << 20, 7);
      auto awaited17 = co_await pump(socket, data);
      CHECK(awaited17 == data);
    }
    int finished = 0;
    auto one = [](tcp::endpoint ep, int n, int& done) -> awaitable<void> {
      tcp::socket socket(co_await asio::this_coro::executor);
      co_await socket.async_connect(ep, use_awaitable);
      auto data = "client " + std::to_string(n) + "\n";
      if ((co_await pump(socket, data)) != data) throw std::runtime_error("wrong echo");
      ++done;
    };
    auto [host, port] = split(server.address("echo_tcp"));
    tcp::endpoint ep(asio::ip::make_address(host), static_cast<unsigned short>(std::stoi(port)));
    for (int n = 0; n < 200; ++n)
      asio::co_spawn(ex, one(ep, n, finished), [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
    while (finished < 200) co_await test::sleep_for(10ms);
    CHECK(finished == 200);
  }());
}

TEST_CASE("UDP echo answers each datagram to its sender") {
  test::ServerProcess server;
  test::run([&]() -> awaitable<void> {
    auto [host, port] = split(server.address("echo_udp"));
    asio::ip::udp::endpoint ep(asio::ip::make_address(host), static_cast<unsigned short>(std::stoi(port)));
    for (int sender = 0; sender < 3; ++sender) {
      asio::ip::udp::socket socket(co_await asio::this_coro::executor, asio::ip::udp::v4());
      for (std::size_t size : {1u, 512u, 8000u}) {
        auto data = random_bytes(size, sender * 10 + static_cast<unsigned>(size));
        co_await socket.async_send_to(asio::buffer(data), ep, use_awaitable);
        std::string back(65536, '\0');
        asio::ip::udp::endpoint from;
        auto n = co_await socket.async_receive_from(asio::buffer(back), from, use_awaitable);
        back.resize(n);
        CHECK(back == data);
      }
    }
  }());
}

TEST_CASE("Unix stream and datagram echo") {
  test::ServerProcess server;
  test::TempDir client_dir;
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    asio::local::stream_protocol::socket stream(ex);
    co_await stream.async_connect({server.address("echo_unix")}, use_awaitable);
    auto data = random_bytes(300000, 3);
    auto awaited18 = co_await pump(stream, data);
    CHECK(awaited18 == data);

    // A datagram sender must have an address of its own to be answered.
    asio::local::datagram_protocol::socket dgram(
        ex, asio::local::datagram_protocol::endpoint((client_dir.path() / "c.sock").string()));
    auto msg = random_bytes(2000, 4);
    co_await dgram.async_send_to(asio::buffer(msg), {server.address("echo_unix_dgram")}, use_awaitable);
    std::string back(65536, '\0');
    asio::local::datagram_protocol::endpoint from;
    auto n = co_await dgram.async_receive_from(asio::buffer(back), from, use_awaitable);
    back.resize(n);
    CHECK(back == msg);
  }());
}
