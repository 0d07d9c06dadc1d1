// Users and login against the real server: `coserve user ...`, login good/bad/unknown, the
// back-off, logout/whoami, the first-start admin, and files refusing anonymous sessions.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "files_helpers.hpp"

using namespace coserve;
using namespace coserve::test;
using namespace coserve::test::files;
using namespace std::chrono_literals;

namespace {

awaitable<Frame> login(Client& c, const std::string& user, const std::string& password) {
  co_return co_await c.call(
      Req("login").set("user", user).set("password", password).set("service", "auth"));
}

// Milliseconds a failing login for `user` takes.
awaitable<double> timed_failure(Client& c, std::string user) {
  auto t0 = std::chrono::steady_clock::now();
  auto r = co_await login(c, user, "nope");
  REQUIRE(error_of(r) == "unauthenticated");
  co_return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
      .count();
}

// One login on a fresh framed connection made from `source` (any 127.x.y.z: Linux routes the
// whole 127.0.0.0/8 to loopback, so each is a different client address to the server).
// Returns the reply's head.
awaitable<json> login_from(const ServerProcess& server, const std::string& source,
                           const std::string& user, const std::string& password) {
  asio::ip::tcp::socket socket(co_await asio::this_coro::executor);
  socket.open(asio::ip::tcp::v4());
  socket.bind({asio::ip::make_address(source), 0});
  co_await socket.async_connect(
      {asio::ip::make_address("127.0.0.1"),
       static_cast<unsigned short>(std::stoi(server.port("framed")))},
      use_awaitable);
  json request = json::object();
  request["id"] = 1;
  request["service"] = "auth";
  request["op"] = "login";
  request["user"] = user;
  request["password"] = password;
  std::string text = request.dump();
  std::string bytes(8, '\0');
  auto put_u32 = [&](std::size_t at, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) bytes[at + i] = static_cast<char>(v >> (24 - 8 * i));
  };
  put_u32(0, static_cast<std::uint32_t>(text.size()));
  put_u32(4, 0);
  bytes += text;
  co_await asio::async_write(socket, asio::buffer(bytes), use_awaitable);
  unsigned char head[8];
  co_await asio::async_read(socket, asio::buffer(head), use_awaitable);
  auto get_u32 = [&](int at) {
    return (std::uint32_t(head[at]) << 24) | (std::uint32_t(head[at + 1]) << 16) |
           (std::uint32_t(head[at + 2]) << 8) | std::uint32_t(head[at + 3]);
  };
  std::string reply(get_u32(0) + get_u32(4), '\0');
  co_await asio::async_read(socket, asio::buffer(reply), use_awaitable);
  co_return json::parse(reply.substr(0, get_u32(0)));
}

std::string code_of(const json& reply) {
  if (reply.value("ok", false)) return "ok";
  return reply["error"]["code"].get<std::string>();
}

