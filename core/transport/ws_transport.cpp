#include "transport/ws_transport.hpp"

#include <array>
#include <optional>

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>

#include "coserve/log.hpp"
#include "coserve/signal.hpp"
#include "coserve/version.hpp"

namespace coserve::web {
namespace {

namespace beast = boost::beast;
namespace websocket = beast::websocket;

// How long the closing handshake may take before the socket is simply closed. Beast bounds it
// with its handshake timeout, which after the opening handshake only the closing one uses.
constexpr auto kCloseDeadline = std::chrono::seconds(2);
// The read buffer is kept between messages of a busy connection up to this capacity (no
// allocation per message); one grown by a larger message is released.
constexpr std::size_t kKeepReadBuffer = 16 * 1024;
// A message's first bytes: what an idle connection's pending read holds (see read_message).
constexpr std::size_t kFirstRead = 128;

const std::string kServerHeader = std::string("coserve/") + kVersion;

}  // namespace

template <class NextLayer>
struct BasicWsTransport<NextLayer>::Impl {
  Impl(NextLayer next, const WsSettings& s, Metrics& m, WsCounters& c,
       const std::atomic<bool>& stopping)
      : ws(std::move(next)),
        settings(s),
        metrics(m),
        counters(c),
        server_stopping(stopping),
        delivered(ws.get_executor()) {}

  websocket::stream<NextLayer> ws;
  WsSettings settings;
  Metrics& metrics;
  WsCounters& counters;
  const std::atomic<bool>& server_stopping;

  // --- the reader (read_message) hands decoded frames to read() ---
  beast::flat_buffer in;                // the message being read, reused
  std::array<char, kFirstRead> first;   // the idle read's buffer (see read_message)
  std::optional<DecodeResult> ready;    // decoded, not yet taken by read()
  std::optional<DecodeResult> next;     // decoded while `ready` was still there: the reader
  bool next_fatal = false;              //   pauses until read() takes `ready`
  bool reader_ended = false;            // no more messages: the stream failed or closed
  bool read_waiting = false;            // read() waits for a frame
  Signal delivered;                     // reader → read(): `ready` set, or reader_ended

  bool reading_stopped = false;  // stop_reading(): read() returns nullopt from now on
  bool writing = false;          // write() is in flight
  bool closed = false;           // close() was called
  bool bad_frame = false;        // a binary message was not a frame: close with 1008

  void close_socket() {
    error_code ignored;
    auto& socket = beast::get_lowest_layer(ws);
    socket.shutdown(asio::socket_base::shutdown_both, ignored);
    socket.close(ignored);
  }

