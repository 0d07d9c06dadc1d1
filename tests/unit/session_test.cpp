// Session and Dispatcher without sockets: a MemoryTransport stands in for the connection, so
// each test chooses how the bytes arrive (split reads), when the peer stops reading, and which
// read or write fails.
#include <chrono>
#include <exception>
#include <functional>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <catch2/catch.hpp>

#include "coserve/connections.hpp"
#include "coserve/metrics.hpp"
#include "coserve/session.hpp"
#include "memory_transport.hpp"
#include "session/dispatcher.hpp"

using namespace coserve;
using namespace std::chrono_literals;
using coserve::test::MemoryPeer;
using coserve::test::MemoryTransport;

namespace {

// Ops that exercise every path of the session: inline and coroutine ops, streams, frames for a
// call in flight, cancellation, login and a handler that throws.
class Probe final : public BasicService<Probe> {
 public:
  static constexpr std::string_view kName = "probe";
  static constexpr auto ops() {
    return std::array{op("echo", &Probe::echo),     op("login", &Probe::login),
                      op("cancel", &Probe::cancel), op("boom", &Probe::boom),
                      op("wait", &Probe::wait),     op("stream", &Probe::stream),
                      op("collect", &Probe::collect)};
  }

  Outcome echo(Call& call) {
    return Outcome::ok({{"text", call.get_or<std::string>("text", "")}}, std::move(call.body()));
  }
  Outcome login(Call& call) {
    call.session().set_user(call.get<std::string>("user"));
    return Outcome::ok();
  }
  Outcome cancel(Call& call) {
    return Outcome::ok({{"found", call.session().cancel_call(call.request().at("target"))}});
  }
  Outcome boom(Call&) { throw std::runtime_error("a bug"); }
  // Waits until cancelled (or 30 s).
  awaitable<Outcome> wait(Call& call) {
    asio::steady_timer timer(call.executor(), 30s);
    co_await timer.async_wait(use_nothrow);
    if (call.cancelled()) co_return Outcome::fail(errc::cancelled, "cancelled");
    co_return Outcome::ok();
  }
  // `count` events with a body of `size` bytes each.
  awaitable<Outcome> stream(Call& call) {
    const auto count = call.get<int>("count");
    const auto size = call.get<std::size_t>("size");
    for (int i = 0; i < count; ++i) {
      json fields = {{"n", i}};  // named: GCC 12 mis-compiles a braced json in a co_await
      co_await call.emit("part", std::move(fields), std::string(size, 'x'));
      max_queued = std::max(max_queued, call.session().queued_bytes());
    }
    json fields = {{"count", count}};
    co_return Outcome::ok(std::move(fields));
  }
  // Receives the client's frames for this call until one says "last", and counts their bytes.
  awaitable<Outcome> collect(Call& call) {
    std::size_t bytes = 0, frames = 0;
    for (;;) {
      auto frame = co_await call.receive();
      if (!frame) co_return Outcome::fail(errc::cancelled, "cancelled");
      bytes += frame->body.size();
      ++frames;
      if (frame->head.value("last", false)) break;
    }
    json fields = {{"bytes", bytes}, {"frames", frames}};
    co_return Outcome::ok(std::move(fields));
  }

  std::size_t max_queued = 0;
};

// A service that needs a login (listed in the dispatcher's login rule).
class Vault final : public BasicService<Vault> {
 public:
  static constexpr std::string_view kName = "vault";
  static constexpr auto ops() { return std::array{op("open", &Vault::open)}; }
  Outcome open(Call& call) { return Outcome::ok({{"user", call.session().user()}}); }
};

// One session over a MemoryTransport on a single-threaded io_context.
struct Harness {
  explicit Harness(SessionLimits limits = {}, FrameLimits frame_limits = {}) {
    probe = &static_cast<Probe&>(dispatcher.add(std::make_unique<Probe>()));
    dispatcher.add(std::make_unique<Vault>());
    session = std::make_unique<Session>(std::make_unique<MemoryTransport>(peer, frame_limits),
                                        SessionEnv{dispatcher, metrics, connections, limits});
    asio::co_spawn(io, session->run(), [this](std::exception_ptr e) {
      ended = true;
      failure = e;
    });
  }
  ~Harness() {
    if (!ended) {
      session->close();
      run_until([&] { return ended; });
    }
    if (std::uncaught_exceptions() == 0) CHECK(peer->bad_frames() == 0);
  }