std::string users_json(const std::filesystem::path& dir) {
  std::ifstream in(dir / "users.json");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("coserve user add/passwd/del/list manage users.json", "[auth][cli]") {
  TempDir dir;
  auto coserve_bin = binary("coserve").string();
  auto data = dir.path().string();
  add_user(dir.path(), "alice", "pw-alice", "500M");

  auto list = run_program({coserve_bin, "user", "list", "--data-dir", data});
  REQUIRE(list.status == 0);
  CHECK(list.out.find("alice") != std::string::npos);
  CHECK(list.out.find("quota=500M") != std::string::npos);
  CHECK(std::filesystem::is_directory(dir.path() / "homes" / "alice"));
  // The password is stored only as an Argon2id hash.
  auto text = users_json(dir.path());
  CHECK(text.find("pw-alice") == std::string::npos);
  CHECK(text.find("$argon2id$") != std::string::npos);

  SECTION("a second add of the same name fails with 1") {
    auto again = run_program(
        {coserve_bin, "user", "add", "alice", "--password-stdin", "--data-dir", data}, "other\n");
    CHECK(again.status == 1);
    CHECK(again.err.find("exists") != std::string::npos);
  }
  SECTION("usage errors exit 2") {
    CHECK(run_program({coserve_bin, "user", "add", "--data-dir", data}).status == 2);
    CHECK(run_program({coserve_bin, "user", "frobnicate"}).status == 2);
    CHECK(run_program({coserve_bin, "user", "add", "bob", "--quota", "lots", "--data-dir", data},
                      "pw\n")
              .status == 2);
  }
  SECTION("invalid names and empty passwords are refused") {
    CHECK(
        run_program({coserve_bin, "user", "add", "../evil", "--password-stdin", "--data-dir", data},
                    "pw\n")
            .status == 1);
    CHECK(run_program({coserve_bin, "user", "add", "bob", "--password-stdin", "--data-dir", data},
                      "\n")
              .status == 1);
  }
  SECTION("passwd changes the hash, del removes the user") {
    auto before = users_json(dir.path());
    auto rc = run_program(
        {coserve_bin, "user", "passwd", "alice", "--password-stdin", "--data-dir", data},
        "new-password\n");
    REQUIRE(rc.status == 0);
    CHECK(users_json(dir.path()) != before);
    CHECK(run_program(
              {coserve_bin, "user", "passwd", "nobody", "--password-stdin", "--data-dir", data},
              "x\n")
              .status == 1);
    REQUIRE(run_program({coserve_bin, "user", "del", "alice", "--data-dir", data}).status == 0);
    CHECK(run_program({coserve_bin, "user", "list", "--data-dir", data}).out.find("alice") ==
          std::string::npos);
    CHECK(run_program({coserve_bin, "user", "del", "alice", "--data-dir", data}).status == 1);
  }
}

TEST_CASE("login: good, wrong password, unknown user, logout and whoami", "[auth]") {
  TempDir dir;
  add_user(dir.path(), "alice", "correct horse");
  ServerProcess server({}, dir.path());
  run([&]() -> awaitable<void> {
    auto c = co_await connect(server);
    auto who = co_await c->call(Req("whoami").set("service", "auth"));
    CHECK(who.head["user"].is_null());

    // Anonymous sessions cannot use files.
    auto anon = co_await files_call(*c, Req("ls"));
    CHECK(error_of(anon) == "unauthenticated");

    auto wrong = co_await login(*c, "alice", "battery staple");
    auto unknown = co_await login(*c, "mallory", "correct horse");
    CHECK(error_of(wrong) == "unauthenticated");
    CHECK(error_of(unknown) == "unauthenticated");
    // Same error, same words: nothing tells a wrong password from an unknown user.
    CHECK(wrong.head["error"]["message"] == unknown.head["error"]["message"]);

    auto good = co_await login(*c, "alice", "correct horse");
    REQUIRE(error_of(good) == "ok");
    CHECK(good.head["user"] == "alice");
    who = co_await c->call(Req("whoami").set("service", "auth"));
    CHECK(who.head["user"] == "alice");
    auto pwd = co_await files_call(*c, Req("pwd"));
    CHECK(pwd.head["cwd"] == "/");

    auto r1 = co_await c->call(Req("logout").set("service", "auth"));
    REQUIRE(error_of(r1) == "ok");
    who = co_await c->call(Req("whoami").set("service", "auth"));
    CHECK(who.head["user"].is_null());
    auto r2 = co_await files_call(*c, Req("pwd"));
    CHECK(error_of(r2) == "unauthenticated");

    // Missing fields are bad requests, not crashes.
    auto no_password = Req("login").set("service", "auth").set("user", "alice");
    auto r3 = co_await c->call(no_password);
    CHECK(error_of(r3) == "bad_request");
  }());
  // Nothing a client sent as a password reaches the log.
  auto log = server.log();
  CHECK(log.find("correct horse") == std::string::npos);
  CHECK(log.find("battery staple") == std::string::npos);
}

TEST_CASE("login: unknown user and wrong password take about the same time", "[auth]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw");
  ServerProcess server({"--set", "services.auth.throttle_free_failures=100"}, dir.path());
  run([&]() -> awaitable<void> {
    auto c = co_await connect(server);
    co_await timed_failure(*c, "mallory");  // warm-up: the dummy hash is made on first use
    double known = 0, unknown = 0;
    for (int i = 0; i < 3; ++i) {
      known += co_await timed_failure(*c, "alice");
      unknown += co_await timed_failure(*c, "mallory");
    }
    INFO("known " << known << " ms, unknown " << unknown << " ms");
    // Both run one Argon2id verification; an unknown user must not be answered much faster.
    CHECK(unknown > known * 0.5);
  }());
}

