#pragma once
// A transport moves whole frames. TCP, Unix stream, TLS and WebSocket connections all look the
// same to a Session through this interface; core's transports are in core/transport/
// (StreamTransport<Socket> for the byte streams, BasicWsTransport for WebSocket), and
// tests/support/memory_transport.hpp is one with no socket at all.
//
// Threading: one reader and one writer may run concurrently (the session's reader and writer
// coroutines); two reads or two writes may not. All calls happen on the session's executor.
#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "coserve/asio.hpp"
#include "coserve/frame.hpp"

namespace coserve {

class Metrics;

class Transport {
 public:
  virtual ~Transport() = default;

  // The next frame or decode error; nullopt once the peer closed or the connection failed.
  virtual awaitable<std::optional<DecodeResult>> read() = 0;
  // Writes the frames in order (a batch becomes one system call where the transport can).
  virtual awaitable<error_code> write(std::span<const OutFrame> frames) = 0;
  // Writes as much of `frame` as the connection takes at once, without waiting, and returns the
  // bytes written: 0 when it would block, failed, or the transport only writes asynchronously.
  // The session calls it only while no write() is in flight, so a reply whose socket has room
  // goes out without waking the writer coroutine.
  virtual std::size_t try_write(const EncodedFrame&) { return 0; }
  // Makes the pending read() and every later one return nullopt without closing the
  // connection, so the session can still write its last frames (graceful shutdown, idle
  // timeout).
  virtual void stop_reading() = 0;
  // True when write() takes frames whose body is a FileSlice (sent with sendfile).
  virtual bool sends_files() const { return false; }
  // Closes the connection; pending reads and writes complete with an error.
  virtual void close() = 0;
  // Called on the session clock's tick every few seconds, so a transport with liveness rules of
  // its own (WebSocket keep-alive pings) needs no timer per connection.
  virtual void tick(std::chrono::steady_clock::time_point /*now*/) {}

  virtual asio::any_io_executor executor() const = 0;
  virtual const std::string& peer() const = 0;
  virtual std::string_view kind() const = 0;  // "tcp", "unix", "tls", "ws"
};


}  // namespace coserve
