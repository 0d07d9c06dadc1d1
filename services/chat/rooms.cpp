#include "chat/rooms.hpp"

#include <algorithm>

namespace coserve::chat {
namespace {

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t extra;
    if (c < 0x80) extra = 0;
    else if (c >= 0xC2 && c <= 0xDF) extra = 1;  // 0xC0/0xC1 would be overlong
    else if ((c & 0xF0) == 0xE0) extra = 2;
    else if (c >= 0xF0 && c <= 0xF4) extra = 3;
    else return false;
    if (s.size() - i <= extra) return false;
    for (std::size_t k = 1; k <= extra; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += extra + 1;
  }
  return true;
}

}  // namespace

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > 32 || name.front() == '.' || name.front() == '-') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
  });
}

Rooms::Member& Rooms::member(MemberId id) {
  auto it = members_.find(id);
  if (it == members_.end()) throw Error(errc::forbidden, "join a room first");
  return it->second;
}

void Rooms::claim_nick(MemberId id, const std::string& nick) {
  if (!valid_name(nick))
    throw Error(errc::bad_request,
                "a nick is 1-32 of A-Z a-z 0-9 _ . - and does not start with '.' or '-'");
  auto owner = nicks_.find(nick);
  if (owner != nicks_.end() && owner->second != id)
    throw Error(errc::exists, "nick '" + nick + "' is taken");
  auto it = members_.find(id);
  if (it == members_.end()) {
    Member m;
    m.nick = nick;
    m.tokens = limits_.burst;
    members_.emplace(id, std::move(m));
    nicks_.emplace(nick, id);
    return;
  }
  if (it->second.nick == nick) return;
  if (!it->second.rooms.empty())
    throw Error(errc::bad_request, "you chat as '" + it->second.nick +
                                       "'; leave every room before changing nick");
  nicks_.erase(it->second.nick);
  it->second.nick = nick;
  nicks_.emplace(nick, id);
}

std::string Rooms::nick_of(MemberId id) const {
  auto it = members_.find(id);
  return it == members_.end() ? std::string() : it->second.nick;
}

