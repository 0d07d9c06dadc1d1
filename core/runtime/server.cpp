#include "coserve/server.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <CLI/CLI.hpp>

#include "coserve/access.hpp"
#include "coserve/connections.hpp"
#include "session/core_service.hpp"
#include "session/dispatcher.hpp"
#include "coserve/listeners.hpp"
#include "coserve/log.hpp"
#include "coserve/metrics.hpp"
#include "coserve/runtime.hpp"
#include "coserve/session.hpp"
#include "transport/stream_transport.hpp"
#include "net/tls.hpp"
#include "coserve/version.hpp"

namespace coserve {

void Registry::add_defaults(Config& config) const {
  for (auto& entry : entries_) {
    if (!entry.defaults.empty()) config.add_defaults(entry.name, entry.defaults);
    for (auto& listener : entry.listeners) config.add_listener(listener.name, listener.default_address);
    if (entry.login_required) config.add_login_required(entry.name);
  }
}

Service* find_service(const Dispatcher& dispatcher, std::string_view name) {
  return dispatcher.find(name);
}

namespace {

std::set<std::string, std::less<>> login_required(const Config& config) {
  std::set<std::string, std::less<>> names;
  for (auto& name : config.at("auth.required")) {
    if (!name.is_string()) throw ConfigError("config key 'auth.required' expects service names");
    names.insert(name.get<std::string>());
  }
  return names;
}

}  // namespace

SessionLimits session_limits_from(const Config& config) {
  SessionLimits limits;
  limits.out_queue_bytes = config.get<std::size_t>("limits.out_queue_bytes");
  limits.max_inflight = config.get<std::size_t>("limits.max_inflight");
  limits.max_inbox_bytes = config.get<std::size_t>("limits.max_inbox_bytes");
  limits.idle_timeout = std::chrono::milliseconds(config.get<std::int64_t>("limits.idle_timeout_ms"));
  limits.write_timeout =
      std::chrono::milliseconds(config.get<std::int64_t>("limits.write_timeout_ms"));
  if (limits.idle_timeout.count() <= 0 || limits.write_timeout.count() <= 0)
    throw ConfigError("limits.idle_timeout_ms and limits.write_timeout_ms must be positive");
  return limits;
}

FrameLimits frame_limits_from(const Config& config) {
  return FrameLimits{config.get<std::size_t>("limits.max_json"),
                     config.get<std::size_t>("limits.max_body")};
}

namespace {

template <class Socket>
awaitable<void> serve_framed(SessionEnv env, FrameLimits limits, Socket socket) {
  Session session(std::make_unique<StreamTransport<Socket>>(std::move(socket), limits, env.metrics),
                  env);
  co_await session.run();
}

// The framed protocol over TLS (listeners.framed_tls): the handshake first, bounded by
// tls.handshake_timeout_ms, then an ordinary Session.
awaitable<void> serve_framed_tls(SessionEnv env, FrameLimits limits,
                                 std::shared_ptr<asio::ssl::context> context,
                                 std::chrono::milliseconds handshake_timeout,
                                 asio::ip::tcp::socket socket) {
  const auto peer = peer_name(socket);
  TlsStream stream(std::move(socket), *context);
  std::string failure;
  {
    // Until the Session registers itself, a shutdown reaches the handshake through this.
    auto registration = env.connections.add(stream.get_executor(), [&stream] {
      error_code ignored;
      stream.lowest_layer().close(ignored);
    });
    failure = co_await tls_handshake(stream, asio::ssl::stream_base::server, handshake_timeout);
  }
  if (!failure.empty()) {
    // Debug level: scanners and plain-text clients on a public port would flood the log.
    log::debug("framed_tls {}: {}", peer, failure);
    env.metrics.counter("tls_handshakes_failed_total", "TLS handshakes that failed or timed out")
        .inc();
    co_return;
  }
  Session session(std::make_unique<StreamTransport<TlsStream>>(std::move(stream), limits,
                                                                env.metrics),
                  env);
  co_await session.run();
}

void raise_fd_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
}

}  // namespace

