#include "ws_transport.hpp"

#include <array>
#include <cstring>
#include <optional>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "coserve/log.hpp"
#include "coserve/signal.hpp"
#include "ws_codec.hpp"

namespace coserve::web {
namespace {

using ws::CloseCode;
using ws::Opcode;

// How long the closing handshake may take before the socket is simply closed.
constexpr auto kCloseDeadline = std::chrono::seconds(2);
// Reads ask for at least this much room; a frame streaming in asks for all it still needs.
constexpr std::size_t kReadSize = 4096;
// Control frames (pongs) waiting to be sent, beyond which the peer's frames are not parsed:
// a client that sends pings and never reads cannot grow the queue.
constexpr std::size_t kMaxPendingControl = 4096;

// Bytes read from the socket and not yet parsed. Released whenever it is empty and the
// connection waits, so an idle WebSocket holds no buffer.
class InBuffer {
 public:
  std::string_view unread() const { return {data_.get() + begin_, end_ - begin_}; }
  char* unread_data() { return data_.get() + begin_; }
  void consume(std::size_t n) {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
  }
  bool empty() const { return begin_ == end_; }
  // Room for at least `min_free` more bytes after the unread ones.
  asio::mutable_buffer prepare(std::size_t min_free) {
    if (capacity_ - end_ < min_free) {
      std::size_t unread = end_ - begin_;
      if (capacity_ - unread >= min_free && begin_ > 0) {
        std::memmove(data_.get(), data_.get() + begin_, unread);
      } else {
        std::size_t capacity = std::max(unread + min_free, 2 * capacity_);
        auto bigger = std::make_unique_for_overwrite<char[]>(capacity);
        if (unread > 0) std::memcpy(bigger.get(), data_.get() + begin_, unread);
        data_ = std::move(bigger);
        capacity_ = capacity;
      }
      begin_ = 0;
      end_ = unread;
    }
    return asio::buffer(data_.get() + end_, capacity_ - end_);
  }
  void commit(std::size_t n) { end_ += n; }
  void release_if_empty() {
    if (!empty() || !data_) return;
    data_.reset();
    capacity_ = 0;
  }

 private:
  std::unique_ptr<char[]> data_;
  std::size_t capacity_ = 0, begin_ = 0, end_ = 0;
};

}  // namespace

struct WsTransport::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::ip::tcp::socket s, FrameLimits frame_limits, Metrics& m, WsCounters& c,
       const std::atomic<bool>& stopping, std::chrono::milliseconds idle)
      : socket(std::move(s)),
        limits(frame_limits),
        max_message(kFrameHeaderSize + std::uint64_t{frame_limits.max_json} + frame_limits.max_body),
        metrics(m),
        counters(c),
        server_stopping(stopping),
        idle_timeout(idle),
        last_heard(std::chrono::steady_clock::now()),
        flushed(socket.get_executor()) {}

  asio::ip::tcp::socket socket;
  FrameLimits limits;
  std::uint64_t max_message;  // the largest frame: 8-byte header + JSON + body
  Metrics& metrics;
  WsCounters& counters;
  const std::atomic<bool>& server_stopping;
  std::chrono::milliseconds idle_timeout;
  std::chrono::steady_clock::time_point last_heard;  // last frame from the peer
  bool pinging = false;  // a keep-alive ping is out, no frame heard since

  // --- read side ---
  InBuffer in;
  std::string fragments;  // a fragmented message so far
  bool in_message = false, message_is_text = false;
  asio::cancellation_signal stop;  // cancels the pending read (stop_reading, close)
  bool reading_stopped = false;

  // --- write side ---
  // Bytes that go out before any further message: control frames, and the tail of a reply
  // try_write could only partly send. Sent by write() when one runs, else by flush().
  std::string pending;
  bool writing = false;   // write() is in flight
  bool flushing = false;  // flush() is in flight
  std::chrono::steady_clock::time_point flush_started;
  Signal flushed;         // flush() or write() ended: `pending` may have room

  // --- closing handshake ---
  std::optional<CloseCode> close_code;  // set once the close frame is queued: nothing after it
  bool close_received = false;
  bool closed = false;  // close() was called
  bool bad_frame = false;  // a binary message was not a frame: 1008

  enum class Step { message, need_more, ended };
  struct Message {
    bool text = false;
    std::string_view data;
  };
  Step next_message(Message& out, std::size_t& wanted);
  Step next_decoded(std::optional<DecodeResult>& out, std::size_t& wanted);
  void fail(CloseCode code, const char* why);
  void queue_control(std::string frame);
  void send_close(CloseCode code, std::string_view reason);
  void start_flush();
  // A reassembled message is decoded (copied out): its buffer goes, as large as it was.
  void release_fragments() {
    if (!fragments.empty()) std::string().swap(fragments);
  }
  void close_socket() {
    error_code ignored;
    socket.shutdown(asio::socket_base::shutdown_both, ignored);
    socket.close(ignored);
  }
};

