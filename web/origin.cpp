#include "origin.hpp"

namespace coserve::web {
namespace {

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
