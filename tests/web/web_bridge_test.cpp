// The HTTP + WebSocket bridge against the real server binary on loopback: a Beast WebSocket
// client speaking the protocol on /ws (text and binary frames, errors, limits, origin, close
// codes), chat and files shared with framed TCP clients, and the HTTP side (console, healthz,
// metrics, errors, limits, keep-alive).
#include <signal.h>

#include <set>
#include <vector>

#include <catch2/catch.hpp>

#include "coserve/client.hpp"
#include "files/sha256.hpp"
#include "test_support.hpp"
#include "ws_client.hpp"

using namespace coserve;
using namespace coserve::test;
using namespace coserve::test::web;
using namespace std::chrono_literals;

namespace {

// Builds a request as a named value: g++ 12 destroys some temporaries of a co_await
// full-expression twice, so nothing awaited here takes a temporary with a destructor.
json request(json id, const std::string& service, const std::string& op) {
  json head = json::object();
  head["id"] = std::move(id);
  head["service"] = service;
  head["op"] = op;
  return head;
}

std::string code_of(const json& reply) {
  if (reply.value("ok", false)) return "ok";
  return reply.at("error").at("code").get<std::string>();
}

// Raw bytes to the HTTP listener; everything the server answers before closing.
awaitable<std::string> raw_http(std::string_view port, std::string_view bytes) {
  auto stream = co_await connect_tcp(port);
  stream.expires_after(10s);
  co_await asio::async_write(stream, asio::buffer(bytes), use_awaitable);
  std::string out;
  char buf[4096];
  for (;;) {
    auto [ec, n] = co_await stream.async_read_some(asio::buffer(buf), asio::as_tuple(use_awaitable));
    out.append(buf, n);
    if (ec) break;
  }
  co_return out;
}

void add_user(const std::filesystem::path& data_dir, const std::string& name,
              const std::string& password) {
  auto result = run_program({binary("coserve").string(), "user", "add", name, "--password-stdin",
                             "--data-dir", data_dir.string()},
                            password + "\n");
  INFO(result.err);
  REQUIRE(result.status == 0);
}

}  // namespace

TEST_CASE("ws: a text request gets a text reply, and the session sees a ws transport") {
  ServerProcess server;
  run([&]() -> awaitable<void> {
    const auto port = server.port("http");
    auto ws = co_await WsClient::open(port);
    auto echo = request(1, "echo", "echo");
    echo["text"] = "hello over ws";
    co_await ws->send_request(echo);
    auto reply = co_await ws->next_reply();
    CHECK(reply.text);  // no body: JSON only, as a text message
    CHECK(reply.head()["ok"] == true);
    CHECK(reply.head()["text"] == "hello over ws");

    const auto info_request = request(2, "web", "info");
    auto info = co_await ws->call(info_request);
    CHECK(info["transport"] == "ws");
    CHECK(info["peer"].get<std::string>().starts_with("127.0.0.1:"));

    const auto hello_request = request("h", "core", "hello");
    auto hello = co_await ws->call(hello_request);
    CHECK(hello["ok"] == true);
    CHECK(hello["services"].contains("echo"));
    co_await ws->close();
  }());
}

TEST_CASE("ws: a binary frame with a body comes back as a binary frame with the same body") {
  ServerProcess server;
  run([&]() -> awaitable<void> {
    const auto port = server.port("http");
    auto ws = co_await WsClient::open(port);
    std::string body(300 * 1024, '\0');
    for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 7 + 3);
    auto echo = request(7, "echo", "echo");
    echo["text"] = "bin";
    co_await ws->send_request(echo, body);
    auto reply = co_await ws->next_reply();
    CHECK_FALSE(reply.text);
    CHECK(reply.head()["id"] == 7);
    CHECK(reply.head()["text"] == "bin");
    CHECK(reply.body() == body);

    // Several requests in flight on one socket, answered by id.
    for (int i = 0; i < 20; ++i) {
      auto r = request(100 + i, "echo", "echo");
      r["text"] = std::to_string(i);
      const std::string payload = i % 2 ? std::string(i, 'x') : std::string();
      co_await ws->send_request(r, payload);
    }
    std::set<int> seen;
    for (int i = 0; i < 20; ++i) {
      auto m = co_await ws->next_reply();
      auto head = m.head();
      int id = head["id"].get<int>();
      CHECK(head["text"] == std::to_string(id - 100));
      CHECK(m.body() == ((id - 100) % 2 ? std::string(id - 100, 'x') : std::string()));
      seen.insert(id);
    }
    CHECK(seen.size() == 20);
  }());
}

