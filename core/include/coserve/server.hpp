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

// The registered service named `name`, or nullptr (for ServiceRef).
Service* find_service(const Dispatcher& dispatcher, std::string_view name);

// Another service one service uses, found by type once every service is registered, so the
// order of registration does not matter. It is resolved before the server serves its first
// request: use it in handlers and add_listeners(), not in a constructor. Copyable; reading it
// is thread-safe (it never changes after start-up).
template <class S>
class ServiceRef {
 public:
  S* get() const noexcept { return *slot_; }
  S* operator->() const noexcept { return *slot_; }
  S& operator*() const noexcept { return **slot_; }
  explicit operator bool() const noexcept { return *slot_ != nullptr; }

 private:
  friend struct ServiceContext;
  explicit ServiceRef(std::shared_ptr<S*> slot) : slot_(std::move(slot)) {}
  std::shared_ptr<S*> slot_;
};

// What a service's constructor may take: `explicit MyService(coserve::ServiceContext& ctx)`.
struct ServiceContext {
  const Config& config;
  Runtime& runtime;
  Metrics& metrics;
  Dispatcher& dispatcher;
  ConnectionSet& connections;
  // This service's own config section, services.<name> (an empty object if it has none).
  const json& settings;
  // This service's name, and the server's list of references to resolve after registration.
  std::string_view name;
  std::vector<std::function<void(const Dispatcher&)>>& resolvers;

  // A service this one cannot work without: the server refuses to start when it is missing.
  template <class S>
  ServiceRef<S> get() {
    return bind<S>(true);
  }
  // A service this one uses when it is there (the reference is empty otherwise).
  template <class S>
  ServiceRef<S> find() {
    return bind<S>(false);
  }

 private:
  template <class S>
  ServiceRef<S> bind(bool required) {
    auto slot = std::make_shared<S*>(nullptr);
    resolvers.push_back([slot, required, user = std::string(name)](const Dispatcher& d) {
      *slot = dynamic_cast<S*>(find_service(d, S::kName));
      if (!*slot && required)
        throw ConfigError("service '" + user + "' needs service '" + std::string(S::kName) +
                          "', which is not registered");
    });
    return ServiceRef<S>(std::move(slot));
  }
};


class Registry {
 public:
  using Factory = std::function<std::unique_ptr<Service>(ServiceContext&)>;

  // A service type: constructible from ServiceContext& or by default. What it may declare, all
  // optional:
  //   static json defaults();                  its config keys under services.<kName>
  //   static constexpr auto listeners();       its raw listeners (ListenerSpec), listeners.<name>
  //   static constexpr bool kLoginRequired;    its ops need a login (auth.required's default)
  template <class S>
  void add() {
    Entry entry;
    entry.name = std::string(S::kName);
    if constexpr (requires { S::defaults(); }) entry.defaults = S::defaults();
    if constexpr (requires { S::listeners(); })
      for (const ListenerSpec& spec : S::listeners()) entry.listeners.push_back(spec);
    if constexpr (requires { S::kLoginRequired; }) entry.login_required = S::kLoginRequired;
    entry.make = [](ServiceContext& ctx) {
      if constexpr (std::is_constructible_v<S, ServiceContext&>)
        return std::unique_ptr<Service>(std::make_unique<S>(ctx));
      else
        return std::unique_ptr<Service>(std::make_unique<S>());
    };
    entries_.push_back(std::move(entry));
  }

  struct Entry {
    std::string name;
    json defaults = json::object();
    std::vector<ListenerSpec> listeners;
    bool login_required = false;
    Factory make;
  };
  const std::vector<Entry>& entries() const noexcept { return entries_; }
  // Adds what every registered service declares to `config` (its section, listeners and login
  // rule), before files and --set apply. Call once per Config.
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
