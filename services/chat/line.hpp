#pragma once
// Line-mode chat over plain TCP (listener `chat_line`), for `nc host port`:
// the first line is the nick; then text lines go to the current room (`lobby` at first) and
// `/join ROOM`, `/leave [ROOM]`, `/msg NICK TEXT`, `/who`, `/rooms`, `/quit`, `/help` are
// commands. Line users and framed users share the hub's rooms.
//
// Threading: one connection = one reader and one writer coroutine on the socket's executor,
// with a byte-counted out-queue; the hub delivers to it from its strand through MemberSink
// (posted, never blocking).
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <boost/asio/ip/tcp.hpp>

#include "chat/hub.hpp"
#include "coserve/asio.hpp"

namespace coserve::chat {

struct LineOptions {
  std::size_t max_line = 4096 + 256;
  std::size_t out_limit = 1024 * 1024;  // the reader pauses above this; the hub drops above it
  std::chrono::milliseconds idle_timeout{300000};
  std::chrono::milliseconds write_timeout{30000};
  std::string default_room = "lobby";
  // True when an anonymous user may not take this nick (a registered user's name).
  std::function<bool(const std::string&)> reserved;
};

awaitable<void> serve_line(std::shared_ptr<Hub> hub, LineOptions options,
                           asio::ip::tcp::socket socket);

}  // namespace coserve::chat
