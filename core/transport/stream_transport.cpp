#include "transport/stream_transport.hpp"

namespace coserve {

std::string peer_name(const asio::ip::tcp::socket& socket) {
  error_code ec;
  auto ep = socket.remote_endpoint(ec);
  if (ec) return "?";
  // Appended piece by piece: g++ 12 -O3 misreports a chain of operator+ (-Wstringop-overflow).
  std::string name = ep.address().is_v6() ? "[" : "";
  name += ep.address().to_string();
  if (ep.address().is_v6()) name += ']';
  name += ':';
  name += std::to_string(ep.port());
  return name;
}

std::string peer_name(const asio::local::stream_protocol::socket&) { return "unix"; }

}  // namespace coserve