namespace {

awaitable<void> flush(std::shared_ptr<WsTransport::Impl> impl) {
  std::string sending;
  while (!impl->pending.empty() && impl->socket.is_open()) {
    sending.swap(impl->pending);
    impl->pending.clear();
    auto [ec, n] = co_await asio::async_write(impl->socket, asio::buffer(sending), use_nothrow);
    impl->metrics.bytes_out.inc(n);
    if (ec) {
      impl->close_socket();
      impl->pending.clear();
    }
    sending.clear();
  }
  impl->flushing = false;
  impl->flushed.notify();
}

// Sends what is queued (the close frame last) and the end of stream, then waits for the peer's
// close frame or its end of stream, discarding anything before it.
awaitable<void> await_peer_close(std::shared_ptr<WsTransport::Impl> impl) {
  while (impl->flushing) co_await impl->flushed.wait();
  if (impl->close_received || !impl->socket.is_open()) co_return;
  // Nothing follows the close frame: a client waiting for the end of the stream has it now.
  error_code ignored;
  impl->socket.shutdown(asio::socket_base::shutdown_send, ignored);
  for (;;) {
    for (;;) {
      auto unread = impl->in.unread();
      auto head = ws::parse_head(unread, impl->max_message);
      if (head.error) co_return;
      if (!head.frame || unread.size() < head.frame->head_size + head.frame->payload_size) break;
      if (head.frame->op == Opcode::close) co_return;
      impl->in.consume(head.frame->head_size + head.frame->payload_size);
    }
    auto space = impl->in.prepare(kReadSize);
    auto [ec, n] = co_await impl->socket.async_read_some(space, use_nothrow);
    if (ec) co_return;
    impl->in.commit(n);
  }
}

// The end of the closing handshake: the close frame is queued; the socket closes once the peer
// answered (or at once when the peer began it), or at the deadline.
awaitable<void> finish_close(std::shared_ptr<WsTransport::Impl> impl) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer deadline(impl->socket.get_executor(), kCloseDeadline);
  co_await (await_peer_close(impl) || deadline.async_wait(use_nothrow));
  impl->close_socket();
}

}  // namespace

void WsTransport::Impl::queue_control(std::string frame) {
  pending += frame;
  if (writing || flushing || !socket.is_open()) return;  // they send it
  error_code ec;
  std::size_t n = socket.write_some(asio::buffer(pending), ec);
  if (ec == asio::error::would_block) n = 0;
  else if (ec) return;  // the reader or writer sees the failure
  metrics.bytes_out.inc(n);
  pending.erase(0, n);
  if (!pending.empty()) start_flush();
}

void WsTransport::Impl::start_flush() {
  flushing = true;
  flush_started = std::chrono::steady_clock::now();
  asio::co_spawn(socket.get_executor(), flush(shared_from_this()), [](std::exception_ptr e) {
    if (e) log::error("ws: flush ended with an exception");
  });
}

