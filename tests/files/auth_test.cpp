// Users and login against the real server: `coserve user ...`, login good/bad/unknown, the
// back-off, logout/whoami, the first-start admin, and files refusing anonymous sessions.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>

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

TEST_CASE("login: failures are throttled per user and per address", "[auth]") {
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
    // The same address is throttled for other users too.
    auto r5 = co_await login(*c, "bob", "pw-bob");
    CHECK(error_of(r5) == "busy");
    // After the back-off, the right password works and clears the record.
    co_await sleep_for(1600ms);
    auto r6 = co_await login(*c, "alice", "pw-alice");
    CHECK(error_of(r6) == "ok");
    auto r7 = co_await login(*c, "bob", "pw-bob");
    CHECK(error_of(r7) == "ok");
  }());
  CHECK(server.log().find("failed login") != std::string::npos);
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