TEST_CASE("ws: bad JSON gets bad_frame and the connection stays open") {
  ServerProcess server;
  run([&]() -> awaitable<void> {
    const auto port = server.port("http");
    auto ws = co_await WsClient::open(port);
    co_await ws->send_text("{not json");
    auto m = co_await ws->read();
    REQUIRE(m);
    CHECK(code_of(m->head()) == "bad_frame");
    co_await ws->send_text("[1,2,3]");
    m = co_await ws->read();
    REQUIRE(m);
    CHECK(code_of(m->head()) == "bad_frame");
    co_await ws->send_text(R"({"service":"echo","op":"echo"})");  // no id
    m = co_await ws->read();
    REQUIRE(m);
    CHECK(code_of(m->head()) == "bad_request");
    // Still usable.
    const auto ping = request(1, "core", "ping");
    auto reply = co_await ws->call(ping);
    CHECK(reply["ok"] == true);
  }());
}

TEST_CASE("ws: a binary message that is not a frame gets bad_frame, then close 1008") {
  ServerProcess server;
  const auto port = server.port("http");
  run([&]() -> awaitable<void> {
    const std::vector<std::string> bad_messages = {
        std::string("\0\0\0", 3),                      // shorter than a header
        std::string("\0\0\0\x02\0\0\0\0{}{}", 12)};  // lengths do not match
    for (const auto& bad : bad_messages) {
      auto ws = co_await WsClient::open(port);
      co_await ws->send_binary(bad);
      auto m = co_await ws->read();
      REQUIRE(m);
      CHECK(code_of(m->head()) == "bad_frame");
      auto end = co_await ws->read();
      CHECK_FALSE(end);
      CHECK(ws->close_reason().code == websocket::close_code::policy_error);
    }
  }());
  auto metrics = run([&]() -> awaitable<std::string> {
    auto res = co_await http_get(port, "/metrics");
    co_return res.body();
  }());
  CHECK(metrics.find("coserve_ws_policy_closes_total 2") != std::string::npos);
}

TEST_CASE("ws: message size limits match the frame limits") {
  ServerProcess server({"--set", "limits.max_json=1024", "--set", "limits.max_body=4096"});
  run([&]() -> awaitable<void> {
    // A JSON text over max_json but within the message limit: an error reply, still open.
    const auto port = server.port("http");
    auto ws = co_await WsClient::open(port);
    auto big = request(1, "echo", "echo");
    big["text"] = std::string(2000, 'a');
    co_await ws->send_request(big);
    auto m = co_await ws->read();
    REQUIRE(m);
    CHECK(code_of(m->head()) == "too_large");
    auto ok = request(2, "echo", "echo");
    ok["text"] = "small";
    const std::string max_body(4096, 'b');
    auto reply = co_await ws->call(ok, max_body);  // exactly max_body
    CHECK(reply["ok"] == true);

    // A message bigger than header + max_json + max_body: closed with 1009 (too big).
    const std::string too_big(8 + 1024 + 4096 + 1, 'x');
    co_await ws->send_binary(too_big);
    auto end = co_await ws->read();
    CHECK_FALSE(end);
    CHECK(ws->close_reason().code == websocket::close_code::too_big);
  }());
  REQUIRE(server.running());
}

