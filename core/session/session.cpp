#include "coserve/session.hpp"

#include <algorithm>
#include <atomic>
#include <vector>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>

#include "session/dispatcher.hpp"
#include "coserve/log.hpp"
#include "coserve/metrics.hpp"

namespace coserve {
namespace {

std::atomic<std::uint64_t> next_session_id{1};

// A batch is one writev; bounded so one huge queue does not pin memory in the iovec.
constexpr std::size_t kMaxBatchFrames = 64;
constexpr std::size_t kMaxBatchBytes = 256 * 1024;
// Frames up to this size are written at once when the writer is idle (see Session::push).
constexpr std::size_t kDirectWriteMax = 64 * 1024;

// The bytes of `frame` after the first `written`, for the writer to finish. Only byte streams
// write partially, and they send head and body back to back, so the split point does not matter.
OutFrame unwritten_tail(const EncodedFrame& frame, std::size_t written) {
  auto tail = std::make_shared<EncodedFrame>();
  if (written < frame.head.size()) {
    tail->head = frame.head.substr(written);
    tail->body = frame.body;
  } else {
    tail->body = frame.body.substr(written - frame.head.size());
  }
  return tail;
}

// What a frame waiting in an inbox is charged: its bytes on the wire (its body, from a decoder
// that does not say), and the Frame and list node that hold it.
std::size_t inbox_cost(const Frame& frame) noexcept {
  return std::max(frame.wire_size, frame.body.size()) + sizeof(Frame) + 2 * sizeof(void*);
}

}  // namespace

// ---- SessionLink -----------------------------------------------------------------------------

SessionLink::SessionLink(Session* session, asio::any_io_executor executor, std::uint64_t id,
                         std::string peer)
    : session_(session), executor_(std::move(executor)), id_(id), peer_(std::move(peer)) {}

void SessionLink::post(OutFrame frame) {
  asio::post(executor_, [self = shared_from_this(), frame = std::move(frame)]() mutable {
    if (self->session_) self->session_->push(std::move(frame));
  });
}

void SessionLink::close(std::string reason) {
  asio::post(executor_, [self = shared_from_this(), reason = std::move(reason)]() mutable {
    if (self->session_) self->session_->shutdown(std::move(reason));
  });
}

// ---- Session ---------------------------------------------------------------------------------

Session::Session(std::unique_ptr<Transport> transport, SessionEnv env)
    : transport_(std::move(transport)),
      env_(env),
      link_(std::make_shared<SessionLink>(this, transport_->executor(),
                                          next_session_id.fetch_add(1), transport_->peer())),
      calls_done_(transport_->executor()),
      writer_idle_(transport_->executor()),
      space_(transport_->executor()),
      clock_(SessionClock::of(transport_->executor())) {
  // First call: graceful shutdown; a second one (grace period over) closes outright.
  registration_ = env_.connections.add(transport_->executor(), [this] {
    if (stop_requested_) close();
    else shutdown("server shutting down");
  });
  touch();
  // A quarter of the shorter timeout, so either is noticed at most 25 % late; at most 5 s.
  const auto tick = std::min<SessionClock::clock::duration>(
      std::min(env_.limits.idle_timeout, env_.limits.write_timeout) / 4, std::chrono::seconds(5));
  clock_.add(*this, tick, transport_->executor());
}

Session::~Session() {
  clock_.remove(*this);
  link_->session_ = nullptr;
}

awaitable<void> Session::run() {
  log::debug("session {} open ({} {})", id(), transport_->kind(), peer());
  co_await lifecycle();
  // The queue is closed: a writer still running flushes it and ends.
  while (writer_running_) co_await writer_idle_.wait();
  transport_->close();
  log::debug("session {} closed", id());
}

awaitable<void> Session::lifecycle() {
  co_await read_loop();
  closing_ = true;
  if (stop_requested_) {
    push(encode_frame({{"service", "core"}, {"event", "shutdown"}, {"reason", stop_reason_}}));
  }
  cancel_all_calls();
  while (!calls_.empty()) co_await calls_done_.wait();
  // Everything queued so far (final replies included) is flushed, then the writer ends.
  queue_closed_ = true;
}

awaitable<void> Session::read_loop() {
  for (;;) {
    if (queued_bytes_ >= env_.limits.out_queue_bytes) {
      // The client is not reading its replies: stop reading its requests until it does.
      bool open = co_await wait_for_space(/*reader=*/true);
      if (!open) co_return;
    }
    if (reading_stopped_) co_return;
    auto item = co_await transport_->read();
    if (!item) co_return;
    touch();
    if (auto* frame = std::get_if<Frame>(&*item)) {
      env_.metrics.frames_in.inc();
      on_frame(std::move(*frame));
    } else {
      auto& error = std::get<DecodeError>(*item);
      bool fatal = error.fatal;
      on_decode_error(std::move(error));
      if (fatal) co_return;
    }
    if (closing_) co_return;
  }
}

void Session::start_writer() {
  writer_running_ = true;
  asio::co_spawn(executor(), write_loop(), [sid = id()](std::exception_ptr e) {
    if (e) log::error("session {}: writer ended with an exception", sid);
  });
}

awaitable<void> Session::write_loop() {
  std::vector<OutFrame> batch;
  for (;;) {
    if (queue_head_ == queue_.size() || write_failed_) {
      // Nothing left: end now (push() starts a new writer). Cleared here, not in the
      // completion handler, so a frame pushed from now on is never left without a writer.
      writer_running_ = false;
      writer_idle_.notify();
      co_return;
    }
    std::size_t bytes = 0;
    while (queue_head_ < queue_.size() && batch.size() < kMaxBatchFrames &&
           bytes < kMaxBatchBytes) {
      bytes += queue_[queue_head_]->size();
      batch.push_back(std::move(queue_[queue_head_++]));
    }
    if (queue_head_ == queue_.size()) {
      queue_.clear();
      queue_head_ = 0;
      // A burst grew the queue: give the memory back once it is drained.
      if (queue_.capacity() > 256) std::vector<OutFrame>().swap(queue_);
    } else if (queue_head_ >= 64 && queue_head_ * 2 >= queue_.size()) {
      // Never drained under a steady stream: drop the taken slots now and then (amortised O(1)).
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(queue_head_));
      queue_head_ = 0;
    }
    write_started_ = std::chrono::steady_clock::now();
    error_code ec = co_await transport_->write(batch);
    write_started_.reset();
    touch();
    env_.metrics.frames_out.inc(batch.size());
    queued_bytes_ -= bytes;
    link_->queued_.store(queued_bytes_, std::memory_order_relaxed);
    batch.clear();
    space_.notify();
    if (ec) {
      // The peer is gone: stop everything; nothing more can be delivered.
      write_failed_ = true;
      for (std::size_t i = queue_head_; i < queue_.size(); ++i) queued_bytes_ -= queue_[i]->size();
      queue_.clear();
      queue_head_ = 0;
      transport_->close();
      continue;  // the top of the loop ends the writer
    }
  }
}

