#include "coserve/access.hpp"

#include "coserve/metrics.hpp"

namespace coserve {
namespace {

asio::ip::address_v6 as_v6(const asio::ip::address& a) {
  return a.is_v4() ? asio::ip::make_address_v6(asio::ip::v4_mapped, a.to_v4()) : a.to_v6();
}

asio::ip::network_v6 parse_cidr(const std::string& text) {
  error_code ec;
  auto slash = text.find('/');
  std::string addr = text.substr(0, slash);
  auto address = asio::ip::make_address(addr, ec);
  if (ec) throw ConfigError("access list entry '" + text + "' is not an address or CIDR");
  unsigned prefix = address.is_v4() ? 32 : 128;
  if (slash != std::string::npos) {
    try {
      std::size_t used = 0;
      prefix = static_cast<unsigned>(std::stoul(text.substr(slash + 1), &used));
      if (used != text.size() - slash - 1) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      throw ConfigError("access list entry '" + text + "' has a bad prefix length");
    }
  }
  if (prefix > (address.is_v4() ? 32u : 128u))
    throw ConfigError("access list entry '" + text + "' has a prefix length out of range");
  if (address.is_v4()) prefix += 96;  // v4-mapped space
  return asio::ip::network_v6(as_v6(address), static_cast<unsigned short>(prefix));
}

}  // namespace

AccessPolicy AccessPolicy::from_config(const Config& config) {
  AccessPolicy policy;
  policy.max_connections = config.get<std::size_t>("access.max_connections");
  policy.max_per_address = config.get<std::size_t>("access.max_per_address");
  for (auto& entry : config.at("access.allow")) policy.allow.push_back(parse_cidr(entry));
  for (auto& entry : config.at("access.deny")) policy.deny.push_back(parse_cidr(entry));
  return policy;
}

AccessTicket::AccessTicket(AccessTicket&& other) noexcept
    : filter_(std::exchange(other.filter_, nullptr)), key_(std::move(other.key_)) {}

AccessTicket& AccessTicket::operator=(AccessTicket&& other) noexcept {
  if (this != &other) {
    if (filter_) filter_->release(key_);
    filter_ = std::exchange(other.filter_, nullptr);
    key_ = std::move(other.key_);
  }
  return *this;
}

AccessTicket::~AccessTicket() {
  if (filter_) filter_->release(key_);
}

AccessFilter::AccessFilter(AccessPolicy policy, Metrics& metrics)
    : policy_(std::move(policy)),
      refused_(metrics.counter("connections_refused_total",
                               "Connections refused by the access filter")) {}

bool AccessFilter::listed(const std::vector<asio::ip::network_v6>& list,
                          const asio::ip::address_v6& a) const {
  for (auto& net : list) {
    if (asio::ip::network_v6(a, net.prefix_length()).canonical() == net.canonical()) return true;
  }
  return false;
}

AccessTicket AccessFilter::admit(const asio::ip::address& peer, bool is_ip, std::string& why) {
  std::string key;
  if (is_ip) {
    auto v6 = as_v6(peer);
    if (listed(policy_.deny, v6)) {
      why = "address denied";
      refused_.inc();
      return {};
    }
    if (!policy_.allow.empty() && !listed(policy_.allow, v6)) {
      why = "address not allowed";
      refused_.inc();
      return {};
    }
    key = v6.to_string();
  }
  std::lock_guard lock(mutex_);
  if (policy_.max_connections && total_ >= policy_.max_connections) {
    why = "too many connections";
    refused_.inc();
    return {};
  }
  if (is_ip && policy_.max_per_address) {
    auto& n = per_address_[key];
    if (n >= policy_.max_per_address) {
      why = "too many connections from this address";
      refused_.inc();
      return {};
    }
    ++n;
  } else {
    key.clear();  // not counted per address
  }
  ++total_;
  return AccessTicket(this, std::move(key));
}

void AccessFilter::release(const std::string& key) {
  std::lock_guard lock(mutex_);
  --total_;
  if (!key.empty()) {
    auto it = per_address_.find(key);
    if (it != per_address_.end() && --it->second == 0) per_address_.erase(it);
  }
}

std::size_t AccessFilter::active() const {
  std::lock_guard lock(mutex_);
  return total_;
}

}  // namespace coserve
