#pragma once
// The WebSocket origin check (a browser page from another site must not drive a user's session).
// Plain function, thread-safe.
#include <string>
#include <string_view>
#include <vector>

namespace coserve::web {

// True when a WebSocket upgrade carrying `origin` (the Origin header, "" when absent) for `host`
// (the Host header) may proceed:
//  - no Origin header: not a browser (coserve-cli, scripts), allowed;
//  - same origin: the Origin's host[:port] equals the Host header (ASCII case-insensitive;
//    a default port :80 / :443 on one side only still matches);
//  - listed in `allowed` (exact, case-insensitive, e.g. "https://console.example.com"), or
//    `allowed` holds "*".
bool origin_allowed(std::string_view origin, std::string_view host,
                    const std::vector<std::string>& allowed);

}  // namespace coserve::web
