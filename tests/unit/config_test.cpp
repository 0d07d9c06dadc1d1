#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "coserve/config.hpp"
#include "coserve/error.hpp"

using namespace coserve;

TEST_CASE("core's defaults name only core's listeners; services declare theirs") {
  Config c;
  CHECK(c.at("listeners.framed").is_string());
  CHECK(c.at("listeners.framed_tls").is_string());
  CHECK_THROWS_AS(c.at("listeners.echo_tcp"), ConfigError);
  CHECK(c.at("auth.required").empty());
  c.add_listener("echo_tcp", "127.0.0.1:7001");
  CHECK(c.get<std::string>("listeners.echo_tcp") == "127.0.0.1:7001");
  c.set("listeners.echo_tcp=");
  CHECK(c.get<std::string>("listeners.echo_tcp").empty());
  CHECK_THROWS_AS(c.add_listener("framed", "x"), ConfigError);  // a name is taken once
  c.add_login_required("files");
  c.add_login_required("files");
  CHECK(c.at("auth.required") == json::array({"files"}));
}

TEST_CASE("set overrides take strings literally and other types as JSON") {
  Config c;
  c.set("listeners.framed=127.0.0.1:0");
  CHECK(c.get<std::string>("listeners.framed") == "127.0.0.1:0");
  c.set("listeners.framed_tls=127.0.0.1:0");
  CHECK(c.get<std::string>("listeners.framed_tls") == "127.0.0.1:0");
  c.set("server.workers=3");
  CHECK(c.get<int>("server.workers") == 3);
  c.set("access.deny=[\"10.0.0.0/8\"]");
  CHECK(c.at("access.deny").size() == 1);
}

TEST_CASE("unknown keys and wrong types are errors naming the key") {
  Config c;
  CHECK_THROWS_WITH(c.set("listeners.nope=1"), Catch::Contains("listeners.nope"));
  CHECK_THROWS_WITH(c.set("server.workers=lots"), Catch::Contains("server.workers"));
  CHECK_THROWS_WITH(c.set("novalue"), Catch::Contains("KEY=VALUE"));
  CHECK_THROWS_WITH(c.merge({{"limits", {{"max_jsn", 1}}}}), Catch::Contains("limits.max_jsn"));
  CHECK_THROWS_WITH(c.merge({{"limits", {{"max_json", "big"}}}}), Catch::Contains("limits.max_json"));
}

TEST_CASE("a config file merges over the defaults") {
  auto path = std::filesystem::temp_directory_path() / "coserve-config-test.json";
  std::ofstream(path) << R"({"server": {"workers": 1}, "limits": {"max_body": 10}})";
  Config c;
  c.merge_file(path);
  CHECK(c.get<int>("server.workers") == 1);
  CHECK(c.get<int>("limits.max_body") == 10);
  CHECK(c.get<int>("limits.max_json") == 65536);
  std::ofstream(path) << "[1]";
  CHECK_THROWS_AS(c.merge_file(path), ConfigError);
  std::filesystem::remove(path);
}

TEST_CASE("service sections come from the service's defaults") {
  Config c;
  CHECK_THROWS(c.set("services.chat.history=5"));
  c.add_defaults("chat", {{"history", 100}});
  c.set("services.chat.history=5");
  CHECK(c.get<int>("services.chat.history") == 5);
}

TEST_CASE("error codes round-trip through their names") {
  for (int i = static_cast<int>(errc::bad_frame); i <= static_cast<int>(errc::internal); ++i) {
    auto code = static_cast<errc>(i);
    CHECK(errc_from_string(to_string(code)) == code);
  }
  CHECK_FALSE(errc_from_string("nonsense"));
  boost::system::error_code ec = errc::not_found;
  CHECK(ec.message() == "not_found");
}