struct Server::Impl {
  Config config;
  Runtime runtime;
  Metrics metrics;
  AccessFilter access;
  ConnectionSet connections;
  Dispatcher dispatcher;
  FrameLimits frame_limits;
  SessionLimits session_limits;
  Listeners listeners;
  asio::signal_set signals;
  asio::steady_timer grace_timer;
  std::atomic<bool> stopping{false};

  Impl(Config cfg)
      : config(std::move(cfg)),
        runtime(config.get<std::size_t>("server.workers"),
                config.get<std::size_t>("server.blocking_threads")),
        access(AccessPolicy::from_config(config), metrics),
        dispatcher(metrics, login_required(config)),
        frame_limits(frame_limits_from(config)),
        session_limits(session_limits_from(config)),
        listeners(config, runtime, access, metrics, connections),
        signals(runtime.context(0)),
        grace_timer(runtime.context(0)) {
    metrics.inbound.set_limit(config.get<std::uint64_t>("limits.max_buffered_bytes"));
  }

  SessionEnv session_env() { return SessionEnv{dispatcher, metrics, connections, session_limits}; }

  // Runs on context 0. A first SIGINT/SIGTERM shuts down gracefully; a second one closes
  // every connection at once.
  void wait_for_signal() {
    signals.async_wait([this](error_code ec, int signal) {
      if (ec) return;
      const char* name = signal == SIGINT ? "SIGINT" : "SIGTERM";
      if (!stopping) {
        begin_shutdown(name);
        wait_for_signal();
      } else {
        log::warn("{} again: closing {} connection(s) now", name, connections.size());
        grace_timer.cancel();
        close_now();
      }
    });
  }

  // Runs on context 0.
  void begin_shutdown(const char* why) {
    if (stopping.exchange(true)) return;
    log::info("shutting down ({}): {} connection(s) open", why, connections.size());
    listeners.close_all();
    for (auto& service : dispatcher.services()) service->stop();
    connections.on_empty([this] {
      asio::post(runtime.context(0), [this] { finish(); });
    });
    connections.shutdown_all();
    auto grace = std::chrono::milliseconds(config.get<std::int64_t>("server.shutdown_grace_ms"));
    grace_timer.expires_after(grace);
    grace_timer.async_wait([this](error_code ec) {
      if (ec) return;
      log::warn("shutdown grace period over: closing {} connection(s)", connections.size());
      close_now();
    });
  }

  // Sessions asked to stop once are closed outright the second time; whatever still runs a
  // second later is abandoned.
  void close_now() {
    connections.shutdown_all();
    grace_timer.expires_after(std::chrono::seconds(1));
    grace_timer.async_wait([this](error_code ec) {
      if (!ec) runtime.stop();
    });
  }

  void finish() {
    error_code ignored;
    grace_timer.cancel();
    signals.cancel(ignored);
    runtime.release();
  }
};

Server::Server(Config config, const Registry& registry)
    : impl_(std::make_unique<Impl>(std::move(config))) {
  // Certificate problems stop the start like a port in use does (BindError, one line), and
  // before services start or listeners bind, so that line is all the operator sees.
  TlsServerSettings tls;
  std::shared_ptr<asio::ssl::context> tls_context;
  if (!impl_->listeners.configured("framed_tls").empty()) {
    tls = tls_server_settings(impl_->config);
    tls_context = make_server_tls_context(tls);
  }
  auto& d = impl_->dispatcher;
  const json empty = json::object();
  std::vector<std::function<void(const Dispatcher&)>> resolvers;
  // `name` views a literal or the registry's entry, both outliving the context.
  auto context_for = [&](std::string_view name) {
    auto& services = impl_->config.at("services");
    const std::string key(name);
    const json& settings = services.contains(key) ? services.at(key) : empty;
    return ServiceContext{impl_->config, impl_->runtime,     impl_->metrics, d,
                          impl_->connections, settings, name, resolvers};
  };
  {
    auto ctx = context_for("core");
    d.add(std::make_unique<CoreService>(ctx));
  }
  for (auto& entry : registry.entries()) {
    auto ctx = context_for(entry.name);
    d.add(entry.make(ctx));
  }
  // Every service exists now: the references between them can be resolved.
  for (auto& resolve : resolvers) resolve(d);
  for (auto& name : impl_->config.at("auth.required"))
    if (!d.find(name.get<std::string>()))
      log::debug("auth.required names '{}', which is not registered", name.get<std::string>());

  auto env = impl_->session_env();
  auto limits = impl_->frame_limits;
  impl_->listeners.tcp(
      "framed",
      [env, limits](asio::ip::tcp::socket socket) {
        return serve_framed(env, limits, std::move(socket));
      },
      StopMode::self);
  if (tls_context) {
    impl_->listeners.tcp(
        "framed_tls",
        [env, limits, context = tls_context,
         timeout = tls.handshake_timeout](asio::ip::tcp::socket socket) {
          return serve_framed_tls(env, limits, context, timeout, std::move(socket));
        },
        StopMode::self);
  }
  for (auto& service : d.services()) service->add_listeners(impl_->listeners);
}