  DecodeResult decode() {
    auto data = in.cdata();
    std::string_view bytes(static_cast<const char*>(data.data()), data.size());
    metrics.bytes_in.inc(bytes.size());
    if (ws.got_text()) {
      // Beast has checked that the text is UTF-8.
      counters.messages_in_text.inc();
      return decode_json_only(bytes, settings.limits);
    }
    counters.messages_in_binary.inc();
    auto result = decode_whole_frame(bytes, settings.limits);
    if (auto* error = std::get_if<DecodeError>(&result); error && error->code == errc::bad_frame) {
      // Message boundaries are intact, so TCP's rule would keep going; but a binary message
      // that is not a frame means the client does not speak the protocol: reply, then 1008.
      error->fatal = true;
      bad_frame = true;
    }
    return result;
  }
};

namespace {

// The only reader of the stream: a message at a time, decoded, handed to read(). A chain of
// Beast reads and their completion handlers rather than a coroutine of its own (the session's
// reader is the connection's one reader coroutine), so an idle connection holds nothing but
// Beast's pending read. It keeps Beast reading (so pongs, pings and the peer's close frame are
// seen) while the session is busy with the frame before, reads ahead by one message at most
// (then pauses until read() takes the frame before: at most two frames held), and ends when the
// stream fails or closes, or after a fatal frame.
template <class Impl>
void read_message(const std::shared_ptr<Impl>& impl);

template <class Impl>
void end_reading(Impl& s) {
  s.reader_ended = true;
  if (s.read_waiting) s.delivered.notify();
}

template <class Impl>
void deliver(const std::shared_ptr<Impl>& impl, DecodeResult result, bool fatal) {
  auto& s = *impl;
  s.ready = std::move(result);
  if (s.read_waiting) s.delivered.notify();
  if (fatal) {
    end_reading(s);  // the session closes after its error reply: nothing more to read
    return;
  }
  read_message(impl);
}

// Reads the rest of a message whose first bytes are in `in`, then decodes it.
template <class Impl>
void finish_message(const std::shared_ptr<Impl>& impl, error_code ec) {
  auto& s = *impl;
  if (!ec && !s.closed && !s.ws.is_message_done()) {
    // Beast enforces read_message_max over all the reads of a message.
    const std::size_t max = s.ws.read_message_max();
    s.ws.async_read_some(s.in, max - std::min(max, s.in.size()),
                         [impl](error_code ec, std::size_t) { finish_message(impl, ec); });
    return;
  }
  if (ec || s.closed) {
    if (ec && ec != websocket::error::closed && ec != asio::error::operation_aborted)
      log::debug("ws: read ended: {}", ec.message());
    end_reading(s);
    return;
  }
  DecodeResult result = s.decode();
  s.in.clear();
  if (s.in.capacity() > kKeepReadBuffer) s.in.shrink_to_fit();
  const bool fatal = std::holds_alternative<DecodeError>(result) &&
                     std::get<DecodeError>(result).fatal;
  if (s.ready) {
    s.next = std::move(result);
    s.next_fatal = fatal;
    return;  // read() delivers it, and reads on, once it takes `ready`
  }
  deliver(impl, std::move(result), fatal);
}

template <class Impl>
void read_message(const std::shared_ptr<Impl>& impl) {
  auto& s = *impl;
  if (s.closed) {
    end_reading(s);
    return;
  }
  // The wait for a message reads into a small fixed buffer: async_read would prepare 1.5 KiB
  // of the dynamic buffer before anything arrives, and every idle connection would hold it.
  s.ws.async_read_some(asio::buffer(s.first), [impl](error_code ec, std::size_t n) {
    auto& s = *impl;
    if (!ec) {
      asio::buffer_copy(s.in.prepare(n), asio::buffer(s.first.data(), n));
      s.in.commit(n);
    }
    finish_message(impl, ec);
  });
}

// The closing handshake, holding the stream after the transport is gone. Beast sends the close
// frame, reads (and drops) what comes before the peer's, ends the TCP stream, or closes the
// socket at the deadline.
template <class Impl>
awaitable<void> run_close(std::shared_ptr<Impl> impl, websocket::close_reason reason) {
  auto [ec] = co_await impl->ws.async_close(reason, use_nothrow);
  if (ec && ec != asio::error::operation_aborted)
    log::debug("ws: closing handshake ended: {}", ec.message());
  impl->close_socket();
}

}  // namespace

template <class NextLayer>
BasicWsTransport<NextLayer>::BasicWsTransport(NextLayer next, std::string peer,
                                              const WsSettings& settings, Metrics& metrics,
                                              WsCounters& counters,
                                              const std::atomic<bool>& server_stopping)
    : impl_(std::make_shared<Impl>(std::move(next), settings, metrics, counters,
                                   server_stopping)),
      executor_(impl_->ws.get_executor()),
      peer_(std::move(peer)) {
  auto& ws = impl_->ws;
  // The largest message is the largest frame: 8-byte header + JSON + body.
  ws.read_message_max(kFrameHeaderSize + settings.limits.max_json + settings.limits.max_body);
  // One frame per message, written straight from the encoded frame's buffers.
  ws.auto_fragment(false);
  websocket::stream_base::timeout timeouts;
  timeouts.handshake_timeout = settings.handshake_timeout;
  timeouts.idle_timeout = settings.idle_timeout;
  timeouts.keep_alive_pings = true;
  ws.set_option(timeouts);
  if (settings.deflate) {
    websocket::permessage_deflate deflate;
    deflate.server_enable = true;
    ws.set_option(deflate);
  }
  ws.set_option(websocket::stream_base::decorator(
      [](websocket::response_type& res) { res.set(beast::http::field::server, kServerHeader); }));
}

template <class NextLayer>
BasicWsTransport<NextLayer>::~BasicWsTransport() {
  // The session always closes its transport; a runtime torn down mid-session, or a failed
  // handshake, gets here: just the socket, and the reader let go.
  auto& impl = *impl_;
  if (!impl.closed) {
    impl.closed = true;
    impl.close_socket();
    impl.next.reset();
  }
}

template <class NextLayer>
awaitable<error_code> BasicWsTransport<NextLayer>::accept(const Request& req) {
  auto [ec] = co_await impl_->ws.async_accept(req, use_nothrow);
  if (ec) co_return ec;
  // From now on Beast's handshake timeout bounds only the closing handshake.
  websocket::stream_base::timeout timeouts;
  timeouts.handshake_timeout =
      std::min<std::chrono::milliseconds>(impl_->settings.handshake_timeout, kCloseDeadline);
  timeouts.idle_timeout = impl_->settings.idle_timeout;
  timeouts.keep_alive_pings = true;
  impl_->ws.set_option(timeouts);
  read_message(impl_);
  co_return error_code{};
}

template <class NextLayer>
awaitable<std::optional<DecodeResult>> BasicWsTransport<NextLayer>::read() {
  auto& s = *impl_;
  for (;;) {
    if (s.reading_stopped || s.closed) co_return std::nullopt;
    if (s.ready) {
      std::optional<DecodeResult> result = std::move(s.ready);
      s.ready.reset();
      if (s.next) {
        // The reader paused with the frame after this one: hand it over, read on.
        DecodeResult next = std::move(*s.next);
        s.next.reset();
        deliver(impl_, std::move(next), s.next_fatal);
      }
      co_return result;
    }
    if (s.reader_ended) co_return std::nullopt;
    s.read_waiting = true;
    co_await s.delivered.wait();
    s.read_waiting = false;
  }
}

template <class NextLayer>
awaitable<error_code> BasicWsTransport<NextLayer>::write(std::span<const OutFrame> frames) {
  auto& s = *impl_;
  // Nothing may follow a close frame.
  if (s.closed || !s.ws.is_open()) co_return asio::error::operation_aborted;
  s.writing = true;
  error_code ec;
  for (auto& frame : frames) {
    std::size_t n = 0;
    if (frame->body.empty()) {
      s.ws.text(true);
      const auto text = frame->json_text();
      std::tie(ec, n) = co_await s.ws.async_write(asio::buffer(text.data(), text.size()),
                                                  use_nothrow);
      s.counters.messages_out_text.inc();
    } else {
      s.ws.binary(true);
      const std::array<asio::const_buffer, 2> parts{asio::buffer(frame->head),
                                                    asio::buffer(frame->body)};
      std::tie(ec, n) = co_await s.ws.async_write(parts, use_nothrow);
      s.counters.messages_out_binary.inc();
    }
    s.metrics.bytes_out.inc(n);
    if (ec) break;
  }
  s.writing = false;
  co_return ec;
}

template <class NextLayer>
void BasicWsTransport<NextLayer>::stop_reading() {
  auto& s = *impl_;
  s.reading_stopped = true;
  if (s.read_waiting) s.delivered.notify();
}

template <class NextLayer>
void BasicWsTransport<NextLayer>::close() {
  auto& s = *impl_;
  if (s.closed) return;
  stop_reading();
  s.closed = true;
  s.next.reset();  // a frame nobody takes; a paused reader stays ended
  if (!beast::get_lowest_layer(s.ws).is_open()) return;
  if (s.writing) {
    // A write stuck on a slow peer cannot be followed by a close frame.
    s.close_socket();
    return;
  }
  // Not open: Beast is answering the peer's close frame, or failed the connection (and sent
  // its close frame) itself; it ends the TCP stream, bounded by the close deadline.
  if (!s.ws.is_open()) return;
  websocket::close_reason reason;
  if (s.bad_frame) {
    s.counters.policy_closes.inc();
    reason = {websocket::close_code::policy_error, "bad frame"};
  } else if (s.server_stopping.load(std::memory_order_relaxed)) {
    reason = {websocket::close_code::going_away, "server shutting down"};
  } else {
    reason = websocket::close_code::normal;
  }
  asio::co_spawn(executor_, run_close(impl_, reason), [peer = peer_](std::exception_ptr e) {
    if (e) log::error("ws {}: close ended with an exception", peer);
  });
}

template class BasicWsTransport<PrefixedStream<asio::ip::tcp::socket>>;

}  // namespace coserve::web
