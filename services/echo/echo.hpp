#pragma once
// Service `echo`, the worked example of docs/writing-a-service.md.
//   echo {text?} + body → {text} + the same body
// It also serves raw byte echo on the listeners echo_tcp, echo_unix (streams: bytes back as they
// arrive, so `nc` works) and echo_udp, echo_unix_dgram (each datagram back to its sender).
#include "coserve/service.hpp"

namespace coserve::echo {

class EchoService final : public BasicService<EchoService> {
 public:
  static constexpr std::string_view kName = "echo";
  // Echo never waits, so it runs on the connection's reader (OpKind::immediate).
  static constexpr auto ops() {
    return std::array{op("echo", &EchoService::echo, OpKind::immediate)};
  }

  awaitable<Outcome> echo(Call& call);
  void add_listeners(Listeners& listeners) override;
};

}  // namespace coserve::echo
