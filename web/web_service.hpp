#pragma once
// Service `web`: the HTTP + WebSocket bridge on listener `http` (docs/protocol.md).
//   GET /            the browser console (static files from services.web.console_dir)
//   GET /healthz     JSON {status, version, uptime_s, listeners, connections}
//   GET /metrics     Prometheus text of every counter of the server
//   GET /ws          WebSocket upgrade; the socket then carries the framed protocol to the same
//                    Session and dispatcher TCP clients get
// and one op, `web.info` → {transport, peer, session, user}: what the server sees of the
// calling connection (the console shows it; tests check a WebSocket is really "ws").
//
// Threading: the service object is shared by every worker thread: its settings are read-only
// after construction and its counters atomic. Each HTTP or WebSocket connection lives on one
// executor (the one its socket was accepted on).
#include <atomic>
#include <memory>

#include "coserve/server.hpp"
#include "coserve/service.hpp"

namespace coserve::web {

class WebService final : public BasicService<WebService> {
 public:
  static constexpr std::string_view kName = "web";
  static constexpr auto ops() { return std::array{op("info", &WebService::info)}; }
  // services.web.* config keys and their defaults (docs in docs/protocol.md).
  static json defaults();
  // The console, /ws, /healthz and /metrics.
  static constexpr auto listeners() { return std::array{ListenerSpec{"http", "127.0.0.1:8080"}}; }

  explicit WebService(ServiceContext& ctx);
  ~WebService() override;

  awaitable<Outcome> info(Call& call);
  void add_listeners(Listeners& listeners) override;
  // Shutdown begins: WebSockets closed from now on say 1001 going away.
  void stop() override;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace coserve::web
