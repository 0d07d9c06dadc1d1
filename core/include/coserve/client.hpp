#pragma once
// A client for the framed protocol, on coroutines: coserve-cli, the tests and the benchmark use
// it. Requests are multiplexed by id; each open request has its own inbox of events, and
// frames without a known id (chat messages, `shutdown`) go to the push inbox.
//
// Threading: one executor; every member is called from it. Writes go through one writer
// coroutine, so any number of coroutines may send at once.
//
// Bounds: frames wait in an out-queue of at most `out_queue_limit` bytes. A producer that may
// outrun the connection (a flood, an upload without a window) awaits room() before sending;
// a send that finds the queue over the limit throws std::length_error instead of growing it.
// Bodies received but not yet taken hold the reader back past 16 MiB.
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

#include <boost/system/system_error.hpp>

#include "coserve/asio.hpp"
#include "coserve/frame.hpp"

namespace coserve {

// How connect_tls checks the server (docs/cli.md: --tls, --ca-file).
struct TlsOptions {
  std::string ca_file;      // PEM CA certificates; empty: the system's default trust store
  std::string server_name;  // the name the certificate must carry; empty: the host connected to
  std::chrono::milliseconds handshake_timeout{30000};
};

// A TLS connection could not be set up. what() is one line for the user, e.g.
// "TLS: certificate verify failed (self-signed certificate)"; code() is the underlying error.
class TlsError : public boost::system::system_error {
 public:
  TlsError(error_code code, std::string message)
      : boost::system::system_error(code), message_(std::move(message)) {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

class Client {
 public:
  struct State;    // implementation detail, shared with the I/O loops
  struct Pending;  // implementation detail: one open request

  static constexpr std::size_t kDefaultOutQueueLimit = 16 << 20;

  explicit Client(asio::any_io_executor executor, FrameLimits limits = {1 << 20, 64 << 20},
                  std::size_t out_queue_limit = kDefaultOutQueueLimit);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Throws boost::system::system_error when the connection cannot be made. Arguments are taken
  // by value: the coroutine may start after the caller's temporaries are gone.
  awaitable<void> connect(std::string host, std::string port);
  // The same over TLS (a server's listeners.framed_tls): TLS 1.2+, the certificate verified
  // against `options.ca_file` and the host name (also sent as SNI). Throws TlsError when the
  // CA file cannot be loaded or the handshake fails, boost::system::system_error when the TCP
  // connection cannot be made.
  awaitable<void> connect_tls(std::string host, std::string port,
                              TlsOptions options = {});
  awaitable<void> connect_unix(std::string path);
  bool is_open() const noexcept;
  void close();

  // The events and final reply of one request.
  class Stream {
   public:
    const json& id() const noexcept;
    // The next event, or the final reply ({"ok": ...}) after which done() is true. Throws
    // boost::system::system_error when the connection closed first.
    awaitable<Frame> next();
    bool done() const noexcept;
    // Sends a frame belonging to this request (upload data, acks): {"id", ...fields} + body.
    // Throws std::length_error when the out-queue is over its limit (see room()).
    void send(json fields, std::string body = {});

   private:
    friend class Client;
    std::shared_ptr<State> state_;
    std::shared_ptr<Pending> pending_;
  };

  // Sends a request; an "id" is assigned when the request has none. Throws std::length_error
  // when the out-queue is over its limit (see room()).
  Stream open(json request, std::string body = {});
  // Sends a request and returns its final reply, skipping events.
  awaitable<Frame> call(json request, std::string body = {});
  // The next frame that belongs to no open request.
  awaitable<Frame> next_push();
  // Sends a frame as is (tests use it to break the protocol on purpose). Throws
  // std::length_error when the out-queue is over its limit.
  void send_frame(OutFrame frame);
  // Waits until the out-queue is under its limit (at once when it is, or when the connection
  // is closed). Await it before each send where sends may outrun the network.
  awaitable<void> room();
  // Bytes waiting in the out-queue.
  std::size_t queued_bytes() const noexcept;

 private:
  std::shared_ptr<State> state_;
};

// The error of a final reply, or nullopt when it is ok.
std::optional<std::string> error_code_of(const Frame& reply);

}  // namespace coserve
