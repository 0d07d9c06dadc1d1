#include "auth/auth.hpp"

#include <sodium.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <cstdlib>
#include <iostream>

#include "coserve/log.hpp"
#include "coserve/metrics.hpp"
#include "coserve/offload.hpp"
#include "coserve/session.hpp"

namespace coserve::auth {
namespace {

// "127.0.0.1:4000" → "127.0.0.1", "[::1]:4000" → "::1"; other peers ("unix") stay as they are.
std::string address_of(const std::string& peer) {
  if (!peer.empty() && peer.front() == '[') {
    auto end = peer.find(']');
    return end == std::string::npos ? peer : peer.substr(1, end - 1);
  }
  auto colon = peer.rfind(':');
  if (colon != std::string::npos && peer.find(':') == colon) return peer.substr(0, colon);
  return peer;
}

// Passwords are wiped from memory once checked.
void wipe(std::string& secret) {
  if (!secret.empty()) sodium_memzero(secret.data(), secret.size());
  secret.clear();
}

constexpr std::size_t kMaxNameLength = 64;
constexpr std::size_t kMaxPasswordLength = 1024;

}  // namespace

// --- Throttle ---------------------------------------------------------------------------------

std::chrono::milliseconds Throttle::wait_time(const std::string& key, Clock::time_point now) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.failures < limits_.free_failures)
    return std::chrono::milliseconds(0);
  unsigned doublings = std::min(it->second.failures - limits_.free_failures, 20u);
  auto delay = std::min<std::chrono::milliseconds>(limits_.base * (1LL << doublings), limits_.cap);
  auto ready = it->second.last + delay;
  if (ready <= now) return std::chrono::milliseconds(0);
  return std::chrono::ceil<std::chrono::milliseconds>(ready - now);
}

void Throttle::failure(const std::string& key, Clock::time_point now) {
  std::lock_guard lock(mutex_);
  if (entries_.size() >= limits_.max_keys && !entries_.contains(key)) prune_locked(now);
  auto& entry = entries_[key];
  if (entry.failures > 0 && now - entry.last > limits_.forget_after) entry.failures = 0;
  ++entry.failures;
  entry.last = now;
}

void Throttle::success(const std::string& key) {
  std::lock_guard lock(mutex_);
  entries_.erase(key);
}

void Throttle::refund(const std::string& key) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  if (it->second.failures <= 1)
    entries_.erase(it);
  else
    --it->second.failures;
}

std::size_t Throttle::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

void Throttle::prune_locked(Clock::time_point now) {
  std::erase_if(entries_, [&](auto& kv) { return now - kv.second.last > limits_.forget_after; });
  // Still full: a flood of distinct keys. Drop down to 90% (so this runs once per many
  // failures, not on each), least valuable first: keys still within their free failures,
  // oldest first; keys in back-off only when the flood itself is all back-off keys. Clearing
  // the table would hand every attacker a fresh budget.
  std::size_t keep = limits_.max_keys - limits_.max_keys / 10;
  if (entries_.size() < limits_.max_keys) return;
  using It = std::map<std::string, Entry>::iterator;
  std::vector<It> order;
  order.reserve(entries_.size());
  for (auto it = entries_.begin(); it != entries_.end(); ++it) order.push_back(it);
  auto in_backoff = [&](It it) { return it->second.failures >= limits_.free_failures; };
  std::sort(order.begin(), order.end(), [&](It a, It b) {
    if (in_backoff(a) != in_backoff(b)) return !in_backoff(a);
    return a->second.last < b->second.last;
  });
  std::size_t drop = entries_.size() - std::min(keep, entries_.size());
  for (std::size_t i = 0; i < drop; ++i) entries_.erase(order[i]);
}

// --- KnownAddresses ---------------------------------------------------------------------------

bool KnownAddresses::known(const std::string& key, Clock::time_point now) const {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(key);
  return it != entries_.end() && now - it->second <= remember_;
}

void KnownAddresses::add(const std::string& key, Clock::time_point now) {
  std::lock_guard lock(mutex_);
  if (entries_.size() >= max_keys_ && !entries_.contains(key)) {
    // Only successful logins land here, so a flood needs valid passwords: dropping the least
    // recent entries is enough.
    std::erase_if(entries_, [&](auto& kv) { return now - kv.second > remember_; });
    while (entries_.size() >= max_keys_) {
      auto oldest = std::min_element(entries_.begin(), entries_.end(),
                                     [](auto& a, auto& b) { return a.second < b.second; });
      entries_.erase(oldest);
    }
  }
  entries_[key] = now;
}

// --- LoginRegistry ----------------------------------------------------------------------------