std::optional<MemberId> Rooms::find_nick(std::string_view nick) const {
  auto it = nicks_.find(std::string(nick));
  if (it == nicks_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::vector<MemberId>> Rooms::join(MemberId id, const std::string& room) {
  if (!valid_name(room))
    throw Error(errc::bad_request,
                "a room name is 1-32 of A-Z a-z 0-9 _ . - and does not start with '.' or '-'");
  auto& m = member(id);
  if (m.rooms.contains(room)) return std::nullopt;
  if (m.rooms.size() >= limits_.rooms_per_member)
    throw Error(errc::too_large,
                "at most " + std::to_string(limits_.rooms_per_member) + " rooms per member");
  auto it = rooms_.find(room);
  if (it != rooms_.end() && it->second.members.size() >= limits_.members_per_room)
    throw Error(errc::busy, "room '" + room + "' is full (" +
                                std::to_string(limits_.members_per_room) + " members)");
  if (it == rooms_.end()) it = rooms_.emplace(room, Room{}).first;
  std::vector<MemberId> others(it->second.members.begin(), it->second.members.end());
  it->second.members.insert(id);
  m.rooms.insert(room);
  return others;
}

std::vector<MemberId> Rooms::leave(MemberId id, const std::string& room) {
  auto mit = members_.find(id);
  auto rit = rooms_.find(room);
  if (mit == members_.end() || rit == rooms_.end() || !mit->second.rooms.contains(room))
    throw Error(errc::not_found, "you are not in room '" + room + "'");
  mit->second.rooms.erase(room);
  rit->second.members.erase(id);
  std::vector<MemberId> rest(rit->second.members.begin(), rit->second.members.end());
  if (rest.empty()) rooms_.erase(rit);
  return rest;
}

std::vector<std::pair<std::string, std::vector<MemberId>>> Rooms::remove(MemberId id) {
  std::vector<std::pair<std::string, std::vector<MemberId>>> left;
  auto it = members_.find(id);
  if (it == members_.end()) return left;
  auto rooms = it->second.rooms;  // copy: leave() edits it
  for (auto& room : rooms) left.emplace_back(room, leave(id, room));
  nicks_.erase(it->second.nick);
  members_.erase(it);
  return left;
}

void Rooms::check_text(std::string_view text) const {
  if (text.empty()) throw Error(errc::bad_request, "empty message");
  if (text.size() > limits_.max_text)
    throw Error(errc::too_large,
                "a message is at most " + std::to_string(limits_.max_text) + " bytes");
  if (!valid_utf8(text)) throw Error(errc::bad_request, "a message must be UTF-8 text");
}

void Rooms::take_token(Member& m, SteadyTime now) {
  // Token bucket: `burst` messages at once, refilled at messages_per_second.
  if (m.refilled != SteadyTime{}) {
    double elapsed = std::chrono::duration<double>(now - m.refilled).count();
    m.tokens = std::min(limits_.burst, m.tokens + std::max(0.0, elapsed) * limits_.messages_per_second);
  }
  m.refilled = now;
  if (m.tokens < 1.0) {
    throw Error(errc::busy, "flood control: at most " +
                                std::to_string(static_cast<long>(limits_.messages_per_second)) +
                                " messages per second (bursts of " +
                                std::to_string(static_cast<long>(limits_.burst)) +
                                "); slow down and retry");
  }
  m.tokens -= 1.0;
}

std::pair<ChatMessage, std::vector<MemberId>> Rooms::say(MemberId id, const std::string& room,
                                                         std::string text, std::int64_t ts_ms,
                                                         SteadyTime now) {
  auto& m = member(id);
  auto rit = rooms_.find(room);
  if (rit == rooms_.end() || !m.rooms.contains(room))
    throw Error(errc::forbidden, "join room '" + room + "' before saying something in it");
  check_text(text);
  take_token(m, now);
  auto& r = rit->second;
  ChatMessage msg{room, m.nick, std::move(text), ts_ms, r.next_seq++};
  r.history.push_back(msg);
  while (r.history.size() > limits_.history) r.history.pop_front();
  return {std::move(msg), std::vector<MemberId>(r.members.begin(), r.members.end())};
}

MemberId Rooms::pm(MemberId id, std::string_view to, std::string_view text, SteadyTime now) {
  auto& m = member(id);
  auto target = find_nick(to);
  if (!target) throw Error(errc::not_found, "nobody is called '" + std::string(to) + "'");
  check_text(text);
  take_token(m, now);
  return *target;
}

std::vector<std::string> Rooms::who(const std::string& room) const {
  auto rit = rooms_.find(room);
  if (rit == rooms_.end()) throw Error(errc::not_found, "no room '" + room + "'");
  std::vector<std::string> nicks;
  for (auto id : rit->second.members) nicks.push_back(members_.at(id).nick);
  std::sort(nicks.begin(), nicks.end());
  return nicks;
}

std::map<std::string, std::size_t> Rooms::rooms() const {
  std::map<std::string, std::size_t> out;
  for (auto& [name, room] : rooms_) out.emplace(name, room.members.size());
  return out;
}

std::vector<ChatMessage> Rooms::history(const std::string& room, std::size_t limit) const {
  auto rit = rooms_.find(room);
  if (rit == rooms_.end()) throw Error(errc::not_found, "no room '" + room + "'");
  auto& h = rit->second.history;
  std::size_t n = std::min(limit, h.size());
  return std::vector<ChatMessage>(h.end() - static_cast<std::ptrdiff_t>(n), h.end());
}

std::vector<std::string> Rooms::rooms_of(MemberId id) const {
  auto it = members_.find(id);
  if (it == members_.end()) return {};
  return std::vector<std::string>(it->second.rooms.begin(), it->second.rooms.end());
}

}  // namespace coserve::chat
