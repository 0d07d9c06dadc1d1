// What an anonymous client can make the server hold in memory (issue 15 §2): a header claiming
// a large body, many connections from one address, frames sent ahead for calls that do not
// read them. Each is bounded, and the refusals are counted in /metrics.
// Awaited values are named before they are checked: g++ 12 may evaluate a co_await inside
// CHECK/REQUIRE twice.
#include <catch2/catch.hpp>

#include <fstream>
#include <memory>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "coserve/metrics.hpp"
#include "coserve/server.hpp"
#include "coserve/service.hpp"
#include "in_process_server.hpp"
#include "test_support.hpp"

using namespace coserve;
using namespace std::chrono_literals;
using asio::ip::tcp;

namespace {

std::string header_claiming(std::string_view json_text, std::uint32_t body_len) {
  std::string out(8, '\0');
  auto put = [&](std::size_t at, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out[at + i] = char(v >> (24 - 8 * i));
  };
  put(0, static_cast<std::uint32_t>(json_text.size()));
  put(4, body_len);
  return out + std::string(json_text);
}

std::string frame_bytes(std::string_view json_text, std::string_view body = {}) {
  return header_claiming(json_text, static_cast<std::uint32_t>(body.size())) + std::string(body);
}

tcp::endpoint local(const std::string& port) {
  return {asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(std::stoi(port))};
}

// A raw connection: send exact bytes, read decoded frames back.
class RawConnection {
 public:
  explicit RawConnection(asio::any_io_executor ex) : socket_(ex), decoder_({1 << 20, 4 << 20}) {}
  awaitable<void> connect(const std::string& port) {
    co_await socket_.async_connect(local(port), use_awaitable);
  }
  awaitable<error_code> send(const std::string& bytes) {
    auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(bytes), use_nothrow);
    co_return ec;
  }
  // The next frame, or nullopt when the server closed the connection.
  awaitable<std::optional<Frame>> next() {
    for (;;) {
      if (auto item = decoder_.next()) co_return std::get<Frame>(std::move(*item));
      auto space = decoder_.prepare(65536);
      auto [ec, n] =
          co_await socket_.async_read_some(asio::buffer(space.data(), space.size()), use_nothrow);
      if (ec) co_return std::nullopt;
      decoder_.commit(n);
    }
  }
  void close() {
    error_code ignored;
    socket_.close(ignored);
  }

 private:
  tcp::socket socket_;
  FrameDecoder decoder_;
};

std::string error_code_of(const std::optional<Frame>& f) {
  if (!f) return "<closed>";
  if (!f->head.contains("error")) return "<ok>";
  return f->head["error"]["code"].get<std::string>();
}

// GET /metrics from the server's HTTP listener.
awaitable<std::string> metrics_text(const std::string& http_port) {
  tcp::socket socket(co_await asio::this_coro::executor);
  co_await socket.async_connect(local(http_port), use_awaitable);
  const std::string request =
      "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  std::string response;
  auto [write_ec, written] = co_await asio::async_write(socket, asio::buffer(request), use_nothrow);
  if (write_ec) co_return response;  // refused: the caller polls again
  // Up to the server's close: an error there just ends the text (the caller polls again).
  (void)co_await asio::async_read(socket, asio::dynamic_buffer(response), use_nothrow);
  co_return response;
}

// The value of one series ("coserve_x" or "coserve_x{labels}") in Prometheus text; -1 if absent.
std::int64_t metric(const std::string& text, const std::string& series) {
  auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stoll(text.substr(at + series.size() + 2));
}

// Polls /metrics until `series` reaches `at_least` (or 20 s pass); returns the last value.
awaitable<std::int64_t> wait_for_metric(const std::string& http_port, const std::string& series,
                                        std::int64_t at_least) {
  std::int64_t value = -1;
  for (int i = 0; i < 400; ++i) {
    value = metric(co_await metrics_text(http_port), series);
    if (value >= at_least) break;
    co_await test::sleep_for(50ms);
  }
  co_return value;
}

std::int64_t vm_rss_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  return -1;
}

const std::string kEcho = R"({"id":1,"service":"echo","op":"echo"})";

}  // namespace

TEST_CASE("headers claiming large bodies cost the server little until the bodies come",
          "[budget]") {
  test::ServerProcess server;
  constexpr int kConnections = 200;
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    const auto before_bytes = metric(co_await metrics_text(server.port("http")),
                                     "coserve_bytes_in_total");
    const auto rss_before = vm_rss_kib(server.pid());
    REQUIRE(rss_before > 0);
    // 46 bytes each, announcing a body of 1 MiB (the default limit) that never comes.
    std::vector<std::unique_ptr<RawConnection>> connections;
    for (int i = 0; i < kConnections; ++i) {
      connections.push_back(std::make_unique<RawConnection>(ex));
      co_await connections.back()->connect(server.port("framed"));
      auto failed = co_await connections.back()->send(header_claiming(kEcho, 1 << 20));
      REQUIRE_FALSE(failed);
    }
    const std::int64_t sent = kConnections * static_cast<std::int64_t>(8 + kEcho.size());
    const auto read_bytes = co_await wait_for_metric(
        server.port("http"), "coserve_bytes_in_total", std::max<std::int64_t>(before_bytes, 0) + sent);
    REQUIRE(read_bytes >= before_bytes + sent);
    co_await test::sleep_for(300ms);  // the last reads' decoding
    const auto grown_kib = vm_rss_kib(server.pid()) - rss_before;
    INFO("server RSS grew by " << grown_kib << " KiB for " << kConnections << " connections");
    // Whole bodies would be 200 MiB; a growth step and a session each are a few MiB in all.
    CHECK(grown_kib < 64 * 1024);
  }());
  CHECK(server.running());
}