void WsTransport::Impl::send_close(CloseCode code, std::string_view reason) {
  if (close_code) return;
  close_code = code;
  queue_control(ws::close_frame(code, reason));
}

void WsTransport::Impl::fail(CloseCode code, const char* why) {
  log::debug("ws: {}, closing with {}", why, static_cast<int>(code));
  send_close(code, why);
}

// Parses buffered frames up to the next whole message, answering control frames on the way.
// `wanted` is the buffered size a frame still being read needs, when known.
WsTransport::Impl::Step WsTransport::Impl::next_message(Message& out, std::size_t& wanted) {
  for (;;) {
    auto unread = in.unread();
    const std::uint64_t room = max_message - (in_message ? fragments.size() : 0);
    auto head = ws::parse_head(unread, room);
    if (head.error) {
      fail(*head.error, head.why);
      return Step::ended;
    }
    if (!head.frame) return Step::need_more;
    const auto& frame = *head.frame;
    const std::size_t total = frame.head_size + static_cast<std::size_t>(frame.payload_size);
    if (unread.size() < total) {
      wanted = total;
      return Step::need_more;
    }
    char* payload = in.unread_data() + frame.head_size;
    const std::size_t size = static_cast<std::size_t>(frame.payload_size);
    ws::unmask(payload, size, frame.mask);
    std::string_view data(payload, size);
    in.consume(total);  // the bytes stay in place until the buffer is next prepared
    last_heard = std::chrono::steady_clock::now();
    pinging = false;
    switch (frame.op) {
      case Opcode::ping:
        queue_control(ws::control_frame(Opcode::pong, data));
        continue;
      case Opcode::pong:
        continue;
      case Opcode::close: {
        close_received = true;
        auto bad = ws::check_close_payload(data);
        // Answer with the peer's own code, as RFC 6455 §5.5.1 suggests.
        auto code = bad            ? *bad
                    : data.empty() ? CloseCode::normal
                                   : static_cast<CloseCode>((static_cast<unsigned char>(data[0]) << 8) |
                                                            static_cast<unsigned char>(data[1]));
        send_close(code, "");
        return Step::ended;
      }
      case Opcode::text:
      case Opcode::binary:
        if (in_message) {
          fail(CloseCode::protocol_error, "a new message before the last one ended");
          return Step::ended;
        }
        if (frame.fin) {
          out = {frame.op == Opcode::text, data};
          return Step::message;
        }
        in_message = true;
        message_is_text = frame.op == Opcode::text;
        fragments.assign(data);
        continue;
      case Opcode::continuation:
        if (!in_message) {
          fail(CloseCode::protocol_error, "a continuation frame without a message");
          return Step::ended;
        }
        fragments += data;
        if (!frame.fin) continue;
        in_message = false;
        out = {message_is_text, fragments};
        return Step::message;
    }
  }
}

WsTransport::WsTransport(asio::ip::tcp::socket socket, std::string early_bytes, std::string peer,
                         FrameLimits limits, Metrics& metrics, WsCounters& counters,
                         const std::atomic<bool>& server_stopping,
                         std::chrono::milliseconds idle_timeout)
    : impl_(std::make_shared<Impl>(std::move(socket), limits, metrics, counters, server_stopping,
                                   idle_timeout)),
      executor_(impl_->socket.get_executor()),
      peer_(std::move(peer)) {
  error_code ignored;
  impl_->socket.non_blocking(true, ignored);
  if (!early_bytes.empty()) {
    auto space = impl_->in.prepare(early_bytes.size());
    std::memcpy(space.data(), early_bytes.data(), early_bytes.size());
    impl_->in.commit(early_bytes.size());
  }
}

WsTransport::~WsTransport() {
  // The session always closes its transport; only a runtime torn down mid-session gets here,
  // when the service's counters may be gone already: just the socket.
  if (!impl_->closed) impl_->close_socket();
}