  // Runs the io_context until `done` holds or `limit` passes; returns `done()`.
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      io.run_for(5ms);
      if (io.stopped()) io.restart();
    }
    return done();
  }
  bool received(std::size_t count) {
    return run_until([&] { return peer->received().size() >= count; });
  }
  // The reply (not an event) with this id, once it arrived.
  const Frame* reply(int id) {
    for (auto& frame : peer->received())
      if (frame.head.value("id", json()) == id && frame.head.contains("ok")) return &frame;
    return nullptr;
  }
  const Frame& wait_reply(int id) {
    REQUIRE(run_until([&] { return reply(id) != nullptr; }));
    return *reply(id);
  }
  static std::string error_code_of(const Frame& frame) {
    return frame.head.at("error").at("code").get<std::string>();
  }

  asio::io_context io;
  Metrics metrics;
  Dispatcher dispatcher{metrics, {"vault"}};
  ConnectionSet connections;
  std::shared_ptr<MemoryPeer> peer = std::make_shared<MemoryPeer>(io.get_executor());
  Probe* probe = nullptr;
  std::unique_ptr<Session> session;
  bool ended = false;
  std::exception_ptr failure;
};

json request(int id, std::string_view service, std::string_view op, json fields = json::object()) {
  fields["id"] = id;
  fields["service"] = service;
  fields["op"] = op;
  return fields;
}

}  // namespace

TEST_CASE("session: pipelined requests in one byte at a time are answered in order") {
  Harness h;
  h.peer->read_chunk = 1;
  std::string bytes;
  for (int id = 1; id <= 3; ++id) {
    auto frame = encode_frame(request(id, "probe", "echo", {{"text", std::to_string(id)}}),
                              std::string(static_cast<std::size_t>(id) * 100, 'b'));
    bytes += frame->head + frame->body;
  }
  h.peer->send_bytes(bytes);
  REQUIRE(h.received(3));
  for (int id = 1; id <= 3; ++id) {
    const Frame& reply = h.peer->received()[static_cast<std::size_t>(id - 1)];
    CHECK(reply.head.at("id") == id);
    CHECK(reply.head.at("ok") == true);
    CHECK(reply.head.at("text") == std::to_string(id));
    CHECK(reply.body.size() == static_cast<std::size_t>(id) * 100);
  }
}

TEST_CASE("session: unknown service, unknown op and a bad envelope get their codes; the "
          "connection goes on") {
  Harness h;
  h.peer->send(request(1, "nope", "echo"));
  h.peer->send(request(2, "probe", "nope"));
  h.peer->send({{"id", 3}, {"service", "probe"}});          // no op
  h.peer->send({{"id", true}, {"service", "probe"}, {"op", "echo"}});  // id not int/string
  h.peer->send({{"id", 5}, {"text", "for no call"}});       // no call 5 in flight
  h.peer->send(request(6, "probe", "boom"));                 // the handler throws
  h.peer->send(request(7, "probe", "echo", {{"text", "still here"}}));
  REQUIRE(h.received(7));
  CHECK(Harness::error_code_of(h.wait_reply(1)) == "unknown_service");
  CHECK(Harness::error_code_of(h.wait_reply(2)) == "unknown_op");
  CHECK(Harness::error_code_of(h.wait_reply(3)) == "bad_request");
  CHECK(Harness::error_code_of(h.peer->received()[3]) == "bad_request");
  CHECK(h.peer->received()[3].head.at("id").is_null());
  CHECK(Harness::error_code_of(h.wait_reply(5)) == "bad_request");
  CHECK(Harness::error_code_of(h.wait_reply(6)) == "internal");
  CHECK(h.wait_reply(7).head.at("text") == "still here");
  CHECK_FALSE(h.ended);
}

