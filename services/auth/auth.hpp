#pragma once
// Service `auth`: login, logout, whoami (docs/protocol.md), plus `coserve user ...`.
//
//   login {user, password} → {user}         errors: unauthenticated, busy {retry_after_ms}
//   logout                 → {}
//   whoami                 → {user: name | null}
//
// Failed logins are throttled so that guessing is slow but the real user is hard to lock out:
//  - per user and address: `throttle_free_failures` free, then a doubling back-off; a success
//    from that address clears it. Guessing from one address only ever blocks that address.
//  - per user, from addresses that have not logged in as that user before: a larger budget
//    (`throttle_user_free_failures`) with a short cap, against guessing from many addresses.
//    An address the user logged in from is exempt, so a botnet cannot shut the user out.
//  - per address, across all names (password spraying): `throttle_address_free_failures`.
// Every attempt is charged before the password is checked and refunded on success.
//
// Sessions follow users.json: the service rereads it every `users_poll_ms` (and before each
// login), and a password change or a removal (`coserve user passwd|del`) ends every session
// logged in as that user, with a `shutdown` push saying why.
//
// Other services reach the user store through this service:
//   auto* auth = dynamic_cast<coserve::auth::AuthService*>(ctx.dispatcher.find("auth"));
//   if (auth) if (auto user = auth->users().find(session.user())) ... user->home ...
// Register it FIRST so it exists when the other services are constructed.
//
// Threading: handlers run on session executors; password checks run on the blocking pool. The
// store and the throttle are thread-safe.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/steady_timer.hpp>

#include "auth/user_store.hpp"
#include "coserve/runtime.hpp"
#include "coserve/server.hpp"
#include "coserve/service.hpp"

namespace coserve {
class Counter;
class SessionLink;
}

namespace coserve::auth {

// Failed-login back-off per key (an address, a user name, or both): after `free_failures`
// failures, each further attempt must wait base * 2^(n - free_failures), capped. A success
// clears the key. At most `max_keys` keys are kept: when full, idle keys go first, then the
// oldest keys not in back-off, and keys in back-off only when nothing else is left, so a flood
// of fresh keys cannot wipe the back-off of the keys under attack. Thread-safe.
class Throttle {
 public:
  using Clock = std::chrono::steady_clock;
  struct Limits {
    unsigned free_failures = 3;
    std::chrono::milliseconds base{500};
    std::chrono::milliseconds cap{60000};
    std::chrono::milliseconds forget_after{600000};  // idle keys are dropped
    std::size_t max_keys = 100000;
  };
  Throttle() = default;
  explicit Throttle(Limits limits) : limits_(limits) {}

  // How long `key` must still wait before it may try again (0 = may try now).
  std::chrono::milliseconds wait_time(const std::string& key, Clock::time_point now = Clock::now());
  void failure(const std::string& key, Clock::time_point now = Clock::now());
  void success(const std::string& key);
  // Takes back one failure charged in advance (a login that turned out right).
  void refund(const std::string& key);
  std::size_t size() const;

 private:
  struct Entry {
    unsigned failures = 0;
    Clock::time_point last{};
  };
  void prune_locked(Clock::time_point now);
  Limits limits_;
  mutable std::mutex mutex_;
  std::map<std::string, Entry> entries_;
};

// Which (user, address) pairs logged in successfully lately: those addresses skip the per-user
// budget. Bounded like Throttle (the least recent go first). Thread-safe.
class KnownAddresses {
 public:
  using Clock = std::chrono::steady_clock;
  KnownAddresses(std::chrono::milliseconds remember, std::size_t max_keys)
      : remember_(remember), max_keys_(max_keys) {}
  bool known(const std::string& key, Clock::time_point now = Clock::now()) const;
  void add(const std::string& key, Clock::time_point now = Clock::now());

 private:
  std::chrono::milliseconds remember_;
  std::size_t max_keys_;
  mutable std::mutex mutex_;
  std::map<std::string, Clock::time_point> entries_;
};

// The sessions logged in as each user, so a password change or removal can end them.
// Thread-safe; holds weak links only (a session's lifetime is its own).
class LoginRegistry {
 public:
  // `link` is now logged in as `user` (and no longer as `previous`, when not empty).
  void add(const std::string& user, const std::string& previous,
           const std::shared_ptr<SessionLink>& link);
  void remove(const std::string& user, const SessionLink* link);
  // Ends every session logged in as `user` with `reason`; returns how many were open.
  std::size_t close_all(const std::string& user, const std::string& reason);

 private:
  std::mutex mutex_;
  std::map<std::string, std::vector<std::weak_ptr<SessionLink>>> by_user_;
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

  // Stops the users.json watch (called on context 0, where its timer lives).
  void stop() override;

 private:
  // BLOCKING: rereads users.json when it changed and ends the sessions of users whose password
  // changed or who were removed. Never throws (a bad file is logged, the old users kept).
  static void refresh(UserStore& users, LoginRegistry& logins);
  awaitable<void> watch_users();

  Runtime& runtime_;                  // ServiceContext is a temporary: keep only what outlives it
  std::shared_ptr<UserStore> users_;  // shared with work on the blocking pool
  std::shared_ptr<LoginRegistry> logins_;
  Throttle by_pair_;     // "address user"
  Throttle by_user_;     // from addresses not in known_
  Throttle by_address_;  // across names
  KnownAddresses known_;
  std::chrono::milliseconds poll_interval_;
  asio::steady_timer poll_timer_;
  std::atomic<bool> stopping_{false};
  Counter& failures_;
  Counter& throttled_;
};

// `coserve user add|passwd|del|list ...`; argv[0] is "user". Returns the exit code.
int user_command(int argc, char** argv);

}  // namespace coserve::auth
