// The load scenarios of coserve-bench, on C++20 coroutines over Boost.Asio.
//
// Threading: a scenario spreads its connections over `--threads` io_contexts, one thread each.
// Every connection is one coroutine that owns its socket and returns its own ConnResult
// (counters + histogram), so nothing is shared on the hot path; results merge after all
// threads have joined. Every connection races a hard deadline, so a stalled server ends the
// run with an error instead of hanging it.
#include "bench.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <thread>

namespace bench {
namespace {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;
using Clock = std::chrono::steady_clock;

struct ConnResult {
  std::uint64_t msgs = 0;   // completed round trips inside the measurement window
  std::uint64_t bytes = 0;  // bulk: echoed bytes received
  Histogram hist;
  std::string error;  // empty when the connection ended cleanly
};

// The measurement window: round trips completing in [start, end) count; the run stops at end.
struct Window {
  Clock::time_point start, end, hard_end;
};

Clock::time_point after(Clock::time_point t, double seconds) {
  return t + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Refuses anything but a numeric loopback address: this tool only loads the local machine.
tcp::endpoint endpoint_of(const Options& o) {
  auto addr = asio::ip::make_address(o.host);
  if (!addr.is_loopback()) throw std::runtime_error("refusing non-loopback target " + o.host);
  int port = std::stoi(o.port);
  if (port <= 0 || port > 65535) throw std::runtime_error("bad port " + o.port);
  return {addr, static_cast<unsigned short>(port)};
}

std::string target_of(const Options& o) {
  return (o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host) + ":" + o.port;
}

awaitable<void> sleep_until(Clock::time_point t) {
  asio::steady_timer timer(co_await asio::this_coro::executor, t);
  co_await timer.async_wait(use_awaitable);
}

awaitable<void> connect(tcp::socket& sock, tcp::endpoint ep) {
  co_await sock.async_connect(ep, use_awaitable);
  // Ping-pong sends small messages; without this Nagle could hold a split write back.
  sock.set_option(tcp::no_delay(true));
}

// Runs the coroutine make() returns once per connection, spread round-robin over `threads`
// io_contexts, and returns the results in connection order once every thread is done.
template <class Make>
std::vector<ConnResult> run_connections(int conns, int threads, Make make) {
  threads = std::clamp(threads, 1, conns);
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  for (int t = 0; t < threads; ++t) contexts.push_back(std::make_unique<asio::io_context>(1));

  // Each handler writes only its own slot; the vector outlives every context's run().
  std::vector<ConnResult> results(static_cast<std::size_t>(conns));
  for (int i = 0; i < conns; ++i) {
    auto& ctx = *contexts[static_cast<std::size_t>(i % threads)];
    asio::co_spawn(ctx, make(),
                   [&results, i](std::exception_ptr e, ConnResult r) {
                     if (e) {
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& ex) {
                         r.error = ex.what();
                       }
                     }
                     results[static_cast<std::size_t>(i)] = std::move(r);
                   });
  }
  std::vector<std::thread> workers;
  for (int t = 1; t < threads; ++t) workers.emplace_back([&ctx = *contexts[static_cast<std::size_t>(t)]] { ctx.run(); });
  contexts[0]->run();
  for (auto& w : workers) w.join();
  return results;
}

// Adds the error fields every scenario reports: how many connections failed, and the first reason.
void add_errors(Json& out, const std::vector<ConnResult>& results) {
  int errors = 0;
  std::string first;
  for (const auto& r : results) {
    if (r.error.empty()) continue;
    if (errors++ == 0) first = r.error;
  }
  out["errors"] = errors;
  if (errors > 0) out["error"] = first;
}

Json pingpong_summary(const Options& o, const char* scenario, const std::vector<ConnResult>& results) {
  Histogram all;
  std::uint64_t msgs = 0;
  for (const auto& r : results) {
    all.merge(r.hist);
    msgs += r.msgs;
  }
  Json out;
  out["scenario"] = scenario;
  out["name"] = o.name;
  out["target"] = target_of(o);
  out["conns"] = results.size();
  out["size"] = o.size;
  out["duration_s"] = o.duration_s;
  out["msgs"] = msgs;
  out["msgs_per_s"] = static_cast<double>(msgs) / o.duration_s;
  out["p50_us"] = all.quantile(0.50) / 1000;
  out["p99_us"] = all.quantile(0.99) / 1000;
  add_errors(out, results);
  return out;
}

// The text to report for an exception; Boost's system_error::what() also carries the source
// location inside Asio, which only clutters a result line.
std::string describe(const std::exception& e) {
  if (auto* se = dynamic_cast<const boost::system::system_error*>(&e)) return se->code().message();
  return e.what();
}

// Runs op and stores the text of any exception it ends with.
awaitable<void> capture_error(awaitable<void> op, std::string& error) {
  try {
    co_await std::move(op);
  } catch (const std::exception& e) {
    error = describe(e);
  }
}

// Wraps a connection's work in its hard deadline and turns failures into ConnResult::error.
// The failure is caught inside the race: `a || b` waits for the first *success*, so an
// exception escaping `a` would otherwise wait for the deadline and be reported as a timeout.
template <class Body>
awaitable<ConnResult> bounded(Body body, Clock::time_point hard_end) {
  ConnResult r;
  auto winner = co_await (capture_error(body(r), r.error) || sleep_until(hard_end));
  if (winner.index() == 1) r.error = "timed out";
  co_return r;
}

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

// Reads coserve frames through one buffer, so a frame that arrives in one segment costs one
// read_some. The views of a returned frame stay valid until the next call.
class FrameReader {
 public:
  struct Frame {
    std::string_view json, body;
  };

