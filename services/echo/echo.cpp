#include "echo.hpp"

#include <memory>
#include <vector>

#include <boost/asio/write.hpp>

#include "coserve/listeners.hpp"

namespace coserve::echo {
namespace {

// The buffer starts small, so that many quiet connections stay cheap, and doubles whenever a
// read fills it, so bulk transfers soon move large chunks per system call.
constexpr std::size_t kFirstBuffer = 2 * 1024;
constexpr std::size_t kLargestBuffer = 64 * 1024;
constexpr std::size_t kMaxDatagram = 64 * 1024;

// Reads through Asio's reactor and writes at once what the socket takes: one recv and one send
// per round trip. After a read that emptied the socket, the next read is queued without a system
// call, where a wait for readability would re-arm epoll every time; and a direct write_some
// spares the scheduler the completion of an async write that finished at once.
template <class Socket>
awaitable<void> echo_stream(Socket socket) {
  error_code ec;
  socket.non_blocking(true, ec);
  if (ec) co_return;
  std::vector<char> buffer(kFirstBuffer);
  for (;;) {
    auto [read_ec, n] = co_await socket.async_read_some(asio::buffer(buffer), use_nothrow);
    if (read_ec) co_return;  // end of stream included
    std::size_t written = socket.write_some(asio::buffer(buffer.data(), n), ec);
    if (ec == asio::error::would_block) written = 0;
    else if (ec) co_return;
    if (written < n) {
      auto [write_ec, more] = co_await asio::async_write(
          socket, asio::buffer(buffer.data() + written, n - written), use_nothrow);
      if (write_ec) co_return;
    }
    if (n == buffer.size() && buffer.size() < kLargestBuffer) buffer.resize(buffer.size() * 2);
  }
}

template <class Socket>
awaitable<void> echo_datagrams(Socket& socket) {
  std::vector<char> buffer(kMaxDatagram);
  typename Socket::endpoint_type sender;
  for (;;) {
    auto [ec, n] = co_await socket.async_receive_from(asio::buffer(buffer), sender, use_nothrow);
    if (ec == asio::error::operation_aborted || !socket.is_open()) co_return;
    if (ec) continue;  // e.g. ICMP port unreachable from an earlier reply: not our problem
    if constexpr (std::is_same_v<Socket, asio::local::datagram_protocol::socket>) {
      if (sender.path().empty()) continue;  // an unbound Unix sender cannot be answered
    }
    co_await socket.async_send_to(asio::buffer(buffer.data(), n), sender, use_nothrow);
  }
}

}  // namespace

Outcome EchoService::echo(Call& call) {
  // Filled in place rather than from a braced list, whose temporaries cost three allocations
  // more, on the path every framed benchmark measures.
  json fields = json::object();
  fields["text"] = call.get_or<std::string>("text", "");
  return Outcome::ok(std::move(fields), std::move(call.body()));
}

void EchoService::add_listeners(Listeners& listeners) {
  listeners.tcp("echo_tcp", &echo_stream<asio::ip::tcp::socket>);
  listeners.unix_stream("echo_unix", &echo_stream<asio::local::stream_protocol::socket>);
  listeners.udp("echo_udp", &echo_datagrams<asio::ip::udp::socket>);
  listeners.unix_datagram("echo_unix_dgram",
                          &echo_datagrams<asio::local::datagram_protocol::socket>);
}

}  // namespace coserve::echo
