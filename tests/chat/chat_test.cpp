// Chat against the real server: framed clients and line-mode (`nc`-style) clients share rooms.
#include <catch2/catch.hpp>

#include <sys/socket.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>

#include "coserve/client.hpp"
#include "test_support.hpp"

using namespace coserve;
using namespace std::chrono_literals;
using tcp = asio::ip::tcp;

namespace {

// A line-mode client, as `nc` would be.
class LineClient {
 public:
  explicit LineClient(asio::any_io_executor ex) : socket_(ex) {}
  awaitable<void> connect(const std::string& port) {
    co_await socket_.async_connect({asio::ip::make_address("127.0.0.1"),
                                    static_cast<unsigned short>(std::stoi(port))},
                                   use_awaitable);
  }
  awaitable<void> send(std::string line) {
    line += "\n";
    co_await asio::async_write(socket_, asio::buffer(line), use_awaitable);
  }
  awaitable<std::string> line() {
    auto n = co_await asio::async_read_until(socket_, asio::dynamic_buffer(buffer_), '\n',
                                             use_awaitable);
    std::string out = buffer_.substr(0, n - 1);
    buffer_.erase(0, n);
    if (!out.empty() && out[0] == '[') messages_.push_back(out);
    co_return out;
  }
  // Every message line ("[room] nick: text") read so far, skipped or not.
  const std::vector<std::string>& messages() const { return messages_; }
  // The next line that starts with `prefix`, skipping others.
  awaitable<std::string> line_starting(const std::string& prefix) {
    for (;;) {
      auto l = co_await line();
      if (l.rfind(prefix, 0) == 0) co_return l;
    }
  }
  tcp::socket& socket() { return socket_; }

 private:
  tcp::socket socket_;
  std::string buffer_;
  std::vector<std::string> messages_;
};

template <class... A>
json req(std::string op, A&&... fields) {
  return test::make_request("chat", std::move(op), std::forward<A>(fields)...);
}

awaitable<Frame> ok(Client& c, json request) {
  auto reply = co_await c.call(std::move(request));
  INFO(reply.head.dump());
  REQUIRE(reply.head["ok"] == true);
  co_return reply;
}

awaitable<std::string> fails(Client& c, json request) {
  auto reply = co_await c.call(std::move(request));
  INFO(reply.head.dump());
  REQUIRE(reply.head["ok"] == false);
  co_return error_code_of(reply).value_or("");
}

// "room from: text" of each chat message push up to and including the one with `last` text.
awaitable<std::vector<std::string>> messages_until(Client& c, const std::string& last) {
  std::vector<std::string> out;
  for (;;) {
    auto push = co_await c.next_push();
    if (push.head.value("event", "") != "message") continue;
    std::string text = push.head["text"];
    out.push_back(push.head.value("room", std::string("pm")) + " " +
                  push.head["from"].get<std::string>() + ": " + text);
    if (text == last) co_return out;
  }
}

// The next push with this event name.
awaitable<Frame> push_event(Client& c, const std::string& event) {
  for (;;) {
    auto push = co_await c.next_push();
    if (push.head.value("event", "") == event) co_return push;
  }
}

}  // namespace

TEST_CASE("three clients in two rooms over framed and line mode see exactly their messages") {
  test::ServerProcess server;
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    Client alice(ex), bob(ex);
    co_await alice.connect("127.0.0.1", server.port("framed"));
    co_await bob.connect("127.0.0.1", server.port("framed"));
    LineClient carol(ex);
    co_await carol.connect(server.port("chat_line"));

    co_await ok(alice, req("join", "room", "lobby", "nick", "alice"));
    co_await ok(alice, req("join", "room", "dev"));  // the nick carries over
    co_await ok(bob, req("join", "room", "dev", "nick", "bob"));
    co_await carol.send("carol");
    auto welcome = co_await carol.line_starting("* welcome carol");
    CHECK(welcome.find("alice") != std::string::npos);  // alice is in lobby

    co_await ok(alice, req("say", "room", "lobby", "text", "1"));
    co_await ok(bob, req("say", "room", "dev", "text", "2"));
    co_await carol.send("3");  // to lobby, carol's current room
    auto upto3 = co_await messages_until(alice, "3");
    co_await ok(alice, req("say", "room", "dev", "text", "4"));
    co_await carol.send("/join dev");
    co_await carol.line_starting("* you are in dev");
    co_await carol.send("5");  // now to dev
    auto rest = co_await messages_until(alice, "5");

    upto3.insert(upto3.end(), rest.begin(), rest.end());
    CHECK(upto3 == std::vector<std::string>{"lobby alice: 1", "dev bob: 2", "lobby carol: 3",
                                            "dev alice: 4", "dev carol: 5"});
    auto bob_saw = co_await messages_until(bob, "5");
    CHECK(bob_saw == std::vector<std::string>{"dev bob: 2", "dev alice: 4", "dev carol: 5"});
    co_await carol.line_starting("[dev] carol: 5");
    CHECK(carol.messages() ==
          std::vector<std::string>{"[lobby] alice: 1", "[lobby] carol: 3", "[dev] carol: 5"});

    // Sequence numbers are per room and have no gaps.
    auto h = co_await ok(bob, req("history", "room", "dev"));
    auto& msgs = h.head["messages"];
    REQUIRE(msgs.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) CHECK(msgs[i]["seq"] == i + 1);
  }());
}

