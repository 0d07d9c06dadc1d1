#pragma once
// Binds the configured listeners and runs their accept / receive loops.
//
// Each listener has a name (the config key listeners.<name>). Its value is "host:port",
// "[v6]:port", a socket path for Unix listeners (relative paths are under the run dir), or ""
// to turn it off. Port 0 lets the kernel pick; bound() reports the real address.
//
// Threading: binding happens on the setup thread before the runtime runs. Accepted sockets are
// spread round-robin over the runtime's contexts and stay there. close_all() is thread-safe.
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/local/datagram_protocol.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include "coserve/access.hpp"
#include "coserve/asio.hpp"
#include "coserve/config.hpp"
#include "coserve/connections.hpp"

namespace coserve {

class Metrics;
class Runtime;

// A listener could not be set up: the message is for the operator, as is.
class BindError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// How a stream connection ends when the server shuts down.
enum class StopMode {
  cancel,  // the handler coroutine gets terminal cancellation (raw byte services)
  self,    // the handler registers with the ConnectionSet itself (sessions: graceful)
};

class Listeners {
 public:
  using TcpHandler = std::function<awaitable<void>(asio::ip::tcp::socket)>;
  using UnixHandler = std::function<awaitable<void>(asio::local::stream_protocol::socket)>;
  using UdpHandler = std::function<awaitable<void>(asio::ip::udp::socket&)>;
  using UnixDatagramHandler =
      std::function<awaitable<void>(asio::local::datagram_protocol::socket&)>;

  Listeners(const Config& config, Runtime& runtime, AccessFilter& access, Metrics& metrics,
            ConnectionSet& connections);
  ~Listeners();

  // Each binds listeners.<name> now (throws BindError) unless it is "" (off).
  void tcp(const std::string& name, TcpHandler handler, StopMode mode = StopMode::cancel);
  void unix_stream(const std::string& name, UnixHandler handler, StopMode mode = StopMode::cancel);
  void udp(const std::string& name, UdpHandler handler);
  void unix_datagram(const std::string& name, UnixDatagramHandler handler);

  // The config value of listeners.<name> ("" when off).
  std::string configured(const std::string& name) const;
  // Listener name → bound address, for the ready file.
  json bound() const;
  // Stops accepting and receiving; open stream connections are left to the ConnectionSet.
  void close_all();

  std::filesystem::path run_dir() const;

  struct Shared;  // what the loops need; outlives them

 private:
  std::string checked(const std::string& name) const;
  std::filesystem::path socket_path(const std::string& name, const std::string& value) const;

  std::shared_ptr<Shared> shared_;
  json config_;
  std::filesystem::path run_dir_;
  std::vector<std::function<void()>> closers_;
  json bound_ = json::object();
  std::vector<std::filesystem::path> unix_paths_;  // removed on destruction
};

// "host:port" / "[v6]:port" → endpoint (resolving names at setup). Throws BindError.
asio::ip::tcp::endpoint parse_endpoint(const std::string& listener, const std::string& value);

}  // namespace coserve