TEST_CASE("ws: origin check — same origin and listed origins pass, others get 403") {
  ServerProcess server({"--set", R"(services.web.allowed_origins=["https://console.example.com"])"});
  auto port = server.port("http");
  run([&]() -> awaitable<void> {
    const auto ping = request(1, "core", "ping");
    const std::string own_origin = "http://127.0.0.1:" + port;
    auto same = co_await WsClient::open(port, own_origin);
    auto reply = co_await same->call(ping);
    CHECK(reply["ok"] == true);
    auto listed = co_await WsClient::open(port, "https://console.example.com");
    reply = co_await listed->call(ping);
    CHECK(reply["ok"] == true);
    auto none = co_await WsClient::open(port);  // not a browser
    reply = co_await none->call(ping);
    CHECK(reply["ok"] == true);

    const std::vector<std::string> foreign = {"http://evil.example", "http://127.0.0.1:1", "null"};
    for (const auto& origin : foreign) {
      INFO(origin);
      bool refused = false;
      try {
        co_await WsClient::open(port, origin);
      } catch (const boost::system::system_error& e) {
        refused = e.code() == websocket::error::upgrade_declined;
      }
      CHECK(refused);
    }
  }());
  auto metrics = run([&]() -> awaitable<std::string> {
    auto res = co_await http_get(port, "/metrics");
    co_return res.body();
  }());
  CHECK(metrics.find("coserve_ws_origin_refused_total 3") != std::string::npos);
  CHECK(metrics.find(R"(coserve_http_responses_total{code="403"} 3)") != std::string::npos);
}

TEST_CASE("ws: server shutdown sends a shutdown event, then close 1001 going away") {
  ServerProcess server;
  run([&]() -> awaitable<void> {
    const auto port = server.port("http");
    auto ws = co_await WsClient::open(port);
    const auto ping = request(1, "core", "ping");
    auto reply = co_await ws->call(ping);
    CHECK(reply["ok"] == true);
    ::kill(server.pid(), SIGTERM);
    auto m = co_await ws->read();
    REQUIRE(m);
    CHECK(m->head()["event"] == "shutdown");
    auto end = co_await ws->read();
    CHECK_FALSE(end);
    CHECK(ws->close_reason().code == websocket::close_code::going_away);
  }());
  // Signal 0: only wait for the exit the SIGTERM above started (a second SIGTERM could kill
  // a server whose signal handler is already gone).
  CHECK(server.stop(0) == 0);
}

TEST_CASE("ws: keep-alive pings a quiet peer that answers, and drops one that does not") {
  // The session clock ticks every 250 ms (a quarter of write_timeout_ms), so the timings below hold.
  ServerProcess server({"--set", "services.web.ws_idle_timeout_ms=1200", "--set",
                        "limits.write_timeout_ms=1000"});
  run([&]() -> awaitable<void> {
    const auto port = server.port("http");
    auto answering = co_await WsClient::open(port);
    auto silent = co_await WsClient::open(port);
    // Reading answers pings; no message arrives, so the read ends on the client's own timeout.
    auto none = co_await answering->read(2500ms);
    CHECK_FALSE(none);
    CHECK(answering->error == beast::error::timeout);
    CHECK(answering->pings_seen >= 1);
    // The silent client never read, so it never answered: the server has closed it.
    auto gone = co_await silent->read(2000ms);
    CHECK_FALSE(gone);
    CHECK(silent->error != beast::error::timeout);
  }());
}

TEST_CASE("ws: an idle session gets its shutdown event, then close 1000") {
  // The session stops reading, still writes its last frame, then closes with a close frame.
  ServerProcess server({"--set", "limits.idle_timeout_ms=600"});
  run([&]() -> awaitable<void> {
    const auto port = server.port("http");
    auto ws = co_await WsClient::open(port);
    const auto ping = request(1, "core", "ping");
    auto reply = co_await ws->call(ping);
    CHECK(reply["ok"] == true);
    auto m = co_await ws->read(5000ms);
    REQUIRE(m);
    CHECK(m->head()["event"] == "shutdown");
    CHECK(m->head()["reason"] == "idle timeout");
    auto end = co_await ws->read(5000ms);
    CHECK_FALSE(end);
    CHECK(ws->close_reason().code == websocket::close_code::normal);
  }());
  CHECK(server.running());
}

TEST_CASE("ws: permessage-deflate is negotiated only when services.web.ws_deflate is on") {
  std::string body(100 * 1024, '\0');
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>("coserve "[i % 8]);
  {
    ServerProcess server({"--set", "services.web.ws_deflate=true"});
    run([&]() -> awaitable<void> {
      const auto port = server.port("http");
      auto ws = co_await WsClient::open(port, {}, "/ws", true);
      CHECK(std::string(ws->refusal[http::field::sec_websocket_extensions])
                .find("permessage-deflate") != std::string::npos);
      auto echo = request(1, "echo", "echo");
      echo["text"] = std::string(3000, 't');
      auto reply = co_await ws->call(echo);
      CHECK(reply["text"] == echo["text"]);
      auto binary = request(2, "echo", "echo");
      binary["text"] = "compressed";
      co_await ws->send_request(binary, body);
      auto m = co_await ws->next_reply();
      CHECK_FALSE(m.text);
      CHECK(m.body() == body);
      co_await ws->close();
    }());
  }
  {
    ServerProcess server;  // off by default: the offer is declined
    run([&]() -> awaitable<void> {
      const auto port = server.port("http");
      auto ws = co_await WsClient::open(port, {}, "/ws", true);
      CHECK(ws->refusal[http::field::sec_websocket_extensions].empty());
      auto echo = request(1, "echo", "echo");
      co_await ws->send_request(echo, body);
      auto m = co_await ws->next_reply();
      CHECK(m.body() == body);
      co_await ws->close();
    }());
  }
}

TEST_CASE("ws and framed TCP clients share a chat room") {
  ServerProcess server;
  run([&]() -> awaitable<void> {
    const auto port = server.port("http");
    const auto framed = server.port("framed");
    auto ws = co_await WsClient::open(port);
    auto join = request(1, "chat", "join");
    join["room"] = "bridge";
    join["nick"] = "webby";
    auto joined = co_await ws->call(join);
    REQUIRE(joined["ok"] == true);

    Client tcp(co_await asio::this_coro::executor);
    const std::string host = "127.0.0.1";
    co_await tcp.connect(host, framed);
    json tcp_join = request(1, "chat", "join");
    tcp_join["room"] = "bridge";
    tcp_join["nick"] = "tcpy";
    auto tcp_joined = co_await tcp.call(tcp_join);
    REQUIRE(!error_code_of(tcp_joined));
    CHECK(tcp_joined.head["members"].size() == 2);

    // The browser side hears the TCP client arrive and speak.
    json say = request(2, "chat", "say");
    say["room"] = "bridge";
    say["text"] = "hello from tcp";
    auto said = co_await tcp.call(say);
    REQUIRE(!error_code_of(said));
    bool heard_join = false, heard_text = false;
    while (!heard_text) {
      auto m = co_await ws->read();
      REQUIRE(m);
      auto head = m->head();
      if (head.value("event", "") == "joined" && head["nick"] == "tcpy") heard_join = true;
      if (head.value("event", "") == "message") {
        CHECK(head["from"] == "tcpy");
        CHECK(head["text"] == "hello from tcp");
        CHECK(head["room"] == "bridge");
        heard_text = true;
      }
    }
    CHECK(heard_join);

    // And the TCP side hears the browser.
    auto ws_say = request(3, "chat", "say");
    ws_say["room"] = "bridge";
    ws_say["text"] = "hi from the browser";
    auto ws_said = co_await ws->call(ws_say);
    CHECK(ws_said["ok"] == true);
    for (;;) {
      auto push = co_await tcp.next_push();
      if (push.head.value("event", "") != "message") continue;
      if (push.head["from"] != "webby") continue;
      CHECK(push.head["text"] == "hi from the browser");
      break;
    }
  }());
}

TEST_CASE("ws: files put and get over WebSocket, seen by a framed TCP client") {
  TempDir dir;
  add_user(dir.path(), "alice", "wonderland-42");
  ServerProcess server({}, dir.path());
  std::string data(700 * 1024 + 123, '\0');
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 131) >> 3);
  const auto digest = files::sha256_hex(data);
  run([&]() -> awaitable<void> {
    const auto port = server.port("http");
    const auto framed = server.port("framed");
    auto ws = co_await WsClient::open(port);
    auto anon = request(1, "files", "ls");
    auto anon_reply = co_await ws->call(anon);
    CHECK(code_of(anon_reply) == "unauthenticated");
    auto login = request(2, "auth", "login");
    login["user"] = "alice";
    login["password"] = "wonderland-42";
    auto logged_in = co_await ws->call(login);
    REQUIRE(logged_in["ok"] == true);

    auto put = request(3, "files", "put");
    put["path"] = "/up.bin";
    put["size"] = data.size();
    put["sha256"] = digest;
    co_await ws->send_request(put);
    std::uint64_t sent = 0, granted = 0;
    bool first = true;
    json final_reply;
    while (final_reply.is_null()) {
      auto m = co_await ws->read();
      REQUIRE(m);
      auto head = m->head();
      if (head.value("event", "") == "credit") {
        granted = first ? head["offset"].get<std::uint64_t>() + head["bytes"].get<std::uint64_t>()
                        : granted + head["bytes"].get<std::uint64_t>();
        first = false;
        while (sent < granted) {
          auto n = std::min<std::uint64_t>({256 * 1024, granted - sent, data.size() - sent});
          json chunk = json::object();
          chunk["id"] = 3;
          chunk["event"] = "data";
          const std::string_view piece = std::string_view(data).substr(sent, n);
          co_await ws->send_request(chunk, piece);
          sent += n;
        }
        if (sent == data.size()) {
          json end = json::object();
          end["id"] = 3;
          end["event"] = "end";
          co_await ws->send_request(end);
        }
      } else if (head.contains("ok")) {
        final_reply = head;
      }
    }
    INFO(final_reply.dump());
    REQUIRE(final_reply["ok"] == true);
    CHECK(final_reply["sha256"] == digest);

    // The same file through the framed listener.
    Client tcp(co_await asio::this_coro::executor);
    const std::string host = "127.0.0.1";
    co_await tcp.connect(host, framed);
    json tcp_login = request(1, "auth", "login");
    tcp_login["user"] = "alice";
    tcp_login["password"] = "wonderland-42";
    auto tcp_logged_in = co_await tcp.call(tcp_login);
    REQUIRE(!error_code_of(tcp_logged_in));
    json hash = request(2, "files", "hash");
    hash["path"] = "/up.bin";
    auto hashed = co_await tcp.call(hash);
    CHECK(hashed.head["sha256"] == digest);

    // Download over the WebSocket: binary data events, then the SHA-256.
    auto get = request(4, "files", "get");
    get["path"] = "/up.bin";
    co_await ws->send_request(get);
    std::string got;
    for (;;) {
      auto m = co_await ws->read();
      REQUIRE(m);
      auto head = m->head();
      if (head.value("event", "") == "data") {
        CHECK_FALSE(m->text);
        got += m->body();
      } else if (head.contains("ok")) {
        REQUIRE(head["ok"] == true);
        CHECK(head["sha256"] == digest);
        break;
      }
    }
    CHECK(got == data);
  }());
}

