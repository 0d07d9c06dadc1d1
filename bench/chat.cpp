// Scenarios that drive coserve services over the framed protocol: chat-fanout (one room, many
// members, a fixed send rate, delivery latency) and command-true (sequential command.run).
#include "kit.hpp"

#include <sys/socket.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <optional>
#include <utility>

namespace bench {
namespace {

// ---- chat fan-out --------------------------------------------------------------------------
//
// Every member is one coroutine with its own framed connection; the first `senders` members
// also send. Texts are "<kind><sender>:<steady-clock ns at send>", kind 'w' (warm-up), 'm'
// (measured) or 'e' (the sender's last message). Room order keeps each sender's messages in
// order, so a member that has seen every sender's 'e' has seen all it will get; it also checks
// the room's `seq` has no gap. Delivery latency = receive time - send time (same clock, same
// process).

constexpr std::string_view kRoom = "bench";
constexpr std::string_view kStalledNick = "stalled";

// Shared by all connection coroutines, on any generator thread: atomics only.
struct ChatShared {
  int members = 0;          // reading members (senders included)
  int to_join = 0;          // members + the stalled one, if any
  int senders = 1;
  double rate = 200;        // messages per second over all senders
  double warmup_s = 1, duration_s = 10;
  std::atomic<int> joined{0};
  std::atomic<std::int64_t> go_ns{0};  // steady-clock ns when sending starts; 0 until all joined
  std::atomic<int> senders_done{0};
  std::atomic<std::int64_t> senders_done_ns{0};
  std::atomic<int> members_done{0};
  std::atomic<std::uint64_t> measured_sent{0};
  std::atomic<std::int64_t> stalled_dropped_ns{0};  // when a member saw the stalled one dropped
  std::atomic<std::int64_t> last_rx_ns{0};          // last frame any member received
  std::atomic<std::int64_t> last_measured_rx_ns{0};  // last delivery of a measured message
  Clock::time_point hard_end;
};

std::int64_t now_ns() { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(); }

Clock::time_point from_ns(std::int64_t ns) { return Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(ns))); }

// The value after `"key":` in a flat JSON object as the server writes it (no spaces), up to the
// next ',' or '}' (strings keep their quotes). Used for the hot message pushes instead of a full
// parse, which would make the generator the bottleneck at 10^5 deliveries per second.
std::optional<std::string_view> raw_field(std::string_view json, std::string_view key) {
  // Appended piecewise: g++ 12 -O3 misreports `"\"" + std::string(...)` (-Wrestrict).
  std::string pattern;
  pattern.reserve(key.size() + 3);
  pattern.append(1, '"').append(key).append("\":");
  auto at = json.find(pattern);
  if (at == std::string_view::npos) return std::nullopt;
  auto begin = at + pattern.size();
  auto end = json.find_first_of(",}", json[begin] == '"' ? json.find('"', begin + 1) : begin);
  if (end == std::string_view::npos) return std::nullopt;
  return json.substr(begin, end - begin);
}

