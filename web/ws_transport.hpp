#pragma once
// The framed protocol over a WebSocket (docs/protocol.md): each binary message is exactly one
// frame (8-byte header + JSON + body), each text message is a JSON-only frame. Frames the server
// sends with an empty body go out as text messages, all others as binary messages.
//
// Threading: as for every Transport, one read() and one write() may run at the same time, both
// on the connection's executor. A Beast WebSocket read that is cancelled fails the whole stream
// (no close frame could be sent after it), so a background reader coroutine owns the read side
// and hands whole messages to read() through a one-slot inbox; read() itself may end at any
// time (stop_reading). The reader and the closing handshake share the stream with the transport (Impl) and
// may outlive it by the close deadline.
#include <atomic>
#include <memory>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/websocket/stream.hpp>

#include "coserve/metrics.hpp"
#include "coserve/transport.hpp"

namespace coserve::web {

// Over a plain socket, not beast::tcp_stream: the transport needs no per-operation timers (see
// tick()), and an idle connection stays smaller without them.
using WsStream = boost::beast::websocket::stream<asio::ip::tcp::socket>;

// Counters of the WebSocket bridge (created once by WebService, valid for the process).
struct WsCounters {
  Counter& messages_in_text;
  Counter& messages_in_binary;
  Counter& messages_out_text;
  Counter& messages_out_binary;
  Counter& policy_closes;  // closed with 1008 after a message that is not a frame
};

class WsTransport final : public Transport {
 public:
  // `ws` has completed its handshake. `server_stopping` is read when closing, to pick the close
  // code (1001 going away during shutdown); it must outlive the connection. A peer silent for
  // half of `idle_timeout` is pinged, one silent for all of it is closed.
  WsTransport(WsStream ws, std::string peer, FrameLimits limits, Metrics& metrics,
              WsCounters& counters, const std::atomic<bool>& server_stopping,
              std::chrono::milliseconds idle_timeout);
  ~WsTransport() override;

  awaitable<std::optional<DecodeResult>> read() override;
  awaitable<error_code> write(std::span<const OutFrame> frames) override;
  void stop_reading() override;
  // Starts the closing handshake (1000 normal, 1001 going away when the server is stopping,
  // 1008 policy violation after a malformed frame) bounded by a deadline; closes the socket at
  // once when a write is stuck in flight.
  void close() override;
  // Keep-alive: Beast's own idle timer would be re-armed on every message; the session's
  // clock's tick (SessionClock) is enough.
  void tick(std::chrono::steady_clock::time_point now) override;

  asio::any_io_executor executor() const override { return executor_; }
  const std::string& peer() const override { return peer_; }
  std::string_view kind() const override { return "ws"; }

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
  asio::any_io_executor executor_;
  std::string peer_;
};

}  // namespace coserve::web
