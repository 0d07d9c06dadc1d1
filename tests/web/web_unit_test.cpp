// The bridge's plain functions, without sockets: asset path mapping, content types, origin rule,
// Host rule; and the WebSocket stream's next layer over a local socket pair.
#include <fstream>

#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/write.hpp>

#include <catch2/catch.hpp>

#include "coserve/config.hpp"
#include "test_support.hpp"
#include "web/assets.hpp"
#include "web/origin.hpp"
#include "transport/ws_transport.hpp"

using coserve::web::asset_path;
using coserve::web::content_type;
using coserve::web::origin_allowed;
using coserve::web::read_asset;

TEST_CASE("asset_path maps request paths inside the asset dir") {
  CHECK(asset_path("/") == "index.html");
  CHECK(asset_path("/app.js") == "app.js");
  CHECK(asset_path("/img/logo.svg") == "img/logo.svg");
  CHECK(asset_path("/img/") == "img/index.html");
  CHECK(asset_path("/a%20b.txt") == "a b.txt");
}

TEST_CASE("asset_path refuses anything that could leave the asset dir") {
  for (const char* bad : {"", "app.js", "/..", "/../etc/passwd", "/a/../../b", "/%2e%2e/x",
                          "/%2E%2E/x", "/a/./b", "/.git/config", "/.env", "//etc/passwd",
                          "/a//b", "/a%00.js", "/a\\..\\b", "/%5c..%5cb", "/%", "/%zz",
                          "/%2"}) {
    INFO(bad);
    CHECK_FALSE(asset_path(bad).has_value());
  }
}

TEST_CASE("content_type by extension") {
  CHECK(content_type("index.html") == "text/html; charset=utf-8");
  CHECK(content_type("a/app.js") == "text/javascript; charset=utf-8");
  CHECK(content_type("STYLE.CSS") == "text/css; charset=utf-8");
  CHECK(content_type("favicon.svg") == "image/svg+xml");
  CHECK(content_type("x.png") == "image/png");
  CHECK(content_type("noext") == "application/octet-stream");
  CHECK(content_type("dir.d/noext") == "application/octet-stream");
  CHECK(content_type("x.exe") == "application/octet-stream");
}

TEST_CASE("read_asset serves regular files under the root only") {
  coserve::test::TempDir dir;
  auto root = dir.path() / "console";
  std::filesystem::create_directories(root / "sub");
  std::ofstream(root / "index.html") << "<p>hi</p>";
  std::ofstream(root / "sub" / "a.js") << "x";
  std::ofstream(dir.path() / "secret.txt") << "secret";
  std::filesystem::create_symlink(dir.path() / "secret.txt", root / "link.txt");
  std::filesystem::create_symlink(root / "index.html", root / "inside.html");

  auto index = read_asset(root, "index.html");
  REQUIRE(index);
  CHECK(index->content == "<p>hi</p>");
  CHECK(index->etag.front() == '"');
  CHECK(read_asset(root, "sub/a.js")->content == "x");
  CHECK(read_asset(root, "inside.html")->content == "<p>hi</p>");  // a link that stays inside
  CHECK_FALSE(read_asset(root, "link.txt"));                       // a link that leads out
  CHECK_FALSE(read_asset(root, "sub"));                            // a directory
  CHECK_FALSE(read_asset(root, "missing.js"));
  CHECK_FALSE(read_asset(dir.path() / "nope", "index.html"));

  // The ETag changes with the content.
  std::ofstream(root / "index.html") << "<p>changed</p>";
  CHECK(read_asset(root, "index.html")->etag != index->etag);
}