TEST_CASE("one address holds at most access.max_per_address connections, 256 by default",
          "[budget]") {
  test::ServerProcess server;
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    const std::string ping = frame_bytes(R"({"id":1,"service":"core","op":"ping"})");
    std::vector<std::unique_ptr<RawConnection>> connections;
    for (int i = 0; i < 256; ++i) {
      connections.push_back(std::make_unique<RawConnection>(ex));
      co_await connections.back()->connect(server.port("framed"));
      auto failed = co_await connections.back()->send(ping);
      REQUIRE_FALSE(failed);
      auto pong = co_await connections.back()->next();
      REQUIRE(error_code_of(pong) == "<ok>");
    }
    // The kernel completes the connect; the server closes it at once.
    RawConnection over(ex);
    co_await over.connect(server.port("framed"));
    co_await over.send(ping);
    auto refused = co_await over.next();
    CHECK(error_code_of(refused) == "<closed>");
    // A place given back is free again.
    connections.front()->close();
    connections.erase(connections.begin());
    bool admitted = false;
    for (int attempt = 0; attempt < 50 && !admitted; ++attempt) {
      RawConnection again(ex);
      co_await again.connect(server.port("framed"));
      co_await again.send(ping);
      admitted = error_code_of(co_await again.next()) == "<ok>";
      if (!admitted) co_await test::sleep_for(20ms);  // the server notices the close
    }
    CHECK(admitted);
    connections.clear();
    auto refusals = co_await wait_for_metric(server.port("http"), "coserve_connections_refused_total", 1);
    CHECK(refusals >= 1);
  }());
}

TEST_CASE("past the server's inbound budget a frame that needs more memory closes its connection",
          "[budget]") {
  // 1.2 MiB: one connection receiving a 1 MiB body fits, a second one does not.
  test::ServerProcess server({"--set", "limits.max_buffered_bytes=1258291"});
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    const std::string http = server.port("http");
    std::string body(1 << 20, '\0');
    for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 11 + 1);
    const std::string whole = frame_bytes(kEcho, body);
    const std::size_t part = 600 * 1024;

    RawConnection a(ex);
    co_await a.connect(server.port("framed"));
    auto failed = co_await a.send(whole.substr(0, part));
    REQUIRE_FALSE(failed);
    // Once more than half the body is in, the decoder holds the whole MiB.
    auto buffered = co_await wait_for_metric(http, "coserve_inbound_buffered_bytes", 1 << 20);
    REQUIRE(buffered >= 1 << 20);

    RawConnection b(ex);
    co_await b.connect(server.port("framed"));
    co_await b.send(whole.substr(0, part));  // may fail: the server closes while we write
    auto refused = co_await b.next();
    // The error reply comes first unless the kernel reset the connection ahead of it (unread
    // bytes in the server's socket when it closed).
    if (refused) CHECK(error_code_of(refused) == "busy");
    auto after = co_await b.next();
    CHECK(error_code_of(after) == "<closed>");
    auto closed = co_await wait_for_metric(
        http, R"(coserve_inbound_budget_refusals_total{budget="server",action="connection_closed"})",
        1);
    CHECK(closed == 1);

    // The first connection's frame completes; its memory goes back to the budget.
    failed = co_await a.send(whole.substr(part));
    REQUIRE_FALSE(failed);
    auto echoed = co_await a.next();
    REQUIRE(error_code_of(echoed) == "<ok>");
    CHECK(echoed->body == body);

    // With the budget free again, a new connection's frame of the same size goes through.
    RawConnection c(ex);
    co_await c.connect(server.port("framed"));
    failed = co_await c.send(whole);
    REQUIRE_FALSE(failed);
    auto echoed_c = co_await c.next();
    REQUIRE(error_code_of(echoed_c) == "<ok>");
    CHECK(echoed_c->body.size() == body.size());
  }());
  CHECK(server.running());
}

// ---- calls' inboxes: an in-process server with a service whose op never reads them ----------

