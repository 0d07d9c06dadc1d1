#pragma once
// The framed protocol over a WebSocket (docs/protocol.md): each binary message is exactly one
// frame (8-byte header + JSON + body), each text message is a JSON-only frame. Frames the server
// sends with an empty body go out as text messages, all others as binary messages.
//
// The WebSocket itself is Beast's websocket::stream: framing, masking, UTF-8 checks, control
// frames (pongs, keep-alive pings, the closing handshake), timeouts and permessage-deflate are
// its business. This transport adds the protocol's frame on top:
// - one reader, a chain of Beast reads and their handlers (not a coroutine: the session's reader
//   is the connection's one reader coroutine), is the only caller of the stream's reads. It
//   decodes each message into a frame and hands it to read(); it reads ahead by one message at
//   most (a second frame waits until the first is taken), so it holds at most two frames.
//   A Beast read cannot be cancelled without breaking the stream, so stop_reading() ends read()
//   (the hand-over) and never the stream's read: the session can still write, and close with a
//   close frame, afterwards.
// - write() is the only writer of messages (the session's writer coroutine calls it); Beast
//   interleaves its own control frames.
//
// Threading: as for every Transport, one read() and one write() may run at the same time, both
// on the connection's executor. The closing handshake may outlive the transport (by at most the
// close deadline): the stream is shared with it.
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include <boost/asio/buffer.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/role.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/websocket/teardown.hpp>

#include "coserve/metrics.hpp"
#include "coserve/transport.hpp"

namespace coserve::web {

// Counters of the WebSocket bridge (created once by WebService, valid for the process).
struct WsCounters {
  Counter& messages_in_text;
  Counter& messages_in_binary;
  Counter& messages_out_text;
  Counter& messages_out_binary;
  Counter& policy_closes;  // closed with 1008 after a message that is not a frame
};

struct WsSettings {
  FrameLimits limits;
  std::chrono::milliseconds handshake_timeout{10000};  // the opening handshake
  // A peer silent for half of it is pinged, one silent for all of it is disconnected.
  std::chrono::milliseconds idle_timeout{60000};
  bool deflate = false;  // offer permessage-deflate to clients that ask for it
};

// A stream whose first reads return bytes already read from `Next` (by the HTTP parser, after
// the upgrade request: a client may send its first message in the same packet), then reads
// from `Next`. Writes go straight to `Next`. Beast's websocket::stream takes it as its next
// layer; the hand-over costs one branch per read.
template <class Next>
class PrefixedStream {
 public:
  using next_layer_type = Next;
  using executor_type = typename Next::executor_type;

  template <class... Args>
  explicit PrefixedStream(std::string prefix, Args&&... args)
      : next_(std::forward<Args>(args)...), prefix_(std::move(prefix)) {}

  executor_type get_executor() noexcept { return next_.get_executor(); }
  Next& next_layer() noexcept { return next_; }
  const Next& next_layer() const noexcept { return next_; }

  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    return asio::async_initiate<Token, void(error_code, std::size_t)>(
        [this](auto handler, const MutableBuffers& to) {
          if (prefix_.empty()) {
            next_.async_read_some(to, std::move(handler));
            return;
          }
          const std::size_t n = asio::buffer_copy(to, asio::buffer(prefix_) + offset_);
          offset_ += n;
          if (offset_ == prefix_.size()) {
            std::string().swap(prefix_);
            offset_ = 0;
          }
          // Never complete inside the initiating call.
          asio::post(next_.get_executor(),
                     boost::beast::bind_front_handler(std::move(handler), error_code{}, n));
        },
        token, buffers);
  }

  template <class ConstBuffers, class Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    return next_.async_write_some(buffers, std::forward<Token>(token));
  }

  // The WebSocket closing handshake ends the TCP stream of the layer below.
  friend void teardown(boost::beast::role_type role, PrefixedStream& stream, error_code& ec) {
    using boost::beast::websocket::teardown;
    teardown(role, stream.next_, ec);
  }
  template <class Handler>
  friend void async_teardown(boost::beast::role_type role, PrefixedStream& stream,
                             Handler&& handler) {
    using boost::beast::websocket::async_teardown;
    async_teardown(role, stream.next_, std::forward<Handler>(handler));
  }

 private:
  Next next_;
  std::string prefix_;
  std::size_t offset_ = 0;
};

// A WebSocket transport over `NextLayer` (PrefixedStream<tcp::socket> today; a TLS stream below
// the PrefixedStream for an HTTPS listener later). The plain socket, not beast::tcp_stream:
// Beast's websocket::stream keeps its own timer for the handshake, idle and close timeouts, so
// a tcp_stream's two timers and its per-operation bookkeeping would be paid for nothing, on
// every idle connection and every message. Defined for the layers instantiated in
// ws_transport.cpp.
template <class NextLayer>
class BasicWsTransport final : public Transport {
 public:
  using Request = boost::beast::http::request<boost::beast::http::string_body>;

  // `server_stopping` is read when closing, to pick the close code (1001 going away during
  // shutdown); it and `counters` must outlive the connection.
  BasicWsTransport(NextLayer next, std::string peer, const WsSettings& settings, Metrics& metrics,
                   WsCounters& counters, const std::atomic<bool>& server_stopping);
  ~BasicWsTransport() override;

  // The opening handshake: answers `req` (already read and checked by the HTTP side) with
  // 101, or with 400/426 when Beast refuses it (the error says which). Call it once, first.
  awaitable<error_code> accept(const Request& req);

  awaitable<std::optional<DecodeResult>> read() override;
  awaitable<error_code> write(std::span<const OutFrame> frames) override;
  void stop_reading() override;
  // Starts the closing handshake (1000 normal, 1001 going away when the server is stopping,
  // 1008 policy violation after a message that is not a frame) bounded by the close deadline;
  // closes the socket at once when a write is stuck in flight.
  void close() override;

  asio::any_io_executor executor() const override { return executor_; }
  const std::string& peer() const override { return peer_; }
  std::string_view kind() const override { return "ws"; }

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
  asio::any_io_executor executor_;
  std::string peer_;
};

using WsTransport = BasicWsTransport<PrefixedStream<asio::ip::tcp::socket>>;

}  // namespace coserve::web
