#pragma once
// The browser-facing checks of the HTTP listener, as plain functions and a small policy class
// (thread-safe: built once, then only read):
//  - the Host allow-list, against DNS rebinding: a page on evil.example whose name the attacker
//    re-points at 127.0.0.1 is same-origin with this server in the browser's eyes, but its
//    requests still say `Host: evil.example`;
//  - the WebSocket Origin check: a page from another site must not drive a user's session.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coserve::web {

// The host name of a Host header value, without its port, lower-cased, without a trailing dot;
// an IP literal in its canonical text ("[::FFFF:7f00:1]:80" → "127.0.0.1", "[::1]" → "::1").
// nullopt when the value is not a host[:port] (empty, a bad port, stray characters).
std::optional<std::string> host_name_of(std::string_view host_header);

// Which Host headers the HTTP listener answers. Built from the listener's bind host (the part of
// listeners.http before the port) and services.web.allowed_hosts. Accepted, on any port:
//  - loopback names and addresses: localhost, 127.0.0.0/8, ::1;
//  - the bind host, unless it is a wildcard (0.0.0.0, ::, empty: "any local address");
//  - the address the connection arrived at (`local_address`), as an IP literal: a Host that is
//    an IP literal names the page's origin by address, which no DNS answer can re-point;
//  - the names in `allowed` (a proxy's or Docker host's public name); "*" turns the check off.
// A request without Host (HTTP/1.0 scripts; browsers always send one) is accepted.
class HostPolicy {
 public:
  HostPolicy(std::string_view bind_host, const std::vector<std::string>& allowed);
  bool allows(std::string_view host_header, std::string_view local_address) const;
  // True when the listener is bound to a loopback address or to "localhost".
  bool loopback_bind() const noexcept { return loopback_bind_; }

 private:
  std::vector<std::string> names_;
  bool any_ = false;
  bool loopback_bind_ = false;
};

// True when a WebSocket upgrade carrying `origin` (the Origin header, "" when absent) for `host`
// (the Host header) may proceed:
//  - no Origin header: not a browser (coserve-cli, scripts), allowed;
//  - same origin: the Origin's host[:port] equals the Host header (ASCII case-insensitive;
//    a default port :80 / :443 on one side only still matches);
//  - listed in `allowed` (exact, case-insensitive, e.g. "https://console.example.com"), or
//    `allowed` holds "*".
// The Host header itself is checked first, by HostPolicy.
bool origin_allowed(std::string_view origin, std::string_view host,
                    const std::vector<std::string>& allowed);

}  // namespace coserve::web
