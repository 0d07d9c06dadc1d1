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
    // All three never wait: plain functions, run inline on the connection's reader.
    return std::array{op("hello", &CoreService::hello), op("ping", &CoreService::ping),
                      op("cancel", &CoreService::cancel)};
  }

  explicit CoreService(ServiceContext& ctx) : ctx_(ctx.config), dispatcher_(ctx.dispatcher) {}

  Outcome hello(Call& call);
  Outcome ping(Call& call);
  Outcome cancel(Call& call);

 private:
  const Config& ctx_;
  Dispatcher& dispatcher_;
};

}  // namespace coserve