void LoginRegistry::add(const std::string& user, const std::string& previous,
                        const std::shared_ptr<SessionLink>& link) {
  std::lock_guard lock(mutex_);
  if (!previous.empty() && previous != user) {
    auto it = by_user_.find(previous);
    if (it != by_user_.end()) {
      std::erase_if(it->second, [&](auto& weak) {
        auto held = weak.lock();
        return !held || held == link;
      });
      if (it->second.empty()) by_user_.erase(it);
    }
  }
  auto& links = by_user_[user];
  // Sessions that ended are swept here, so the list stays as long as the user's open sessions.
  std::erase_if(links, [&](auto& weak) {
    auto held = weak.lock();
    return !held || held == link;
  });
  links.push_back(link);
}

void LoginRegistry::remove(const std::string& user, const SessionLink* link) {
  std::lock_guard lock(mutex_);
  auto it = by_user_.find(user);
  if (it == by_user_.end()) return;
  std::erase_if(it->second, [&](auto& weak) {
    auto held = weak.lock();
    return !held || held.get() == link;
  });
  if (it->second.empty()) by_user_.erase(it);
}

std::size_t LoginRegistry::close_all(const std::string& user, const std::string& reason) {
  std::vector<std::weak_ptr<SessionLink>> links;
  {
    std::lock_guard lock(mutex_);
    auto it = by_user_.find(user);
    if (it == by_user_.end()) return 0;
    links = std::move(it->second);
    by_user_.erase(it);
  }
  std::size_t closed = 0;
  for (auto& weak : links) {
    if (auto link = weak.lock()) {
      link->close(reason);  // posts to the session's executor
      ++closed;
    }
  }
  return closed;
}

// --- AuthService ------------------------------------------------------------------------------

json AuthService::defaults() {
  return {{"throttle_free_failures", 3},        {"throttle_base_ms", 500},
          {"throttle_cap_ms", 60000},           {"throttle_user_free_failures", 10},
          {"throttle_user_base_ms", 1000},      {"throttle_user_cap_ms", 10000},
          {"throttle_address_free_failures", 30}, {"throttle_max_keys", 100000},
          {"users_poll_ms", 1000}};
}

namespace {

std::int64_t positive(const json& settings, const char* key) {
  auto value = settings.at(key).get<std::int64_t>();
  if (value <= 0) throw ConfigError(std::string("services.auth.") + key + " must be positive");
  return value;
}

Throttle::Limits throttle_limits(const json& settings, const char* free_key, const char* base_key,
                                 const char* cap_key) {
  Throttle::Limits limits;
  limits.free_failures = static_cast<unsigned>(positive(settings, free_key));
  limits.base = std::chrono::milliseconds(positive(settings, base_key));
  limits.cap = std::chrono::milliseconds(positive(settings, cap_key));
  limits.max_keys = static_cast<std::size_t>(positive(settings, "throttle_max_keys"));
  return limits;
}

}  // namespace

AuthService::AuthService(ServiceContext& ctx)
    : runtime_(ctx.runtime),
      users_(std::make_shared<UserStore>(ctx.config.data_dir)),
      logins_(std::make_shared<LoginRegistry>()),
      by_pair_(throttle_limits(ctx.settings, "throttle_free_failures", "throttle_base_ms",
                               "throttle_cap_ms")),
      by_user_(throttle_limits(ctx.settings, "throttle_user_free_failures",
                               "throttle_user_base_ms", "throttle_user_cap_ms")),
      by_address_(throttle_limits(ctx.settings, "throttle_address_free_failures",
                                  "throttle_base_ms", "throttle_cap_ms")),
      // A month: long enough for a user's usual places, short enough to forget a one-off.
      known_(std::chrono::hours(24 * 30),
             static_cast<std::size_t>(positive(ctx.settings, "throttle_max_keys"))),
      poll_interval_(positive(ctx.settings, "users_poll_ms")),
      poll_timer_(ctx.runtime.context(0)),
      failures_(ctx.metrics.counter("auth_failures_total", "Failed logins")),
      throttled_(ctx.metrics.counter("auth_throttled_total", "Logins refused by the back-off")) {
  // Runs once at startup, before any session exists: blocking here is fine.
  const char* env = std::getenv("COSERVE_ADMIN_PASSWORD");
  std::string wanted = env ? env : "";
  // Read once; main() already blanked it in the block /proc/<pid>/environ shows.
  ::unsetenv("COSERVE_ADMIN_PASSWORD");
  if (auto password = users_->ensure_admin(wanted)) {
    if (wanted.empty()) {
      // Printed once, straight to the console (not through the logger's formatting).
      std::cerr << "\ncoserve: created user 'admin' with password: " << *password
                << "\ncoserve: change it with: coserve user passwd admin --data-dir "
                << ctx.config.data_dir.string() << "\n\n"
                << std::flush;
    } else {
      log::info("created user 'admin' with the password from COSERVE_ADMIN_PASSWORD");
    }
    wipe(*password);
  }
  // Builds the dummy hash in the background now, so even the first login of an unknown name
  // costs as much as a wrong password.
  asio::post(ctx.runtime.blocking(), [users = users_] { users->verify("", ""); });
  asio::co_spawn(ctx.runtime.context(0), watch_users(), [](std::exception_ptr failure) {
    if (!failure) return;
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      log::error("auth: the users.json watch stopped: {}", e.what());
    }
  });
}