void Session::on_tick(SessionClock::clock::time_point now) {
  transport_->tick(now);
  if (write_started_ && now - *write_started_ > env_.limits.write_timeout) {
    log::info("session {} ({}): write timeout, closing", id(), peer());
    transport_->close();
    return;
  }
  if (!reading_stopped_ && calls_.empty() && queue_head_ == queue_.size() &&
      now - last_activity_ > env_.limits.idle_timeout) {
    log::info("session {} ({}): idle timeout, closing", id(), peer());
    push(encode_frame({{"service", "core"}, {"event", "shutdown"}, {"reason", "idle timeout"}}));
    stop_reading();
  }
}

void Session::stop_reading() {
  reading_stopped_ = true;
  transport_->stop_reading();
  space_.notify();  // a reader waiting for room in the out-queue
}

void Session::shutdown(std::string reason) {
  if (stop_requested_ || closing_) return;
  stop_requested_ = true;
  stop_reason_ = std::move(reason);
  stop_reading();
}

void Session::close() { transport_->close(); }

void Session::push(OutFrame frame) {
  if (queue_closed_ || write_failed_) return;
  if (queue_head_ == queue_.size() && !write_started_ && frame->size() <= kDirectWriteMax &&
      frame->file.length == 0) {
    // The writer is idle: a reply the socket has room for goes out now, without the hop to the
    // writer coroutine. Whatever does not fit is queued and the writer finishes it, in order.
    std::size_t written = transport_->try_write(*frame);
    if (written == frame->size()) {
      env_.metrics.frames_out.inc();
      touch();
      return;
    }
    if (written > 0) frame = unwritten_tail(*frame, written);
  }
  queued_bytes_ += frame->size();
  link_->queued_.store(queued_bytes_, std::memory_order_relaxed);
  queue_.push_back(std::move(frame));
  if (!writer_running_) start_writer();
}

awaitable<bool> Session::wait_for_space(bool reader) {
  // The reader also gives up when reading stops; producers wait on (their calls get cancelled).
  auto gave_up = [&] { return write_failed_ || queue_closed_ || (reader && reading_stopped_); };
  while (queued_bytes_ >= env_.limits.out_queue_bytes && !gave_up()) {
    auto ec = co_await space_.wait();
    if (ec) co_return false;  // cancelled
  }
  // Pass the wake-up on: several producers may be waiting.
  if (queued_bytes_ < env_.limits.out_queue_bytes) space_.notify();
  co_return !gave_up();
}

