#pragma once
// A small Beast WebSocket client and HTTP helper for the bridge tests. One coroutine at a time
// uses a WsClient (one reader, one writer: the tests read and write in turn).
//
// g++ 12 destroys some temporaries of a co_await full-expression twice: every argument of an
// awaited call here and in the tests is a named variable.
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include "coserve/asio.hpp"
#include "coserve/frame.hpp"

namespace coserve::test::web {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

inline awaitable<beast::tcp_stream> connect_tcp(std::string_view port) {
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  stream.expires_after(std::chrono::seconds(10));
  co_await stream.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"),
                                              static_cast<unsigned short>(std::stoi(std::string(port)))),
                                use_awaitable);
  stream.expires_never();
  co_return stream;
}

struct WsMessage {
  bool text = false;
  std::string data;
  json head() const {
    if (text) return json::parse(data);
    auto decoded = decode_whole_frame(data, FrameLimits{1 << 20, 64 << 20});
    return std::get<Frame>(decoded).head;
  }
  std::string body() const {
    if (text) return {};
    auto decoded = decode_whole_frame(data, FrameLimits{1 << 20, 64 << 20});
    return std::get<Frame>(decoded).body;
  }
};

class WsClient {
 public:
  explicit WsClient(beast::tcp_stream stream) : ws_(std::move(stream)) {}

  // Connects to /ws; `origin` "" sends no Origin header; `deflate` offers permessage-deflate.
  // Throws on a refused handshake. The HTTP response is left in `refusal` (whether refused or
  // not: its headers show what was negotiated).
  static awaitable<std::unique_ptr<WsClient>> open(std::string_view port,
                                                   std::string_view origin = {},
                                                   std::string_view target = "/ws",
                                                   bool deflate = false) {
    auto stream = co_await connect_tcp(port);
    auto client = std::make_unique<WsClient>(std::move(stream));
    if (deflate) {
      websocket::permessage_deflate offer;
      offer.client_enable = true;
      client->ws_.set_option(offer);
    }
    client->ws_.set_option(websocket::stream_base::decorator(
        [origin = std::string(origin)](websocket::request_type& req) {
          if (!origin.empty()) req.set(http::field::origin, origin);
        }));
    client->ws_.read_message_max(64 << 20);
    // Beast answers pings by itself while reading; count them for the keep-alive test.
    client->ws_.control_callback([c = client.get()](websocket::frame_type kind, beast::string_view) {
      if (kind == websocket::frame_type::ping) ++c->pings_seen;
    });
    beast::get_lowest_layer(client->ws_).expires_after(std::chrono::seconds(10));
    const std::string host = "127.0.0.1:" + std::string(port);
    co_await client->ws_.async_handshake(client->refusal, host, target, use_awaitable);
    beast::get_lowest_layer(client->ws_).expires_never();
    co_return client;
  }

  awaitable<void> send_text(std::string_view text) {
    ws_.text(true);
    co_await ws_.async_write(asio::buffer(text), use_awaitable);
  }
  awaitable<void> send_binary(std::string_view bytes) {
    ws_.binary(true);
    co_await ws_.async_write(asio::buffer(bytes), use_awaitable);
  }
  awaitable<void> send_request(const json& head, std::string_view body = {}) {
    if (body.empty()) {
      const std::string text = head.dump();
      co_await send_text(text);
    } else {
      auto frame = encode_frame(head, std::string(body));
      const std::string bytes = frame->head + frame->body;
      co_await send_binary(bytes);
    }
  }

  // The next message; nullopt when the server closed (close_reason() says how).
  awaitable<std::optional<WsMessage>> read(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    beast::flat_buffer buffer;
    beast::get_lowest_layer(ws_).expires_after(timeout);
    auto [ec, n] = co_await ws_.async_read(buffer, asio::as_tuple(use_awaitable));
    beast::get_lowest_layer(ws_).expires_never();
    if (ec) {
      error = ec;
      co_return std::nullopt;
    }
    co_return WsMessage{ws_.got_text(), beast::buffers_to_string(buffer.data())};
  }

  // The next message that answers a request (has an id); pushes are skipped.
  awaitable<WsMessage> next_reply() {
    for (;;) {
      auto m = co_await read();
      if (!m) throw std::runtime_error("connection closed: " + error.message());
      auto head = m->head();
      if (head.contains("id")) co_return *m;
    }
  }

  awaitable<json> call(const json& request, std::string_view body = {}) {
    co_await send_request(request, body);
    auto reply = co_await next_reply();
    co_return reply.head();
  }

  const websocket::close_reason& close_reason() const { return ws_.reason(); }
  awaitable<void> close() {
    co_await ws_.async_close(websocket::close_code::normal, asio::as_tuple(use_awaitable));
  }

  websocket::response_type refusal;
  error_code error;
  int pings_seen = 0;

 private:
  websocket::stream<beast::tcp_stream> ws_;
};

// One request on a fresh connection.
inline awaitable<http::response<http::string_body>> http_get(std::string_view port,
                                                             std::string_view target,
                                                             http::verb method = http::verb::get) {
  auto stream = co_await connect_tcp(port);
  http::request<http::string_body> req{method, target, 11};
  req.set(http::field::host, "127.0.0.1:" + std::string(port));
  req.keep_alive(false);
  stream.expires_after(std::chrono::seconds(10));
  co_await http::async_write(stream, req, use_awaitable);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  if (method == http::verb::head) parser.skip(true);
  co_await http::async_read(stream, buffer, parser, use_awaitable);
  co_return parser.release();
}

}  // namespace coserve::test::web
