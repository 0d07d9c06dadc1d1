#pragma once
// Chat state without I/O: members and their nicks, rooms and their members, each room's bounded
// history ring and sequence numbers, and per-member flood control. Tested without sockets
// (tests/chat/rooms_test.cpp).
//
// Threading: none. Not thread-safe; the chat Hub owns the one instance and touches it only on
// its strand. Failures a user can cause throw coserve::Error with the protocol's code.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "coserve/error.hpp"

namespace coserve::chat {

using MemberId = std::uint64_t;
using SteadyTime = std::chrono::steady_clock::time_point;

struct ChatLimits {
  std::size_t max_text = 4096;         // bytes of one message
  std::size_t history = 100;           // messages kept per room
  std::size_t rooms_per_member = 16;
  std::size_t members_per_room = 10000;
  double messages_per_second = 10;     // sustained rate per member (say + pm)
  double burst = 20;                   // messages a quiet member may send at once
};

struct ChatMessage {
  std::string room;
  std::string from;
  std::string text;
  std::int64_t ts_ms = 0;  // server time, ms since the Unix epoch
  std::uint64_t seq = 0;   // per room, from 1, no gaps
};

// A room name or a nick: 1-32 of [A-Za-z0-9_.-], not starting with '.' or '-' (safe to print in
// line mode and to use in logs).
bool valid_name(std::string_view name);

class Rooms {
 public:
  explicit Rooms(ChatLimits limits = {}) : limits_(limits) {}

  const ChatLimits& limits() const noexcept { return limits_; }

  // Gives `id` the nick `nick`, registering the member when new. Throws exists when another
  // member has it, bad_request when invalid, or when the member already chats under another
  // nick in some room (nicks change only while in no room).
  void claim_nick(MemberId id, const std::string& nick);
  bool known(MemberId id) const { return members_.contains(id); }
  // The member's nick; empty when unknown.
  std::string nick_of(MemberId id) const;
  std::optional<MemberId> find_nick(std::string_view nick) const;

  // Adds a known member to a room (created on first join). Returns the other members (for
  // `joined`), or nullopt when the member was already in it. Throws bad_request (room name),
  // too_large (rooms per member), busy (room full).
  std::optional<std::vector<MemberId>> join(MemberId id, const std::string& room);
  // Returns the remaining members (for `left`). The room goes away, history included, when
  // its last member leaves. Throws not_found when the member is not in the room.
  std::vector<MemberId> leave(MemberId id, const std::string& room);
  // Forgets the member: leaves every room. Returns, per room left, the remaining members.
  std::vector<std::pair<std::string, std::vector<MemberId>>> remove(MemberId id);

  // Records a message by a member of `room` and returns it with the room's members (sender
  // included). Throws forbidden (not a member), too_large, busy (flood control).
  std::pair<ChatMessage, std::vector<MemberId>> say(MemberId id, const std::string& room,
                                                    std::string text, std::int64_t ts_ms,
                                                    SteadyTime now);
  // Checks a private message (size, flood) and finds its recipient. Throws not_found,
  // too_large, busy.
  MemberId pm(MemberId id, std::string_view to, std::string_view text, SteadyTime now);

  // Nicks in the room, sorted. Throws not_found.
  std::vector<std::string> who(const std::string& room) const;
  // Room name → member count.
  std::map<std::string, std::size_t> rooms() const;
  // The room's last `limit` messages, oldest first. Throws not_found.
  std::vector<ChatMessage> history(const std::string& room, std::size_t limit) const;
  // Rooms the member is in, sorted.
  std::vector<std::string> rooms_of(MemberId id) const;
  std::size_t member_count() const noexcept { return members_.size(); }

 private:
  struct Member {
    std::string nick;
    std::set<std::string> rooms;
    double tokens = 0;
    SteadyTime refilled{};
  };
  struct Room {
    std::set<MemberId> members;
    std::deque<ChatMessage> history;
    std::uint64_t next_seq = 1;
  };
  Member& member(MemberId id);
  void check_text(std::string_view text) const;
  void take_token(Member& m, SteadyTime now);

  ChatLimits limits_;
  std::unordered_map<MemberId, Member> members_;
  std::unordered_map<std::string, MemberId> nicks_;
  std::map<std::string, Room, std::less<>> rooms_;
};

}  // namespace coserve::chat