// ---- HTTP --------------------------------------------------------------------------------------

TEST_CASE("http: the console, with content types, caching headers and no path escape") {
  ServerProcess server;
  auto port = server.port("http");
  run([&]() -> awaitable<void> {
    auto index = co_await http_get(port, "/");
    CHECK(index.result_int() == 200);
    CHECK(index[http::field::content_type] == "text/html; charset=utf-8");
    CHECK(index.body().find("<title>coserve console</title>") != std::string::npos);
    CHECK(index[http::field::cache_control] == "no-cache");
    CHECK_FALSE(index["Content-Security-Policy"].empty());
    auto etag = std::string(index[http::field::etag]);
    CHECK_FALSE(etag.empty());

    auto js = co_await http_get(port, "/app.js?v=1");
    CHECK(js.result_int() == 200);
    CHECK(js[http::field::content_type] == "text/javascript; charset=utf-8");
    auto css = co_await http_get(port, "/style.css");
    CHECK(css[http::field::content_type] == "text/css; charset=utf-8");

    // Revalidation with the ETag: 304, no body.
    {
      auto stream = co_await connect_tcp(port);
      http::request<http::empty_body> req{http::verb::get, "/", 11};
      req.set(http::field::host, "127.0.0.1:" + port);
      req.set(http::field::if_none_match, etag);
      co_await http::async_write(stream, req, use_awaitable);
      beast::flat_buffer buffer;
      http::response<http::string_body> res;
      co_await http::async_read(stream, buffer, res, use_awaitable);
      CHECK(res.result_int() == 304);
      CHECK(res.body().empty());
    }

    // HEAD: the same headers, no body.
    auto head = co_await http_get(port, "/", http::verb::head);
    CHECK(head.result_int() == 200);
    CHECK(head[http::field::content_length] == index[http::field::content_length]);

    const std::vector<std::string> escapes = {
        "/../CMakeLists.txt", "/%2e%2e/CMakeLists.txt",  "/..%2fCMakeLists.txt",
        "/%2e%2e%2f%2e%2e%2fCMakeLists.txt", "/.hidden", "/nope.js"};
    for (const auto& escape : escapes) {
      INFO(escape);
      auto res = co_await http_get(port, escape);
      CHECK(res.result_int() == 404);
      CHECK(res.body().size() < 100);
    }
  }());
}