TEST_CASE("session: a service on the login rule answers only after a login") {
  Harness h;
  h.peer->send(request(1, "vault", "open"));
  CHECK(Harness::error_code_of(h.wait_reply(1)) == "unauthenticated");
  h.peer->send(request(2, "probe", "login", {{"user", "alice"}}));
  h.peer->send(request(3, "vault", "open"));
  CHECK(h.wait_reply(2).head.at("ok") == true);
  CHECK(h.wait_reply(3).head.at("user") == "alice");
}

TEST_CASE("session: a call in flight is cancelled by id; an unknown target is reported") {
  Harness h;
  h.peer->send(request(1, "probe", "wait"));
  h.peer->send(request(2, "probe", "cancel", {{"target", 1}}));
  h.peer->send(request(3, "probe", "cancel", {{"target", 99}}));
  CHECK(h.wait_reply(2).head.at("found") == true);
  CHECK(Harness::error_code_of(h.wait_reply(1)) == "cancelled");
  CHECK(h.wait_reply(3).head.at("found") == false);
  // The id is free again once its call ended.
  h.peer->send(request(1, "probe", "echo", {{"text", "again"}}));
  REQUIRE(h.received(4));
  CHECK(h.peer->received().back().head.at("text") == "again");
}

TEST_CASE("session: the in-flight limit refuses a call with busy; inline ops still run") {
  SessionLimits limits;
  limits.max_inflight = 2;
  Harness h(limits);
  h.peer->send(request(1, "probe", "wait"));
  h.peer->send(request(2, "probe", "wait"));
  h.peer->send(request(3, "probe", "wait"));
  h.peer->send(request(4, "probe", "echo", {{"text", "inline"}}));
  h.peer->send(request(2, "probe", "wait"));  // an id already in flight
  CHECK(Harness::error_code_of(h.wait_reply(3)) == "busy");
  CHECK(h.wait_reply(4).head.at("text") == "inline");
  REQUIRE(h.received(3));
  CHECK(h.peer->received()[2].head.at("id") == 2);
  CHECK(Harness::error_code_of(h.peer->received()[2]) == "bad_request");
  // Calls 1 and 2 still wait.
  h.run_until([&] { return false; }, 50ms);
  CHECK(h.peer->received().size() == 3);
}

TEST_CASE("session: a stream to a peer that stops reading waits within the out-queue bound") {
  SessionLimits limits;
  limits.out_queue_bytes = 64 * 1024;
  Harness h(limits);
  h.peer->pause_reading();
  h.peer->send(request(1, "probe", "stream", {{"count", 200}, {"size", 4096}}));
  // The producer fills the queue and then waits; nothing more is taken from it.
  h.run_until([&] { return false; }, 200ms);
  CHECK(h.session->queued_bytes() >= limits.out_queue_bytes);
  CHECK(h.session->queued_bytes() < limits.out_queue_bytes + 8192);
  CHECK(h.peer->received().empty());
  // Requests are not read while the queue is full: an echo sent now is answered only later.
  h.peer->send(request(2, "probe", "echo", {{"text", "behind"}}));
  h.run_until([&] { return false; }, 100ms);
  CHECK(h.reply(2) == nullptr);

  h.peer->resume_reading();
  h.wait_reply(1);
  CHECK(h.wait_reply(2).head.at("text") == "behind");
  std::size_t parts = 0;
  for (auto& frame : h.peer->received())
    if (frame.head.value("event", "") == "part") {
      CHECK(frame.head.at("n") == parts);
      ++parts;
    }
  CHECK(parts == 200);
  CHECK(h.probe->max_queued < limits.out_queue_bytes + 8192);
}

