#include "chat/chat.hpp"

#include <algorithm>

#include "auth/auth.hpp"
#include "chat/line.hpp"
#include "coserve/listeners.hpp"
#include "coserve/runtime.hpp"
#include "coserve/session.hpp"

namespace coserve::chat {
namespace {

// A framed/WebSocket member: deliveries go to the session's out-queue through its link.
class LinkSink final : public MemberSink {
 public:
  explicit LinkSink(std::shared_ptr<SessionLink> link) : link_(std::move(link)) {}
  void deliver(const Delivery& delivery) override { link_->post(delivery.frame); }
  std::size_t queued_bytes() const override { return link_->queued_bytes(); }
  void drop(const std::string& reason) override {
    link_->post(encode_frame({{"service", "chat"}, {"event", "dropped"}, {"reason", reason}}));
    link_->close("dropped from chat: " + reason);
  }
  void release(std::shared_ptr<MemberSink> self) override {
    // SessionLink::post queues work that uses the link by plain pointer: the link (held by
    // this sink once the session is gone) must outlive it. Posting the last reference behind
    // those deliveries on the same executor keeps the order.
    auto executor = link_->executor();
    asio::post(executor, [self = std::move(self)] {});
  }

 private:
  std::shared_ptr<SessionLink> link_;
};

// Per-session chat state; the destructor runs on the session's executor when it ends.
struct ChatSessionState {
  std::shared_ptr<Hub> hub;
  MemberId id = 0;
  std::shared_ptr<LinkSink> sink;
  ~ChatSessionState() {
    if (hub) hub->post_remove(id, "disconnected");
  }
};

std::size_t size_setting(const json& settings, const char* key) {
  auto& v = settings.at(key);
  if (!v.is_number() || v.get<double>() < 0)
    throw ConfigError(std::string("services.chat.") + key + " must be a non-negative number");
  return v.get<std::size_t>();
}

ChatLimits chat_limits(const json& s) {
  ChatLimits l;
  l.max_text = size_setting(s, "max_text");
  l.history = size_setting(s, "history");
  l.rooms_per_member = size_setting(s, "rooms_per_member");
  l.members_per_room = size_setting(s, "members_per_room");
  l.messages_per_second = s.at("messages_per_second").get<double>();
  l.burst = std::max(1.0, s.at("burst").get<double>());
  return l;
}

HubLimits hub_limits(const json& s) {
  HubLimits l;
  l.out_limit_bytes = size_setting(s, "out_limit_bytes");
  l.drop_grace = std::chrono::milliseconds(size_setting(s, "drop_grace_ms"));
  return l;
}

}  // namespace

json ChatService::defaults() {
  return {
      {"max_text", 4096},           {"history", 100},
      {"rooms_per_member", 16},     {"members_per_room", 10000},
      {"messages_per_second", 10},  {"burst", 20},
      {"out_limit_bytes", 1048576}, {"drop_grace_ms", 2000},
      {"default_room", "lobby"},
  };
}

ChatService::ChatService(ServiceContext& ctx)
    : hub_(std::make_shared<Hub>(ctx.runtime.context(0).get_executor(),
                                 chat_limits(ctx.settings), hub_limits(ctx.settings),
                                 ctx.metrics)),
      auth_(ctx.find<auth::AuthService>()),
      history_limit_(size_setting(ctx.settings, "history")),
      default_room_(ctx.settings.at("default_room").get<std::string>()),
      out_limit_(size_setting(ctx.settings, "out_limit_bytes")),
      idle_timeout_(ctx.config.get<std::int64_t>("limits.idle_timeout_ms")),
      write_timeout_(ctx.config.get<std::int64_t>("limits.write_timeout_ms")) {
  if (!valid_name(default_room_))
    throw ConfigError("services.chat.default_room is not a valid room name");
}

bool ChatService::reserved(const std::string& nick, const std::string& user) const {
  if (!auth_) return false;
  // Case counts as the same name: "Admin" must not pass for admin in anyone's chat window.
  auto owners = auth_->users().names_like(nick);
  return std::any_of(owners.begin(), owners.end(), [&](auto& owner) { return owner != user; });
}

MemberId ChatService::member_of(Call& call) const {
  auto& state = call.session().state<ChatSessionState>();
  if (!state.hub) throw Error(errc::forbidden, "join a room first");
  return state.id;
}

// Note: the lambdas handed to hub_->call are named variables, never temporaries inside the
// co_await expression: GCC 12 mis-handles such temporaries (they were destroyed twice).
awaitable<Outcome> ChatService::join(Call& call) {
  auto room = call.get<std::string>("room");
  const std::string& user = call.session().user();
  auto& state = call.session().state<ChatSessionState>();
  std::string nick = call.get_or<std::string>("nick", "");
  if (nick.empty() && state.hub) {
    auto current = [hub = hub_.get(), id = state.id] { return hub->nick_of(id); };
    nick = co_await hub_->call(std::move(current));
  }
  if (nick.empty()) nick = user;
  if (nick.empty()) co_return Outcome::fail(errc::bad_request, "missing field 'nick'");
  if (reserved(nick, user))
    co_return Outcome::fail(errc::forbidden,
                            "nick '" + nick + "' belongs to a registered user; log in as them");
  if (!state.hub) {
    state.hub = hub_;
    state.id = hub_->new_member_id();
    state.sink = std::make_shared<LinkSink>(call.session().link());
  }
  auto op = [hub = hub_.get(), id = state.id, sink = state.sink, nick, room] {
    return hub->join(id, sink, nick, room);
  };
  json reply = co_await hub_->call(std::move(op));
  co_return Outcome::ok(std::move(reply));
}

awaitable<Outcome> ChatService::leave(Call& call) {
  auto room = call.get<std::string>("room");
  auto id = member_of(call);
  auto op = [hub = hub_.get(), id, room] { return hub->leave(id, room); };
  json reply = co_await hub_->call(std::move(op));
  co_return Outcome::ok(std::move(reply));
}

awaitable<Outcome> ChatService::say(Call& call) {
  auto room = call.get<std::string>("room");
  auto text = call.get<std::string>("text");
  auto id = member_of(call);
  auto op = [hub = hub_.get(), id, room, text = std::move(text)] {
    return hub->say(id, room, text);
  };
  json reply = co_await hub_->call(std::move(op));
  co_return Outcome::ok(std::move(reply));
}

awaitable<Outcome> ChatService::pm(Call& call) {
  auto to = call.get<std::string>("to");
  auto text = call.get<std::string>("text");
  auto id = member_of(call);
  auto op = [hub = hub_.get(), id, to, text = std::move(text)] { return hub->pm(id, to, text); };
  json reply = co_await hub_->call(std::move(op));
  co_return Outcome::ok(std::move(reply));
}

awaitable<Outcome> ChatService::who(Call& call) {
  auto room = call.get<std::string>("room");
  auto op = [hub = hub_.get(), room] { return hub->who(room); };
  json reply = co_await hub_->call(std::move(op));
  co_return Outcome::ok(std::move(reply));
}

awaitable<Outcome> ChatService::rooms(Call&) {
  auto op = [hub = hub_.get()] { return hub->rooms(); };
  json reply = co_await hub_->call(std::move(op));
  co_return Outcome::ok(std::move(reply));
}

awaitable<Outcome> ChatService::history(Call& call) {
  auto room = call.get<std::string>("room");
  auto limit = call.get_or<std::size_t>("limit", history_limit_);
  auto op = [hub = hub_.get(), room, limit] { return hub->history(room, limit); };
  json reply = co_await hub_->call(std::move(op));
  co_return Outcome::ok(std::move(reply));
}

void ChatService::add_listeners(Listeners& listeners) {
  LineOptions options;
  options.max_line = hub_->state().limits().max_text + 256;
  options.out_limit = out_limit_;
  options.idle_timeout = idle_timeout_;
  options.write_timeout = write_timeout_;
  options.default_room = default_room_;
  if (auth_) {
    auto* auth = auth_.get();
    options.reserved = [auth](const std::string& nick) {
      return !auth->users().names_like(nick).empty();
    };
  }
  listeners.tcp("chat_line", [hub = hub_, options](asio::ip::tcp::socket socket) {
    return serve_line(hub, options, std::move(socket));
  });
}

}  // namespace coserve::chat
