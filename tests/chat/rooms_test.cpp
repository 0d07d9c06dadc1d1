// The chat state machine (membership, nicks, history ring, flood control) without sockets.
#include <catch2/catch.hpp>

#include "chat/rooms.hpp"

using namespace coserve;
using namespace coserve::chat;
using namespace std::chrono_literals;

namespace {

errc code_of(auto&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.code();
  }
  FAIL("expected a coserve::Error");
  return errc::internal;
}

const SteadyTime t0 = SteadyTime{} + 1000s;

}  // namespace

TEST_CASE("members join and leave rooms, the last one out removes the room") {
  Rooms rooms;
  rooms.claim_nick(1, "alice");
  rooms.claim_nick(2, "bob");
  auto first = rooms.join(1, "lobby");
  REQUIRE(first);
  CHECK(first->empty());
  auto second = rooms.join(2, "lobby");
  REQUIRE(second);
  CHECK(*second == std::vector<MemberId>{1});
  CHECK_FALSE(rooms.join(2, "lobby"));  // already in
  CHECK(rooms.who("lobby") == std::vector<std::string>{"alice", "bob"});
  CHECK(rooms.leave(1, "lobby") == std::vector<MemberId>{2});
  CHECK(code_of([&] { rooms.leave(1, "lobby"); }) == errc::not_found);
  rooms.leave(2, "lobby");
  CHECK(rooms.rooms().empty());
  CHECK(code_of([&] { rooms.who("lobby"); }) == errc::not_found);
}

TEST_CASE("nicks are unique, validated, and change only outside rooms") {
  Rooms rooms;
  rooms.claim_nick(1, "alice");
  CHECK(code_of([&] { rooms.claim_nick(2, "alice"); }) == errc::exists);
  CHECK(code_of([&] { rooms.claim_nick(2, "al ice"); }) == errc::bad_request);
  CHECK(code_of([&] { rooms.claim_nick(2, "-x"); }) == errc::bad_request);
  CHECK(code_of([&] { rooms.claim_nick(2, std::string(33, 'a')); }) == errc::bad_request);
  rooms.claim_nick(1, "alice2");  // in no room: a rename is fine
  rooms.join(1, "lobby");
  CHECK(code_of([&] { rooms.claim_nick(1, "alice3"); }) == errc::bad_request);
  rooms.claim_nick(2, "alice");  // freed by the rename
  CHECK(rooms.find_nick("alice") == MemberId{2});
}

TEST_CASE("messages get consecutive per-room sequence numbers and a bounded history") {
  ChatLimits limits;
  limits.history = 3;
  Rooms rooms(limits);
  rooms.claim_nick(1, "alice");
  rooms.join(1, "a");
  rooms.join(1, "b");
  for (int i = 1; i <= 5; ++i) {
    auto [msg, to] = rooms.say(1, "a", "m" + std::to_string(i), 100 + i, t0 + i * 1s);
    CHECK(msg.seq == static_cast<std::uint64_t>(i));
    CHECK(to == std::vector<MemberId>{1});
  }
  CHECK(rooms.say(1, "b", "other", 0, t0 + 10s).first.seq == 1);
  auto h = rooms.history("a", 10);
  REQUIRE(h.size() == 3);
  CHECK(h[0].text == "m3");
  CHECK(h[2].text == "m5");
  CHECK(h[2].seq == 5);
  auto last = rooms.history("a", 1);
  REQUIRE(last.size() == 1);
  CHECK(last[0].text == "m5");
}

TEST_CASE("say checks membership, size and UTF-8") {
  ChatLimits limits;
  limits.max_text = 10;
  Rooms rooms(limits);
  rooms.claim_nick(1, "alice");
  rooms.claim_nick(2, "bob");
  rooms.join(1, "a");
  CHECK(code_of([&] { rooms.say(2, "a", "hi", 0, t0); }) == errc::forbidden);
  CHECK(code_of([&] { rooms.say(1, "a", std::string(11, 'x'), 0, t0); }) == errc::too_large);
  CHECK(code_of([&] { rooms.say(1, "a", "", 0, t0); }) == errc::bad_request);
  CHECK(code_of([&] { rooms.say(1, "a", "\xC0\xAF", 0, t0); }) == errc::bad_request);
  CHECK(rooms.say(1, "a", "h\xC3\xA9", 0, t0).first.text == "h\xC3\xA9");
}

TEST_CASE("flood control allows a burst, then the sustained rate") {
  ChatLimits limits;
  limits.messages_per_second = 2;
  limits.burst = 3;
  Rooms rooms(limits);
  rooms.claim_nick(1, "alice");
  rooms.join(1, "a");
  for (int i = 0; i < 3; ++i) rooms.say(1, "a", "x", 0, t0);
  try {
    rooms.say(1, "a", "x", 0, t0);
    FAIL("the fourth message in the same instant should be refused");
  } catch (const Error& e) {
    CHECK(e.code() == errc::busy);
    CHECK(std::string(e.what()).find("flood") != std::string::npos);
  }
  rooms.say(1, "a", "x", 0, t0 + 500ms);  // one token back after 0.5 s at 2/s
  CHECK(code_of([&] { rooms.say(1, "a", "x", 0, t0 + 500ms); }) == errc::busy);
  CHECK(code_of([&] { rooms.pm(1, "alice", "x", t0 + 500ms); }) == errc::busy);
}

TEST_CASE("limits on rooms per member and members per room") {
  ChatLimits limits;
  limits.rooms_per_member = 2;
  limits.members_per_room = 2;
  Rooms rooms(limits);
  for (MemberId id = 1; id <= 3; ++id) rooms.claim_nick(id, "n" + std::to_string(id));
  rooms.join(1, "a");
  rooms.join(1, "b");
  CHECK(code_of([&] { rooms.join(1, "c"); }) == errc::too_large);
  rooms.join(2, "a");
  CHECK(code_of([&] { rooms.join(3, "a"); }) == errc::busy);
  CHECK(code_of([&] { rooms.join(3, "bad room"); }) == errc::bad_request);
}

TEST_CASE("remove leaves every room and frees the nick") {
  Rooms rooms;
  rooms.claim_nick(1, "alice");
  rooms.claim_nick(2, "bob");
  rooms.join(1, "a");
  rooms.join(1, "b");
  rooms.join(2, "a");
  auto left = rooms.remove(1);
  REQUIRE(left.size() == 2);
  CHECK(left[0].first == "a");
  CHECK(left[0].second == std::vector<MemberId>{2});
  CHECK(left[1].first == "b");
  CHECK(left[1].second.empty());
  CHECK_FALSE(rooms.find_nick("alice"));
  CHECK(rooms.rooms().size() == 1);
  CHECK(rooms.remove(1).empty());
}

TEST_CASE("pm finds the recipient by nick") {
  Rooms rooms;
  rooms.claim_nick(1, "alice");
  rooms.claim_nick(2, "bob");
  CHECK(rooms.pm(1, "bob", "hi", t0) == 2);
  CHECK(code_of([&] { rooms.pm(1, "carol", "hi", t0); }) == errc::not_found);
}