TEST_CASE("history keeps the last N messages of a room, oldest first") {
  test::ServerProcess server({"--set", "services.chat.history=3"});
  test::run([&]() -> awaitable<void> {
    Client c(co_await asio::this_coro::executor);
    co_await c.connect("127.0.0.1", server.port("framed"));
    co_await ok(c, req("join", "room", "r", "nick", "n"));
    for (int i = 1; i <= 5; ++i)
      co_await ok(c, req("say", "room", "r", "text", "m" + std::to_string(i)));
    auto all = co_await ok(c, req("history", "room", "r", "limit", 10));
    auto& m = all.head["messages"];
    REQUIRE(m.size() == 3);
    CHECK(m[0]["text"] == "m3");
    CHECK(m[0]["seq"] == 3);
    CHECK(m[2]["text"] == "m5");
    CHECK(m[2]["from"] == "n");
    CHECK(m[2]["ts"].is_number_integer());
    auto two = co_await ok(c, req("history", "room", "r", "limit", 2));
    CHECK(two.head["messages"].size() == 2);
    CHECK(two.head["messages"][0]["text"] == "m4");
    auto awaited0 = co_await fails(c, req("history", "room", "nowhere"));
    CHECK(awaited0 == "not_found");
  }());
}

TEST_CASE("private messages between framed and line users") {
  test::ServerProcess server;
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    Client alice(ex);
    co_await alice.connect("127.0.0.1", server.port("framed"));
    co_await ok(alice, req("join", "room", "lobby", "nick", "alice"));
    LineClient carol(ex);
    co_await carol.connect(server.port("chat_line"));
    co_await carol.send("carol");
    co_await carol.line_starting("* welcome");

    auto sent = co_await ok(alice, req("pm", "to", "carol", "text", "psst"));
    CHECK(sent.head["to"] == "carol");
    auto awaited1 = co_await carol.line_starting("[pm]");
    CHECK(awaited1 == "[pm] alice: psst");
    co_await carol.send("/msg alice hello there");
    auto pm = co_await push_event(alice, "message");
    CHECK(pm.head["pm"] == true);
    CHECK(pm.head["from"] == "carol");
    CHECK(pm.head["to"] == "alice");
    CHECK(pm.head["text"] == "hello there");
    auto awaited2 = co_await fails(alice, req("pm", "to", "nobody", "text", "x"));
    CHECK(awaited2 == "not_found");
    co_await carol.send("/msg nobody x");
    auto awaited3 = co_await carol.line_starting("!");
    CHECK(awaited3.rfind("! not_found", 0) == 0);
  }());
}

