// beast-ws-echo: the WebSocket baseline of the ws-echo benchmark. A minimal Boost.Beast server:
// one thread, one coroutine per connection, every message echoed back with the same type.
//
//   beast-ws-echo [PORT]   listens on 127.0.0.1:PORT (0, the default: the kernel picks) and
//                          prints the bound port on stdout
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <cstdio>
#include <exception>
#include <string>

namespace asio = boost::asio;
namespace websocket = boost::beast::websocket;
using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;

namespace {

awaitable<void> echo_session(tcp::socket sock) {
  sock.set_option(tcp::no_delay(true));
  websocket::stream<tcp::socket> ws(std::move(sock));
  co_await ws.async_accept(use_awaitable);
  boost::beast::flat_buffer buf;
  for (;;) {
    co_await ws.async_read(buf, use_awaitable);
    ws.text(ws.got_text());
    co_await ws.async_write(buf.data(), use_awaitable);
    buf.consume(buf.size());
  }
}

awaitable<void> accept_loop(tcp::acceptor& acceptor) {
  for (;;) {
    auto sock = co_await acceptor.async_accept(use_awaitable);
    // A session ends with an exception when the peer closes or disconnects: its normal end.
    asio::co_spawn(acceptor.get_executor(), echo_session(std::move(sock)), [](std::exception_ptr) {});
  }
}

}  // namespace

int main(int argc, char** argv) try {
  unsigned short port = 0;
  if (argc > 1) port = static_cast<unsigned short>(std::stoi(argv[1]));
  asio::io_context ctx(1);
  tcp::acceptor acceptor(ctx, {asio::ip::address_v4::loopback(), port});
  std::printf("%u\n", static_cast<unsigned>(acceptor.local_endpoint().port()));
  std::fflush(stdout);
  asio::signal_set signals(ctx, SIGINT, SIGTERM);
  signals.async_wait([&](auto, int) { ctx.stop(); });
  asio::co_spawn(ctx, accept_loop(acceptor), asio::detached);
  ctx.run();
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "beast-ws-echo: %s\n", e.what());
  return 1;
}
