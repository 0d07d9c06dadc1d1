// The original load scenarios of coserve-bench (raw and framed ping-pong, bulk, idle) and the
// self-test; the shared machinery is in kit.hpp, chat/command in chat.cpp, WebSocket in ws.cpp.
#include "kit.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>

namespace bench {
namespace {

// ---- raw ping-pong -------------------------------------------------------------------------

awaitable<void> raw_pingpong(tcp::endpoint ep, Window w, std::size_t size, ConnResult& r) {
  tcp::socket sock(co_await asio::this_coro::executor);
  co_await connect(sock, ep);
  std::vector<char> out(size), in(size);
  for (std::size_t i = 0; i < size; ++i) out[i] = static_cast<char>('a' + i % 26);
  for (;;) {
    auto t0 = Clock::now();
    if (t0 >= w.end) break;
    co_await asio::async_write(sock, asio::buffer(out), use_awaitable);
    co_await asio::async_read(sock, asio::buffer(in), use_awaitable);
    auto t1 = Clock::now();
    if (in != out) throw std::runtime_error("echo differs from what was sent");
    if (t1 >= w.start && t1 < w.end) {
      ++r.msgs;
      r.hist.add(static_cast<std::uint64_t>(std::chrono::nanoseconds(t1 - t0).count()));
    }
  }
}

// ---- framed protocol -----------------------------------------------------------------------

// True when `frame` is the reply to `id`, a successful echo of `body`; false for an unsolicited
// frame (no "id"); throws for anything else. A reply whose JSON is exactly what coserve sends is
// accepted without a parse (the generator shares the cores with the server: its own CPU
// counts); any other text is parsed and checked field by field, so another key order passes.
bool is_echo_reply(const FrameReader::Frame& frame, std::uint64_t id, std::string_view expected_json,
                   std::string_view body) {
  if (frame.json != expected_json) {
    auto reply = nlohmann::json::parse(frame.json);
    if (!reply.is_object() || !reply.contains("id")) return false;
    if (reply["id"] != id)
      throw std::runtime_error("reply for id " + reply["id"].dump() + " while waiting for " + std::to_string(id));
    if (reply.value("ok", false) != true) throw std::runtime_error("error reply: " + std::string(frame.json));
    if (reply.value("text", "") != "x") throw std::runtime_error("reply text differs");
  }
  if (frame.body != body) throw std::runtime_error("reply body differs");
  return true;
}

awaitable<void> framed_pingpong(tcp::endpoint ep, Window w, std::size_t size, ConnResult& r) {
  tcp::socket sock(co_await asio::this_coro::executor);
  co_await connect(sock, ep);
  FrameReader reader;
  std::string body(size, '\0');
  for (std::size_t i = 0; i < size; ++i) body[i] = static_cast<char>('a' + i % 26);
  // One buffer per connection, rewritten for each request: header, JSON, body.
  std::string request, json, expected;
  for (std::uint64_t id = 1;; ++id) {
    auto t0 = Clock::now();
    if (t0 >= w.end) break;
    const std::string id_text = std::to_string(id);  // short: no allocation
    json.assign(R"({"id":)").append(id_text).append(R"(,"service":"echo","op":"echo","text":"x"})");
    expected.assign(R"({"id":)").append(id_text).append(R"(,"ok":true,"text":"x"})");
    auto header = encode_header(static_cast<std::uint32_t>(json.size()), static_cast<std::uint32_t>(body.size()));
    request.assign(header.begin(), header.end());
    request += json;
    request += body;
    co_await asio::async_write(sock, asio::buffer(request), use_awaitable);
    for (;;) {
      auto frame = reader.take();
      if (frame && is_echo_reply(*frame, id, expected, body)) break;
      if (!frame) reader.commit(co_await sock.async_read_some(reader.space(), use_awaitable));
    }
    auto t1 = Clock::now();
    if (t1 >= w.start && t1 < w.end) {
      ++r.msgs;
      r.hist.add(static_cast<std::uint64_t>(std::chrono::nanoseconds(t1 - t0).count()));
    }
  }
}

// ---- bulk ----------------------------------------------------------------------------------

constexpr std::size_t kChunk = 64 * 1024;
constexpr std::size_t kPeriod = 251;  // prime, so chunk boundaries never line up with the pattern

// Byte i of every bulk stream is i % kPeriod; a chunk starting at offset o is pattern[o % kPeriod...].
std::vector<char> bulk_pattern() {
  std::vector<char> p(kChunk + kPeriod);
  for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<char>(i % kPeriod);
  return p;
}

awaitable<void> bulk_writer(tcp::socket& sock, std::uint64_t total) {
  auto pattern = bulk_pattern();
  for (std::uint64_t sent = 0; sent < total;) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, total - sent));
    sent += co_await asio::async_write(sock, asio::buffer(pattern.data() + sent % kPeriod, n), use_awaitable);
  }
}