std::uint64_t to_u64(std::string_view digits) {
  std::uint64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') throw std::runtime_error("not a number: " + std::string(digits));
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

// Records the whole run for one member.
struct MemberState {
  int index = 0;
  std::uint64_t last_seq = 0;
  int ends_seen = 0;
  std::vector<bool> ended;  // per sender
  std::int64_t last_measured_rx_ns = 0;
};

// Sends `chat.join` as request id 1 and waits for its reply, skipping pushes (joined, ...).
awaitable<void> join_room(tcp::socket& sock, FrameReader& reader, std::string_view nick) {
  nlohmann::json join = {{"id", 1}, {"service", "chat"}, {"op", "join"}, {"room", kRoom}, {"nick", nick}};
  std::string text = join.dump();
  co_await write_frame(sock, text, "");
  for (;;) {
    auto frame = co_await reader.next(sock);
    if (frame.json.find("\"id\"") == std::string_view::npos) continue;
    auto reply = nlohmann::json::parse(frame.json);
    if (!reply.contains("id") || reply["id"] != 1) continue;
    if (reply.value("ok", false) != true) throw std::runtime_error("join failed: " + std::string(frame.json));
    co_return;
  }
}

void mark_joined(ChatShared& sh) {
  if (sh.joined.fetch_add(1) + 1 == sh.to_join) sh.go_ns = now_ns();
}

// Handles one frame a member receives. Returns false once this member has every sender's end.
bool on_member_frame(ChatShared& sh, MemberState& st, FrameReader::Frame frame, ConnResult& r) {
  std::string_view json = frame.json;
  auto now = now_ns();
  sh.last_rx_ns.store(now, std::memory_order_relaxed);
  if (json.find("\"event\":\"message\"") != std::string_view::npos) {
    auto text = raw_field(json, "text");
    auto seq = raw_field(json, "seq");
    if (!text || !seq || text->size() < 4) throw std::runtime_error("unexpected message push: " + std::string(json));
    std::uint64_t s = to_u64(*seq);
    if (st.last_seq != 0 && s != st.last_seq + 1)
      throw std::runtime_error("room seq jumped from " + std::to_string(st.last_seq) + " to " + std::to_string(s));
    st.last_seq = s;
    std::string_view body = text->substr(1, text->size() - 2);  // without the quotes
    auto colon = body.find(':');
    if (colon == std::string_view::npos) throw std::runtime_error("foreign message in the bench room");
    char kind = body[0];
    auto sender = static_cast<std::size_t>(to_u64(body.substr(1, colon - 1)));
    auto sent = static_cast<std::int64_t>(to_u64(body.substr(colon + 1)));
    if (kind == 'm') {
      ++r.msgs;
      st.last_measured_rx_ns = now;
      r.hist.add(static_cast<std::uint64_t>(std::max<std::int64_t>(0, now - sent)));
    } else if (kind == 'e' && sender < st.ended.size() && !st.ended[sender]) {
      st.ended[sender] = true;
      ++st.ends_seen;
    }
    return st.ends_seen < sh.senders;
  }
  if (json.find("\"id\"") != std::string_view::npos) {  // a sender's `say` reply
    if (json.find("\"ok\":true") == std::string_view::npos) throw std::runtime_error("say failed: " + std::string(json));
    return true;
  }
  auto push = nlohmann::json::parse(json);
  auto event = push.value("event", "");
  if (event == "dropped") throw std::runtime_error("dropped by the server: " + push.value("reason", ""));
  if (event == "left" && push.value("nick", "") == kStalledNick && push.value("reason", "") == "dropped") {
    std::int64_t expected = 0;
    sh.stalled_dropped_ns.compare_exchange_strong(expected, now_ns());
  }
  return true;
}

// Waits until all members have joined; the last one to join sets go_ns.
awaitable<Clock::time_point> wait_for_go(const ChatShared& sh) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (sh.go_ns == 0) {
    if (Clock::now() >= sh.hard_end) throw std::runtime_error("not every member joined in time");
    timer.expires_after(std::chrono::milliseconds(5));
    co_await timer.async_wait(use_awaitable);
  }
  co_return from_ns(sh.go_ns);
}

// Sender `k`: open loop at rate/senders per second, staggered against the other senders.
awaitable<void> chat_sender(tcp::socket& sock, ChatShared& sh, int k) {
  auto go = co_await wait_for_go(sh);
  auto start = after(go, sh.warmup_s), end = after(start, sh.duration_s);
  double interval = sh.senders / sh.rate;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  std::uint64_t measured = 0;
  for (std::uint64_t n = 0;; ++n) {
    auto at = after(go, interval * (static_cast<double>(n) + static_cast<double>(k) / sh.senders));
    bool last = at >= end;
    if (!last) {
      timer.expires_at(at);
      co_await timer.async_wait(use_awaitable);
    }
    auto t = Clock::now();
    char kind = last ? 'e' : (t >= start ? 'm' : 'w');
    if (kind == 'm') ++measured;
    std::string json = R"({"id":)" + std::to_string(n + 2) + R"(,"service":"chat","op":"say","room":")" +
                       std::string(kRoom) + R"(","text":")" + kind + std::to_string(k) + ":" +
                       std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count()) +
                       "\"}";
    co_await write_frame(sock, json, "");
    if (last) break;
  }
  sh.measured_sent += measured;
}

void sender_finished(ChatShared& sh) {
  if (sh.senders_done.fetch_add(1) + 1 == sh.senders) sh.senders_done_ns = now_ns();
}

awaitable<void> member_reader(tcp::socket& sock, FrameReader& reader, ChatShared& sh, MemberState& st, ConnResult& r) {
  for (;;) {
    auto frame = co_await reader.next(sock);
    if (!on_member_frame(sh, st, frame, r)) co_return;
  }
}

// Ends a member that would otherwise wait forever for an end marker: once every sender has
// finished (failed ones included) and no member has received anything for 5 s, whatever is
// still missing will not come. A server that is behind but still delivering to someone is
// waited for (up to the hard deadline).
awaitable<void> member_watch(const ChatShared& sh) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    timer.expires_after(std::chrono::milliseconds(250));
    co_await timer.async_wait(use_awaitable);
    if (sh.senders_done < sh.senders) continue;
    auto quiet_since = std::max(sh.last_rx_ns.load(std::memory_order_relaxed), sh.senders_done_ns.load());
    if (Clock::now() >= after(from_ns(quiet_since), 5.0)) co_return;
  }
}