awaitable<void> Session::push_wait(OutFrame frame) {
  bool open = co_await wait_for_space();
  if (!open) throw Error(errc::cancelled, "connection closed");
  push(std::move(frame));
}

void Session::reply_error(const json& id, errc code, std::string message, json details) {
  env_.dispatcher.count_error(code);
  // Services may add fields to an error (e.g. retry_after_ms); code and message stay ours.
  json error = details.is_object() ? std::move(details) : json::object();
  error["code"] = to_string(code);
  error["message"] = std::move(message);
  json fields = json::object();
  fields["error"] = std::move(error);
  push(encode_tagged(id, "ok", false, std::move(fields)));
}

void Session::on_decode_error(DecodeError error) {
  log::debug("session {}: {} ({})", id(), to_string(error.code), error.message);
  reply_error(error.id, error.code, std::move(error.message));
}

void Session::on_frame(Frame frame) {
  auto read = read_envelope(frame.head);
  if (auto* error = std::get_if<EnvelopeError>(&read)) {
    reply_error(error->id, error->code, std::move(error->message));
    return;
  }
  const Envelope& envelope = std::get<Envelope>(read);
  if (!envelope.service) {
    // A frame for a call in flight (an upload chunk, an ack).
    auto it = calls_.find(envelope.id->dump());
    if (it == calls_.end()) {
      reply_error(*envelope.id, errc::bad_request, "no request with this id is in flight");
      return;
    }
    to_inbox(it->second, std::move(frame));
    return;
  }
  // The id's key is made only when calls are in flight or one starts: an inline call on an
  // otherwise quiet connection needs none.
  std::string key;
  if (!calls_.empty()) {
    key = envelope.id->dump();
    if (calls_.contains(key)) {
      reply_error(*envelope.id, errc::bad_request, "a request with this id is already in flight");
      return;
    }
  }
  auto routed = env_.dispatcher.route(*envelope.service, *envelope.op, !user_.empty());
  if (auto* refusal = std::get_if<Outcome>(&routed)) {
    reply_error(*envelope.id, *refusal->error, std::move(refusal->message));
    return;
  }
  const Route& route = std::get<Route>(routed);
  // Copied before the frame moves into its call.
  json request_id = *envelope.id;
  if (route.op.is_inline) {
    run_inline(route, std::move(request_id), std::move(frame));
    return;
  }
  if (calls_.size() >= env_.limits.max_inflight) {
    reply_error(request_id, errc::busy, "too many requests in flight on this connection");
    return;
  }
  if (key.empty()) key = request_id.dump();
  auto state = std::make_shared<detail::CallState>(std::move(request_id));
  state->key = key;
  calls_.emplace(std::move(key), state);
  auto slot = state->cancel.slot();
  // The completion handler owns the call state too: the coroutine's cancellation slot points
  // into state->cancel and is cleared only after the coroutine body has finished.
  asio::co_spawn(executor(), run_call(state, route, std::move(frame)),
                 asio::bind_cancellation_slot(slot, [sid = id(), state](std::exception_ptr e) {
                   // run_call catches everything; this is the last line of defence.
                   if (e) log::error("session {}: call ended with an escaped exception", sid);
                 }));
}

void Session::to_inbox(const std::shared_ptr<detail::CallState>& state, Frame frame) {
  // Our own reference: ending calls below must not free the state under us.
  const auto target = state;
  if (target->cancelled) return;  // an ending call reads nothing more
  const std::size_t cost = inbox_cost(frame);
  while (inbox_bytes_ + cost > env_.limits.max_inbox_bytes) {
    // The connection's inboxes are full: end the call holding the most, keep the connection.
    std::shared_ptr<detail::CallState> greediest = target;
    std::size_t most = target->inbox_bytes + cost;
    for (auto& [key, other] : calls_) {
      if (other->inbox_bytes > most) {
        greediest = other;
        most = other->inbox_bytes;
      }
    }
    env_.metrics.inbox_full_calls_ended.inc();
    log::debug("session {}: inboxes over {} bytes, ending call {}", id(),
               env_.limits.max_inbox_bytes, greediest->key);
    drop_inbox(*greediest);
    cancel(*greediest);
    if (greediest == target) return;
  }
  if (!env_.metrics.inbound.take(cost)) {
    env_.metrics.budget_calls_ended.inc();
    log::debug("session {}: server inbound budget spent, ending call {}", id(), target->key);
    drop_inbox(*target);
    cancel(*target);
    return;
  }
  target->inbox_bytes += cost;
  inbox_bytes_ += cost;
  target->inbox.push_back(std::move(frame));
  if (target->inbox_ready) target->inbox_ready->notify();
}

