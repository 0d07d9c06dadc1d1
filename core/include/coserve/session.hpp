#pragma once
// One connection speaking the framed protocol, over any Transport.
//
// A session is coroutines on one executor: the reader (decodes frames, runs immediate ops,
// starts one call coroutine per other request) and, only while a backlog exists, the writer (the only one that writes to the
// transport asynchronously, draining a byte-bounded out-queue). A frame pushed while nothing is
// queued or being written is written at once if the socket takes it (Transport::try_write), so
// most replies never wake a writer. Idle and write timeouts are checked by the executor's
// SessionClock, which ticks every session on it from one timer. Everything in a session, its calls included, runs on that
// one executor: no locks. Other threads reach a session only through its SessionLink.
#include <any>
#include <chrono>
#include <cstdint>
#include <list>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <typeindex>
#include <unordered_map>
#include <vector>

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>

#include "coserve/asio.hpp"
#include "coserve/connections.hpp"
#include "coserve/frame.hpp"
#include "coserve/service.hpp"
#include "coserve/session_clock.hpp"
#include "coserve/signal.hpp"
#include "coserve/transport.hpp"

namespace coserve {

class Dispatcher;
class Metrics;
class Session;
struct Route;

struct SessionLimits {
  std::size_t out_queue_bytes = 4 * 1024 * 1024;
  std::size_t max_inflight = 64;
  // Frames the client sent ahead for its calls, waiting in their inboxes, over all calls of the
  // connection (uploads use credit, so a client that honours it stays far below).
  std::size_t max_inbox_bytes = 16 * 1024 * 1024;
  std::chrono::milliseconds idle_timeout{300000};
  std::chrono::milliseconds write_timeout{30000};
};

struct SessionEnv {
  Dispatcher& dispatcher;
  Metrics& metrics;
  ConnectionSet& connections;
  SessionLimits limits;
};

// A thread-safe handle to a session, for shared state owned elsewhere (chat rooms). Holding one
// does not keep the session alive; calls on a closed session do nothing.
class SessionLink : public std::enable_shared_from_this<SessionLink> {
 public:
  SessionLink(Session* session, asio::any_io_executor executor, std::uint64_t id,
              std::string peer);
  // Queues a frame on the session (from any thread).
  void post(OutFrame frame);
  // Ends the session with a reason sent to the client first (from any thread).
  void close(std::string reason);
  // Bytes waiting in the session's out-queue; a slightly stale view from other threads.
  std::size_t queued_bytes() const noexcept { return queued_.load(std::memory_order_relaxed); }
  std::uint64_t id() const noexcept { return id_; }
  const std::string& peer() const noexcept { return peer_; }
  const asio::any_io_executor& executor() const noexcept { return executor_; }

 private:
  friend class Session;
  Session* session_;  // read and reset only on executor_
  asio::any_io_executor executor_;
  std::uint64_t id_;
  std::string peer_;
  std::atomic<std::size_t> queued_{0};
};

namespace detail {
// The session-side state of one request in flight.
struct CallState {
  explicit CallState(json request_id) : id(std::move(request_id)) {}
  json id;
  std::string key;  // id.dump(), the key in Session::calls_
  asio::cancellation_signal cancel;
  bool cancelled = false;
  std::list<Frame> inbox;  // frames the client sent for this call (a list: empty costs nothing)
  std::size_t inbox_bytes = 0;  // their inbox_cost(), also counted in Session::inbox_bytes_
  std::unique_ptr<Signal> inbox_ready;
};
}  // namespace detail

class Session : private SessionClock::Ticking {
 public:
  Session(std::unique_ptr<Transport> transport, SessionEnv env);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Serves the connection until it ends, then waits for its calls to finish.
  awaitable<void> run();

  // --- for services, on the session's executor only ---
  std::uint64_t id() const noexcept { return link_->id(); }
  const std::string& peer() const noexcept { return transport_->peer(); }
  std::string_view transport_kind() const noexcept { return transport_->kind(); }
  asio::any_io_executor executor() const { return transport_->executor(); }
  const std::shared_ptr<SessionLink>& link() const noexcept { return link_; }

  // The logged-in user, empty while anonymous.
  const std::string& user() const noexcept { return user_; }
  void set_user(std::string user) { user_ = std::move(user); }