TEST_CASE("presence: joined, left on leave and on disconnect, who, nick rules") {
  test::ServerProcess server;
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    Client alice(ex);
    co_await alice.connect("127.0.0.1", server.port("framed"));
    co_await ok(alice, req("join", "room", "dev", "nick", "alice"));
    {
      Client bob(ex);
      co_await bob.connect("127.0.0.1", server.port("framed"));
      auto joined = co_await ok(bob, req("join", "room", "dev", "nick", "bob"));
      CHECK(joined.head["members"] == json::array({"alice", "bob"}));
      auto event = co_await push_event(alice, "joined");
      CHECK(event.head["room"] == "dev");
      CHECK(event.head["nick"] == "bob");
      auto who = co_await ok(alice, req("who", "room", "dev"));
      CHECK(who.head["members"] == json::array({"alice", "bob"}));
      auto rooms = co_await ok(alice, req("rooms"));
      CHECK(rooms.head["rooms"] == json::parse(R"([{"room":"dev","members":2}])"));

      // Nicks: taken → exists; a registered user's name → forbidden for anonymous users.
      Client eve(ex);
      co_await eve.connect("127.0.0.1", server.port("framed"));
      auto awaited4 = co_await fails(eve, req("join", "room", "x", "nick", "alice"));
      CHECK(awaited4 == "exists");
      auto awaited5 = co_await fails(eve, req("join", "room", "x", "nick", "admin"));
      CHECK(awaited5 == "forbidden");
      auto awaited6 = co_await fails(eve, req("say", "room", "dev", "text", "x"));
      CHECK(awaited6 == "forbidden");

      co_await ok(bob, req("leave", "room", "dev"));
      auto left = co_await push_event(alice, "left");
      CHECK(left.head["nick"] == "bob");
      co_await ok(bob, req("join", "room", "dev"));
      co_await push_event(alice, "joined");
    }  // bob disconnects
    auto gone = co_await push_event(alice, "left");
    CHECK(gone.head["nick"] == "bob");
    CHECK(gone.head["reason"] == "disconnected");

    LineClient carol(ex);
    co_await carol.connect(server.port("chat_line"));
    co_await carol.send("alice");  // taken
    auto awaited7 = co_await carol.line();
    CHECK(awaited7.rfind("! exists", 0) == 0);
    co_await carol.send("admin");  // a registered user's name
    auto awaited8 = co_await carol.line();
    CHECK(awaited8.rfind("! forbidden", 0) == 0);
    co_await carol.send("carol");
    co_await carol.line_starting("* welcome carol");
    co_await carol.send("/join dev");
    auto carol_in = co_await push_event(alice, "joined");
    CHECK(carol_in.head["nick"] == "carol");
    co_await carol.send("/who");
    auto awaited9 = co_await carol.line_starting("* in dev");
    CHECK(awaited9 == "* in dev: alice, carol");
    co_await carol.send("/quit");
    auto awaited10 = co_await carol.line_starting("* bye");
    CHECK(awaited10 == "* bye");
    auto carol_out = co_await push_event(alice, "left");
    CHECK(carol_out.head["nick"] == "carol");
    CHECK(carol_out.head["reason"] == "quit");
  }());
}

TEST_CASE("a member that stops reading is dropped, a fast member still gets every message") {
  test::ServerProcess server({"--set", "services.chat.out_limit_bytes=65536", "--set",
                              "services.chat.drop_grace_ms=200", "--set",
                              "services.chat.messages_per_second=1000000", "--set",
                              "services.chat.burst=1000000", "--set",
                              "services.chat.max_text=16384"});
  test::run(
      [&]() -> awaitable<void> {
        auto ex = co_await asio::this_coro::executor;
        Client sender(ex), fast(ex);
        co_await sender.connect("127.0.0.1", server.port("framed"));
        co_await fast.connect("127.0.0.1", server.port("framed"));
        co_await ok(sender, req("join", "room", "r", "nick", "sender"));
        co_await ok(fast, req("join", "room", "r", "nick", "fast"));

        // The stalled member: joins over a raw socket with a small receive buffer, never reads.
        tcp::socket slow(ex);
        slow.open(tcp::v4());
        slow.set_option(asio::socket_base::receive_buffer_size(4096));
        co_await slow.async_connect({asio::ip::make_address("127.0.0.1"),
                                     static_cast<unsigned short>(std::stoi(server.port("framed")))},
                                    use_awaitable);
        auto join = encode_frame(
            {{"id", 1}, {"service", "chat"}, {"op", "join"}, {"room", "r"}, {"nick", "slow"}});
        std::vector<asio::const_buffer> bufs{asio::buffer(join->head)};
        co_await asio::async_write(slow, bufs, use_awaitable);
        co_await push_event(fast, "joined");

        const std::string text(8192, 'x');
        int sent = 0;
        bool dropped = false;
        while (!dropped && sent < 20000) {
          for (int i = 0; i < 50; ++i, ++sent)
            co_await ok(sender, req("say", "room", "r", "text", text + std::to_string(sent)));
          auto who = co_await ok(sender, req("who", "room", "r"));
          dropped = who.head["members"] == json::array({"fast", "sender"});
        }
        REQUIRE(dropped);
        co_await ok(sender, req("say", "room", "r", "text", "end"));

        // Every message reached the fast member, in order, and it saw the drop.
        std::uint64_t expected_seq = 1;
        bool saw_drop = false;
        for (;;) {
          auto push = co_await fast.next_push();
          auto event = push.head.value("event", "");
          if (event == "left") {
            CHECK(push.head["nick"] == "slow");
            CHECK(push.head["reason"] == "dropped");
            saw_drop = true;
          }
          if (event != "message") continue;
          REQUIRE(push.head["seq"] == expected_seq);
          if (push.head["text"] == "end") break;
          CHECK(push.head["text"] == text + std::to_string(expected_seq - 1));
          ++expected_seq;
        }
        CHECK(expected_seq == static_cast<std::uint64_t>(sent) + 1);
        CHECK(saw_drop);
      }(),
      120s);
}