void Session::drop_inbox(detail::CallState& state) {
  inbox_bytes_ -= state.inbox_bytes;
  env_.metrics.inbound.give(state.inbox_bytes);
  state.inbox_bytes = 0;
  state.inbox.clear();
}

void Session::cancel(detail::CallState& state) {
  state.cancelled = true;
  state.cancel.emit(asio::cancellation_type::terminal);
  if (state.inbox_ready) state.inbox_ready->notify();
}

void Session::run_inline(const Route& route, json id, Frame request) {
  // Nothing can refer to an inline call once it returns: its state lives on the stack.
  detail::CallState state(std::move(id));
  Outcome outcome;
  {
    Call call(*this, state, std::move(request), route.service_name, route.op.name);
    outcome = env_.dispatcher.call_inline(route, call);
  }
  finish_call(state, std::move(outcome));
}

awaitable<void> Session::run_call(std::shared_ptr<detail::CallState> state, Route route,
                                  Frame request) {
  Outcome outcome;
  if (state->cancelled) {
    // Cancelled before this coroutine began (frames read in the same batch as the request):
    // the signal found no handler in its slot then, so the handler would never see it.
    outcome = Outcome::fail(errc::cancelled, "cancelled");
  } else {
    Call call(*this, *state, std::move(request), route.service_name, route.op.name);
    outcome = co_await env_.dispatcher.call(route, call);
  }
  finish_call(*state, std::move(outcome));
  drop_inbox(*state);
  calls_.erase(state->key);
  if (calls_.empty()) calls_done_.notify();
}

void Session::finish_call(const detail::CallState& state, Outcome outcome) {
  if (outcome.error) {
    reply_error(state.id, *outcome.error, std::move(outcome.message), std::move(outcome.fields));
    return;
  }
  if (!outcome.fields.is_object())
    outcome.fields = json{{"result", std::move(outcome.fields)}};
  push(encode_tagged(state.id, "ok", true, std::move(outcome.fields), std::move(outcome.body)));
}

bool Session::cancel_call(const json& id) {
  auto it = calls_.find(id.dump());
  if (it == calls_.end()) return false;
  auto state = it->second;  // cancelling may end the call
  cancel(*state);
  return true;
}

void Session::cancel_all_calls() {
  // Copy: a cancelled call may finish (and erase itself) synchronously.
  std::vector<std::shared_ptr<detail::CallState>> calls;
  for (auto& [key, state] : calls_) calls.push_back(state);
  for (auto& state : calls) cancel(*state);
}

// ---- Call ------------------------------------------------------------------------------------

Call::Call(Session& session, detail::CallState& state, Frame request, std::string_view service,
           std::string_view op)
    : session_(session), state_(state), request_(std::move(request)), service_(service), op_(op) {}

Call::~Call() = default;

const json& Call::id() const noexcept { return state_.id; }

asio::any_io_executor Call::executor() const { return session_.executor(); }

bool Call::cancelled() const noexcept { return state_.cancelled || session_.closing(); }

awaitable<void> Call::emit(std::string_view event, json fields, std::string body) {
  if (cancelled()) throw Error(errc::cancelled, "cancelled");
  // Named, not a temporary inside the co_await: g++ 12 mishandles such temporaries.
  auto frame = encode_tagged(state_.id, "event", event, std::move(fields), std::move(body));
  co_await session_.push_wait(std::move(frame));
}

awaitable<void> Call::emit(std::string_view event, json fields, FileSlice file) {
  if (!can_send_file()) throw std::logic_error("emit with a file on a connection without sendfile");
  if (cancelled()) throw Error(errc::cancelled, "cancelled");
  auto frame = encode_tagged(state_.id, "event", event, std::move(fields), std::move(file));
  co_await session_.push_wait(std::move(frame));
}

bool Call::can_send_file() const noexcept { return session_.transport_->sends_files(); }

awaitable<std::optional<Frame>> Call::receive() {
  for (;;) {
    if (!state_.inbox.empty()) {
      Frame frame = std::move(state_.inbox.front());
      state_.inbox.pop_front();
      const std::size_t cost = inbox_cost(frame);
      state_.inbox_bytes -= cost;
      session_.inbox_bytes_ -= cost;
      session_.env_.metrics.inbound.give(cost);
      co_return frame;
    }
    if (cancelled()) co_return std::nullopt;
    if (!state_.inbox_ready) state_.inbox_ready = std::make_unique<Signal>(session_.executor());
    auto ec = co_await state_.inbox_ready->wait();
    if (ec) co_return std::nullopt;
  }
}

}  // namespace coserve
