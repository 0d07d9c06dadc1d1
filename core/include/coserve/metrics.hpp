#pragma once
// Process-wide counters, rendered as Prometheus text (names prefixed `coserve_`).
//
// Threading: counters are created while the server is set up (or lazily under a mutex) and
// never destroyed, so a Counter& stays valid for the process lifetime and is bumped with relaxed
// atomics from any thread.
#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>

namespace coserve {

// Sharded by thread: each thread bumps a cache line of its own, so I/O threads counting every
// frame do not bounce one line between cores. Reading sums the shards.
class Counter {
 public:
  void inc(std::uint64_t n = 1) noexcept { mine().fetch_add(n, std::memory_order_relaxed); }
  // A gauge going down on another thread than it went up leaves one shard "negative"; the sum
  // wraps back to the right value.
  void dec(std::uint64_t n = 1) noexcept { mine().fetch_sub(n, std::memory_order_relaxed); }
  std::uint64_t value() const noexcept {
    std::uint64_t sum = 0;
    for (auto& shard : shards_) sum += shard.value.load(std::memory_order_relaxed);
    return sum;
  }

 private:
  static constexpr std::size_t kShards = 16;  // more threads than this share shards, still exact
  struct alignas(64) Shard {
    std::atomic<std::uint64_t> value{0};
  };
  static std::size_t thread_shard() noexcept {
    static std::atomic<std::size_t> next{0};
    thread_local const std::size_t shard = next.fetch_add(1, std::memory_order_relaxed) % kShards;
    return shard;
  }
  std::atomic<std::uint64_t>& mine() noexcept { return shards_[thread_shard()].value; }

  Shard shards_[kShards];
};

// The server-wide budget for bytes held in inbound frames: frames partly received in the
// framed transports' decoders and frames waiting in calls' inboxes (limits.max_buffered_bytes).
// It lives in Metrics because every transport and session already shares that one object, and
// its level is the gauge coserve_inbound_buffered_bytes.
//
// Threading: take() and give() are lock-free and called from every I/O thread; set_limit() once
// while the server is set up, before it serves.
class InboundBudget {
 public:
  explicit InboundBudget(Counter& gauge) : gauge_(gauge) {}
  void set_limit(std::uint64_t bytes) noexcept { limit_.store(bytes, std::memory_order_relaxed); }
  std::uint64_t limit() const noexcept { return limit_.load(std::memory_order_relaxed); }
  // Takes `n` bytes; false, taking nothing, when that would pass the limit (0: no limit).
  bool take(std::uint64_t n) noexcept;
  void give(std::uint64_t n) noexcept;
  std::uint64_t used() const noexcept { return used_.load(std::memory_order_relaxed); }

 private:
  Counter& gauge_;
  std::atomic<std::uint64_t> limit_{0};
  std::atomic<std::uint64_t> used_{0};
};

class Metrics {
 public:
  // `name` without the prefix, e.g. "frames_in_total"; `labels` like R"(service="echo")".
  Counter& counter(const std::string& name, const std::string& help,
                   const std::string& labels = {});
  Counter& gauge(const std::string& name, const std::string& help,
                 const std::string& labels = {});
  std::string prometheus() const;
  std::uint64_t value(const std::string& name, const std::string& labels = {}) const;

  Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

 private:
  struct Family {
    std::string help;
    const char* type;
    std::map<std::string, Counter*> series;  // labels → counter
  };
  Counter& get(const std::string& name, const std::string& help, const std::string& labels,
               const char* type);

  mutable std::mutex mutex_;  // guards the maps only, never held across I/O
  std::map<std::string, Family> families_;
  std::deque<Counter> storage_;  // deque: stable addresses

 public:
  // The counters every transport and the dispatcher bump (declared last: they are created in
  // the maps above).
  Counter& connections_active;
  Counter& frames_in;
  Counter& frames_out;
  Counter& bytes_in;
  Counter& bytes_out;
  InboundBudget inbound;
  // What the inbound budgets refused (coserve_inbound_budget_refusals_total): a call ended
  // because its connection's inboxes were full (limits.max_inbox_bytes), a call ended or a
  // connection closed because the server's budget was spent (limits.max_buffered_bytes).
  Counter& inbox_full_calls_ended;
  Counter& budget_calls_ended;
  Counter& budget_connections_closed;
};

}  // namespace coserve
