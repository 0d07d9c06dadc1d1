#pragma once
// Pieces every coserve-bench scenario shares: the run window, connection spawning over
// `--threads` io_contexts, the hard deadline around each connection, error reporting, and the
// framed-protocol reader/writer. Included only by the scenario sources.
//
// Threading: a scenario spreads its connections over `--threads` io_contexts, one thread each.
// Every connection is one coroutine that owns its socket and returns its own ConnResult
// (counters + histogram), so nothing is shared on the hot path; results merge after all
// threads have joined. Every connection races a hard deadline, so a stalled server ends the
// run with an error instead of hanging it.
#include "bench.hpp"

#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <thread>

namespace bench {

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

inline Clock::time_point after(Clock::time_point t, double seconds) {
  return t + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

inline double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Refuses anything but a numeric loopback address: this tool only loads the local machine.
inline tcp::endpoint endpoint_of(const Options& o) {
  auto addr = asio::ip::make_address(o.host);
  if (!addr.is_loopback()) throw std::runtime_error("refusing non-loopback target " + o.host);
  int port = std::stoi(o.port);
  if (port <= 0 || port > 65535) throw std::runtime_error("bad port " + o.port);
  return {addr, static_cast<unsigned short>(port)};
}

inline std::string target_of(const Options& o) {
  return (o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host) + ":" + o.port;
}

inline awaitable<void> sleep_until(Clock::time_point t) {
  asio::steady_timer timer(co_await asio::this_coro::executor, t);
  co_await timer.async_wait(use_awaitable);
}

inline awaitable<void> connect(tcp::socket& sock, tcp::endpoint ep) {
  co_await sock.async_connect(ep, use_awaitable);
  // Ping-pong sends small messages; without this Nagle could hold a split write back.
  sock.set_option(tcp::no_delay(true));
}

// Runs the coroutine make() returns once per connection, spread round-robin over `threads`
// io_contexts, and returns the results in connection order once every thread is done.
template <class Make>
inline std::vector<ConnResult> run_connections(int conns, int threads, Make make) {
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
inline void add_errors(Json& out, const std::vector<ConnResult>& results) {
  int errors = 0;
  std::string first;
  for (const auto& r : results) {
    if (r.error.empty()) continue;
    if (errors++ == 0) first = r.error;
  }
  out["errors"] = errors;
  if (errors > 0) out["error"] = first;
}

inline Json pingpong_summary(const Options& o, const char* scenario, const std::vector<ConnResult>& results) {
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
inline std::string describe(const std::exception& e) {
  if (auto* se = dynamic_cast<const boost::system::system_error*>(&e)) return se->code().message();
  return e.what();
}

// Runs op and stores the text of any exception it ends with.
inline awaitable<void> capture_error(awaitable<void> op, std::string& error) {
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
inline awaitable<ConnResult> bounded(Body body, Clock::time_point hard_end) {
  ConnResult r;
  auto winner = co_await (capture_error(body(r), r.error) || sleep_until(hard_end));
  if (winner.index() == 1) r.error = "timed out";
  co_return r;
}

// Runs one ping-pong coroutine per connection for the warm-up and measured window;
// session(ep, window, size, result) counts and times the round trips inside the window.
// CPU seconds (user + system) the process has used so far; -1 when it cannot be read.
inline double read_cpu_s(int pid) {
  if (pid <= 0) return -1;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = stat.rfind(')');  // the command name may contain spaces
  if (close == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

template <class Session>
inline Json run_pingpong(const Options& o, const char* scenario, Session session) {
  if (o.duration_s <= 0) throw std::runtime_error("--duration must be positive");
  auto ep = endpoint_of(o);
  auto now = Clock::now();
  Window w;
  w.start = after(now, o.warmup_s);
  w.end = after(w.start, o.duration_s);
  w.hard_end = after(w.end, o.timeout_s);
  int conns = o.conns > 0 ? o.conns : 50;
  // The server's CPU time over the measured window: CPU per message holds up on a busy machine,
  // where throughput mostly measures the scheduler.
  double cpu_start = -1, cpu_end = -1;
  std::thread sampler([&] {
    std::this_thread::sleep_until(w.start);
    cpu_start = read_cpu_s(o.server_pid);
    std::this_thread::sleep_until(w.end);
    cpu_end = read_cpu_s(o.server_pid);
  });
  auto results = run_connections(conns, o.threads, [&] {
    return bounded([=](ConnResult& r) { return session(ep, w, o.size, r); }, w.hard_end);
  });
  sampler.join();
  Json out = pingpong_summary(o, scenario, results);
  auto msgs = out["msgs"].get<std::uint64_t>();
  if (cpu_start >= 0 && cpu_end >= cpu_start && msgs > 0) {
    out["server_cpu_s"] = cpu_end - cpu_start;
    out["server_cpu_us_per_msg"] = (cpu_end - cpu_start) * 1e6 / static_cast<double>(msgs);
  }
  return out;
}

// ---- framed protocol -----------------------------------------------------------------------

// Reads coserve frames through one buffer, so a frame that arrives in one segment costs one
// read_some. The views of a returned frame stay valid until the next call.
class FrameReader {
 public:
  // A chat member holds one reader per connection: a small start size keeps 1000 of them cheap.
  explicit FrameReader(std::size_t initial_bytes = 64 * 1024) : buf_(initial_bytes) {}

  struct Frame {
    std::string_view json, body;
  };

  awaitable<Frame> next(tcp::socket& sock) {
    for (;;) {
      if (auto frame = take()) co_return *frame;
      co_await read_more(sock);
    }
  }

  // The next frame if it is buffered whole (valid until the next take), else nullopt. A hot
  // loop calls take() and reads into space() itself, with no coroutine per frame.
  std::optional<Frame> take() {
    begin_ += consumed_;
    consumed_ = 0;
    if (end_ - begin_ < 8) return std::nullopt;
    auto* h = reinterpret_cast<const unsigned char*>(buf_.data() + begin_);
    std::size_t json_len = decode_u32(h), body_len = decode_u32(h + 4);
    // Far above the server's limits; only here so a corrupt header cannot make us allocate GiBs.
    if (json_len > (16u << 20) || body_len > (256u << 20)) throw std::runtime_error("frame too large");
    need_ = 8 + json_len + body_len;
    if (end_ - begin_ < need_) return std::nullopt;
    const char* p = buf_.data() + begin_ + 8;
    consumed_ = need_;
    need_ = 8;
    return Frame{{p, json_len}, {p + json_len, body_len}};
  }

  // Room for the bytes take() is missing; commit() what was read into it.
  asio::mutable_buffer space() {
    if (begin_ + need_ > buf_.size()) {  // make room: slide the unread bytes to the front
      std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
      if (need_ > buf_.size()) buf_.resize(std::max(need_, 2 * buf_.size()));
    }
    return asio::buffer(buf_.data() + end_, buf_.size() - end_);
  }
  void commit(std::size_t n) { end_ += n; }

  awaitable<void> read_more(tcp::socket& sock) {
    commit(co_await sock.async_read_some(space(), use_awaitable));
  }

 private:

  std::vector<char> buf_;
  std::size_t begin_ = 0, end_ = 0, consumed_ = 0;
  std::size_t need_ = 8;  // bytes from begin_ that the next frame needs, as far as known
};

inline awaitable<void> write_frame(tcp::socket& sock, std::string_view json, std::string_view body) {
  auto header = encode_header(static_cast<std::uint32_t>(json.size()), static_cast<std::uint32_t>(body.size()));
  std::array<asio::const_buffer, 3> parts{asio::buffer(header), asio::buffer(json), asio::buffer(body)};
  co_await asio::async_write(sock, parts, use_awaitable);
}

// VmRSS of a process in KiB, or -1 if it cannot be read.
inline long read_rss_kib(int pid) {
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

}  // namespace bench
