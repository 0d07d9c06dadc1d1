#pragma once
// The owner of all chat state: a Rooms instance plus each member's delivery sink, on one strand.
//
// Threading: every Hub member function whose name does not start with `post_` or `call`
// must run on strand(). Sessions reach it with `co_await hub->call(fn)` (fn runs on the strand,
// the caller resumes on its own executor) or `post_remove()` from a destructor. Fan-out encodes
// each event once and posts the same bytes to every recipient's sink without waiting on any of
// them; a recipient whose queue stays over `out_limit_bytes` for `drop_grace` is dropped.
#include <chrono>
#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>

#include "chat/rooms.hpp"
#include "coserve/asio.hpp"
#include "coserve/frame.hpp"

namespace coserve {
class Counter;
class Metrics;
}  // namespace coserve

namespace coserve::chat {

// One event, encoded once for every kind of recipient.
struct Delivery {
  OutFrame frame;                            // framed / WebSocket sessions
  std::shared_ptr<const std::string> line;   // line-mode connections ("...\n")
};

// Where a member's deliveries go. Implementations are thread-safe: the hub calls them from its
// strand, they hand the work to the member's own executor and never block.
class MemberSink {
 public:
  virtual ~MemberSink() = default;
  virtual void deliver(const Delivery& delivery) = 0;
  // Bytes waiting to be written to the member (a slightly stale view).
  virtual std::size_t queued_bytes() const = 0;
  // The hub removed the member for being too slow: tell it why and end its connection.
  virtual void drop(const std::string& reason) = 0;
  // The hub forgets the sink; called once, last. (Frees it on the member's executor, after
  // the deliveries already posted there.)
  virtual void release(std::shared_ptr<MemberSink> self) = 0;
  // Line-mode members get Delivery::line instead of the frame.
  virtual bool line_mode() const noexcept { return false; }
};

struct HubLimits {
  std::size_t out_limit_bytes = 1024 * 1024;
  std::chrono::milliseconds drop_grace{2000};
  std::size_t hard_limit_factor = 4;  // over limit * factor: dropped at once
};

class Hub : public std::enable_shared_from_this<Hub> {
 public:
  using Clock = std::chrono::steady_clock;

  Hub(asio::any_io_executor executor, ChatLimits limits, HubLimits hub_limits, Metrics& metrics);

  const asio::strand<asio::any_io_executor>& strand() const noexcept { return strand_; }
  MemberId new_member_id() noexcept;

  // Runs `fn()` on the strand and resumes the caller on its own executor with the result (or
  // the exception fn threw).
  template <class Fn>
  auto call(Fn fn) -> awaitable<std::invoke_result_t<Fn&>>;

  // From any thread, e.g. a session state's destructor: forget the member.
  void post_remove(MemberId id, std::string reason);

  // ---- on the strand only ----
  // Registers or updates the member's sink and nick, then joins the room. Returns the reply
  // fields {room, nick, members}.
  json join(MemberId id, const std::shared_ptr<MemberSink>& sink, const std::string& nick,
            const std::string& room);
  json leave(MemberId id, const std::string& room);
  json say(MemberId id, const std::string& room, std::string text);
  json pm(MemberId id, const std::string& to, std::string text);
  json who(const std::string& room) const;
  json rooms() const;
  json history(const std::string& room, std::size_t limit) const;
  // The member leaves every room and is forgotten; `left` goes to the rooms with `reason`.
  void remove(MemberId id, const std::string& reason);
  std::vector<std::string> rooms_of(MemberId id) const { return rooms_.rooms_of(id); }
  std::string nick_of(MemberId id) const { return rooms_.nick_of(id); }
  const Rooms& state() const noexcept { return rooms_; }

 private:
  struct Member {
    std::shared_ptr<MemberSink> sink;
    std::optional<Clock::time_point> over_since;
  };
  Delivery make(const json& head, const std::string& line_text, bool any_line) const;
  bool any_line(const std::vector<MemberId>& ids) const;
  void fan_out(const std::vector<MemberId>& ids, const Delivery& delivery);
  void presence(const char* event, const std::string& room, const std::string& nick,
                const std::vector<MemberId>& ids, const std::string& reason = {});
  void forget(MemberId id);

  asio::strand<asio::any_io_executor> strand_;
  Rooms rooms_;
  HubLimits hub_limits_;
  std::unordered_map<MemberId, Member> members_;
  std::vector<MemberId> to_drop_;
  bool draining_ = false;
  Counter& messages_;
  Counter& deliveries_;
  Counter& dropped_;
  Counter& members_gauge_;
};

template <class Fn>
auto Hub::call(Fn fn) -> awaitable<std::invoke_result_t<Fn&>> {
  using R = std::invoke_result_t<Fn&>;
  using Result = std::conditional_t<std::is_void_v<R>, bool, std::optional<R>>;
  [[maybe_unused]] auto result = co_await asio::async_initiate<decltype(use_awaitable),
                                              void(std::exception_ptr, Result)>(
      [this](auto handler, Fn fn) {
        auto work = asio::make_work_guard(asio::get_associated_executor(handler));
        asio::post(strand_, [handler = std::move(handler), fn = std::move(fn),
                             work = std::move(work)]() mutable {
          std::exception_ptr failure;
          Result value{};
          try {
            if constexpr (std::is_void_v<R>) {
              fn();
              value = true;
            } else {
              value.emplace(fn());
            }
          } catch (...) {
            failure = std::current_exception();
          }
          auto home = work.get_executor();
          asio::post(home, [handler = std::move(handler), failure,
                            value = std::move(value)]() mutable {
            std::move(handler)(failure, std::move(value));
          });
        });
      },
      use_awaitable, std::move(fn));
  if constexpr (!std::is_void_v<R>) co_return std::move(*result);
}

}  // namespace coserve::chat
