#pragma once
// Shared pieces of coserve-bench: options, the latency histogram and the scenario entry points.
// Scenarios live in scenarios.cpp, chat.cpp and ws.cpp (the files that include Asio, through
// kit.hpp); main.cpp parses the command line, prints results and builds the report table.
#include <nlohmann/json.hpp>

#include <array>
#include <bit>
#include <cstdint>
#include <string>
#include <vector>

namespace bench {

using Json = nlohmann::ordered_json;  // ordered so the JSON lines read like the human ones

struct Options {
  std::string scenario;
  std::string name;  // label of this run in the results ("epoll-raw", "coserve-raw", ...)
  std::string host = "127.0.0.1";
  std::string port;
  int conns = -1;  // -1: the scenario's default
  std::size_t size = 64;
  double duration_s = 10;
  double warmup_s = 1;
  std::uint64_t bytes = 256ull << 20;  // bulk: total over all connections
  double hold_s = 3;                   // idle: how long connections stay open
  int server_pid = 0;                  // idle: whose VmRSS to read
  bool idle_ping = true;               // idle: one echoed byte proves the server accepted it
  int threads = 1;                     // io_contexts (one thread each) in the generator
  double rate = 200;                   // chat-fanout: messages per second over all senders
  int senders = 4;                     // chat-fanout: members that also send
  bool stalled = false;                // chat-fanout: add one member that never reads
  int count = 1000;                    // command-true: sequential runs
  std::string user = "admin";          // command-true: login (password: $COSERVE_BENCH_PASSWORD)
  std::string path = "/ws";            // ws-echo, ws-idle: WebSocket request target
  double timeout_s = 60;               // hard bound on any one scenario beyond its own length
};

// Latency histogram with ~3 % relative precision and a fixed size, so every connection keeps
// its own (no sharing on the hot path) and they merge at the end. Values are nanoseconds.
// Below 64 ns buckets are exact; above, each power of two is split into 32 buckets.
class Histogram {
 public:
  void add(std::uint64_t ns) {
    ++counts_[index(ns)];
    ++total_;
  }
  void merge(const Histogram& other) {
    for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
    total_ += other.total_;
  }
  std::uint64_t count() const { return total_; }
  // Midpoint of the bucket holding the q-quantile (0 < q <= 1), in nanoseconds; 0 when empty.
  double quantile(double q) const {
    if (total_ == 0) return 0;
    auto rank = static_cast<std::uint64_t>(q * static_cast<double>(total_));
    if (rank == 0) rank = 1;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= rank) return (static_cast<double>(lower(i)) + static_cast<double>(lower(i + 1))) / 2;
    }
    return static_cast<double>(lower(counts_.size()));
  }

 private:
  static constexpr std::size_t kBuckets = 64 + 32 * 40;  // covers up to 2^45 ns (~9.7 h)

  static std::size_t index(std::uint64_t ns) {
    if (ns < 64) return static_cast<std::size_t>(ns);
    unsigned shift = static_cast<unsigned>(std::bit_width(ns)) - 6;  // top 6 bits stay
    std::size_t i = shift * 32 + static_cast<std::size_t>(ns >> shift);
    return i < kBuckets ? i : kBuckets - 1;
  }
  static std::uint64_t lower(std::size_t i) {
    if (i < 64) return i;
    unsigned shift = static_cast<unsigned>(i / 32 - 1);
    return static_cast<std::uint64_t>(i % 32 + 32) << shift;
  }

  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t total_ = 0;
};

// Each returns the result as a JSON object with at least "scenario" and "errors".
Json run_raw_pingpong(const Options& o);
Json run_framed_pingpong(const Options& o);
Json run_bulk(const Options& o);
Json run_idle(const Options& o);
Json run_framed_idle(const Options& o);
Json run_chat_fanout(const Options& o);
Json run_command_true(const Options& o);
Json run_ws_echo(const Options& o);
Json run_ws_idle(const Options& o);
// Runs the framed scenario against an in-process framed echo server; true on success.
bool run_self_test();

// Frame header of the coserve protocol: u32 json_len + u32 body_len, big-endian.
inline std::array<unsigned char, 8> encode_header(std::uint32_t json_len, std::uint32_t body_len) {
  std::array<unsigned char, 8> h{};
  for (int i = 0; i < 4; ++i) {
    h[i] = static_cast<unsigned char>(json_len >> (24 - 8 * i));
    h[4 + i] = static_cast<unsigned char>(body_len >> (24 - 8 * i));
  }
  return h;
}
inline std::uint32_t decode_u32(const unsigned char* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}

}  // namespace bench