TEST_CASE("flood control refuses a member sending too fast, with a clear message") {
  test::ServerProcess server({"--set", "services.chat.messages_per_second=2", "--set",
                              "services.chat.burst=3"});
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    Client c(ex);
    co_await c.connect("127.0.0.1", server.port("framed"));
    co_await ok(c, req("join", "room", "r", "nick", "n"));
    int accepted = 0;
    std::string refusal;
    for (int i = 0; i < 10; ++i) {
      auto reply = co_await c.call(req("say", "room", "r", "text", "spam"));
      if (reply.head["ok"] == true) {
        ++accepted;
      } else {
        CHECK(error_code_of(reply) == "busy");
        refusal = reply.head["error"]["message"];
      }
    }
    CHECK(accepted >= 3);
    CHECK(accepted < 10);
    CHECK(refusal.find("flood") != std::string::npos);
    // The line listener applies the same rule.
    LineClient line(ex);
    co_await line.connect(server.port("chat_line"));
    co_await line.send("liner");
    co_await line.line_starting("* welcome");
    for (int i = 0; i < 10; ++i) co_await line.send("spam");
    auto awaited11 = co_await line.line_starting("!");
    CHECK(awaited11.rfind("! busy: flood control", 0) == 0);
  }());
}

TEST_CASE("a registered user's name is theirs in any case: others get forbidden") {
  test::TempDir dir;
  for (const char* name : {"alice", "bob"}) {
    auto added = test::run_program({test::binary("coserve").string(), "user", "add", name,
                                    "--password-stdin", "--data-dir", dir.path().string()},
                                   std::string("pw-") + name + "\n");
    INFO(added.err);
    REQUIRE(added.status == 0);
  }
  test::ServerProcess server({}, dir.path());
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    Client anon(ex);
    co_await anon.connect("127.0.0.1", server.port("framed"));
    for (const char* nick : {"alice", "Alice", "ALICE", "aLiCe"}) {
      INFO(nick);
      auto code = co_await fails(anon, req("join", "room", "dev", "nick", nick));
      CHECK(code == "forbidden");
    }
    Client bob(ex);
    co_await bob.connect("127.0.0.1", server.port("framed"));
    json login = {{"service", "auth"}, {"op", "login"}, {"user", "bob"}, {"password", "pw-bob"}};
    auto bob_in = co_await bob.call(login);
    REQUIRE(bob_in.head["ok"] == true);
    auto as_alice = co_await fails(bob, req("join", "room", "dev", "nick", "Alice"));
    CHECK(as_alice == "forbidden");
    // The owner may use their name in any case.
    co_await ok(bob, req("join", "room", "dev", "nick", "Bob"));

    LineClient line(ex);
    co_await line.connect(server.port("chat_line"));
    co_await line.send("ALICE");
    auto refused = co_await line.line();
    CHECK(refused.rfind("! forbidden", 0) == 0);
    co_await line.send("bOB");
    auto refused_bob = co_await line.line();
    CHECK(refused_bob.rfind("! forbidden", 0) == 0);
    co_await line.send("carol");
    co_await line.line_starting("* welcome carol");
  }());
}
