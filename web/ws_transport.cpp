#include "ws_transport.hpp"

#include <array>
#include <chrono>
#include <optional>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/websocket.hpp>

#include "coserve/log.hpp"
#include "coserve/signal.hpp"

namespace coserve::web {
namespace beast = boost::beast;
namespace websocket = beast::websocket;

namespace {

// How long the closing handshake may take before the socket is simply closed.
constexpr auto kCloseDeadline = std::chrono::seconds(2);

// Beast fails the whole WebSocket stream when one of its operations is cancelled, so its
// operations are started without the coroutine's cancellation slot.
auto uncancellable() { return asio::bind_cancellation_slot(asio::cancellation_slot(), use_nothrow); }

struct WsMessage {
  bool text = false;
  std::string data;
};

}  // namespace

struct WsTransport::Impl {
  Impl(WsStream stream, FrameLimits frame_limits, Metrics& m, WsCounters& c,
       const std::atomic<bool>& stopping, std::chrono::milliseconds idle)
      : ws(std::move(stream)),
        idle_timeout(idle),
        last_heard(std::chrono::steady_clock::now()),
        ready(ws.get_executor()),
        space(ws.get_executor()),
        limits(frame_limits),
        metrics(m),
        counters(c),
        server_stopping(stopping) {}

  WsStream ws;
  std::chrono::milliseconds idle_timeout;
  std::chrono::steady_clock::time_point last_heard;  // last message or pong from the peer
  bool pinging = false;     // a keep-alive ping is in flight
  // One message handed from the reader to read(): reading ahead stays bounded, so a session
  // that stops reading (its out-queue is full) stops the socket being read too.
  std::optional<WsMessage> inbox;
  error_code read_error;    // set once the reader ended
  bool reader_done = false;
  bool reading_stopped = false;  // stop_reading(): read() returns nullopt from now on
  Signal ready;             // inbox filled or reader done
  Signal space;             // inbox emptied or transport closing
  FrameLimits limits;
  Metrics& metrics;
  WsCounters& counters;
  const std::atomic<bool>& server_stopping;
  bool writing = false;     // a write is in flight
  bool closing = false;     // close() was called
  bool bad_frame = false;   // a binary message was not a frame: close with 1008
};

namespace {

// Owns the read side: one whole message at a time into the inbox. Ends when the stream fails or
// closes, or when the transport closes.
awaitable<void> read_messages(std::shared_ptr<WsTransport::Impl> impl) {
  for (;;) {
    while (impl->inbox && !impl->closing) co_await impl->space.wait();
    if (impl->closing) break;
    WsMessage message;
    auto buffer = asio::dynamic_buffer(message.data, impl->ws.read_message_max());
    auto [ec, n] = co_await impl->ws.async_read(buffer, uncancellable());
    if (ec) {
      if (ec == websocket::error::message_too_big)
        log::debug("ws: message over {} bytes, closed with 1009", impl->ws.read_message_max());
      impl->read_error = ec;
      break;
    }
    impl->metrics.bytes_in.inc(n);
    impl->last_heard = std::chrono::steady_clock::now();
    message.text = impl->ws.got_text();
    (message.text ? impl->counters.messages_in_text : impl->counters.messages_in_binary).inc();
    impl->inbox = std::move(message);
    impl->ready.notify();
  }
  impl->reader_done = true;
  impl->ready.notify();
}

awaitable<void> close_gracefully(std::shared_ptr<WsTransport::Impl> impl,
                                 websocket::close_reason reason) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer deadline(impl->ws.get_executor(), kCloseDeadline);
  co_await (impl->ws.async_close(reason, use_nothrow) || deadline.async_wait(use_nothrow));
  error_code ignored;
  impl->ws.next_layer().close(ignored);
}

}  // namespace

WsTransport::WsTransport(WsStream ws, std::string peer, FrameLimits limits, Metrics& metrics,
                         WsCounters& counters, const std::atomic<bool>& server_stopping,
                         std::chrono::milliseconds idle_timeout)
    : impl_(std::make_shared<Impl>(std::move(ws), limits, metrics, counters, server_stopping,
                                   idle_timeout)),
      executor_(impl_->ws.get_executor()),
      peer_(std::move(peer)) {
  // A pong is a sign of life too. The callback lives in the stream, which Impl owns.
  impl_->ws.control_callback([impl = impl_.get()](websocket::frame_type kind, beast::string_view) {
    if (kind == websocket::frame_type::pong) impl->last_heard = std::chrono::steady_clock::now();
  });
  asio::co_spawn(executor_, read_messages(impl_), [peer = peer_](std::exception_ptr e) {
    if (e) log::error("ws {}: reader ended with an exception", peer);
  });
}

