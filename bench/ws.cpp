// WebSocket scenarios: ws-echo (ping-pong of framed-protocol text messages, which coserve's /ws
// answers and any plain echo server mirrors) and ws-idle (held connections, server RSS).
#include "kit.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <sys/socket.h>

namespace bench {
namespace {

namespace websocket = boost::beast::websocket;
using WsStream = websocket::stream<tcp::socket>;

// Connects and upgrades; the Host header names the target as given.
awaitable<void> ws_open(WsStream& ws, tcp::endpoint ep, const std::string& host, const std::string& path) {
  co_await connect(ws.next_layer(), ep);
  co_await ws.async_handshake(host, path, use_awaitable);
  ws.text(true);
}

std::string echo_request(std::uint64_t id, std::string_view text) {
  return R"({"id":)" + std::to_string(id) + R"(,"service":"echo","op":"echo","text":")" + std::string(text) + "\"}";
}

// Waits for the message answering `id` (messages without an id, i.e. pushes, are skipped) and
// checks its text; coserve's reply also carries "ok", a plain echo mirrors the request.
awaitable<void> await_ws_reply(WsStream& ws, boost::beast::flat_buffer& buf, std::uint64_t id, std::string_view text) {
  for (;;) {
    buf.clear();
    co_await ws.async_read(buf, use_awaitable);
    auto data = buf.cdata();
    std::string_view json(static_cast<const char*>(data.data()), data.size());
    if (!ws.got_text()) json = json.size() >= 8 ? json.substr(8) : json;  // a binary frame: skip the header
    auto reply = nlohmann::json::parse(json, nullptr, false);
    if (reply.is_discarded() || !reply.is_object()) throw std::runtime_error("reply is not a JSON object");
    if (!reply.contains("id")) continue;
    if (reply["id"] != id)
      throw std::runtime_error("reply for id " + reply["id"].dump() + " while waiting for " + std::to_string(id));
    if (reply.value("ok", true) != true) throw std::runtime_error("error reply: " + std::string(json));
    if (reply.value("text", "") != text) throw std::runtime_error("reply text differs");
    co_return;
  }
}

// Ends the connection with a closing handshake, best effort: the run's numbers are taken.
awaitable<void> ws_close(WsStream& ws) {
  auto [ec] = co_await ws.async_close(websocket::close_code::normal, asio::as_tuple(use_awaitable));
  (void)ec;
}

awaitable<void> ws_pingpong(tcp::endpoint ep, std::string host, std::string path, Window w, std::size_t size,
                            ConnResult& r) {
  WsStream ws(co_await asio::this_coro::executor);
  co_await ws_open(ws, ep, host, path);
  std::string text(size, '\0');
  for (std::size_t i = 0; i < size; ++i) text[i] = static_cast<char>('a' + i % 26);
  boost::beast::flat_buffer buf;
  for (std::uint64_t id = 1;; ++id) {
    auto t0 = Clock::now();
    if (t0 >= w.end) break;
    std::string request = echo_request(id, text);
    co_await ws.async_write(asio::buffer(request), use_awaitable);
    co_await await_ws_reply(ws, buf, id, text);
    auto t1 = Clock::now();
    if (t1 >= w.start && t1 < w.end) {
      ++r.msgs;
      r.hist.add(static_cast<std::uint64_t>(std::chrono::nanoseconds(t1 - t0).count()));
    }
  }
  co_await ws_close(ws);
}

// ---- ws-idle -------------------------------------------------------------------------------

// Single-threaded like the raw idle scenario: openers share it without locks.
struct WsIdleState {
  tcp::endpoint ep;
  std::string host, path;
  std::size_t target = 0, started = 0, failed = 0;
  bool ping = true;
  std::vector<std::unique_ptr<WsStream>> held;
  std::string error;
};

awaitable<void> ws_idle_opener(WsIdleState& st) {
  auto ex = co_await asio::this_coro::executor;
  while (st.started < st.target) {
    ++st.started;
    auto ws = std::make_unique<WsStream>(ex);
    std::string error;
    try {
      co_await ws_open(*ws, st.ep, st.host, st.path);
      if (st.ping) {
        // One echo call proves the server runs a session for this connection.
        boost::beast::flat_buffer buf;
        std::string request = echo_request(1, "p");
        co_await ws->async_write(asio::buffer(request), use_awaitable);
        co_await await_ws_reply(*ws, buf, 1, "p");
      }
      st.held.push_back(std::move(ws));
    } catch (const boost::system::system_error& e) {
      if (e.code() == asio::error::operation_aborted) throw;  // the deadline won: stop opening
      error = describe(e);
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!error.empty() && st.failed++ == 0) st.error = error;
  }
}

// Held connections the server has closed: a non-blocking peek that reads EOF. (A ping the
// server may have sent is data, not EOF.)
std::size_t count_ws_closed(std::vector<std::unique_ptr<WsStream>>& held) {
  std::size_t closed = 0;
  for (auto& ws : held) {
    char c;
    if (::recv(ws->next_layer().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0) ++closed;
  }
  return closed;
}

}  // namespace

Json run_ws_echo(const Options& o) {
  std::string host = target_of(o), path = o.path;
  return run_pingpong(o, "ws-echo", [host, path](tcp::endpoint ep, Window w, std::size_t size, ConnResult& r) {
    return ws_pingpong(ep, host, path, w, size, r);
  });
}

Json run_ws_idle(const Options& o) {
  asio::io_context ctx(1);  // before st: the held streams must go before their context
  WsIdleState st;
  st.ep = endpoint_of(o);
  st.host = target_of(o);
  st.path = o.path;
  st.target = static_cast<std::size_t>(o.conns > 0 ? o.conns : 10000);
  st.ping = o.idle_ping;
  st.held.reserve(st.target);

  long rss_before = read_rss_kib(o.server_pid);
  auto t0 = Clock::now();
  auto deadline = after(t0, o.timeout_s);
  constexpr int kOpeners = 64;  // upgrades in flight, as the raw idle scenario
  std::string opener_error;
  for (int i = 0; i < kOpeners; ++i) {
    asio::co_spawn(ctx, capture_error(ws_idle_opener(st), opener_error) || sleep_until(deadline),
                   [&](std::exception_ptr, auto winner) {
                     if (winner.index() == 1) opener_error = "timed out opening connections";
                   });
  }
  ctx.run();
  double open_s = seconds_between(t0, Clock::now());

  long rss_established = read_rss_kib(o.server_pid);
  std::this_thread::sleep_for(std::chrono::duration<double>(o.hold_s));
  long rss_held = read_rss_kib(o.server_pid);
  std::size_t closed = count_ws_closed(st.held);
  std::size_t established = st.held.size();
  st.held.clear();  // closes the sockets without a closing handshake; the server copes

  Json out;
  out["scenario"] = "ws-idle";
  out["name"] = o.name;
  out["target"] = target_of(o);
  out["conns"] = st.target;
  out["established"] = established;
  out["open_s"] = open_s;
  out["hold_s"] = o.hold_s;
  out["closed_by_server"] = closed;
  if (rss_before >= 0 && rss_held >= 0 && established > 0) {
    out["rss_before_kib"] = rss_before;
    out["rss_established_kib"] = rss_established;
    out["rss_held_kib"] = rss_held;
    out["kib_per_conn"] = static_cast<double>(rss_held - rss_before) / static_cast<double>(established);
  }
  out["errors"] = st.target - established + closed;
  if (!st.error.empty()) {
    out["error"] = st.error;
  } else if (!opener_error.empty()) {
    out["error"] = opener_error;
  } else if (closed > 0) {
    out["error"] = "server closed idle connections";
  }
  return out;
}

}  // namespace bench