TEST_CASE("login: failures are throttled per user and address; others are not held up", "[auth]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw-alice");
  add_user(dir.path(), "bob", "pw-bob");
  ServerProcess server({"--set", "services.auth.throttle_free_failures=3", "--set",
                        "services.auth.throttle_base_ms=1500"},
                       dir.path());
  run([&]() -> awaitable<void> {
    auto c = co_await connect(server);
    for (int i = 0; i < 3; ++i) {
      auto r4 = co_await login(*c, "alice", "wrong");
      CHECK(error_of(r4) == "unauthenticated");
    }
    // The 4th attempt, even with the right password, must wait.
    auto throttled = co_await login(*c, "alice", "pw-alice");
    INFO(throttled.head.dump());
    CHECK(error_of(throttled) == "busy");
    CHECK(throttled.head["error"]["message"].get<std::string>().find("retry after") !=
          std::string::npos);
    CHECK(throttled.head["error"]["retry_after_ms"].get<int>() > 0);
    // Another user at the same address, and alice from another address, are not held up.
    auto r5 = co_await login(*c, "bob", "pw-bob");
    CHECK(error_of(r5) == "ok");
    auto elsewhere = co_await login_from(server, "127.0.0.2", "alice", "pw-alice");
    CHECK(code_of(elsewhere) == "ok");
    // After the back-off, the right password works from here too and clears the record.
    co_await sleep_for(1600ms);
    auto r6 = co_await login(*c, "alice", "pw-alice");
    CHECK(error_of(r6) == "ok");
    auto r7 = co_await login(*c, "alice", "wrong");
    CHECK(error_of(r7) == "unauthenticated");  // a fresh record: not busy
  }());
  CHECK(server.log().find("failed login") != std::string::npos);
}

TEST_CASE("login: guesses from other addresses cannot lock the real user out", "[auth]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw-alice");
  ServerProcess server({"--set", "services.auth.throttle_base_ms=30000", "--set",
                        "services.auth.throttle_user_free_failures=6", "--set",
                        "services.auth.throttle_user_base_ms=30000", "--set",
                        "services.auth.throttle_user_cap_ms=30000"},
                       dir.path());
  run([&]() -> awaitable<void> {
    // Alice has logged in from 127.0.0.1 before.
    auto first = co_await login_from(server, "127.0.0.1", "alice", "pw-alice");
    REQUIRE(code_of(first) == "ok");
    // An attacker at one address: only that address waits.
    for (int i = 0; i < 3; ++i) {
      auto guess = co_await login_from(server, "127.0.0.66", "alice", "guess" + std::to_string(i));
      CHECK(code_of(guess) == "unauthenticated");
    }
    auto held = co_await login_from(server, "127.0.0.66", "alice", "guess-again");
    CHECK(code_of(held) == "busy");
    auto real = co_await login_from(server, "127.0.0.1", "alice", "pw-alice");
    CHECK(code_of(real) == "ok");
    // Rotating addresses: past the per-user budget, addresses new to alice must wait...
    for (int i = 0; i < 3; ++i) {  // 3 + 3 failures: the budget of 6 is spent
      auto guess = co_await login_from(server, "127.0.1." + std::to_string(i + 1), "alice", "x");
      CHECK(code_of(guess) == "unauthenticated");
    }
    auto rotated = co_await login_from(server, "127.0.2.1", "alice", "x");
    CHECK(code_of(rotated) == "busy");
    // ...but the address alice logged in from is not one of them.
    auto still_real = co_await login_from(server, "127.0.0.1", "alice", "pw-alice");
    CHECK(code_of(still_real) == "ok");
  }());
}

TEST_CASE("login: a flood of fresh keys does not wipe the back-off of the keys under attack",
          "[auth]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw-alice");
  ServerProcess server({"--set", "services.auth.throttle_base_ms=30000", "--set",
                        "services.auth.throttle_max_keys=10", "--set",
                        "services.auth.throttle_address_free_failures=1000"},
                       dir.path());
  run([&]() -> awaitable<void> {
    for (int i = 0; i < 3; ++i) {
      auto guess = co_await login_from(server, "127.0.0.66", "alice", "guess");
      CHECK(code_of(guess) == "unauthenticated");
    }
    auto held = co_await login_from(server, "127.0.0.66", "alice", "guess");
    REQUIRE(code_of(held) == "busy");
    // Twice the table's size in new (address, user) keys: the table prunes, more than once.
    for (int i = 0; i < 20; ++i) {
      auto flood = co_await login_from(server, "127.0.0.66", "nobody" + std::to_string(i), "x");
      CHECK(code_of(flood) == "unauthenticated");
    }
    auto still_held = co_await login_from(server, "127.0.0.66", "alice", "pw-alice");
    CHECK(code_of(still_held) == "busy");
  }());
}