// The next message decoded, or why there is none. Kept out of read(), whose coroutine frame an
// idle connection holds: only what lives across a wait belongs there.
WsTransport::Impl::Step WsTransport::Impl::next_decoded(std::optional<DecodeResult>& out,
                                                        std::size_t& wanted) {
  Message message;
  auto step = next_message(message, wanted);
  if (step != Step::message) return step;
  if (message.text) {
    counters.messages_in_text.inc();
    if (!ws::valid_utf8(message.data)) {
      fail(CloseCode::invalid_data, "a text message that is not UTF-8");
      return Step::ended;
    }
    out = decode_json_only(message.data, limits);
  } else {
    counters.messages_in_binary.inc();
    out = decode_whole_frame(message.data, limits);
    if (auto* error = std::get_if<DecodeError>(&*out); error && error->code == errc::bad_frame) {
      // Message boundaries are intact, so TCP's rule would keep going; but a binary message
      // that is not a frame means the client does not speak the protocol: reply, then 1008.
      error->fatal = true;
      bad_frame = true;
    }
  }
  release_fragments();
  return Step::message;
}

awaitable<std::optional<DecodeResult>> WsTransport::read() {
  auto& impl = *impl_;
  std::optional<DecodeResult> result;
  for (;;) {
    if (impl.reading_stopped || impl.close_code) break;
    if (impl.pending.size() >= kMaxPendingControl) {
      // The peer does not read what it asked for (pongs): read nothing more until it does.
      auto ec = co_await impl.flushed.wait();
      if (ec) break;
      continue;
    }
    std::size_t wanted = 0;
    if (impl.next_decoded(result, wanted) != Impl::Step::need_more) break;
    error_code ec;
    std::size_t n = 0;
    if (impl.in.empty() && !impl.in_message) {
      // Between messages: wait holding no buffer, then take what arrived without blocking.
      impl.in.release_if_empty();
      std::tie(ec) = co_await impl.socket.async_wait(
          asio::ip::tcp::socket::wait_read, asio::bind_cancellation_slot(impl.stop.slot(), use_nothrow));
      if (ec || impl.reading_stopped) break;
      n = impl.socket.read_some(impl.in.prepare(kReadSize), ec);
      if (ec == asio::error::would_block) continue;
    } else {
      const std::size_t missing = wanted > impl.in.unread().size() ? wanted - impl.in.unread().size() : 0;
      std::tie(ec, n) = co_await impl.socket.async_read_some(
          impl.in.prepare(std::max(missing, kReadSize)),
          asio::bind_cancellation_slot(impl.stop.slot(), use_nothrow));
    }
    if (ec) break;
    // Kept even when reading stopped meanwhile: the closing handshake parses on from here.
    impl.in.commit(n);
    impl.metrics.bytes_in.inc(n);
  }
  co_return result;
}

awaitable<error_code> WsTransport::write(std::span<const OutFrame> frames) {
  auto& impl = *impl_;
  while (impl.flushing) co_await impl.flushed.wait();
  // Nothing may follow a close frame.
  if (impl.closed || impl.close_code || !impl.socket.is_open())
    co_return asio::error::operation_aborted;
  impl.writing = true;
  std::string control;
  control.swap(impl.pending);
  std::vector<ws::FrameHead> heads;
  heads.reserve(frames.size());
  buffers_.clear();
  if (!control.empty()) buffers_.push_back(asio::buffer(control));
  for (auto& frame : frames) {
    if (frame->body.empty()) {
      auto text = frame->json_text();
      heads.push_back(ws::frame_head(Opcode::text, text.size()));
      buffers_.push_back(asio::buffer(heads.back().view()));
      buffers_.push_back(asio::buffer(text));
      impl.counters.messages_out_text.inc();
    } else {
      heads.push_back(ws::frame_head(Opcode::binary, frame->head.size() + frame->body.size()));
      buffers_.push_back(asio::buffer(heads.back().view()));
      buffers_.push_back(asio::buffer(frame->head));
      buffers_.push_back(asio::buffer(frame->body));
      impl.counters.messages_out_binary.inc();
    }
  }
  auto [ec, n] = co_await asio::async_write(impl.socket, buffers_, use_nothrow);
  impl.metrics.bytes_out.inc(n);
  // Control frames queued while this write was in flight.
  while (!ec && !impl.pending.empty()) {
    control.clear();
    control.swap(impl.pending);
    std::tie(ec, n) = co_await asio::async_write(impl.socket, asio::buffer(control), use_nothrow);
    impl.metrics.bytes_out.inc(n);
  }
  impl.writing = false;
  impl.flushed.notify();
  co_return ec;
}

