#pragma once
#include <sys/sendfile.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/write.hpp>

#include "coserve/metrics.hpp"
#include "coserve/transport.hpp"

namespace coserve {

std::string peer_name(const asio::ip::tcp::socket& socket);
std::string peer_name(const asio::local::stream_protocol::socket& socket);
// A layered stream (asio::ssl::stream over TCP, see tls.hpp) is named by the socket under it.
template <class Stream>
  requires requires(const Stream& stream) { stream.next_layer(); }
std::string peer_name(const Stream& stream) {
  return peer_name(stream.next_layer());
}

template <class Socket>
class StreamTransport final : public Transport {
  // Plain sockets (not TLS) can be written without blocking and send files with sendfile.
  static constexpr bool kPlainSocket =
      std::is_same_v<Socket, asio::ip::tcp::socket> ||
      std::is_same_v<Socket, asio::local::stream_protocol::socket>;
  // Read buffer between frames: a small request fits in one read.
  static constexpr std::size_t kIdleBuffer = 512;
  // Replies up to this size are copied into one buffer for try_write (see there).
  static constexpr std::size_t kJoinedWriteMax = 1024;

 public:
  StreamTransport(Socket socket, FrameLimits limits, Metrics& metrics)
      : socket_(std::move(socket)),
        decoder_(limits),
        metrics_(metrics),
        executor_(socket_.get_executor()),
        peer_(peer_name(socket_)) {
    // Synchronous reads and writes must never block; Asio's async operations work either way.
    if constexpr (kPlainSocket) {
      error_code ignored;
      socket_.non_blocking(true, ignored);
    }
  }
  ~StreamTransport() override { metrics_.inbound.give(charged_); }

  awaitable<std::optional<DecodeResult>> read() override {
    for (;;) {
      if (reading_stopped_) co_return std::nullopt;
      if (auto item = decoder_.next()) {
        charge();  // a large body left the decoder with its frame
        co_return item;
      }
      error_code ec;
      std::size_t n = 0;
      // Between frames: a small buffer, so an idle connection costs little. Asio's reactor reads
      // into it when data arrives; after a read that emptied the socket the next one is queued
      // without a system call (a wait for readability would re-arm epoll every time).
      decoder_.shrink(kIdleBuffer);
      auto space = decoder_.prepare(decoder_.idle() ? kIdleBuffer : 64 * 1024);
      if (!charge()) {
        // The server holds all the inbound bytes it may (limits.max_buffered_bytes): this
        // frame cannot be received, and the stream cannot be parsed past it.
        metrics_.budget_connections_closed.inc();
        reading_stopped_ = true;
        co_return DecodeError{errc::busy, "the server is out of memory for inbound frames",
                              nullptr, /*fatal=*/true};
      }
      std::tie(ec, n) = co_await socket_.async_read_some(
          asio::buffer(space.data(), space.size()),
          asio::bind_cancellation_slot(stop_.slot(), use_nothrow));
      if (ec) co_return std::nullopt;
      decoder_.commit(n);
      metrics_.bytes_in.inc(n);
    }
  }

  awaitable<error_code> write(std::span<const OutFrame> frames) override {
    std::size_t next = 0;
    while (next < frames.size()) {
      // One gather write up to and including the head of the next frame whose body is a file.
      buffers_.clear();
      const FileSlice* file = nullptr;
      while (next < frames.size() && !file) {
        auto& frame = *frames[next++];
        buffers_.push_back(asio::buffer(frame.head));
        if (!frame.body.empty()) buffers_.push_back(asio::buffer(frame.body));
        if (frame.file.length > 0) file = &frame.file;
      }
      auto [ec, n] = co_await asio::async_write(socket_, buffers_, use_nothrow);
      metrics_.bytes_out.inc(n);
      if (ec) co_return ec;
      if (file) {
        auto sent = co_await send_file(*file);
        if (sent) co_return sent;
      }
    }
    co_return error_code{};
  }

  void stop_reading() override {
    reading_stopped_ = true;
    stop_.emit(asio::cancellation_type::terminal);
  }

