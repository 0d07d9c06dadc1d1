#pragma once
// Service `core`: what every connection may ask whatever else is registered.
//   hello  → server name, version, services and their ops, limits, which services need login
//   ping   → {} (a round trip)
//   cancel {target} → cancels the request with that id on this connection
#include "coserve/server.hpp"
#include "coserve/service.hpp"

namespace coserve {

class CoreService final : public BasicService<CoreService> {
 public:
  static constexpr std::string_view kName = "core";
  static constexpr auto ops() {
    return std::array{op("hello", &CoreService::hello, OpKind::immediate),
                      op("ping", &CoreService::ping, OpKind::immediate),
                      op("cancel", &CoreService::cancel, OpKind::immediate)};
  }

  explicit CoreService(ServiceContext& ctx) : ctx_(ctx.config), dispatcher_(ctx.dispatcher) {}

  awaitable<Outcome> hello(Call& call);
  awaitable<Outcome> ping(Call& call);
  awaitable<Outcome> cancel(Call& call);

 private:
  const Config& ctx_;
  Dispatcher& dispatcher_;
};

}  // namespace coserve