  // Per-service state, created on first use and destroyed with the session (on its executor),
  // so a service cleans up in its state's destructor.
  template <class T>
  T& state() {
    auto& slot = state_[std::type_index(typeid(T))];
    if (!slot.has_value()) slot = std::make_shared<T>();
    return *std::any_cast<std::shared_ptr<T>&>(slot);
  }

  // Queues a frame for the client. Replies and pushes are never refused while the session is
  // open; producers of streams use push_wait so the queue stays bounded.
  void push(OutFrame frame);
  awaitable<void> push_wait(OutFrame frame);
  std::size_t queued_bytes() const noexcept { return queued_bytes_; }
  bool closing() const noexcept { return closing_; }

  // Graceful end: a `shutdown` push, then calls are cancelled and the queue drained.
  void shutdown(std::string reason);
  // Immediate end.
  void close();

  // Cancels the call whose request had this id; false if no such call is in flight.
  bool cancel_call(const json& id);

 private:
  friend class Call;
  awaitable<void> lifecycle();
  awaitable<void> read_loop();
  // The writer runs only while frames wait that could not be written at once (see push()), so
  // an idle connection holds no writer coroutine.
  void start_writer();
  awaitable<void> write_loop();
  // The context's SessionClock calls this every few seconds: idle and write timeouts, and the
  // transport's own tick (keep-alive).
  void on_tick(SessionClock::clock::time_point now) override;
  // Ends the read loop without closing the connection, so the last frames can still go out.
  void stop_reading();
  // A frame from the client: its envelope is read once (read_envelope), then it goes to the
  // inbox of its call, or is routed once and runs.
  void on_frame(Frame frame);
  void on_decode_error(DecodeError error);
  awaitable<void> run_call(std::shared_ptr<detail::CallState> state, Route route, Frame request);
  // Requests for inline ops (plain-function handlers) run on the reader, without a coroutine.
  void run_inline(const Route& route, json id, Frame request);
  void finish_call(const detail::CallState& state, Outcome outcome);
  void reply_error(const json& id, errc code, std::string message,
                   json details = json::object());
  // Puts a frame the client sent for a call in flight into the call's inbox, within the
  // connection's budget (limits.max_inbox_bytes) and the server's (limits.max_buffered_bytes).
  // A client that ignores flow control fills them: while the connection's is full, the call
  // holding the most is ended (this one too, if it is that call); when the server's is spent,
  // this call is ended. An ended call's frames are dropped.
  void to_inbox(const std::shared_ptr<detail::CallState>& state, Frame frame);
  // Drops a call's waiting frames and gives their bytes back to both budgets.
  void drop_inbox(detail::CallState& state);
  // Cancels a call: it ends soon with `cancelled` (its handler sees it).
  void cancel(detail::CallState& state);
  awaitable<bool> wait_for_space(bool reader = false);
  void cancel_all_calls();
  void touch() noexcept { last_activity_ = std::chrono::steady_clock::now(); }

  std::unique_ptr<Transport> transport_;
  SessionEnv env_;
  std::shared_ptr<SessionLink> link_;
  ConnectionSet::Registration registration_;
  std::string user_;
  std::unordered_map<std::type_index, std::any> state_;

  std::unordered_map<std::string, std::shared_ptr<detail::CallState>> calls_;
  Signal calls_done_;
  std::size_t inbox_bytes_ = 0;  // in all calls' inboxes

  // Frames waiting for the writer, from queue_head_ on (a vector, not a deque: a deque
  // allocates when constructed, and most connections are idle).
  std::vector<OutFrame> queue_;
  std::size_t queue_head_ = 0;
  std::size_t queued_bytes_ = 0;
  bool writer_running_ = false;
  Signal writer_idle_;  // the writer ended
  Signal space_;
  bool queue_closed_ = false;  // the writer exits once the queue is drained
  bool write_failed_ = false;

  SessionClock& clock_;
  std::chrono::steady_clock::time_point last_activity_;
  std::optional<std::chrono::steady_clock::time_point> write_started_;
  bool closing_ = false;  // no new calls; set when reading stopped for any reason
  std::string stop_reason_;  // set by shutdown()
  bool stop_requested_ = false;
  bool reading_stopped_ = false;  // stop_reading() was called
};

}  // namespace coserve
