#include "origin.hpp"

#include <algorithm>

#include <boost/asio/ip/address.hpp>

#include "coserve/config.hpp"

namespace coserve::web {
namespace {

namespace ip = boost::asio::ip;

std::string lower(std::string_view text) {
  std::string out(text);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

bool valid_port(std::string_view port) {
  return !port.empty() && port.size() <= 5 &&
         std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

// The canonical text of an address; v4-mapped v6 addresses as plain v4.
std::string canonical(const ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    return ip::make_address_v4(ip::v4_mapped, address.to_v6()).to_string();
  return address.to_string();
}

bool loopback_name(const std::string& name) {
  if (name == "localhost") return true;
  boost::system::error_code ec;
  auto address = ip::make_address(name, ec);
  return !ec && address.is_loopback();
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

bool has_port(std::string_view authority) {
  auto colon = authority.rfind(':');
  auto bracket = authority.rfind(']');  // [v6]:port
  return colon != std::string_view::npos && (bracket == std::string_view::npos || colon > bracket);
}

}  // namespace

std::optional<std::string> host_name_of(std::string_view host) {
  while (!host.empty() && (host.front() == ' ' || host.front() == '\t')) host.remove_prefix(1);
  while (!host.empty() && (host.back() == ' ' || host.back() == '\t')) host.remove_suffix(1);
  if (host.empty()) return std::nullopt;
  boost::system::error_code ec;
  if (host.front() == '[') {
    auto close = host.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    auto rest = host.substr(close + 1);
    if (!rest.empty() && (rest.front() != ':' || !valid_port(rest.substr(1)))) return std::nullopt;
    auto address = ip::make_address_v6(std::string(host.substr(1, close - 1)), ec);
    if (ec) return std::nullopt;
    return canonical(address);
  }
  auto colon = host.find(':');
  if (colon != std::string_view::npos) {
    if (!valid_port(host.substr(colon + 1))) return std::nullopt;  // also an unbracketed v6
    host = host.substr(0, colon);
  }
  std::string name = lower(host);
  if (!name.empty() && name.back() == '.') name.pop_back();  // "localhost." is "localhost"
  if (name.empty() || !std::all_of(name.begin(), name.end(), name_char)) return std::nullopt;
  auto address = ip::make_address_v4(name, ec);
  if (!ec) return canonical(address);
  return name;
}

HostPolicy::HostPolicy(std::string_view bind_host, const std::vector<std::string>& allowed) {
  // The bind value is "host:port", "[v6]:port" or a bare address ("::").
  boost::system::error_code ec;
  auto bare = ip::make_address(std::string(bind_host), ec);
  std::optional<std::string> bind = ec ? host_name_of(bind_host) : canonical(bare);
  if (bind) {
    auto address = ip::make_address(*bind, ec);
    bool wildcard = !ec && address.is_unspecified();
    loopback_bind_ = loopback_name(*bind);
    if (!wildcard) names_.push_back(*bind);
  }
  for (auto& entry : allowed) {
    if (entry == "*") {
      any_ = true;
      continue;
    }
    auto name = host_name_of(entry);
    if (!name)
      throw ConfigError("services.web.allowed_hosts: '" + entry + "' is not a host name");
    names_.push_back(*name);
  }
}

bool HostPolicy::allows(std::string_view host_header, std::string_view local_address) const {
  if (any_ || host_header.empty()) return true;
  auto name = host_name_of(host_header);
  if (!name) return false;
  if (loopback_name(*name)) return true;
  if (std::find(names_.begin(), names_.end(), *name) != names_.end()) return true;
  // An IP literal naming the very address this connection reached.
  boost::system::error_code ec;
  auto local = ip::make_address(std::string(local_address), ec);
  return !ec && canonical(local) == *name;
}

bool origin_allowed(std::string_view origin, std::string_view host,
                    const std::vector<std::string>& allowed) {
  if (origin.empty()) return true;
  for (auto& entry : allowed)
    if (entry == "*" || iequals(entry, origin)) return true;
  if (host.empty()) return false;

  std::string_view default_port;
  std::string_view authority;
  if (origin.substr(0, 7) == "http://") {
    authority = origin.substr(7);
    default_port = ":80";
  } else if (origin.substr(0, 8) == "https://") {
    authority = origin.substr(8);
    default_port = ":443";
  } else {
    return false;  // "null" (sandboxed pages, file://) and other schemes
  }
  if (authority.empty() || authority.find('/') != std::string_view::npos) return false;
  if (iequals(authority, host)) return true;
  // "http://h" and "Host: h:80" (or the other way round) are the same origin.
  if (!has_port(authority) && has_port(host))
    return iequals(std::string(authority) + std::string(default_port), host);
  if (has_port(authority) && !has_port(host))
    return iequals(authority, std::string(host) + std::string(default_port));
  return false;
}

}  // namespace coserve::web