TEST_CASE("a password change or removal ends the user's sessions", "[auth]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw-alice");
  add_user(dir.path(), "bob", "pw-bob");
  ServerProcess server({"--set", "services.auth.users_poll_ms=100"}, dir.path());
  auto coserve_bin = binary("coserve").string();
  auto data = dir.path().string();
  run([&]() -> awaitable<void> {
    auto alice1 = co_await connect(server, "alice", "pw-alice");
    auto alice2 = co_await connect(server, "alice", "pw-alice");
    auto bob = co_await connect(server, "bob", "pw-bob");
    auto anon = co_await connect(server);
    // A session that logged in as alice and then as bob is bob's only.
    auto switched = co_await connect(server, "alice", "pw-alice");
    auto as_bob = co_await login(*switched, "bob", "pw-bob");
    REQUIRE(error_of(as_bob) == "ok");

    auto rc = run_program({coserve_bin, "user", "passwd", "alice", "--password-stdin",
                           "--data-dir", data},
                          "new-alice\n");
    REQUIRE(rc.status == 0);
    for (auto* c : {alice1.get(), alice2.get()}) {
      auto push = co_await c->next_push();
      INFO(push.head.dump());
      CHECK(push.head["event"] == "shutdown");
      CHECK(push.head["reason"] == "password changed");
      bool closed = false;
      try {
        (void)co_await c->call(Req("whoami").set("service", "auth"));
      } catch (const boost::system::system_error&) {
        closed = true;
      }
      CHECK(closed);
    }
    // Other users' and anonymous sessions go on.
    for (auto* c : {bob.get(), anon.get(), switched.get()}) {
      auto who = co_await c->call(Req("whoami").set("service", "auth"));
      CHECK(error_of(who) == "ok");
    }
    auto fresh = co_await connect(server, "alice", "new-alice");

    REQUIRE(run_program({coserve_bin, "user", "del", "bob", "--data-dir", data}).status == 0);
    for (auto* c : {bob.get(), switched.get()}) {
      auto push = co_await c->next_push();
      CHECK(push.head["reason"] == "user removed");
    }
    auto who = co_await fresh->call(Req("whoami").set("service", "auth"));
    CHECK(who.head["user"] == "alice");
  }());
  CHECK(server.log().find("password change of 'alice': ended 2 session(s)") != std::string::npos);
}

TEST_CASE("first start creates admin with a printed random password", "[auth]") {
  TempDir dir;
  std::string password;
  {
    ServerProcess server({}, dir.path());
    auto log = server.log();
    auto at = log.find("with password: ");
    REQUIRE(at != std::string::npos);
    password = log.substr(at + 15, log.find('\n', at) - at - 15);
    CHECK(password.size() >= 16);
    CHECK(log.find("coserve user passwd admin") != std::string::npos);
    run([&]() -> awaitable<void> {
      auto c = co_await connect(server, "admin", password);
      auto who = co_await c->call(Req("whoami").set("service", "auth"));
      CHECK(who.head["user"] == "admin");
    }());
  }
  // A second start keeps the users and prints no new password.
  ServerProcess again({}, dir.path());
  CHECK(again.log().find("with password: ") == std::string::npos);
  run([&]() -> awaitable<void> { co_await connect(again, "admin", password); }());
}

TEST_CASE("COSERVE_ADMIN_PASSWORD sets the first admin's password", "[auth]") {
  TempDir dir;
  ::setenv("COSERVE_ADMIN_PASSWORD", "from-the-environment", 1);
  ServerProcess server({}, dir.path());
  ::unsetenv("COSERVE_ADMIN_PASSWORD");
  CHECK(server.log().find("from-the-environment") == std::string::npos);
  run([&]() -> awaitable<void> { co_await connect(server, "admin", "from-the-environment"); }());
}

TEST_CASE("a user added while the server runs can log in", "[auth]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw-alice");
  ServerProcess server({}, dir.path());
  add_user(dir.path(), "carol", "pw-carol");
  run([&]() -> awaitable<void> { co_await connect(server, "carol", "pw-carol"); }());
}
