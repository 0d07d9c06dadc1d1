#include "chat/line.hpp"

#include <atomic>
#include <deque>
#include <vector>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "coserve/log.hpp"

namespace coserve::chat {
namespace {

using Signal = asio::experimental::channel<void(error_code)>;
using tcp = asio::ip::tcp;

constexpr std::size_t kMaxBatchLines = 64;
constexpr std::size_t kMaxBatchBytes = 64 * 1024;

constexpr const char* kHelp =
    "* commands: /join ROOM, /leave [ROOM], /msg NICK TEXT, /who, /rooms, /quit; other lines "
    "go to the current room";

std::string join_names(const json& names) {
  std::string out;
  for (auto& n : names) {
    if (!out.empty()) out += ", ";
    out += n.get<std::string>();
  }
  return out;
}

class LineConnection final : public MemberSink,
                             public std::enable_shared_from_this<LineConnection> {
 public:
  LineConnection(tcp::socket socket, std::shared_ptr<Hub> hub, LineOptions options)
      : socket_(std::move(socket)),
        executor_(socket_.get_executor()),
        hub_(std::move(hub)),
        options_(std::move(options)),
        id_(hub_->new_member_id()),
        wake_(executor_, 1),
        space_(executor_, 1),
        read_timer_(executor_),
        write_timer_(executor_) {}

  awaitable<void> run() {
    using namespace asio::experimental::awaitable_operators;
    co_await (reader() && write_loop());
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

  MemberId id() const noexcept { return id_; }
  bool registered() const noexcept { return registered_; }

  // ---- MemberSink: any thread ----
  void deliver(const Delivery& delivery) override {
    asio::post(executor_, [self = shared_from_this(), line = delivery.line]() mutable {
      self->enqueue(std::move(line));
    });
  }
  std::size_t queued_bytes() const override { return queued_.load(std::memory_order_relaxed); }
  void drop(const std::string& reason) override {
    asio::post(executor_, [self = shared_from_this(), reason] {
      // It is not reading: a last line may never arrive, which is fine; the socket closes now.
      self->enqueue(std::make_shared<const std::string>("! dropped: " + reason + "\n"));
      self->registered_ = false;  // the hub already forgot us
      error_code ignored;
      self->socket_.close(ignored);
    });
  }
  void release(std::shared_ptr<MemberSink> self) override {
    asio::post(executor_, [self = std::move(self)] {});
  }
  bool line_mode() const noexcept override { return true; }

 private:
  void enqueue(std::shared_ptr<const std::string> line) {
    if (out_closed_ || !line) return;
    queued_.fetch_add(line->size(), std::memory_order_relaxed);
    queue_.push_back(std::move(line));
    wake_.try_send(error_code{});
  }
  void reply(std::string text) {
    enqueue(std::make_shared<const std::string>(std::move(text) + "\n"));
  }

  awaitable<void> reader() {
    try {
      co_await read_loop();
    } catch (const std::exception& e) {
      log::debug("chat line {}: reader ended: {}", id_, e.what());
    }
    out_closed_requested_ = true;
    wake_.try_send(error_code{});
  }

  awaitable<void> read_loop() {
    using namespace asio::experimental::awaitable_operators;
    std::string buffer;
    for (;;) {
      // A client that does not read its replies stops being read, as in Session.
      while (queued_bytes() > options_.out_limit && socket_.is_open()) {
        co_await space_.async_receive(use_nothrow);
      }
      read_timer_.expires_after(options_.idle_timeout);
      auto result = co_await (asio::async_read_until(socket_,
                                                     asio::dynamic_buffer(buffer, options_.max_line),
                                                     '\n', use_nothrow) ||
                              read_timer_.async_wait(use_nothrow));
      if (result.index() == 1) {
        reply("* idle timeout, bye");
        co_return;
      }
      auto [ec, n] = std::get<0>(result);
      if (ec == asio::error::not_found) {
        reply("! too_large: a line is at most " + std::to_string(options_.max_line) + " bytes");
        co_return;
      }
      if (ec) co_return;
      std::string line = buffer.substr(0, n - 1);
      buffer.erase(0, n);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!co_await handle(std::move(line))) co_return;
    }
  }

  // Returns false when the connection should end.
  awaitable<bool> handle(std::string line) {
    if (line.empty()) co_return true;
    try {
      if (nick_.empty()) {
        co_await choose_nick(line);
        co_return true;
      }
      if (line.front() != '/') {
        if (current_.empty()) throw Error(errc::forbidden, "you are in no room; /join one");
        auto op = [hub = hub_.get(), id = id_, room = current_, text = line] {
          return hub->say(id, room, text);
        };
        co_await hub_->call(std::move(op));
        co_return true;
      }
      auto space = line.find(' ');
      std::string command = line.substr(0, space);
      std::string rest = space == std::string::npos ? "" : line.substr(space + 1);
      if (command == "/quit") {
        reply("* bye");
        co_return false;
      } else if (command == "/help") {
        reply(kHelp);
      } else if (command == "/join") {
        if (rest.empty()) throw Error(errc::bad_request, "usage: /join ROOM");
        auto self = shared_from_this();
        auto op1 = [hub = hub_.get(), self, nick = nick_, room = rest] {
          return hub->join(self->id(), self, nick, room);
        };
        json r = co_await hub_->call(std::move(op1));
        current_ = rest;
        reply("* you are in " + rest + " with: " + join_names(r["members"]));
      } else if (command == "/leave") {
        std::string room = rest.empty() ? current_ : rest;
        if (room.empty()) throw Error(errc::bad_request, "usage: /leave [ROOM]");
        auto op2 = [hub = hub_.get(), id = id_, room] {
          hub->leave(id, room);
          return hub->rooms_of(id);
        };
        auto rooms = co_await hub_->call(std::move(op2));
        if (room == current_) current_ = rooms.empty() ? "" : rooms.back();
        reply("* left " + room +
              (current_.empty() ? "; you are in no room (/join ROOM)" : "; now in " + current_));
      } else if (command == "/msg") {
        auto sp = rest.find(' ');
        if (sp == std::string::npos || sp == 0 || sp + 1 >= rest.size())
          throw Error(errc::bad_request, "usage: /msg NICK TEXT");
        auto op3 = [hub = hub_.get(), id = id_, to = rest.substr(0, sp),
                             text = rest.substr(sp + 1)] { return hub->pm(id, to, text); };
        co_await hub_->call(std::move(op3));
        reply("* sent to " + rest.substr(0, sp));
      } else if (command == "/who") {
        std::string room = rest.empty() ? current_ : rest;
        if (room.empty()) throw Error(errc::bad_request, "usage: /who [ROOM]");
        auto op4 = [hub = hub_.get(), room] { return hub->who(room); };
        json r = co_await hub_->call(std::move(op4));
        reply("* in " + room + ": " + join_names(r["members"]));
      } else if (command == "/rooms") {
        auto op5 = [hub = hub_.get()] { return hub->rooms(); };
        json r = co_await hub_->call(std::move(op5));
        std::string text;
        for (auto& room : r["rooms"]) {
          if (!text.empty()) text += ", ";
          text += room["room"].get<std::string>() + " (" +
                  std::to_string(room["members"].get<std::size_t>()) + ")";
        }
        reply("* rooms: " + (text.empty() ? std::string("none") : text));
      } else {
        throw Error(errc::bad_request, "unknown command " + command + " (/help)");
      }
    } catch (const Error& e) {
      reply("! " + std::string(to_string(e.code())) + ": " + e.what());
    }
    co_return true;
  }

  awaitable<void> choose_nick(const std::string& nick) {
    if (!valid_name(nick))
      throw Error(errc::bad_request,
                  "a nick is 1-32 of A-Z a-z 0-9 _ . - (not starting with . or -); try again");
    if (options_.reserved && options_.reserved(nick))
      throw Error(errc::forbidden, "nick '" + nick + "' belongs to a registered user; try another");
    auto self = shared_from_this();
    auto op6 = [hub = hub_.get(), self, nick, room = options_.default_room] {
      return hub->join(self->id(), self, nick, room);
    };
    json r = co_await hub_->call(std::move(op6));
    nick_ = nick;
    registered_ = true;
    current_ = options_.default_room;
    reply("* welcome " + nick + "; you are in " + current_ + " with: " +
          join_names(r["members"]));
    reply(kHelp);
  }

  awaitable<void> write_loop() {
    using namespace asio::experimental::awaitable_operators;
    std::vector<asio::const_buffer> buffers;
    std::vector<std::shared_ptr<const std::string>> batch;
    for (;;) {
      while (queue_.empty()) {
        if (out_closed_requested_ || !socket_.is_open()) {
          out_closed_ = true;
          co_return;
        }
        co_await wake_.async_receive(use_nothrow);
      }
      std::size_t bytes = 0;
      while (!queue_.empty() && batch.size() < kMaxBatchLines && bytes < kMaxBatchBytes) {
        bytes += queue_.front()->size();
        buffers.push_back(asio::buffer(*queue_.front()));
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      write_timer_.expires_after(options_.write_timeout);
      auto result = co_await (asio::async_write(socket_, buffers, use_nothrow) ||
                              write_timer_.async_wait(use_nothrow));
      buffers.clear();
      batch.clear();
      queued_.fetch_sub(bytes, std::memory_order_relaxed);
      space_.try_send(error_code{});
      bool failed = result.index() == 1 || std::get<0>(std::get<0>(result));
      if (failed) {
        out_closed_ = true;
        queue_.clear();
        queued_.store(0, std::memory_order_relaxed);
        error_code ignored;
        socket_.close(ignored);  // ends the reader too
        space_.try_send(error_code{});
        co_return;
      }
    }
  }

  tcp::socket socket_;
  asio::any_io_executor executor_;
  std::shared_ptr<Hub> hub_;
  LineOptions options_;
  MemberId id_;
  std::string nick_;
  std::string current_;
  bool registered_ = false;  // the hub knows this member

  std::deque<std::shared_ptr<const std::string>> queue_;
  std::atomic<std::size_t> queued_{0};
  Signal wake_;
  Signal space_;
  bool out_closed_requested_ = false;  // the reader ended: flush, then stop
  bool out_closed_ = false;            // nothing more is written
  asio::steady_timer read_timer_;
  asio::steady_timer write_timer_;
};

}  // namespace

awaitable<void> serve_line(std::shared_ptr<Hub> hub, LineOptions options, tcp::socket socket) {
  auto connection = std::make_shared<LineConnection>(std::move(socket), hub, std::move(options));
  // Leaves the rooms however the connection ends (EOF, /quit, drop, shutdown cancellation).
  struct Leave {
    std::shared_ptr<Hub> hub;
    std::shared_ptr<LineConnection> connection;
    // Always: the hub ignores members it does not know (never joined, or dropped).
    ~Leave() { hub->post_remove(connection->id(), "quit"); }
  } leave{hub, connection};
  co_await connection->run();
}

}  // namespace coserve::chat
