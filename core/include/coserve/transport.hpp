#pragma once
// A transport moves whole frames. TCP, Unix stream and WebSocket connections all look the same
// to a Session through this interface.
//
// Threading: one reader and one writer may run concurrently (the session's reader and writer
// coroutines); two reads or two writes may not. All calls happen on the session's executor.
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
  // Closes the connection; pending reads and writes complete with an error.
  virtual void close() = 0;

  virtual asio::any_io_executor executor() const = 0;
  virtual const std::string& peer() const = 0;
  virtual std::string_view kind() const = 0;  // "tcp", "unix", "ws"
};

// Framed protocol over a byte stream (TCP or Unix stream socket).
template <class Socket>
class StreamTransport;

}  // namespace coserve