awaitable<void> bulk_reader(tcp::socket& sock, std::uint64_t total, ConnResult& r) {
  auto pattern = bulk_pattern();
  std::vector<char> buf(kChunk);
  while (r.bytes < total) {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, total - r.bytes));
    std::size_t n = co_await sock.async_read_some(asio::buffer(buf.data(), want), use_awaitable);
    if (std::memcmp(buf.data(), pattern.data() + r.bytes % kPeriod, n) != 0)
      throw std::runtime_error("echoed stream differs at byte " + std::to_string(r.bytes));
    r.bytes += n;
  }
}

awaitable<void> bulk_session(tcp::endpoint ep, std::uint64_t total, ConnResult& r) {
  tcp::socket sock(co_await asio::this_coro::executor);
  co_await connect(sock, ep);
  // Reading while writing: an echo server would otherwise stall once both socket buffers fill.
  co_await (bulk_writer(sock, total) && bulk_reader(sock, total, r));
}

// ---- idle ----------------------------------------------------------------------------------

// State of the idle scenario. It lives in run_idle's frame, which outlives the io_context's
// run(), and the context is single-threaded: the opener coroutines share it without locks.
struct IdleState {
  tcp::endpoint ep;
  std::size_t target = 0, started = 0, failed = 0;
  bool ping = true;
  bool framed = false;  // prove acceptance with a core.ping frame instead of an echoed byte
  std::vector<tcp::socket> held;
  std::string error;
};

// Opens connections until the target count is started; several of these run at once so the
// connect rate is not bound by one round trip at a time.
awaitable<void> idle_opener(IdleState& st) {
  auto ex = co_await asio::this_coro::executor;
  while (st.started < st.target) {
    ++st.started;
    tcp::socket sock(ex);
    try {
      co_await sock.async_connect(st.ep, use_awaitable);
      if (st.ping && st.framed) {
        // A ping reply proves the server accepted the connection and started its session.
        FrameReader reader(256);
        co_await write_frame(sock, R"({"id":1,"service":"core","op":"ping"})", "");
        auto reply = co_await reader.next(sock);
        if (reply.json.find(R"("ok":true)") == std::string_view::npos)
          throw std::runtime_error("ping failed: " + std::string(reply.json));
      } else if (st.ping) {
        // One echoed byte proves the server accepted the connection and started its session.
        char c = 'p';
        co_await asio::async_write(sock, asio::buffer(&c, 1), use_awaitable);
        co_await asio::async_read(sock, asio::buffer(&c, 1), use_awaitable);
      }
      st.held.push_back(std::move(sock));
    } catch (const boost::system::system_error& e) {
      if (e.code() == asio::error::operation_aborted) throw;  // the deadline won: stop opening
      if (st.failed++ == 0) st.error = describe(e);
    }
  }
}

// Counts held connections the server has closed: a non-blocking peek that reads EOF.
std::size_t count_closed(std::vector<tcp::socket>& held) {
  std::size_t closed = 0;
  for (auto& s : held) {
    char c;
    if (::recv(s.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0) ++closed;
  }
  return closed;
}

}  // namespace

Json run_raw_pingpong(const Options& o) {
  if (o.size == 0) throw std::runtime_error("raw-pingpong needs --size of at least 1");
  return run_pingpong(o, "raw-pingpong", raw_pingpong);
}

Json run_framed_pingpong(const Options& o) { return run_pingpong(o, "framed-pingpong", framed_pingpong); }

Json run_bulk(const Options& o) {
  auto ep = endpoint_of(o);
  int conns = o.conns > 0 ? o.conns : 4;
  std::uint64_t per_conn = o.bytes / static_cast<std::uint64_t>(conns);
  if (per_conn == 0) throw std::runtime_error("--bytes must be at least one byte per connection");
  auto t0 = Clock::now();
  auto hard_end = after(t0, o.timeout_s);
  auto results = run_connections(conns, o.threads, [&] {
    return bounded([=](ConnResult& r) { return bulk_session(ep, per_conn, r); }, hard_end);
  });
  double secs = seconds_between(t0, Clock::now());
  std::uint64_t bytes = 0;
  for (const auto& r : results) bytes += r.bytes;
  Json out;
  out["scenario"] = "bulk";
  out["name"] = o.name;
  out["target"] = target_of(o);
  out["conns"] = conns;
  out["bytes"] = bytes;
  out["seconds"] = secs;
  out["mb_per_s"] = static_cast<double>(bytes) / 1e6 / secs;
  add_errors(out, results);
  return out;
}