void fold_max(std::atomic<std::int64_t>& into, std::int64_t value) {
  auto seen = into.load();
  while (value > seen && !into.compare_exchange_weak(seen, value)) {
  }
}

// Runs a function when it goes out of scope, also when the coroutine ends with an exception:
// a failed sender or member must not hold up the others until the hard deadline.
struct OnExit {
  std::function<void()> run;
  ~OnExit() {
    if (run) run();
  }
};

awaitable<void> chat_member(tcp::endpoint ep, ChatShared& sh, int index, ConnResult& r) {
  OnExit member_done{[&sh] { sh.members_done += 1; }};
  OnExit sender_done;
  if (index < sh.senders) sender_done.run = [&sh] { sender_finished(sh); };
  tcp::socket sock(co_await asio::this_coro::executor);
  co_await connect(sock, ep);
  FrameReader reader(4096);
  MemberState st;
  st.index = index;
  st.ended.assign(static_cast<std::size_t>(sh.senders), false);
  co_await join_room(sock, reader, "m" + std::to_string(index));
  mark_joined(sh);
  if (index < sh.senders) {
    auto k = index;
    auto sending = [&]() -> awaitable<void> {
      std::string error;
      co_await capture_error(chat_sender(sock, sh, k), error);
      std::exchange(sender_done.run, nullptr)();
      if (!error.empty()) throw std::runtime_error("sender: " + error);
    };
    auto receiving = [&]() -> awaitable<void> {
      co_await (member_reader(sock, reader, sh, st, r) || member_watch(sh));
    };
    co_await (sending() && receiving());
  } else {
    co_await (member_reader(sock, reader, sh, st, r) || member_watch(sh));
  }
  fold_max(sh.last_measured_rx_ns, st.last_measured_rx_ns);
  if (st.ends_seen < sh.senders) throw std::runtime_error("deliveries missing: end of " + std::to_string(sh.senders - st.ends_seen) + " sender(s) never arrived");
}

// The member that joins and then never reads: a small receive buffer so the server's side of
// it fills soon. It holds the connection until every reading member is done.
awaitable<void> stalled_member(tcp::endpoint ep, ChatShared& sh) {
  tcp::socket sock(co_await asio::this_coro::executor);
  sock.open(ep.protocol());
  sock.set_option(asio::socket_base::receive_buffer_size(4096));
  co_await connect(sock, ep);
  FrameReader reader(4096);
  co_await join_room(sock, reader, kStalledNick);
  mark_joined(sh);
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (sh.members_done < sh.members) {
    timer.expires_after(std::chrono::milliseconds(100));
    co_await timer.async_wait(use_awaitable);
  }
}

// ---- command-true --------------------------------------------------------------------------

// Waits for the final reply to `id` (stream events and pushes are skipped) and returns it.
awaitable<nlohmann::json> final_reply(tcp::socket& sock, FrameReader& reader, std::uint64_t id) {
  for (;;) {
    auto frame = co_await reader.next(sock);
    if (frame.json.find("\"ok\"") == std::string_view::npos) continue;  // events, pushes
    auto reply = nlohmann::json::parse(frame.json);
    if (!reply.contains("id") || reply["id"] != id) continue;
    if (reply.value("ok", false) != true) throw std::runtime_error("error reply: " + std::string(frame.json));
    co_return reply;
  }
}

awaitable<void> command_session(tcp::endpoint ep, std::string user, std::string password, int count,
                                double& seconds, ConnResult& r) {
  tcp::socket sock(co_await asio::this_coro::executor);
  co_await connect(sock, ep);
  FrameReader reader(4096);
  nlohmann::json login = {{"id", 1}, {"service", "auth"}, {"op", "login"}, {"user", user}, {"password", password}};
  std::string login_text = login.dump();
  co_await write_frame(sock, login_text, "");
  co_await final_reply(sock, reader, 1);
  auto t_start = Clock::now();
  for (int i = 0; i < count; ++i) {
    std::uint64_t id = static_cast<std::uint64_t>(i) + 2;
    std::string json = R"({"id":)" + std::to_string(id) + R"(,"service":"command","op":"run","argv":["true"]})";
    auto t0 = Clock::now();
    co_await write_frame(sock, json, "");
    auto reply = co_await final_reply(sock, reader, id);
    auto t1 = Clock::now();
    if (reply.value("exit_code", -1) != 0) throw std::runtime_error("true did not exit 0: " + reply.dump());
    ++r.msgs;
    r.hist.add(static_cast<std::uint64_t>(std::chrono::nanoseconds(t1 - t0).count()));
  }
  seconds = seconds_between(t_start, Clock::now());
}

}  // namespace