TEST_CASE("http: /healthz and /metrics") {
  ServerProcess server;
  auto port = server.port("http");
  run([&]() -> awaitable<void> {
    // Some WebSocket traffic first, so the counters have something to say.
    auto ws = co_await WsClient::open(port);
    const auto ping = request(1, "core", "ping");
    auto reply = co_await ws->call(ping);
    CHECK(reply["ok"] == true);
    auto echo = request(2, "echo", "echo");
    reply = co_await ws->call(echo, "body");
    CHECK(reply["ok"] == true);

    auto health = co_await http_get(port, "/healthz");
    CHECK(health.result_int() == 200);
    CHECK(health[http::field::content_type] == "application/json");
    auto doc = json::parse(health.body());
    // Status only: whoever reaches the port learns nothing about paths, listeners or load.
    CHECK(doc == json{{"status", "ok"}});
    CHECK(health.body().find(server.data_dir().string()) == std::string::npos);

    auto metrics = co_await http_get(port, "/metrics");
    CHECK(metrics.result_int() == 200);
    CHECK(std::string(metrics[http::field::content_type]).starts_with("text/plain; version=0.0.4"));
    auto text = metrics.body();
    for (const char* line : {"coserve_ws_upgrades_total 1", "coserve_ws_connections_active 1",
                             R"(coserve_ws_messages_in_total{type="text"} 1)",
                             R"(coserve_ws_messages_in_total{type="binary"} 1)",
                             R"(coserve_ws_messages_out_total{type="binary"} 1)",
                             R"(coserve_http_responses_total{code="101"} 1)",
                             R"(coserve_http_responses_total{code="200"} 1)",
                             "# TYPE coserve_frames_in_total counter"}) {
      INFO(line);
      CHECK(text.find(line) != std::string::npos);
    }
    CHECK(text.find("coserve_connections_accepted_total{listener=\"http\"}") != std::string::npos);
  }());
}