  awaitable<Frame> next(tcp::socket& sock) {
    begin_ += consumed_;
    consumed_ = 0;
    co_await fill(sock, 8);
    auto* h = reinterpret_cast<const unsigned char*>(buf_.data() + begin_);
    std::size_t json_len = decode_u32(h), body_len = decode_u32(h + 4);
    // Far above the server's limits; only here so a corrupt header cannot make us allocate GiBs.
    if (json_len > (16u << 20) || body_len > (256u << 20)) throw std::runtime_error("frame too large");
    co_await fill(sock, 8 + json_len + body_len);
    const char* p = buf_.data() + begin_ + 8;
    consumed_ = 8 + json_len + body_len;
    co_return Frame{{p, json_len}, {p + json_len, body_len}};
  }

 private:
  awaitable<void> fill(tcp::socket& sock, std::size_t need) {
    while (end_ - begin_ < need) {
      if (begin_ + need > buf_.size()) {  // make room: slide the unread bytes to the front
        std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
        if (need > buf_.size()) buf_.resize(std::max(need, 2 * buf_.size()));
      }
      end_ += co_await sock.async_read_some(asio::buffer(buf_.data() + end_, buf_.size() - end_), use_awaitable);
    }
  }

  std::vector<char> buf_ = std::vector<char>(64 * 1024);
  std::size_t begin_ = 0, end_ = 0, consumed_ = 0;
};

awaitable<void> write_frame(tcp::socket& sock, std::string_view json, std::string_view body) {
  auto header = encode_header(static_cast<std::uint32_t>(json.size()), static_cast<std::uint32_t>(body.size()));
  std::array<asio::const_buffer, 3> parts{asio::buffer(header), asio::buffer(json), asio::buffer(body)};
  co_await asio::async_write(sock, parts, use_awaitable);
}

// Waits for the reply to `id`, skipping unsolicited frames (no "id"), and checks it is a
// successful echo of `body`.
awaitable<void> await_echo_reply(tcp::socket& sock, FrameReader& reader, std::uint64_t id, std::string_view body) {
  for (;;) {
    auto frame = co_await reader.next(sock);
    auto reply = nlohmann::json::parse(frame.json);
    if (!reply.is_object() || !reply.contains("id")) continue;
    if (reply["id"] != id)
      throw std::runtime_error("reply for id " + reply["id"].dump() + " while waiting for " + std::to_string(id));
    if (reply.value("ok", false) != true) throw std::runtime_error("error reply: " + std::string(frame.json));
    if (reply.value("text", "") != "x") throw std::runtime_error("reply text differs");
    if (frame.body != body) throw std::runtime_error("reply body differs");
    co_return;
  }
}

awaitable<void> framed_pingpong(tcp::endpoint ep, Window w, std::size_t size, ConnResult& r) {
  tcp::socket sock(co_await asio::this_coro::executor);
  co_await connect(sock, ep);
  FrameReader reader;
  std::string body(size, '\0');
  for (std::size_t i = 0; i < size; ++i) body[i] = static_cast<char>('a' + i % 26);
  for (std::uint64_t id = 1;; ++id) {
    auto t0 = Clock::now();
    if (t0 >= w.end) break;
    std::string json = R"({"id":)" + std::to_string(id) + R"(,"service":"echo","op":"echo","text":"x"})";
    co_await write_frame(sock, json, body);
    co_await await_echo_reply(sock, reader, id, body);
    auto t1 = Clock::now();
    if (t1 >= w.start && t1 < w.end) {
      ++r.msgs;
      r.hist.add(static_cast<std::uint64_t>(std::chrono::nanoseconds(t1 - t0).count()));
    }
  }
}

template <class Session>
Json run_pingpong(const Options& o, const char* scenario, Session session) {
  if (o.duration_s <= 0) throw std::runtime_error("--duration must be positive");
  auto ep = endpoint_of(o);
  auto now = Clock::now();
  Window w;
  w.start = after(now, o.warmup_s);
  w.end = after(w.start, o.duration_s);
  w.hard_end = after(w.end, o.timeout_s);
  int conns = o.conns > 0 ? o.conns : 50;
  auto results = run_connections(conns, o.threads, [&] {
    return bounded([=](ConnResult& r) { return session(ep, w, o.size, r); }, w.hard_end);
  });
  return pingpong_summary(o, scenario, results);
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

// VmRSS of a process in KiB, or -1 if it cannot be read.
long read_rss_kib(int pid) {
  if (pid <= 0) return -1;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      long kib = -1;
      in >> kib;
      return kib;
    }
    in.ignore(1 << 20, '\n');
  }
  return -1;
}

// State of the idle scenario. It lives in run_idle's frame, which outlives the io_context's
// run(), and the context is single-threaded: the opener coroutines share it without locks.
struct IdleState {
  tcp::endpoint ep;
  std::size_t target = 0, started = 0, failed = 0;
  bool ping = true;
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
      if (st.ping) {
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

Json run_idle(const Options& o) {
  asio::io_context ctx(1);  // before st: the held sockets must go before their context
  IdleState st;
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
  out["scenario"] = "idle";
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
    co_await write_frame(sock, reply.dump(), frame.body);
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
