#pragma once
// Service `chat` (docs/protocol.md): rooms shared by framed/WebSocket sessions and
// line-mode TCP connections (listener `chat_line`, for `nc`).
//
//   join {room, nick?}  leave {room}  say {room, text}  pm {to, text}  who {room}  rooms
//   history {room, limit?}
//   pushes (no id): message, joined, left, dropped
//
// Threading: handlers run on the caller's session executor and reach the shared state through
// the Hub (one strand). A session's membership lives in its ChatSessionState, whose destructor
// (on the session's executor, when the session ends) tells the hub to remove the member.
#include <memory>

#include "chat/hub.hpp"
#include "coserve/server.hpp"
#include "coserve/service.hpp"

namespace coserve::auth {
class AuthService;
}

namespace coserve::chat {

class ChatService final : public BasicService<ChatService> {
 public:
  static constexpr std::string_view kName = "chat";
  static constexpr auto ops() {
    return std::array{op("join", &ChatService::join),   op("leave", &ChatService::leave),
                      op("say", &ChatService::say),     op("pm", &ChatService::pm),
                      op("who", &ChatService::who),     op("rooms", &ChatService::rooms),
                      op("history", &ChatService::history)};
  }
  // services.chat.* (docs: docs/protocol.md).
  static json defaults();
  // Line-mode chat for nc (bound in add_listeners).
  static constexpr auto listeners() {
    return std::array{ListenerSpec{"chat_line", "127.0.0.1:7002"}};
  }

  explicit ChatService(ServiceContext& ctx);

  awaitable<Outcome> join(Call& call);
  awaitable<Outcome> leave(Call& call);
  awaitable<Outcome> say(Call& call);
  awaitable<Outcome> pm(Call& call);
  awaitable<Outcome> who(Call& call);
  awaitable<Outcome> rooms(Call& call);
  awaitable<Outcome> history(Call& call);

  void add_listeners(Listeners& listeners) override;

  const std::shared_ptr<Hub>& hub() const noexcept { return hub_; }

 private:
  // True when `nick` is a registered user's name, ignoring case, that `user` (the session's
  // login, maybe empty) may not take.
  bool reserved(const std::string& nick, const std::string& user) const;
  MemberId member_of(Call& call) const;

  std::shared_ptr<Hub> hub_;
  ServiceRef<auth::AuthService> auth_;  // empty without an auth service: no nicks reserved
  std::size_t history_limit_;
  std::string default_room_;
  std::size_t out_limit_;
  std::chrono::milliseconds idle_timeout_;
  std::chrono::milliseconds write_timeout_;
};

}  // namespace coserve::chat