namespace {

// hold.wait {ms}: waits (cancellable), never reading the frames the client sends for it.
class HoldService final : public BasicService<HoldService> {
 public:
  static constexpr std::string_view kName = "hold";
  static constexpr auto ops() { return std::array{op("wait", &HoldService::wait)}; }
  awaitable<Outcome> wait(Call& call) {
    asio::steady_timer timer(call.executor(), std::chrono::milliseconds(call.get<int>("ms")));
    co_await timer.async_wait(use_awaitable);
    co_return Outcome::ok();
  }
};

using InProcessServer = test::InProcessServer<HoldService>;

std::string hold(int id) {
  return frame_bytes(R"({"id":)" + std::to_string(id) +
                     R"(,"service":"hold","op":"wait","ms":30000})");
}
std::string data_for(int id, std::size_t bytes) {
  return frame_bytes(R"({"id":)" + std::to_string(id) + R"(,"event":"data"})",
                     std::string(bytes, 'd'));
}
std::string ping(int id) {
  return frame_bytes(R"({"id":)" + std::to_string(id) + R"(,"service":"core","op":"ping"})");
}

// Reads frames up to the one with id `until`; returns those that came before it.
awaitable<std::vector<Frame>> read_until(RawConnection& c, int until) {
  std::vector<Frame> before;
  for (;;) {
    auto f = co_await c.next();
    REQUIRE(f);
    if (f->head["id"] == until) co_return before;
    before.push_back(std::move(*f));
  }
}

// A reply that an ended call sends after a while (its handler sees the cancellation).
awaitable<std::string> ending_of(RawConnection& c, std::vector<Frame> seen, int id) {
  for (auto& f : seen)
    if (f.head["id"] == id) co_return error_code_of(std::optional<Frame>(std::move(f)));
  auto f = co_await c.next();
  REQUIRE(f);
  CHECK(f->head["id"] == id);
  co_return error_code_of(f);
}

void wait_for_zero(const InboundBudget& budget) {
  for (int i = 0; i < 200 && budget.used() != 0; ++i) std::this_thread::sleep_for(10ms);
}

}  // namespace

TEST_CASE("one budget covers all the inboxes of a connection; the greediest call is ended",
          "[budget]") {
  InProcessServer server({"limits.max_inbox_bytes=1048576"});
  test::run([&]() -> awaitable<void> {
    RawConnection c(co_await asio::this_coro::executor);
    co_await c.connect(server.port());
    // Three calls that never read; 400 KiB frames sent ahead: 800 KiB for call 1, then 400 KiB
    // for call 2 passes the connection's 1 MiB (each call alone stays under it).
    co_await c.send(hold(1) + hold(2) + hold(3) + data_for(1, 400 << 10) + data_for(1, 400 << 10) +
                    data_for(2, 400 << 10) + data_for(3, 1000) + ping(9));
    // The connection goes on (the ping's reply), calls 2 and 3 stay in flight.
    auto seen = co_await read_until(c, 9);
    CHECK(server.metrics().value("inbound_budget_refusals_total",
                                 R"(budget="connection",action="call_ended")") == 1);
    // Call 2's 400 KiB and call 3's frame are still held, and counted server-wide.
    CHECK(server.metrics().inbound.used() >= (400u << 10) + 1000);
    CHECK(server.metrics().inbound.used() < (800u << 10));
    auto ending = co_await ending_of(c, std::move(seen), 1);
    CHECK(ending == "cancelled");
  }());
  wait_for_zero(server.metrics().inbound);
  CHECK(server.metrics().inbound.used() == 0);  // every session gave its bytes back
}

TEST_CASE("past the server's inbound budget a frame for a call's inbox ends that call",
          "[budget]") {
  // 1 MiB for the whole server; small frames, so the decoders hold little beside the inboxes.
  InProcessServer server({"limits.max_buffered_bytes=1048576"});
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    RawConnection first(ex), second(ex);
    co_await first.connect(server.port());
    co_await second.connect(server.port());
    // The first connection's call holds 600 KiB (20 frames of 30 KiB).
    std::string burst = hold(1);
    for (int i = 0; i < 20; ++i) burst += data_for(1, 30 << 10);
    co_await first.send(burst + ping(2));
    auto pong = co_await first.next();
    REQUIRE(error_code_of(pong) == "<ok>");  // the ping: all 20 are in
    const auto held = server.metrics().inbound.used();
    CHECK(held >= 600u << 10);
    // The second one's call takes 30 KiB at a time (a ping after each shows it was read) until
    // the server's budget is spent: then that call ends, and its connection goes on.
    co_await second.send(hold(1));
    auto ended = [&] {
      return server.metrics().value("inbound_budget_refusals_total",
                                    R"(budget="server",action="call_ended")");
    };
    std::vector<Frame> seen;
    for (int i = 0; i < 40 && ended() == 0; ++i) {
      co_await second.send(data_for(1, 30 << 10) + ping(100 + i));
      seen = co_await read_until(second, 100 + i);
    }
    CHECK(ended() == 1);
    auto ending = co_await ending_of(second, std::move(seen), 1);
    CHECK(ending == "cancelled");
    CHECK(server.metrics().value("inbound_budget_refusals_total",
                                 R"(budget="server",action="connection_closed")") == 0);
    CHECK(server.metrics().inbound.used() <= 1u << 20);
    // The first connection's call was left alone.
    co_await first.send(ping(3));
    pong = co_await first.next();
    REQUIRE(error_code_of(pong) == "<ok>");
  }());
}
