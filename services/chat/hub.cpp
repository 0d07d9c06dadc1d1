#include "chat/hub.hpp"

#include <atomic>

#include "coserve/log.hpp"
#include "coserve/metrics.hpp"

namespace coserve::chat {
namespace {

std::atomic<MemberId> next_member_id{1};

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Line mode prints text as is: control characters (a framed client may send newlines) would
// let one message forge others, so they become spaces.
std::string printable(std::string_view text) {
  std::string out(text);
  for (auto& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  return out;
}

}  // namespace

Hub::Hub(asio::any_io_executor executor, ChatLimits limits, HubLimits hub_limits,
         Metrics& metrics)
    : strand_(asio::make_strand(std::move(executor))),
      rooms_(limits),
      hub_limits_(hub_limits),
      messages_(metrics.counter("chat_messages_total", "Chat messages and private messages sent")),
      deliveries_(metrics.counter("chat_deliveries_total", "Chat events handed to members")),
      dropped_(metrics.counter("chat_dropped_total",
                               "Chat members dropped for not reading their messages")),
      members_gauge_(metrics.gauge("chat_members", "Chat members connected")) {}

MemberId Hub::new_member_id() noexcept { return next_member_id.fetch_add(1); }

void Hub::post_remove(MemberId id, std::string reason) {
  asio::post(strand_, [self = shared_from_this(), id, reason = std::move(reason)] {
    self->remove(id, reason);
  });
}

Delivery Hub::make(const json& head, const std::string& line_text, bool any_line) const {
  Delivery d;
  d.frame = encode_frame(head);
  if (any_line) d.line = std::make_shared<const std::string>(line_text + "\n");
  return d;
}

bool Hub::any_line(const std::vector<MemberId>& ids) const {
  for (auto id : ids) {
    auto it = members_.find(id);
    if (it != members_.end() && it->second.sink->line_mode()) return true;
  }
  return false;
}

void Hub::fan_out(const std::vector<MemberId>& ids, const Delivery& delivery) {
  const auto now = Clock::now();
  const auto limit = hub_limits_.out_limit_bytes;
  for (auto id : ids) {
    auto it = members_.find(id);
    if (it == members_.end()) continue;
    auto& m = it->second;
    std::size_t queued = m.sink->queued_bytes();
    if (queued > limit) {
      // Keep delivering through the grace period (a burst is not a stall); drop after it, or at
      // once when the queue is far past the limit.
      if (!m.over_since) m.over_since = now;
      if (now - *m.over_since > hub_limits_.drop_grace ||
          queued > limit * hub_limits_.hard_limit_factor) {
        to_drop_.push_back(id);
        continue;
      }
    } else {
      m.over_since.reset();
    }
    m.sink->deliver(delivery);
    deliveries_.inc();
  }
  // Drops fan out `left` events themselves, which may find more stalled members: one loop at the
  // outermost level handles them all.
  if (draining_) return;
  draining_ = true;
  while (!to_drop_.empty()) {
    MemberId id = to_drop_.back();
    to_drop_.pop_back();
    auto it = members_.find(id);
    if (it == members_.end()) continue;
    log::info("chat: dropping member '{}': out-queue over {} bytes for {} ms",
              rooms_.nick_of(id), limit, hub_limits_.drop_grace.count());
    dropped_.inc();
    it->second.sink->drop("you were not reading your messages (queue over " +
                          std::to_string(limit) + " bytes)");
    remove(id, "dropped");
  }
  draining_ = false;
}

void Hub::presence(const char* event, const std::string& room, const std::string& nick,
                   const std::vector<MemberId>& ids, const std::string& reason) {
  if (ids.empty()) return;
  json head = {{"service", "chat"}, {"event", event}, {"room", room}, {"nick", nick}};
  if (!reason.empty()) head["reason"] = reason;
  std::string line = "* " + nick + (std::string_view(event) == "joined" ? " joined " : " left ") +
                     room + (reason.empty() ? "" : " (" + reason + ")");
  fan_out(ids, make(head, line, any_line(ids)));
}

json Hub::join(MemberId id, const std::shared_ptr<MemberSink>& sink, const std::string& nick,
               const std::string& room) {
  bool was_known = rooms_.known(id);
  std::optional<std::vector<MemberId>> others;
  try {
    rooms_.claim_nick(id, nick);
    others = rooms_.join(id, room);
  } catch (...) {
    if (!was_known) rooms_.remove(id);
    throw;
  }
  if (!members_.contains(id)) {
    members_.emplace(id, Member{sink, std::nullopt});
    members_gauge_.inc();
  }
  if (others) presence("joined", room, nick, *others);
  json reply = {{"room", room}, {"nick", nick}, {"members", rooms_.who(room)}};
  if (!others) reply["already"] = true;
  return reply;
}

json Hub::leave(MemberId id, const std::string& room) {
  auto rest = rooms_.leave(id, room);
  presence("left", room, rooms_.nick_of(id), rest);
  return {{"room", room}};
}

json Hub::say(MemberId id, const std::string& room, std::string text) {
  auto [msg, ids] = rooms_.say(id, room, std::move(text), now_ms(), Clock::now());
  messages_.inc();
  json head = {{"service", "chat"}, {"event", "message"}, {"room", msg.room},
               {"from", msg.from},  {"text", msg.text},   {"ts", msg.ts_ms},
               {"seq", msg.seq}};
  fan_out(ids, make(head, "[" + msg.room + "] " + msg.from + ": " + printable(msg.text),
                    any_line(ids)));
  return {{"room", msg.room}, {"seq", msg.seq}, {"ts", msg.ts_ms}};
}

json Hub::pm(MemberId id, const std::string& to, std::string text) {
  MemberId target = rooms_.pm(id, to, text, Clock::now());
  messages_.inc();
  auto ts = now_ms();
  auto from = rooms_.nick_of(id);
  json head = {{"service", "chat"}, {"event", "message"}, {"pm", true}, {"from", from},
               {"to", to},          {"text", text},       {"ts", ts}};
  std::vector<MemberId> ids{target};
  fan_out(ids, make(head, "[pm] " + from + ": " + printable(text), any_line(ids)));
  return {{"to", to}, {"ts", ts}};
}

json Hub::who(const std::string& room) const {
  return {{"room", room}, {"members", rooms_.who(room)}};
}

json Hub::rooms() const {
  json list = json::array();
  for (auto& [name, count] : rooms_.rooms()) list.push_back({{"room", name}, {"members", count}});
  return {{"rooms", std::move(list)}};
}

json Hub::history(const std::string& room, std::size_t limit) const {
  json list = json::array();
  for (auto& m : rooms_.history(room, limit))
    list.push_back({{"room", m.room}, {"from", m.from}, {"text", m.text}, {"ts", m.ts_ms},
                    {"seq", m.seq}});
  return {{"room", room}, {"messages", std::move(list)}};
}

void Hub::remove(MemberId id, const std::string& reason) {
  auto nick = rooms_.nick_of(id);
  for (auto& [room, rest] : rooms_.remove(id)) presence("left", room, nick, rest, reason);
  forget(id);
}

void Hub::forget(MemberId id) {
  auto it = members_.find(id);
  if (it == members_.end()) return;
  auto sink = std::move(it->second.sink);
  members_.erase(it);
  members_gauge_.dec();
  auto* raw = sink.get();
  raw->release(std::move(sink));
}

}  // namespace coserve::chat
