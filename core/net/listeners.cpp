#include "coserve/listeners.hpp"

#include <sys/stat.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "coserve/log.hpp"
#include "coserve/metrics.hpp"
#include "coserve/runtime.hpp"

namespace coserve {

struct Listeners::Shared {
  Runtime& runtime;
  AccessFilter& access;
  Metrics& metrics;
  ConnectionSet& connections;
};

namespace {

std::string endpoint_string(const asio::ip::tcp::endpoint& ep) {
  if (ep.address().is_v6()) return "[" + ep.address().to_string() + "]:" + std::to_string(ep.port());
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

std::string bind_message(const std::string& name, const std::string& where, const error_code& ec) {
  return "listener '" + name + "' cannot bind " + where + ": " + ec.message();
}

// The connection's coroutine: holds its access ticket and registration for its whole life.
template <class Socket, class Handler>
awaitable<void> serve_connection(Handler handler, Socket socket, AccessTicket ticket,
                                 ConnectionSet::Registration registration, Counter& active) {
  active.inc();
  struct Done {
    Counter& active;
    ~Done() { active.dec(); }
  } done{active};
  co_await handler(std::move(socket));
  (void)ticket;
  (void)registration;
}

template <class Socket>
void refuse(Socket& socket) {
  error_code ignored;
  socket.shutdown(Socket::shutdown_both, ignored);
  socket.close(ignored);
}

template <class Protocol, class Handler>
awaitable<void> accept_loop(std::shared_ptr<Listeners::Shared> shared,
                            typename Protocol::acceptor& acceptor, std::string name,
                            Handler handler, StopMode mode) {
  auto& accepted = shared->metrics.counter("connections_accepted_total",
                                           "Connections accepted, by listener",
                                           "listener=\"" + name + "\"");
  asio::steady_timer backoff(acceptor.get_executor());
  for (;;) {
    auto& ctx = shared->runtime.next_context();
    auto [ec, peer] = co_await acceptor.async_accept(ctx, use_nothrow);
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      // Out of descriptors or the like: the condition passes; spinning would not help it.
      log::warn("listener {}: accept failed: {}", name, ec.message());
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(use_nothrow);
      continue;
    }
    typename Protocol::socket socket(std::move(peer));
    std::string why;
    AccessTicket ticket;
    if constexpr (std::is_same_v<Protocol, asio::ip::tcp>) {
      error_code ignored;
      auto remote = socket.remote_endpoint(ignored);
      ticket = shared->access.admit(remote.address(), true, why);
      if (ticket) socket.set_option(asio::ip::tcp::no_delay(true), ignored);
    } else {
      ticket = shared->access.admit({}, false, why);
    }
    if (!ticket) {
      log::info("listener {}: refused a connection: {}", name, why);
      refuse(socket);
      continue;
    }
    accepted.inc();
    auto executor = socket.get_executor();
    if (mode == StopMode::self) {
      asio::co_spawn(executor,
                     serve_connection(handler, std::move(socket), std::move(ticket), {},
                                      shared->metrics.connections_active),
                     [name](std::exception_ptr e) {
                       if (e) log::error("listener {}: a connection ended with an exception", name);
                     });
    } else {
      auto signal = std::make_shared<asio::cancellation_signal>();
      auto registration = shared->connections.add(
          executor, [signal] { signal->emit(asio::cancellation_type::terminal); });
      asio::co_spawn(executor,
                     serve_connection(handler, std::move(socket), std::move(ticket),
                                      std::move(registration), shared->metrics.connections_active),
                     asio::bind_cancellation_slot(signal->slot(), [signal, name](std::exception_ptr e) {
                       if (e) log::error("listener {}: a connection ended with an exception", name);
                     }));
    }
  }
}

// A Unix socket path left by a server that died is removed; one a live server answers on is
// an error (we must not steal it).
void clear_stale_socket(const std::string& name, const std::filesystem::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (!S_ISSOCK(st.st_mode))
    throw BindError("listener '" + name + "': " + path.string() + " exists and is not a socket");
  asio::io_context probe_ctx;
  asio::local::stream_protocol::socket probe(probe_ctx);
  error_code ec;
  probe.connect(asio::local::stream_protocol::endpoint(path.string()), ec);
  if (!ec)
    throw BindError("listener '" + name + "': " + path.string() + " is in use by a running server");
  asio::local::datagram_protocol::socket dprobe(probe_ctx);
  dprobe.open(asio::local::datagram_protocol(), ec);
  if (!ec) {
    dprobe.connect(asio::local::datagram_protocol::endpoint(path.string()), ec);
    if (!ec)
      throw BindError("listener '" + name + "': " + path.string() + " is in use by a running server");
  }
  std::filesystem::remove(path, ec);
}

// Runs `loop` on `ctx`, keeping `socket` (an acceptor or a datagram socket) alive until the
// loop ends, and returns how to close that socket from any thread.
template <class Socket>
std::function<void()> start_loop(asio::io_context& ctx, std::shared_ptr<Socket> socket,
                                 awaitable<void> loop, std::string name) {
  asio::co_spawn(ctx, std::move(loop), [socket, name](std::exception_ptr e) {
    if (e) log::error("listener {}: its loop failed", name);
  });
  return [socket] {
    asio::post(socket->get_executor(), [socket] {
      error_code ignored;
      socket->close(ignored);
    });
  };
}

}  // namespace

asio::ip::tcp::endpoint parse_endpoint(const std::string& listener, const std::string& value) {
  std::string host, port;
  if (!value.empty() && value.front() == '[') {
    auto close = value.find(']');
    if (close == std::string::npos || close + 1 >= value.size() || value[close + 1] != ':')
      throw BindError("listener '" + listener + "': cannot parse '" + value +
                      "' (expected [v6-address]:port)");
    host = value.substr(1, close - 1);
    port = value.substr(close + 2);
  } else {
    auto colon = value.rfind(':');
    if (colon == std::string::npos)
      throw BindError("listener '" + listener + "': cannot parse '" + value +
                      "' (expected host:port)");
    host = value.substr(0, colon);
    port = value.substr(colon + 1);
  }
  unsigned long port_number = 0;
  try {
    std::size_t used = 0;
    port_number = std::stoul(port, &used);
    if (used != port.size() || port_number > 65535) throw std::out_of_range("port");
  } catch (const std::exception&) {
    throw BindError("listener '" + listener + "': '" + port + "' is not a port number");
  }
  error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (!ec) return {address, static_cast<unsigned short>(port_number)};
  asio::io_context resolve_ctx;
  asio::ip::tcp::resolver resolver(resolve_ctx);
  auto results = resolver.resolve(host, port, ec);
  if (ec || results.empty())
    throw BindError("listener '" + listener + "': cannot resolve host '" + host + "'" +
                    (ec ? ": " + ec.message() : ""));
  return results.begin()->endpoint();
}

Listeners::Listeners(const Config& config, Runtime& runtime, AccessFilter& access,
                     Metrics& metrics, ConnectionSet& connections)
    : shared_(std::make_shared<Shared>(Shared{runtime, access, metrics, connections})) {
  for (auto& [name, value] : config.at("listeners").items()) {
    if (!value.is_string())
      throw ConfigError("config key 'listeners." + name + "' expects a string");
  }
  config_ = config.at("listeners");
  run_dir_ = config.data_dir / "run";
}

Listeners::~Listeners() {
  for (auto& path : unix_paths_) {
    error_code ec;
    std::filesystem::remove(path, ec);
  }
}

std::string Listeners::configured(const std::string& name) const {
  auto it = config_.find(name);
  return it == config_.end() ? std::string() : it->get<std::string>();
}

std::string Listeners::checked(const std::string& name) const {
  if (!config_.contains(name))
    throw ConfigError("no config key 'listeners." + name + "' for a listener");
  return configured(name);
}

std::filesystem::path Listeners::run_dir() const { return run_dir_; }

std::filesystem::path Listeners::socket_path(const std::string& name,
                                             const std::string& value) const {
  std::filesystem::path path(value);
  if (path.is_relative()) path = run_dir_ / path;
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  if (ec)
    throw BindError("listener '" + name + "': cannot create " + path.parent_path().string() +
                    ": " + ec.message());
  // sun_path is 108 bytes; a longer path would be silently cut by some APIs.
  if (path.native().size() >= 108)
    throw BindError("listener '" + name + "': socket path is too long: " + path.string());
  clear_stale_socket(name, path);
  return path;
}

void Listeners::tcp(const std::string& name, TcpHandler handler, StopMode mode) {
  auto value = checked(name);
  if (value.empty()) return;
  auto endpoint = parse_endpoint(name, value);
  auto& ctx = shared_->runtime.context(0);
  auto acceptor = std::make_shared<asio::ip::tcp::acceptor>(ctx);
  error_code ec;
  acceptor->open(endpoint.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec && endpoint.address().is_v6() && endpoint.address().is_unspecified())
    acceptor->set_option(asio::ip::v6_only(false), ec);  // "[::]" serves v4 and v6
  if (!ec) acceptor->bind(endpoint, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw BindError(bind_message(name, value, ec));
  bound_[name] = endpoint_string(acceptor->local_endpoint());
  closers_.push_back(start_loop(
      ctx, acceptor,
      accept_loop<asio::ip::tcp>(shared_, *acceptor, name, std::move(handler), mode), name));
  log::info("listening: {} on {}", name, bound_[name].get<std::string>());
}

void Listeners::unix_stream(const std::string& name, UnixHandler handler, StopMode mode) {
  auto value = checked(name);
  if (value.empty()) return;
  auto path = socket_path(name, value);
  auto& ctx = shared_->runtime.context(0);
  auto acceptor = std::make_shared<asio::local::stream_protocol::acceptor>(ctx);
  error_code ec;
  acceptor->open(asio::local::stream_protocol(), ec);
  if (!ec) acceptor->bind(asio::local::stream_protocol::endpoint(path.string()), ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw BindError(bind_message(name, path.string(), ec));
  unix_paths_.push_back(path);
  bound_[name] = path.string();
  closers_.push_back(start_loop(ctx, acceptor,
                                accept_loop<asio::local::stream_protocol>(
                                    shared_, *acceptor, name, std::move(handler), mode),
                                name));
  log::info("listening: {} on {}", name, path.string());
}

void Listeners::udp(const std::string& name, UdpHandler handler) {
  auto value = checked(name);
  if (value.empty()) return;
  auto endpoint = parse_endpoint(name, value);
  auto& ctx = shared_->runtime.next_context();
  auto socket = std::make_shared<asio::ip::udp::socket>(ctx);
  asio::ip::udp::endpoint udp_endpoint(endpoint.address(), endpoint.port());
  error_code ec;
  socket->open(udp_endpoint.protocol(), ec);
  if (!ec) socket->bind(udp_endpoint, ec);
  if (ec) throw BindError(bind_message(name, value, ec));
  auto local = socket->local_endpoint();
  bound_[name] = endpoint_string({local.address(), local.port()});
  closers_.push_back(start_loop(ctx, socket, handler(*socket), name));
  log::info("listening: {} on {} (udp)", name, bound_[name].get<std::string>());
}

void Listeners::unix_datagram(const std::string& name, UnixDatagramHandler handler) {
  auto value = checked(name);
  if (value.empty()) return;
  auto path = socket_path(name, value);
  auto& ctx = shared_->runtime.next_context();
  auto socket = std::make_shared<asio::local::datagram_protocol::socket>(ctx);
  error_code ec;
  socket->open(asio::local::datagram_protocol(), ec);
  if (!ec) socket->bind(asio::local::datagram_protocol::endpoint(path.string()), ec);
  if (ec) throw BindError(bind_message(name, path.string(), ec));
  unix_paths_.push_back(path);
  bound_[name] = path.string();
  closers_.push_back(start_loop(ctx, socket, handler(*socket), name));
  log::info("listening: {} on {} (unix datagram)", name, path.string());
}

json Listeners::bound() const { return bound_; }

void Listeners::close_all() {
  for (auto& close : closers_) close();
}

}  // namespace coserve