WsTransport::~WsTransport() {
  // The session always closes its transport; this is for paths that end early.
  if (!impl_->closing) close();
}

awaitable<std::optional<DecodeResult>> WsTransport::read() {
  auto& impl = *impl_;
  while (!impl.inbox && !impl.reader_done && !impl.closing && !impl.reading_stopped) {
    auto ec = co_await impl.ready.wait();
    if (ec) co_return std::nullopt;  // cancelled by the session
  }
  if (!impl.inbox || impl.closing || impl.reading_stopped) co_return std::nullopt;
  WsMessage message = std::move(*impl.inbox);
  impl.inbox.reset();
  impl.space.notify();
  if (message.text) co_return decode_json_only(message.data, impl_->limits);
  DecodeResult result = decode_whole_frame(message.data, impl_->limits);
  if (auto* error = std::get_if<DecodeError>(&result); error && error->code == errc::bad_frame) {
    // Message boundaries are intact, so TCP's rule would keep going; but a binary message that
    // is not a frame means the client does not speak the protocol: reply, then close with 1008.
    error->fatal = true;
    impl_->bad_frame = true;
  }
  co_return result;
}

awaitable<error_code> WsTransport::write(std::span<const OutFrame> frames) {
  auto& impl = *impl_;
  if (impl.closing) co_return asio::error::operation_aborted;
  impl.writing = true;
  error_code ec;
  for (auto& frame : frames) {
    std::size_t n = 0;
    if (frame->body.empty()) {
      impl.ws.text(true);
      std::tie(ec, n) = co_await impl.ws.async_write(asio::buffer(frame->json_text()), uncancellable());
      impl.counters.messages_out_text.inc();
    } else {
      impl.ws.binary(true);
      std::array<asio::const_buffer, 2> buffers{asio::buffer(frame->head), asio::buffer(frame->body)};
      std::tie(ec, n) = co_await impl.ws.async_write(buffers, uncancellable());
      impl.counters.messages_out_binary.inc();
    }
    impl.metrics.bytes_out.inc(n);
    if (ec) break;
  }
  impl.writing = false;
  co_return ec;
}

void WsTransport::stop_reading() {
  // The reader goes on (a Beast read cannot be cancelled without failing the stream); its
  // messages are just not taken any more.
  impl_->reading_stopped = true;
  impl_->ready.notify();
}

void WsTransport::close() {
  auto& impl = *impl_;
  if (impl.closing) return;
  impl.closing = true;
  // Wakes a blocked read() and stops the reader handing over more messages.
  impl.ready.notify();
  impl.space.notify();
  if (impl.writing || !impl.ws.is_open()) {
    // A write stuck on a slow peer cannot be followed by a close frame; the peer closed already.
    error_code ignored;
    impl.ws.next_layer().close(ignored);
    return;
  }
  websocket::close_reason reason(websocket::close_code::normal);
  if (impl.bad_frame) {
    reason = websocket::close_reason(websocket::close_code::policy_error, "bad frame");
    impl.counters.policy_closes.inc();
  } else if (impl.server_stopping.load(std::memory_order_relaxed)) {
    reason = websocket::close_reason(websocket::close_code::going_away, "server shutting down");
  }
  asio::co_spawn(executor_, close_gracefully(impl_, reason), [peer = peer_](std::exception_ptr e) {
    if (e) log::error("ws {}: close ended with an exception", peer);
  });
}

void WsTransport::tick(std::chrono::steady_clock::time_point now) {
  auto& impl = *impl_;
  if (impl.closing || impl.idle_timeout.count() <= 0 || !impl.ws.is_open()) return;
  auto silent = now - impl.last_heard;
  if (silent >= impl.idle_timeout) {
    log::info("ws {}: no answer to keep-alive pings, closing", peer_);
    error_code ignored;
    impl.ws.next_layer().close(ignored);
  } else if (silent >= impl.idle_timeout / 2 && !impl.pinging) {
    // Beast queues a ping behind a write in flight; a failure shows up on the reader.
    impl.pinging = true;
    impl.ws.async_ping({}, [impl = impl_](error_code) { impl->pinging = false; });
  }
}

}  // namespace coserve::web