std::size_t WsTransport::try_write(const EncodedFrame& frame) {
  auto& impl = *impl_;
  if (impl.writing || impl.flushing || !impl.pending.empty() || impl.close_code || impl.closed)
    return 0;
  const bool text = frame.body.empty();
  std::string_view head = text ? frame.json_text() : std::string_view(frame.head);
  auto ws_head = ws::frame_head(text ? Opcode::text : Opcode::binary, head.size() + frame.body.size());
  std::array<asio::const_buffer, 3> buffers{asio::buffer(ws_head.view()), asio::buffer(head),
                                            asio::buffer(frame.body)};
  error_code ec;
  std::size_t n = impl.socket.write_some(buffers, ec);
  if (ec) return 0;  // would block, or failed: the writer's async write finds out which
  impl.metrics.bytes_out.inc(n);
  (text ? impl.counters.messages_out_text : impl.counters.messages_out_binary).inc();
  const std::size_t total = asio::buffer_size(buffers);
  if (n < total) {
    // The session counts in frame bytes, which a WebSocket header does not fit: the transport
    // keeps the rest and sends it before anything else.
    for (auto& part : buffers) {
      const std::size_t skip = std::min(n, part.size());
      n -= skip;
      impl.pending.append(static_cast<const char*>(part.data()) + skip, part.size() - skip);
    }
    impl.start_flush();
  }
  return frame.size();
}

void WsTransport::stop_reading() {
  impl_->reading_stopped = true;
  impl_->stop.emit(asio::cancellation_type::terminal);
  impl_->flushed.notify();  // a read() held back by unsent pongs
}

void WsTransport::close() {
  auto& impl = *impl_;
  if (impl.closed) return;
  impl.closed = true;
  stop_reading();
  if (!impl.socket.is_open()) return;
  if (impl.writing) {
    // A write stuck on a slow peer cannot be followed by a close frame.
    impl.close_socket();
    return;
  }
  if (impl.bad_frame) {
    impl.counters.policy_closes.inc();
    impl.send_close(CloseCode::policy_violation, "bad frame");
  } else if (impl.server_stopping.load(std::memory_order_relaxed))
    impl.send_close(CloseCode::going_away, "server shutting down");
  else impl.send_close(CloseCode::normal, "");
  asio::co_spawn(executor_, finish_close(impl_), [peer = peer_](std::exception_ptr e) {
    if (e) log::error("ws {}: close ended with an exception", peer);
  });
}

void WsTransport::tick(std::chrono::steady_clock::time_point now) {
  auto& impl = *impl_;
  if (impl.closed || impl.idle_timeout.count() <= 0 || !impl.socket.is_open()) return;
  auto silent = now - impl.last_heard;
  if (silent >= impl.idle_timeout) {
    log::info("ws {}: no answer to keep-alive pings, closing", peer_);
    impl.close_socket();
  } else if (impl.flushing && now - impl.flush_started >= impl.idle_timeout) {
    log::info("ws {}: control frames unread for the whole keep-alive timeout, closing", peer_);
    impl.close_socket();
  } else if (silent >= impl.idle_timeout / 2 && !impl.pinging && !impl.close_code) {
    impl.pinging = true;
    impl.queue_control(ws::control_frame(Opcode::ping, ""));
  }
}

}  // namespace coserve::web
