#pragma once
// A Transport with no socket: the test is the peer. What the peer sends is cut into reads of
// the size the test chooses and decoded by the same FrameDecoder a socket's bytes go through;
// what the session writes is decoded back into frames for the test to read. Switches make the
// Nth read or write fail and make the peer stop reading (a write then waits, like one into a
// full socket buffer, until the peer reads again).
//
// Threading: the transport and its MemoryPeer live on one single-threaded io_context.
#include <cstddef>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/error.hpp>

#include "coserve/frame.hpp"
#include "coserve/signal.hpp"
#include "coserve/transport.hpp"

namespace coserve::test {

class MemoryPeer {
 public:
  explicit MemoryPeer(asio::any_io_executor executor)
      : executor_(executor), readable_(executor), writable_(executor) {}

  // --- the peer's side ------------------------------------------------------------------------
  void send_bytes(std::string_view bytes) {
    inbound_.append(bytes);
    readable_.notify();
  }
  void send(const json& head, std::string body = {}) {
    auto frame = encode_frame(head, std::move(body));
    send_bytes(frame->head + frame->body);
  }
  // The peer closes its side: reads end once what was sent is consumed.
  void close_input() {
    input_closed_ = true;
    readable_.notify();
  }
  // While paused, the session's writes wait (a peer that does not read its replies).
  void pause_reading() { paused_ = true; }
  void resume_reading() {
    paused_ = false;
    writable_.notify();
  }

  // Frames the session wrote, decoded, oldest first.
  std::deque<Frame>& received() { return received_; }
  bool closed() const noexcept { return closed_; }
  // Bytes the session wrote that did not decode as frames (always a bug).
  std::size_t bad_frames() const noexcept { return bad_frames_; }

  // --- switches -------------------------------------------------------------------------------
  std::size_t read_chunk = 64 * 1024;  // at most this many bytes per read
  std::size_t fail_read_at = 0;        // the Nth read fails (0: never)
  std::size_t fail_write_at = 0;       // the Nth write fails (0: never)

 private:
  friend class MemoryTransport;
  void deliver(std::string_view bytes) {
    decoder_.feed(bytes);
    while (auto item = decoder_.next()) {
      if (auto* frame = std::get_if<Frame>(&*item)) received_.push_back(std::move(*frame));
      else ++bad_frames_;
    }
  }
  void on_closed() {
    closed_ = true;
    readable_.notify();
    writable_.notify();
  }

  asio::any_io_executor executor_;
  std::string inbound_;
  bool input_closed_ = false;
  bool paused_ = false;
  bool closed_ = false;
  Signal readable_, writable_;
  FrameDecoder decoder_{FrameLimits{16 * 1024 * 1024, 64 * 1024 * 1024}};
  std::deque<Frame> received_;
  std::size_t reads_ = 0, writes_ = 0;
  std::size_t bad_frames_ = 0;
};

class MemoryTransport final : public Transport {
 public:
  MemoryTransport(std::shared_ptr<MemoryPeer> peer, FrameLimits limits = {})
      : peer_(std::move(peer)), decoder_(limits) {}

  awaitable<std::optional<DecodeResult>> read() override {
    for (;;) {
      if (reading_stopped_ || peer_->closed_) co_return std::nullopt;
      if (auto item = decoder_.next()) co_return item;
      if (peer_->inbound_.empty()) {
        if (peer_->input_closed_) co_return std::nullopt;
        co_await peer_->readable_.wait();
        continue;
      }
      if (++peer_->reads_ == peer_->fail_read_at) co_return std::nullopt;  // a reset connection
      const auto n = std::min(peer_->read_chunk, peer_->inbound_.size());
      decoder_.feed(std::string_view(peer_->inbound_).substr(0, n));
      peer_->inbound_.erase(0, n);
    }
  }

  awaitable<error_code> write(std::span<const OutFrame> frames) override {
    if (++peer_->writes_ == peer_->fail_write_at) co_return asio::error::broken_pipe;
    while (peer_->paused_ && !peer_->closed_) co_await peer_->writable_.wait();
    if (peer_->closed_) co_return asio::error::broken_pipe;
    for (auto& frame : frames) peer_->deliver(frame->head + frame->body);
    co_return error_code{};
  }

  // Like a socket with room in its buffer: the whole frame goes at once unless the peer is not
  // reading (then nothing does, and the session queues it for its writer).
  std::size_t try_write(const EncodedFrame& frame) override {
    if (peer_->paused_ || peer_->closed_ || peer_->fail_write_at != 0) return 0;
    peer_->deliver(frame.head + frame.body);
    return frame.size();
  }

  void stop_reading() override {
    reading_stopped_ = true;
    peer_->readable_.notify();
  }
  void close() override { peer_->on_closed(); }

  asio::any_io_executor executor() const override { return peer_->executor_; }
  const std::string& peer() const override { return name_; }
  std::string_view kind() const override { return "memory"; }

 private:
  std::shared_ptr<MemoryPeer> peer_;
  FrameDecoder decoder_;
  bool reading_stopped_ = false;
  std::string name_ = "memory";
};

}  // namespace coserve::test