TEST_CASE("http: a Host that is not ours is refused, so DNS rebinding reaches nothing") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw-alice");
  ServerProcess server({}, dir.path());
  auto port = server.port("http");
  run([&]() -> awaitable<void> {
    // The attack: evil.example re-pointed at 127.0.0.1. The browser sends its own name as Host
    // and, for the WebSocket, a matching Origin, which passes the same-origin rule.
    const std::string rebound_ws =
        "GET /ws HTTP/1.1\r\nHost: evil.example:" + port +
        "\r\nOrigin: http://evil.example:" + port +
        "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    auto ws_answer = co_await raw_http(port, rebound_ws);
    INFO(ws_answer);
    CHECK(ws_answer.starts_with("HTTP/1.1 421 "));
    CHECK(ws_answer.find("services.web.allowed_hosts") != std::string::npos);
    for (const char* target : {"/", "/healthz", "/metrics", "/app.js"}) {
      const std::string get = std::string("GET ") + target + " HTTP/1.1\r\nHost: evil.example:" +
                              port + "\r\nConnection: close\r\n\r\n";
      auto answer = co_await raw_http(port, get);
      INFO(target << ": " << answer);
      CHECK(answer.starts_with("HTTP/1.1 421 "));
      CHECK(answer.find("coserve_") == std::string::npos);
    }
    // Our own names, with or without a port, and no Host at all (HTTP/1.0 scripts).
    for (std::string host : {"127.0.0.1:" + port, std::string("127.0.0.1"), "localhost:" + port,
                             std::string("LocalHost"), "[::1]:" + port}) {
      const std::string get = "GET /healthz HTTP/1.1\r\nHost: " + host +
                              "\r\nConnection: close\r\n\r\n";
      auto answer = co_await raw_http(port, get);
      INFO(host << ": " << answer);
      CHECK(answer.starts_with("HTTP/1.1 200 "));
    }
    auto no_host = co_await raw_http(port, "GET /healthz HTTP/1.0\r\n\r\n");
    CHECK(no_host.starts_with("HTTP/1.0 200 "));
    // The console's own origin still logs in over /ws.
    auto ws = co_await WsClient::open(port, "http://127.0.0.1:" + port);
    auto login = request(1, "auth", "login");
    login["user"] = "alice";
    login["password"] = "pw-alice";
    auto reply = co_await ws->call(login);
    CHECK(reply["ok"] == true);
    co_await ws->close();
    auto metrics = co_await http_get(port, "/metrics");
    CHECK(metrics.body().find("coserve_http_host_refused_total 5") != std::string::npos);
    CHECK(metrics.body().find(R"(coserve_http_responses_total{code="421"} 5)") !=
          std::string::npos);
  }());
  CHECK(server.log().find("refused Host 'evil.example:") != std::string::npos);
}