TEST_CASE("origin_allowed: same origin by default, listed origins, no Origin header") {
  const std::vector<std::string> none;
  CHECK(origin_allowed("", "127.0.0.1:8080", none));  // not a browser
  CHECK(origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080", none));
  CHECK(origin_allowed("http://LOCALHOST:8080", "localhost:8080", none));
  CHECK(origin_allowed("https://example.com", "example.com:443", none));
  CHECK(origin_allowed("http://example.com:80", "example.com", none));
  CHECK(origin_allowed("http://[::1]:8080", "[::1]:8080", none));

  CHECK_FALSE(origin_allowed("http://evil.example:8080", "127.0.0.1:8080", none));
  CHECK_FALSE(origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8080", none));
  CHECK_FALSE(origin_allowed("https://127.0.0.1:8080/", "127.0.0.1:8080", none));
  CHECK_FALSE(origin_allowed("null", "127.0.0.1:8080", none));
  CHECK_FALSE(origin_allowed("file://", "127.0.0.1:8080", none));
  CHECK_FALSE(origin_allowed("http://127.0.0.1:8080", "", none));
  CHECK_FALSE(origin_allowed("http://example.com", "example.com:8080", none));

  const std::vector<std::string> listed = {"https://console.example.com"};
  CHECK(origin_allowed("https://console.example.com", "127.0.0.1:8080", listed));
  CHECK(origin_allowed("HTTPS://CONSOLE.EXAMPLE.COM", "127.0.0.1:8080", listed));
  CHECK_FALSE(origin_allowed("https://other.example.com", "127.0.0.1:8080", listed));
  CHECK(origin_allowed("http://anything", "127.0.0.1:8080", {"*"}));
}

TEST_CASE("host_name_of: the host of a Host header, without port, canonical") {
  using coserve::web::host_name_of;
  CHECK(host_name_of("LocalHost:8080") == "localhost");
  CHECK(host_name_of("localhost.") == "localhost");
  CHECK(host_name_of("127.0.0.1") == "127.0.0.1");
  CHECK(host_name_of("[::1]:80") == "::1");
  CHECK(host_name_of("[::ffff:127.0.0.1]") == "127.0.0.1");
  CHECK(host_name_of("Example.COM:443") == "example.com");
  CHECK_FALSE(host_name_of(""));
  CHECK_FALSE(host_name_of("::1"));            // v6 needs brackets
  CHECK_FALSE(host_name_of("a.example:http"));  // a port is digits
  CHECK_FALSE(host_name_of("a b"));
  CHECK_FALSE(host_name_of("evil.example/x"));
  CHECK_FALSE(host_name_of("[::1"));
}

TEST_CASE("HostPolicy: loopback, the bind host, the local address and allowed_hosts only") {
  using coserve::web::HostPolicy;
  HostPolicy loopback("127.0.0.1:8080", {});
  CHECK(loopback.loopback_bind());
  for (const char* host : {"127.0.0.1:8080", "127.0.0.1", "localhost:8080", "LOCALHOST",
                           "[::1]:8080", "127.0.0.2:1234", ""})
    CHECK(loopback.allows(host, "127.0.0.1"));
  // DNS rebinding: a foreign name that resolves to us.
  for (const char* host : {"evil.example", "evil.example:8080", "localhost.evil.example",
                           "127.0.0.1.evil.example", "junk junk", "192.168.1.5:8080"})
    CHECK_FALSE(loopback.allows(host, "127.0.0.1"));

  // A wildcard bind: loopback, whatever address the connection reached, and the listed names.
  HostPolicy any("0.0.0.0:8080", {"coserve.example", "Console.Example:443"});
  CHECK_FALSE(any.loopback_bind());
  CHECK(any.allows("localhost:8080", "172.17.0.2"));
  CHECK(any.allows("127.0.0.1:28080", "172.17.0.2"));
  CHECK(any.allows("172.17.0.2:8080", "172.17.0.2"));
  CHECK(any.allows("coserve.example:8080", "172.17.0.2"));
  CHECK(any.allows("console.example", "172.17.0.2"));
  CHECK_FALSE(any.allows("0.0.0.0:8080", "172.17.0.2"));
  CHECK_FALSE(any.allows("10.0.0.9:8080", "172.17.0.2"));
  CHECK_FALSE(any.allows("evil.example:8080", "172.17.0.2"));

  HostPolicy named("[::]:8080", {"*"});
  CHECK(named.allows("evil.example", "::1"));
  HostPolicy lan("192.168.1.5:8080", {});
  CHECK_FALSE(lan.loopback_bind());
  CHECK(lan.allows("192.168.1.5:8080", "192.168.1.5"));
  CHECK(lan.allows("localhost", "192.168.1.5"));
  CHECK_FALSE(lan.allows("evil.example", "192.168.1.5"));
  CHECK_THROWS_AS(HostPolicy("127.0.0.1:80", {"not a host"}), coserve::ConfigError);
}

TEST_CASE("PrefixedStream: the bytes read before come first, in reads of any size, then the "
          "stream's own") {
  using namespace coserve;
  using Socket = asio::local::stream_protocol::socket;
  auto got = coserve::test::run([]() -> awaitable<std::string> {
    auto executor = co_await asio::this_coro::executor;
    Socket peer(executor), ours(executor);
    asio::local::connect_pair(peer, ours);
    web::PrefixedStream<Socket> stream("hello ", std::move(ours));
    const std::string tail = "world";
    co_await asio::async_write(peer, asio::buffer(tail), use_awaitable);
    std::string out;
    char piece[4];  // "hell", "o " (the rest of the prefix), then from the socket
    while (out.size() < 11) {
      auto n = co_await stream.async_read_some(asio::buffer(piece), use_awaitable);
      out.append(piece, n);
    }
    co_return out;
  }());
  CHECK(got == "hello world");
}
