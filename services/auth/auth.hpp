#pragma once
// Service `auth`: login, logout, whoami (docs/protocol.md), plus `coserve user ...`.
//
//   login {user, password} → {user}         errors: unauthenticated, busy {retry_after_ms}
//   logout                 → {}
//   whoami                 → {user: name | null}
//
// Other services reach the user store through this service:
//   auto* auth = dynamic_cast<coserve::auth::AuthService*>(ctx.dispatcher.find("auth"));
//   if (auth) if (auto user = auth->users().find(session.user())) ... user->home ...
// Register it FIRST so it exists when the other services are constructed.
//
// Threading: handlers run on session executors; password checks run on the blocking pool. The
// store and the throttle are thread-safe.
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "auth/user_store.hpp"
#include "coserve/runtime.hpp"
#include "coserve/server.hpp"
#include "coserve/service.hpp"

namespace coserve {
class Counter;
}

namespace coserve::auth {

// Failed-login back-off per key (a peer address or a user name): after `free_failures`
// failures, each further attempt must wait base * 2^(n - free_failures), capped. A success
// clears the key. Thread-safe.
class Throttle {
 public:
  using Clock = std::chrono::steady_clock;
  struct Limits {
    unsigned free_failures = 3;
    std::chrono::milliseconds base{500};
    std::chrono::milliseconds cap{60000};
    std::chrono::milliseconds forget_after{600000};  // idle keys are dropped
  };
  Throttle() = default;
  explicit Throttle(Limits limits) : limits_(limits) {}

  // How long `key` must still wait before it may try again (0 = may try now).
  std::chrono::milliseconds wait_time(const std::string& key, Clock::time_point now = Clock::now());
  void failure(const std::string& key, Clock::time_point now = Clock::now());
  void success(const std::string& key);

 private:
  struct Entry {
    unsigned failures = 0;
    Clock::time_point last{};
  };
  void prune_locked(Clock::time_point now);
  Limits limits_;
  std::mutex mutex_;
  std::map<std::string, Entry> entries_;
};

class AuthService final : public BasicService<AuthService> {
 public:
  static constexpr std::string_view kName = "auth";
  static constexpr auto ops() {
    return std::array{op("login", &AuthService::login), op("logout", &AuthService::logout),
                      op("whoami", &AuthService::whoami)};
  }
  static json defaults();

  // Opens <data_dir>/users.json; on first start creates `admin` (password from
  // COSERVE_ADMIN_PASSWORD or random, printed once to stderr).
  explicit AuthService(ServiceContext& ctx);

  UserStore& users() noexcept { return *users_; }

  awaitable<Outcome> login(Call& call);
  awaitable<Outcome> logout(Call& call);
  awaitable<Outcome> whoami(Call& call);

 private:
  Runtime& runtime_;                  // ServiceContext is a temporary: keep only what outlives it
  std::shared_ptr<UserStore> users_;  // shared with work on the blocking pool
  Throttle by_peer_;
  Throttle by_user_;
  Counter& failures_;
  Counter& throttled_;
};

// `coserve user add|passwd|del|list ...`; argv[0] is "user". Returns the exit code.
int user_command(int argc, char** argv);

}  // namespace coserve::auth
