#include "auth/auth.hpp"

#include <sodium.h>

#include <algorithm>
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
constexpr std::size_t kMaxThrottleKeys = 100000;

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
  if (entries_.size() >= kMaxThrottleKeys) prune_locked(now);
  auto& entry = entries_[key];
  if (entry.failures > 0 && now - entry.last > limits_.forget_after) entry.failures = 0;
  ++entry.failures;
  entry.last = now;
}

void Throttle::success(const std::string& key) {
  std::lock_guard lock(mutex_);
  entries_.erase(key);
}

void Throttle::prune_locked(Clock::time_point now) {
  std::erase_if(entries_, [&](auto& kv) { return now - kv.second.last > limits_.forget_after; });
  // Still full: a flood of distinct keys. Forgetting them is safer than growing without bound;
  // the per-address throttle still holds the flooder back.
  if (entries_.size() >= kMaxThrottleKeys) entries_.clear();
}

// --- AuthService ------------------------------------------------------------------------------

json AuthService::defaults() {
  return {{"throttle_free_failures", 3}, {"throttle_base_ms", 500}, {"throttle_cap_ms", 60000}};
}

namespace {
Throttle::Limits throttle_limits(const json& settings) {
  Throttle::Limits limits;
  limits.free_failures = settings.value("throttle_free_failures", 3u);
  limits.base = std::chrono::milliseconds(settings.value("throttle_base_ms", 500));
  limits.cap = std::chrono::milliseconds(settings.value("throttle_cap_ms", 60000));
  return limits;
}
}  // namespace

AuthService::AuthService(ServiceContext& ctx)
    : runtime_(ctx.runtime),
      users_(std::make_shared<UserStore>(ctx.config.data_dir)),
      by_peer_(throttle_limits(ctx.settings)),
      by_user_(throttle_limits(ctx.settings)),
      failures_(ctx.metrics.counter("auth_failures_total", "Failed logins")),
      throttled_(ctx.metrics.counter("auth_throttled_total", "Logins refused by the back-off")) {
  // Runs once at startup, before any session exists: blocking here is fine.
  const char* env = std::getenv("COSERVE_ADMIN_PASSWORD");
  std::string wanted = env ? env : "";
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
}

awaitable<Outcome> AuthService::login(Call& call) {
  auto name = call.get<std::string>("user");
  auto password = call.get<std::string>("password");
  if (name.size() > kMaxNameLength || password.size() > kMaxPasswordLength) {
    wipe(password);
    co_return Outcome::fail(errc::bad_request, "user or password too long");
  }
  auto address = address_of(call.session().peer());
  auto wait = std::max(by_peer_.wait_time(address), by_user_.wait_time(name));
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
  by_peer_.failure(address);
  by_user_.failure(name);

  auto check_password = [users = users_, name, password] {
    try {
      users->reload_if_changed();
    } catch (const std::exception& e) {
      log::error("users.json changed but cannot be read, keeping the old users: {}", e.what());
    }
    return users->verify(name, password);
  };
  bool ok = co_await offload(runtime_.blocking(), std::move(check_password));
  wipe(password);
  if (!ok) {
    failures_.inc();
    log::info("session {} ({}): failed login", call.session().id(), address);
    co_return Outcome::fail(errc::unauthenticated, "wrong user name or password");
  }
  by_peer_.success(address);
  by_user_.success(name);
  log::info("session {} ({}): logged in as '{}'", call.session().id(), address, name);
  call.session().set_user(name);
  co_return Outcome::ok({{"user", name}});
}

awaitable<Outcome> AuthService::logout(Call& call) {
  call.session().set_user({});
  co_return Outcome::ok();
}

awaitable<Outcome> AuthService::whoami(Call& call) {
  const auto& user = call.session().user();
  co_return Outcome::ok({{"user", user.empty() ? json(nullptr) : json(user)}});
}

}  // namespace coserve::auth
