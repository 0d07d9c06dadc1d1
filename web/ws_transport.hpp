#pragma once
// The framed protocol over a WebSocket (docs/protocol.md): each binary message is exactly one
// frame (8-byte header + JSON + body), each text message is a JSON-only frame. Frames the server
// sends with an empty body go out as text messages, all others as binary messages.
//
// The WebSocket framing (ws_codec.hpp) runs on the plain socket, the same way StreamTransport
// reads the framed protocol: an idle connection waits for readability holding no buffer, then
// reads without blocking; a reply the socket has room for is written at once. Control frames
// (pong, keep-alive ping, close) are queued in the transport and go out between messages.
//
// Threading: as for every Transport, one read() and one write() may run at the same time, both
// on the connection's executor. The closing handshake may outlive the transport (by at most
// the close deadline): the connection's state is shared with it.
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

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

class WsTransport final : public Transport {
 public:
  // `socket` has completed the opening handshake; `early_bytes` are bytes the client sent after
  // its upgrade request (already read). `server_stopping` is read when closing, to pick the
  // close code (1001 going away during shutdown); it must outlive the connection. A peer silent
  // for half of `idle_timeout` is pinged, one silent for all of it is closed.
  WsTransport(asio::ip::tcp::socket socket, std::string early_bytes, std::string peer,
              FrameLimits limits, Metrics& metrics, WsCounters& counters,
              const std::atomic<bool>& server_stopping, std::chrono::milliseconds idle_timeout);
  ~WsTransport() override;

  awaitable<std::optional<DecodeResult>> read() override;
  awaitable<error_code> write(std::span<const OutFrame> frames) override;
  std::size_t try_write(const EncodedFrame& frame) override;
  void stop_reading() override;
  // Starts the closing handshake (1000 normal, 1001 going away when the server is stopping,
  // 1008 policy violation after a malformed frame) bounded by a deadline; closes the socket at
  // once when a write is stuck in flight.
  void close() override;
  // Keep-alive, on the session clock's tick: no timer per connection.
  void tick(std::chrono::steady_clock::time_point now) override;

  asio::any_io_executor executor() const override { return executor_; }
  const std::string& peer() const override { return peer_; }
  std::string_view kind() const override { return "ws"; }

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
  asio::any_io_executor executor_;
  std::string peer_;
  std::vector<asio::const_buffer> buffers_;  // write()'s gather list, kept for its capacity
};

}  // namespace coserve::web
