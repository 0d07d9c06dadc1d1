#pragma once
// The server: runtime, listeners, sessions and the dispatcher, put together from a Config and
// a Registry of services. apps/coserve is a thin main() around run_main().
//
//   int main(int argc, char** argv) {
//     coserve::Registry services;
//     services.add<coserve::echo::EchoService>();
//     services.add<MyService>();                  // a service of your own
//     return coserve::run_main(argc, argv, std::move(services));
//   }
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "coserve/asio.hpp"
#include "coserve/config.hpp"
#include "coserve/service.hpp"

namespace coserve {

class Dispatcher;
class Metrics;
class Runtime;
class Listeners;
class ConnectionSet;

// What a service's constructor may take: `explicit MyService(coserve::ServiceContext& ctx)`.
struct ServiceContext {
  const Config& config;
  Runtime& runtime;
  Metrics& metrics;
  Dispatcher& dispatcher;
  ConnectionSet& connections;
  // This service's own config section, services.<name> (an empty object if it has none).
  const json& settings;
};

class Registry {
 public:
  using Factory = std::function<std::unique_ptr<Service>(ServiceContext&)>;

  // A service type: constructible from ServiceContext& or by default. A static `defaults()`
  // returning a JSON object declares its config keys under services.<kName>.
  template <class S>
  void add() {
    json defaults = json::object();
    if constexpr (requires { S::defaults(); }) defaults = S::defaults();
    entries_.push_back({std::string(S::kName), std::move(defaults), [](ServiceContext& ctx) {
                          if constexpr (std::is_constructible_v<S, ServiceContext&>)
                            return std::unique_ptr<Service>(std::make_unique<S>(ctx));
                          else
                            return std::unique_ptr<Service>(std::make_unique<S>());
                        }});
  }

  struct Entry {
    std::string name;
    json defaults;
    Factory make;
  };
  const std::vector<Entry>& entries() const noexcept { return entries_; }
  // Adds every registered service's defaults to `config` (before files and --set apply).
  void add_defaults(Config& config) const;

 private:
  std::vector<Entry> entries_;
};

class Server {
 public:
  // Builds everything and binds every listener. Throws ConfigError or BindError.
  Server(Config config, const Registry& registry);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Writes the ready file (if any), then serves until stop() or SIGINT/SIGTERM; returns when
  // every connection has ended (or the grace period ran out).
  void run(const std::optional<std::filesystem::path>& ready_file = std::nullopt);
  // Begins a graceful shutdown; thread-safe, may be called before or during run().
  void stop();

  // Listener name → bound address ("127.0.0.1:40123" or a socket path).
  json bound() const;
  const Config& config() const noexcept;
  Metrics& metrics() noexcept;
  Dispatcher& dispatcher() noexcept;
  Runtime& runtime() noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Parses the command line (docs/operations.md), then runs the server. Returns the exit code:
// 0 after a clean shutdown, 1 when the server could not start, 2 for usage and config errors.
int run_main(int argc, char** argv, Registry registry);

// The session and frame limits the config asks for (limits.*), for transports of one's own
// (the WebSocket bridge builds Sessions with these).
struct SessionLimits;
struct FrameLimits;
SessionLimits session_limits_from(const Config& config);
FrameLimits frame_limits_from(const Config& config);

// Writes a file atomically: temp file in the same directory, fsync, rename.
void write_file_atomically(const std::filesystem::path& path, std::string_view content);

}  // namespace coserve