namespace {
Json hold_idle(const Options& o, bool framed) {
  asio::io_context ctx(1);  // before st: the held sockets must go before their context
  IdleState st;
  st.framed = framed;
  st.ep = endpoint_of(o);
  st.target = static_cast<std::size_t>(o.conns > 0 ? o.conns : 10000);
  st.ping = o.idle_ping;
  st.held.reserve(st.target);

  long rss_before = read_rss_kib(o.server_pid);
  auto t0 = Clock::now();
  auto deadline = after(t0, o.timeout_s);
  // 64 connects in flight: fast, yet well under any listen backlog.
  constexpr int kOpeners = 64;
  std::string opener_error;
  for (int i = 0; i < kOpeners; ++i) {
    asio::co_spawn(ctx, capture_error(idle_opener(st), opener_error) || sleep_until(deadline),
                   [&](std::exception_ptr, auto winner) {
                     if (winner.index() == 1) opener_error = "timed out opening connections";
                   });
  }
  ctx.run();
  double open_s = seconds_between(t0, Clock::now());

  long rss_established = read_rss_kib(o.server_pid);
  std::this_thread::sleep_for(std::chrono::duration<double>(o.hold_s));
  long rss_held = read_rss_kib(o.server_pid);
  std::size_t closed = count_closed(st.held);
  std::size_t established = st.held.size();
  st.held.clear();  // closes them all

  Json out;
  out["scenario"] = framed ? "framed-idle" : "idle";
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
  // Every connection that was not established or did not stay open is an error.
  std::size_t errors = st.target - established + closed;
  out["errors"] = errors;
  if (!st.error.empty()) {
    out["error"] = st.error;
  } else if (!opener_error.empty()) {
    out["error"] = opener_error;
  } else if (closed > 0) {
    out["error"] = "server closed idle connections";
  }
  return out;
}
}  // namespace

Json run_idle(const Options& o) { return hold_idle(o, false); }
Json run_framed_idle(const Options& o) { return hold_idle(o, true); }

// ---- self-test: the scenarios against in-process echo servers --------------------------------

namespace {

awaitable<void> raw_echo_session(tcp::socket sock) {
  std::vector<char> buf(kChunk);
  for (;;) {
    std::size_t n = co_await sock.async_read_some(asio::buffer(buf), use_awaitable);
    co_await asio::async_write(sock, asio::buffer(buf.data(), n), use_awaitable);
  }
}

// Replies like coserve's echo service, and sends an unsolicited push before every third reply
// so the client's skipping of frames without an id is exercised.
awaitable<void> framed_echo_session(tcp::socket sock) {
  FrameReader reader;
  for (std::uint64_t n = 1;; ++n) {
    auto frame = co_await reader.next(sock);
    auto request = nlohmann::json::parse(frame.json);
    if (n % 3 == 0) co_await write_frame(sock, R"({"service":"chat","event":"message"})", "");
    nlohmann::json reply = {{"id", request["id"]}, {"ok", true}, {"text", request.value("text", "")}};
    // Every other reply in another key order with spaces: the generator must parse those in full.
    auto text = n % 2 ? reply.dump() : reply.dump(1);
    co_await write_frame(sock, text, frame.body);
  }
}

template <class Session>
awaitable<void> accept_loop(tcp::acceptor& acceptor, Session session) {
  for (;;) {
    auto sock = co_await acceptor.async_accept(use_awaitable);
    sock.set_option(tcp::no_delay(true));  // the push + reply pair would otherwise meet Nagle
    // Sessions end with an exception when the client closes; that is their normal end here.
    asio::co_spawn(acceptor.get_executor(), session(std::move(sock)), [](std::exception_ptr) {});
  }
}

}  // namespace

bool run_self_test() {
  asio::io_context server_ctx;
  tcp::endpoint any{asio::ip::address_v4::loopback(), 0};
  tcp::acceptor raw(server_ctx, any), framed(server_ctx, any);
  asio::co_spawn(server_ctx, accept_loop(raw, raw_echo_session), [](std::exception_ptr) {});
  asio::co_spawn(server_ctx, accept_loop(framed, framed_echo_session), [](std::exception_ptr) {});
  std::thread server([&] { server_ctx.run(); });

  Options o;
  o.name = "self-test";
  o.conns = 4;
  o.duration_s = 0.5;
  o.warmup_s = 0.1;
  o.timeout_s = 10;
  o.bytes = 8 << 20;
  o.hold_s = 0.1;
  o.server_pid = static_cast<int>(::getpid());
  bool ok = true;
  auto check = [&](const Json& r, const char* metric) {
    bool pass = r["errors"] == 0 && r.contains(metric) && r[metric].get<double>() > 0;
    std::printf("self-test %-16s %s %s\n", r["scenario"].get<std::string>().c_str(), pass ? "ok" : "FAILED",
                r.dump().c_str());
    ok = ok && pass;
  };
  o.port = std::to_string(raw.local_endpoint().port());
  check(run_raw_pingpong(o), "msgs_per_s");
  check(run_bulk(o), "mb_per_s");
  o.conns = 200;
  check(run_idle(o), "established");
  o.conns = 4;
  o.port = std::to_string(framed.local_endpoint().port());
  check(run_framed_pingpong(o), "msgs_per_s");
  o.size = 200 * 1024;  // larger than the reader's initial buffer: exercises its growth
  check(run_framed_pingpong(o), "msgs_per_s");

  server_ctx.stop();  // test harness only: the echo sessions have no other way to end
  server.join();
  return ok;
}

}  // namespace bench