TEST_CASE("http: services.web.allowed_hosts names a deployment's host; a wildcard bind takes "
          "loopback names") {
  ServerProcess server({"--set", "listeners.http=0.0.0.0:0", "--set",
                        R"(services.web.allowed_hosts=["coserve.example"])"});
  auto port = server.port("http");
  run([&]() -> awaitable<void> {
    for (std::string host : {std::string("coserve.example:8080"), std::string("COSERVE.example"),
                             "127.0.0.1:" + port, std::string("localhost:28080")}) {
      const std::string get = "GET /healthz HTTP/1.1\r\nHost: " + host +
                              "\r\nConnection: close\r\n\r\n";
      auto answer = co_await raw_http(port, get);
      INFO(host << ": " << answer);
      CHECK(answer.starts_with("HTTP/1.1 200 "));
    }
    for (const char* host : {"evil.example", "coserve.example.evil.example", "0.0.0.0"}) {
      const std::string get = std::string("GET /healthz HTTP/1.1\r\nHost: ") + host +
                              "\r\nConnection: close\r\n\r\n";
      auto answer = co_await raw_http(port, get);
      INFO(host << ": " << answer);
      CHECK(answer.starts_with("HTTP/1.1 421 "));
    }
  }());
}

TEST_CASE("http: /metrics is on for a loopback bind, off elsewhere unless allowed by address "
          "or token") {
  auto status_of = [](const std::string& port, const std::string& authorization) {
    return run([&]() -> awaitable<std::string> {
      std::string get = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:" + port + "\r\n";
      if (!authorization.empty()) get += "Authorization: " + authorization + "\r\n";
      get += "Connection: close\r\n\r\n";
      auto answer = co_await raw_http(port, get);
      co_return answer.substr(0, answer.find("\r\n"));
    }());
  };
  {
    ServerProcess off({"--set", "services.web.metrics=off"});
    CHECK(status_of(off.port("http"), "") == "HTTP/1.1 404 Not Found");
  }
  {
    // Bound to every address: the counters are not for anyone who can reach the port.
    ServerProcess wide({"--set", "listeners.http=0.0.0.0:0"});
    CHECK(status_of(wide.port("http"), "") == "HTTP/1.1 404 Not Found");
  }
  {
    ServerProcess token({"--set", "listeners.http=0.0.0.0:0", "--set",
                         "services.web.metrics_token=s3cret-token"});
    auto port = token.port("http");
    CHECK(status_of(port, "") == "HTTP/1.1 401 Unauthorized");
    CHECK(status_of(port, "Bearer wrong-token!") == "HTTP/1.1 401 Unauthorized");
    CHECK(status_of(port, "Bearer s3cret-token") == "HTTP/1.1 200 OK");
  }
  {
    ServerProcess listed({"--set", "listeners.http=0.0.0.0:0", "--set",
                          R"(services.web.metrics_allow=["127.0.0.0/8"])"});
    CHECK(status_of(listed.port("http"), "") == "HTTP/1.1 200 OK");
    ServerProcess other({"--set", "listeners.http=0.0.0.0:0", "--set",
                         R"(services.web.metrics_allow=["10.0.0.0/8", "::2"])"});
    CHECK(status_of(other.port("http"), "") == "HTTP/1.1 403 Forbidden");
  }
  std::string err;
  TempDir dir;
  CHECK(run_binary({"--data-dir", dir.path().string(), "--set", "listeners.framed=127.0.0.1:0",
                    "--set", "listeners.http=127.0.0.1:0", "--set", "listeners.echo_tcp=",
                    "--set", "listeners.echo_udp=", "--set", "listeners.chat_line=", "--set",
                    R"(services.web.metrics_allow=["10.0.0.0/33"])"},
                   &err) != 0);
  CHECK(err.find("metrics_allow") != std::string::npos);
}

