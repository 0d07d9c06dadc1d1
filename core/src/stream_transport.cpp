#include "coserve/stream_transport.hpp"

namespace coserve {

std::string peer_name(const asio::ip::tcp::socket& socket) {
  error_code ec;
  auto ep = socket.remote_endpoint(ec);
  if (ec) return "?";
  if (ep.address().is_v6()) return "[" + ep.address().to_string() + "]:" + std::to_string(ep.port());
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

std::string peer_name(const asio::local::stream_protocol::socket&) { return "unix"; }

}  // namespace coserve