  bool sends_files() const override { return kPlainSocket; }

  std::size_t try_write(const EncodedFrame& frame) override {
    if (frame.file.length > 0) return 0;  // the writer sends files
    if constexpr (kPlainSocket) {
      error_code ec;
      std::size_t n = 0;
      if (frame.size() <= kJoinedWriteMax) {
        // One buffer makes Asio call send() rather than sendmsg(), which the kernel must first
        // copy an iovec array for: measurably cheaper for the small replies of a busy server.
        std::array<char, kJoinedWriteMax> joined;
        std::memcpy(joined.data(), frame.head.data(), frame.head.size());
        std::memcpy(joined.data() + frame.head.size(), frame.body.data(), frame.body.size());
        n = socket_.write_some(asio::buffer(joined.data(), frame.size()), ec);
      } else {
        std::array<asio::const_buffer, 2> buffers{asio::buffer(frame.head),
                                                  asio::buffer(frame.body)};
        n = socket_.write_some(buffers, ec);
      }
      if (ec) return 0;  // would block, or failed: the writer's async write finds out which
      metrics_.bytes_out.inc(n);
      return n;
    } else {
      return 0;
    }
  }

  void close() override {
    // The socket itself (under TLS too): close() must be immediate and may run while a read
    // and a write are pending. TLS goes without close_notify, which our frames do not need:
    // every frame carries its length, so a truncation is always visible.
    auto& socket = socket_.lowest_layer();
    error_code ignored;
    socket.shutdown(asio::socket_base::shutdown_both, ignored);
    socket.close(ignored);
  }


  asio::any_io_executor executor() const override { return executor_; }
  const std::string& peer() const override { return peer_; }
  std::string_view kind() const override {
    if constexpr (std::is_same_v<Socket, asio::ip::tcp::socket>) return "tcp";
    else if constexpr (std::is_same_v<Socket, asio::local::stream_protocol::socket>) return "unix";
    else return "tls";
  }

 private:
  // The kernel copies the file's pages to the socket. The sender made sure the range is in the
  // page cache (FileReader::prepare_slice), so this does not wait for a disk.
  awaitable<error_code> send_file(const FileSlice& file) {
    if constexpr (kPlainSocket) {
      auto offset = static_cast<off_t>(file.offset);
      std::size_t left = file.length;
      while (left > 0) {
        ssize_t n = ::sendfile(socket_.native_handle(), file.fd, &offset, left);
        if (n > 0) {
          left -= static_cast<std::size_t>(n);
          metrics_.bytes_out.inc(static_cast<std::size_t>(n));
          continue;
        }
        // The file shrank: the frame's announced length can no longer be met.
        if (n == 0) co_return asio::error::eof;
        if (errno == EINTR) continue;
        if (errno != EAGAIN) co_return error_code(errno, asio::error::get_system_category());
        auto [ec] = co_await socket_.async_wait(Socket::wait_write, use_nothrow);
        if (ec) co_return ec;
      }
      co_return error_code{};
    } else {
      co_return asio::error::operation_not_supported;  // sends_files() is false
    }
  }

  // Keeps the server's inbound budget charged with what the decoder holds beyond the small
  // buffer of an idle connection (which every connection has, and the budget leaves out).
  // False when the budget refuses the growth; the charge is then left as it was.
  bool charge() {
    const std::size_t held = decoder_.buffered_capacity();
    const std::size_t wanted = held > kIdleBuffer ? held : 0;
    if (wanted > charged_ && !metrics_.inbound.take(wanted - charged_)) return false;
    if (wanted < charged_) metrics_.inbound.give(charged_ - wanted);
    charged_ = wanted;
    return true;
  }

  Socket socket_;
  FrameDecoder decoder_;
  std::size_t charged_ = 0;  // bytes of the server's inbound budget this connection holds
  asio::cancellation_signal stop_;  // cancels the pending read (stop_reading)
  bool reading_stopped_ = false;
  Metrics& metrics_;
  asio::any_io_executor executor_;
  std::string peer_;
  std::vector<asio::const_buffer> buffers_;
};

}  // namespace coserve