TEST_CASE("http: 404, 405, 426 and malformed or oversize requests get small answers") {
  ServerProcess server({"--set", "services.web.max_header_bytes=2048",
                        "--set", "services.web.max_request_body=1024"});
  auto port = server.port("http");
  run([&]() -> awaitable<void> {
    auto missing = co_await http_get(port, "/no/such/page");
    CHECK(missing.result_int() == 404);
    CHECK(missing.body() == "not found\n");

    auto post = co_await http_get(port, "/healthz", http::verb::post);
    CHECK(post.result_int() == 405);
    CHECK(post[http::field::allow] == "GET, HEAD");
    auto del = co_await http_get(port, "/", http::verb::delete_);
    CHECK(del.result_int() == 405);

    auto plain_ws = co_await http_get(port, "/ws");
    CHECK(plain_ws.result_int() == 426);

    const std::string header_request =
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(4000, 'a') + "\r\n\r\n";
    auto big_header = co_await raw_http(port, header_request);
    CHECK(big_header.starts_with("HTTP/1.1 431 "));
    const std::string body_request =
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + std::string(5000, 'b');
    auto big_body = co_await raw_http(port, body_request);
    CHECK(big_body.starts_with("HTTP/1.1 413 "));
    const std::vector<std::string> junk_requests = {
        "garbage\r\n\r\n", "GET / HTTP/9.9\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", std::string("\0\1\2\3\r\n\r\n", 8)};
    for (const auto& junk : junk_requests) {
      auto answer = co_await raw_http(port, junk);
      CHECK(answer.starts_with("HTTP/1.1 400 "));
      CHECK(answer.size() < 400);
    }
    // A WebSocket upgrade anywhere but /ws.
    bool refused = false;
    try {
      co_await WsClient::open(port, {}, "/elsewhere");
    } catch (const boost::system::system_error& e) {
      refused = e.code() == websocket::error::upgrade_declined;
    }
    CHECK(refused);
  }());
  REQUIRE(server.running());
  auto health = run([&]() -> awaitable<unsigned> {
    auto res = co_await http_get(port, "/healthz");
    co_return res.result_int();
  }());
  CHECK(health == 200);
}

TEST_CASE("http: keep-alive serves several requests on one connection") {
  ServerProcess server;
  auto port = server.port("http");
  run([&]() -> awaitable<void> {
    auto stream = co_await connect_tcp(port);
    beast::flat_buffer buffer;
    for (const char* target : {"/healthz", "/style.css", "/nope", "/metrics"}) {
      http::request<http::empty_body> req{http::verb::get, target, 11};
      req.set(http::field::host, "127.0.0.1:" + port);
      co_await http::async_write(stream, req, use_awaitable);
      http::response<http::string_body> res;
      co_await http::async_read(stream, buffer, res, use_awaitable);
      CHECK(res.keep_alive());
      CHECK(res.result_int() == (std::string_view(target) == "/nope" ? 404 : 200));
    }
  }());
}

TEST_CASE("http: an idle keep-alive connection does not hold up shutdown") {
  ServerProcess server;
  auto port = server.port("http");
  run([&]() -> awaitable<void> {
    auto stream = co_await connect_tcp(port);
    http::request<http::empty_body> req{http::verb::get, "/healthz", 11};
    req.set(http::field::host, "127.0.0.1:" + port);
    co_await http::async_write(stream, req, use_awaitable);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    co_await http::async_read(stream, buffer, res, use_awaitable);
    CHECK(res.keep_alive());
    auto started = std::chrono::steady_clock::now();
    ::kill(server.pid(), SIGTERM);
    // The server closes the idle connection at once, well before its grace period.
    char byte;
    auto [ec, n] = co_await stream.async_read_some(asio::buffer(&byte, 1), asio::as_tuple(use_awaitable));
    CHECK(ec);
    CHECK(std::chrono::steady_clock::now() - started < 2s);
  }());
  // Signal 0: only wait for the exit the SIGTERM above started (a second SIGTERM could kill
  // a server whose signal handler is already gone).
  CHECK(server.stop(0) == 0);
}