void AuthService::stop() {
  stopping_ = true;
  poll_timer_.cancel();
}

void AuthService::refresh(UserStore& users, LoginRegistry& logins) {
  std::vector<std::string> revoked;
  try {
    revoked = users.reload_if_changed();
  } catch (const std::exception& e) {
    log::error("users.json changed but cannot be read, keeping the old users: {}", e.what());
    return;
  }
  for (auto& name : revoked) {
    bool removed = !users.find(name);
    auto closed = logins.close_all(name, removed ? "user removed" : "password changed");
    if (closed > 0)
      log::info("auth: {} of '{}': ended {} session(s)",
                removed ? "removal" : "password change", name, closed);
  }
}

awaitable<void> AuthService::watch_users() {
  // A stat per interval on the blocking pool: cheap, and works wherever users.json lives
  // (inotify misses changes made through another mount namespace, e.g. a container's volume).
  while (!stopping_) {
    poll_timer_.expires_after(poll_interval_);
    auto [ec] = co_await poll_timer_.async_wait(use_nothrow);
    if (ec || stopping_) break;  // cancelled by stop()
    auto check = [users = users_, logins = logins_] { refresh(*users, *logins); };
    co_await offload(runtime_.blocking(), std::move(check));
  }
}

awaitable<Outcome> AuthService::login(Call& call) {
  auto name = call.get<std::string>("user");
  auto password = call.get<std::string>("password");
  if (name.size() > kMaxNameLength || password.size() > kMaxPasswordLength) {
    wipe(password);
    co_return Outcome::fail(errc::bad_request, "user or password too long");
  }
  auto address = address_of(call.session().peer());
  // The address comes first: it holds no space, so no name can make two pairs collide.
  const std::string pair = address + " " + name;
  const bool known = known_.known(pair);
  auto wait = std::max(by_pair_.wait_time(pair), by_address_.wait_time(address));
  if (!known) wait = std::max(wait, by_user_.wait_time(name));
  if (wait.count() > 0) {
    wipe(password);
    throttled_.inc();
    auto outcome = Outcome::fail(
        errc::busy, "too many failed logins; retry after " + std::to_string(wait.count()) + " ms");
    outcome.fields = {{"retry_after_ms", wait.count()}};
    co_return outcome;
  }
  // Charged before the check and refunded on success, so a burst of parallel guesses cannot
  // all slip through while the first ones are still being hashed.
  by_pair_.failure(pair);
  by_address_.failure(address);
  if (!known) by_user_.failure(name);

  auto check_password = [users = users_, logins = logins_, name, password] {
    refresh(*users, *logins);
    return users->verify(name, password);
  };
  bool ok = co_await offload(runtime_.blocking(), std::move(check_password));
  wipe(password);
  if (!ok) {
    failures_.inc();
    log::info("session {} ({}): failed login", call.session().id(), address);
    co_return Outcome::fail(errc::unauthenticated, "wrong user name or password");
  }
  // This address proved it knows the password: its own back-off ends and it skips the per-user
  // budget from now on. The other keys only get this attempt back, so a login to one's own
  // account does not reset the budgets of guesses against others.
  by_pair_.success(pair);
  by_address_.refund(address);
  if (!known) by_user_.refund(name);
  known_.add(pair);
  log::info("session {} ({}): logged in as '{}'", call.session().id(), address, name);
  logins_->add(name, call.session().user(), call.session().link());
  call.session().set_user(name);
  co_return Outcome::ok({{"user", name}});
}

awaitable<Outcome> AuthService::logout(Call& call) {
  if (!call.session().user().empty())
    logins_->remove(call.session().user(), call.session().link().get());
  call.session().set_user({});
  co_return Outcome::ok();
}

awaitable<Outcome> AuthService::whoami(Call& call) {
  const auto& user = call.session().user();
  co_return Outcome::ok({{"user", user.empty() ? json(nullptr) : json(user)}});
}

}  // namespace coserve::auth