Json run_chat_fanout(const Options& o) {
  if (o.duration_s <= 0 || o.rate <= 0) throw std::runtime_error("--duration and --rate must be positive");
  auto ep = endpoint_of(o);
  ChatShared sh;
  sh.members = o.conns > 0 ? o.conns : 1000;
  sh.senders = std::clamp(o.senders, 1, sh.members);
  sh.to_join = sh.members + (o.stalled ? 1 : 0);
  sh.rate = o.rate;
  sh.warmup_s = o.warmup_s;
  sh.duration_s = o.duration_s;
  // Joining 1000 members is not part of the window; allow for it in the hard bound.
  sh.hard_end = after(Clock::now(), 30 + o.warmup_s + o.duration_s + o.timeout_s);

  int next = 0;
  auto results = run_connections(sh.to_join, o.threads, [&] {
    int index = next++;
    return bounded(
        [ep, &sh, index](ConnResult& r) -> awaitable<void> {
          if (index == sh.members) return stalled_member(ep, sh);
          return chat_member(ep, sh, index, r);
        },
        sh.hard_end);
  });

  Histogram all;
  std::uint64_t deliveries = 0, fewest = UINT64_MAX, most = 0;
  for (int i = 0; i < sh.members; ++i) {
    const auto& r = results[static_cast<std::size_t>(i)];
    all.merge(r.hist);
    deliveries += r.msgs;
    fewest = std::min(fewest, r.msgs);
    most = std::max(most, r.msgs);
  }
  std::uint64_t sent = sh.measured_sent;
  Json out;
  out["scenario"] = "chat-fanout";
  out["name"] = o.name;
  out["target"] = target_of(o);
  out["conns"] = sh.to_join;
  out["members"] = sh.members;
  out["senders"] = sh.senders;
  out["stalled_member"] = o.stalled;
  out["rate"] = o.rate;
  out["duration_s"] = o.duration_s;
  out["sent"] = sent;
  out["deliveries"] = deliveries;
  out["expected_deliveries"] = sent * static_cast<std::uint64_t>(sh.members);
  out["member_deliveries_min"] = fewest;  // per member: equal when every member got every message
  out["member_deliveries_max"] = most;
  // Deliveries per second over the window, stretched to the last measured delivery when the
  // server fell behind (otherwise a backlog delivered after the window would count as rate).
  double window_s = o.duration_s;
  if (sh.go_ns != 0 && sh.last_measured_rx_ns != 0)
    window_s = std::max(window_s, static_cast<double>(sh.last_measured_rx_ns - sh.go_ns) / 1e9 - o.warmup_s);
  out["delivery_window_s"] = window_s;
  out["msgs_per_s"] = static_cast<double>(deliveries) / window_s;  // deliveries per second
  out["p50_us"] = all.quantile(0.50) / 1000;
  out["p99_us"] = all.quantile(0.99) / 1000;
  if (o.stalled) {
    auto dropped = sh.stalled_dropped_ns.load();
    out["stalled_dropped"] = dropped != 0;
    if (dropped != 0 && sh.go_ns != 0) out["stalled_dropped_after_s"] = static_cast<double>(dropped - sh.go_ns) / 1e9;
  }
  add_errors(out, results);
  if (deliveries != sent * static_cast<std::uint64_t>(sh.members) && out["errors"] == 0) {
    out["errors"] = 1;
    out["error"] = "deliveries differ from sent x members";
  }
  return out;
}

Json run_command_true(const Options& o) {
  auto ep = endpoint_of(o);
  const char* password = std::getenv("COSERVE_BENCH_PASSWORD");
  if (password == nullptr || *password == '\0')
    throw std::runtime_error("command-true needs the password of --user in $COSERVE_BENCH_PASSWORD");
  int count = std::max(1, o.count);
  double seconds = 0;
  auto hard_end = after(Clock::now(), o.timeout_s + count * 0.1);
  auto results = run_connections(1, 1, [&] {
    return bounded([&, ep](ConnResult& r) { return command_session(ep, o.user, password, count, seconds, r); },
                   hard_end);
  });
  const auto& r = results.front();
  Json out;
  out["scenario"] = "command-true";
  out["name"] = o.name;
  out["target"] = target_of(o);
  out["conns"] = 1;
  out["runs"] = r.msgs;
  out["seconds"] = seconds;
  out["msgs_per_s"] = seconds > 0 ? static_cast<double>(r.msgs) / seconds : 0;  // runs per second
  out["p50_us"] = r.hist.quantile(0.50) / 1000;
  out["p99_us"] = r.hist.quantile(0.99) / 1000;
  add_errors(out, results);
  return out;
}

}  // namespace bench
