#pragma once
// Admission control at accept time: connection limits overall and per address, and optional
// allow/deny CIDR lists. Deny wins over allow; an empty allow list allows everyone.
//
// Threading: admit() runs on the accepting thread and tickets are released on the session's
// thread, so the counts are guarded by a mutex (held for a map update only, never across I/O).
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/network_v4.hpp>
#include <boost/asio/ip/network_v6.hpp>

#include "coserve/asio.hpp"
#include "coserve/config.hpp"

namespace coserve {

class Metrics;
class Counter;

struct AccessPolicy {
  std::size_t max_connections = 0;  // 0 = unlimited
  std::size_t max_per_address = 0;  // 0 = unlimited
  std::vector<asio::ip::network_v6> allow;  // v4 networks are stored v4-mapped
  std::vector<asio::ip::network_v6> deny;

  static AccessPolicy from_config(const Config& config);  // throws ConfigError on a bad CIDR
};

class AccessFilter;

// Holds one admitted connection's place; releases it on destruction (from any thread).
class AccessTicket {
 public:
  AccessTicket() = default;
  AccessTicket(AccessTicket&& other) noexcept;
  AccessTicket& operator=(AccessTicket&& other) noexcept;
  ~AccessTicket();
  explicit operator bool() const noexcept { return filter_ != nullptr; }

 private:
  friend class AccessFilter;
  AccessTicket(AccessFilter* filter, std::string key) : filter_(filter), key_(std::move(key)) {}
  AccessFilter* filter_ = nullptr;
  std::string key_;
};

class AccessFilter {
 public:
  AccessFilter(AccessPolicy policy, Metrics& metrics);

  // An empty ticket means refused; `why` says why (for the log). Unix-socket peers pass an
  // unspecified address and only count against the overall limit.
  AccessTicket admit(const asio::ip::address& peer, bool is_ip, std::string& why);

  std::size_t active() const;

 private:
  friend class AccessTicket;
  void release(const std::string& key);
  bool listed(const std::vector<asio::ip::network_v6>& list, const asio::ip::address_v6& a) const;

  AccessPolicy policy_;
  Counter& refused_;
  mutable std::mutex mutex_;
  std::size_t total_ = 0;
  std::unordered_map<std::string, std::size_t> per_address_;
};

}  // namespace coserve