Server::~Server() = default;

void Server::run(const std::optional<std::filesystem::path>& ready_file) {
  auto& impl = *impl_;
  impl.signals.add(SIGINT);
  impl.signals.add(SIGTERM);
  impl.wait_for_signal();
  if (ready_file) write_file_atomically(*ready_file, bound().dump() + "\n");
  log::info("coserve {} ready: {} worker thread(s)", kVersion, impl.runtime.size());
  if (impl.stopping) impl.finish();
  impl.runtime.run();
  log::info("stopped");
}

void Server::stop() {
  asio::post(impl_->runtime.context(0), [impl = impl_.get()] { impl->begin_shutdown("requested"); });
}

json Server::bound() const { return impl_->listeners.bound(); }
const Config& Server::config() const noexcept { return impl_->config; }
Metrics& Server::metrics() noexcept { return impl_->metrics; }
Dispatcher& Server::dispatcher() noexcept { return impl_->dispatcher; }
Runtime& Server::runtime() noexcept { return impl_->runtime; }

void write_file_atomically(const std::filesystem::path& path, std::string_view content) {
  auto tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + tmp.string());
  std::size_t done = 0;
  while (done < content.size()) {
    auto n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      throw std::system_error(err, std::generic_category(), "write " + tmp.string());
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0)
    throw std::system_error(errno, std::generic_category(), "fsync " + tmp.string());
  std::filesystem::rename(tmp, path);
}

int run_main(int argc, char** argv, Registry registry) {
  CLI::App app{"coserve: one server for echo, chat, commands and files"};
  app.set_version_flag("--version", std::string("coserve ") + kVersion);
  std::string data_dir = "coserve-data";
  std::string config_file;
  std::vector<std::string> sets;
  std::string ready_file;
  bool print_config = false;
  app.add_option("--data-dir", data_dir, "Data directory (users, files, run/ sockets)")
      ->capture_default_str();
  app.add_option("--config", config_file, "JSON config file merged over the defaults")
      ->check(CLI::ExistingFile);
  app.add_option("--set", sets, "Override one config key: KEY=VALUE (repeatable)")
      ->type_name("KEY=VALUE");
  app.add_option("--ready-file", ready_file,
                 "Write the bound listener addresses here (JSON) once all are bound");
  app.add_flag("--print-config", print_config, "Print the effective config and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  std::signal(SIGPIPE, SIG_IGN);
  Config config;
  try {
    registry.add_defaults(config);
    if (!config_file.empty()) config.merge_file(config_file);
    for (auto& s : sets) config.set(s);
    config.data_dir = std::filesystem::absolute(data_dir);
  } catch (const ConfigError& e) {
    std::cerr << "coserve: " << e.what() << "\n";
    return 2;
  }
  if (print_config) {
    std::cout << config.root().dump(2) << "\n";
    return 0;
  }
  log::init(config.get<std::string>("server.log_level"));
  raise_fd_limit();
  try {
    std::filesystem::create_directories(config.data_dir);
    Server server(std::move(config), registry);
    server.run(ready_file.empty() ? std::nullopt
                                  : std::optional<std::filesystem::path>(ready_file));
    return 0;
  } catch (const ConfigError& e) {
    std::cerr << "coserve: " << e.what() << "\n";
    return 2;
  } catch (const BindError& e) {
    std::cerr << "coserve: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "coserve: cannot start: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace coserve