TEST_CASE("session: frames for a call in flight reach it in order, within the inbox budget") {
  SECTION("within the budget") {
    Harness h;
    h.peer->send(request(1, "probe", "collect"));
    for (int i = 0; i < 10; ++i) h.peer->send({{"id", 1}}, std::string(1000, 'u'));
    h.peer->send({{"id", 1}, {"last", true}});
    const Frame& reply = h.wait_reply(1);
    CHECK(reply.head.at("bytes") == 10000);
    CHECK(reply.head.at("frames") == 11);
  }
  SECTION("a client that sends far ahead of the call loses the call, not the connection") {
    SessionLimits limits;
    limits.max_inbox_bytes = 16 * 1024;
    Harness h(limits);
    h.peer->read_chunk = 1 << 20;  // all of it in one read: the call gets no turn in between
    std::string bytes;
    auto start = encode_frame(request(1, "probe", "collect"));
    bytes += start->head;
    for (int i = 0; i < 40; ++i) {
      auto chunk = encode_frame({{"id", 1}}, std::string(1000, 'u'));
      bytes += chunk->head + chunk->body;
    }
    h.peer->send_bytes(bytes);
    CHECK(Harness::error_code_of(h.wait_reply(1)) == "cancelled");
    CHECK(h.metrics.inbox_full_calls_ended.value() >= 1);
    h.peer->send(request(2, "probe", "echo", {{"text", "alive"}}));
    CHECK(h.wait_reply(2).head.at("text") == "alive");
  }
}

TEST_CASE("session: when the peer closes while calls run, they are cancelled and answered") {
  Harness h;
  h.peer->send(request(1, "probe", "wait"));
  h.peer->send(request(2, "probe", "wait"));
  h.run_until([&] { return false; }, 50ms);
  h.peer->close_input();
  REQUIRE(h.run_until([&] { return h.ended; }));
  CHECK_FALSE(h.failure);
  CHECK(Harness::error_code_of(h.wait_reply(1)) == "cancelled");
  CHECK(Harness::error_code_of(h.wait_reply(2)) == "cancelled");
  CHECK(h.peer->closed());
}

TEST_CASE("session: a graceful shutdown says why, cancels calls and flushes their replies") {
  Harness h;
  h.peer->send(request(1, "probe", "wait"));
  h.run_until([&] { return false; }, 50ms);
  h.session->shutdown("maintenance");
  REQUIRE(h.run_until([&] { return h.ended; }));
  auto& frames = h.peer->received();
  REQUIRE(frames.size() == 2);
  CHECK(frames[0].head.at("event") == "shutdown");
  CHECK(frames[0].head.at("reason") == "maintenance");
  CHECK(Harness::error_code_of(frames[1]) == "cancelled");
}

TEST_CASE("session: a failed write or read ends the session and every call in it") {
  SECTION("the first write fails while a stream runs") {
    Harness h;
    h.peer->fail_write_at = 1;
    h.peer->send(request(1, "probe", "stream", {{"count", 1000}, {"size", 1024}}));
    h.peer->send(request(2, "probe", "wait"));
    REQUIRE(h.run_until([&] { return h.ended; }));
    CHECK_FALSE(h.failure);
    CHECK(h.peer->closed());
    CHECK(h.peer->received().empty());
  }
  SECTION("the second read fails") {
    Harness h;
    h.peer->fail_read_at = 2;
    h.peer->send(request(1, "probe", "wait"));
    h.run_until([&] { return false; }, 50ms);
    h.peer->send(request(2, "probe", "echo"));
    REQUIRE(h.run_until([&] { return h.ended; }));
    CHECK(h.reply(2) == nullptr);
    CHECK(Harness::error_code_of(h.wait_reply(1)) == "cancelled");
  }
}

TEST_CASE("session: a frame header past the limits is answered, then the connection closes") {
  FrameLimits frame_limits;
  frame_limits.max_json = 1024;
  Harness h({}, frame_limits);
  h.peer->send(request(1, "probe", "echo", {{"text", std::string(2000, 'j')}}));
  h.peer->send(request(2, "probe", "echo"));
  REQUIRE(h.run_until([&] { return h.ended; }));
  REQUIRE(h.peer->received().size() == 1);
  CHECK(Harness::error_code_of(h.peer->received()[0]) == "too_large");
}
