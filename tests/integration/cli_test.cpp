// coserve-cli's first subcommands against a real server: output and exit codes.
#include <catch2/catch.hpp>

#include "test_support.hpp"

using namespace coserve;

TEST_CASE("coserve-cli echo and hello") {
  test::ServerProcess server;
  auto cli = test::binary("coserve-cli").string();
  auto echo = test::run_program({cli, "--port", server.port("framed"), "echo", "hello", "world"});
  CHECK(echo.status == 0);
  CHECK(echo.out == "hello world\n");
  auto hello = test::run_program({cli, "--port", server.port("framed"), "hello"});
  CHECK(hello.status == 0);
  CHECK(json::parse(hello.out)["server"] == "coserve");
}

TEST_CASE("coserve-cli exit codes: 2 usage, 3 connection failure") {
  auto cli = test::binary("coserve-cli").string();
  CHECK(test::run_program({cli}).status == 2);
  CHECK(test::run_program({cli, "frobnicate"}).status == 2);
  test::TempDir dir;
  // A port nothing listens on: bind one, close it, use it.
  auto refused = test::run_program({cli, "--port", "1", "hello"});
  CHECK(refused.status == 3);
  CHECK(refused.err.find("cannot connect") != std::string::npos);
}
