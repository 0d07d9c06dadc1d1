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
  static constexpr auto ops() { return std::array{op("echo", &EchoService::echo)}; }
  // Raw byte and datagram echo, for nc (bound in add_listeners).
  static constexpr auto listeners() {
    return std::array{ListenerSpec{"echo_tcp", "127.0.0.1:7001"},
                      ListenerSpec{"echo_udp", "127.0.0.1:7001"},
                      ListenerSpec{"echo_unix", "echo.sock"},
                      ListenerSpec{"echo_unix_dgram", "echo.dgram"}};
  }

  // A plain function, not a coroutine: echo never waits, so the connection's reader runs it
  // directly (see Op in coserve/service.hpp).
  Outcome echo(Call& call);
  void add_listeners(Listeners& listeners) override;
};

}  // namespace coserve::echo
