#include "commands.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <optional>
#include <utility>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read_until.hpp>

#include "coserve/runtime.hpp"  // offload.hpp needs Runtime declared first
#include "coserve/offload.hpp"
#include "failure.hpp"
#include "format.hpp"
#include "interrupt.hpp"

namespace coserve::cli {

namespace {

json files_request(const char* op) { return json{{"service", "files"}, {"op", op}}; }

void write_all(std::FILE* out, const std::string& bytes) {
  std::fwrite(bytes.data(), 1, bytes.size(), out);
  std::fflush(out);
}

}  // namespace

awaitable<void> hello(Env env) {
  json request = {{"service", "core"}, {"op", "hello"}};
  auto reply = co_await env.conn.request(std::move(request));
  std::cout << reply.dump(2) << std::endl;
}

awaitable<void> echo(Env env, std::string text) {
  json request = {{"service", "echo"}, {"op", "echo"}, {"text", text}};
  auto reply = co_await env.conn.request(std::move(request));
  std::cout << reply.value("text", "") << std::endl;
}

awaitable<void> whoami(Env env) {
  json request = {{"service", "auth"}, {"op", "whoami"}};
  auto reply = co_await env.conn.request(std::move(request));
  auto user = reply.find("user");
  std::cout << (user != reply.end() && user->is_string() ? user->get<std::string>()
                                                          : std::string("(anonymous)"))
            << std::endl;
}

awaitable<std::string> pwd(Env env) {
  auto request = files_request("pwd");
  auto reply = co_await env.conn.request(std::move(request));
  co_return reply.value("cwd", "/");
}

awaitable<std::string> cd(Env env, std::string path) {
  auto request = files_request("cd");
  request["path"] = path;
  auto reply = co_await env.conn.request(std::move(request));
  auto cwd = reply.value("cwd", "/");
  // `exec` runs in the same directory: keep the command service's cwd in step.
  json command_cd = {{"service", "command"}, {"op", "cd"}, {"path", cwd}};
  co_await env.conn.request(std::move(command_cd));
  co_return cwd;
}

awaitable<void> ls(Env env, std::string path) {
  auto request = files_request("ls");
  if (!path.empty()) request["path"] = path;
  auto reply = co_await env.conn.request(std::move(request));
  std::cout << format_listing(reply) << std::flush;
}

awaitable<void> mkdir(Env env, std::string path, bool parents) {
  auto request = files_request("mkdir");
  request["path"] = path;
  request["parents"] = parents;
  co_await env.conn.request(std::move(request));
}

awaitable<void> rm(Env env, std::string path, bool recursive) {
  auto request = files_request("rm");
  request["path"] = path;
  request["recursive"] = recursive;
  auto reply = co_await env.conn.request(std::move(request));
  if (!env.quiet)
    std::cout << "removed " << reply.value("path", path) << " ("
              << human_size(reply.value("freed", std::uint64_t{0})) << " freed)" << std::endl;
}

awaitable<void> mv(Env env, std::string from, std::string to, bool overwrite) {
  auto request = files_request("mv");
  request["from"] = from;
  request["to"] = to;
  request["overwrite"] = overwrite;
  co_await env.conn.request(std::move(request));
}

awaitable<void> quota(Env env) {
  auto request = files_request("quota");
  auto reply = co_await env.conn.request(std::move(request));
  auto used = reply.value("used", std::uint64_t{0});
  auto reserved = reply.value("reserved", std::uint64_t{0});
  auto limit = reply.value("limit", std::uint64_t{0});
  std::cout << "used " << human_size(used) << " (" << used << " bytes)";
  if (reserved) std::cout << ", reserved " << human_size(reserved);
  if (limit)
    std::cout << ", limit " << human_size(limit) << " (" << limit << " bytes), "
              << (limit > used + reserved ? human_size(limit - used - reserved) : "0 B")
              << " free";
  else
    std::cout << ", no limit";
  std::cout << std::endl;
}

awaitable<void> exec(Env env, std::vector<std::string> argv, std::string line) {
  json run = {{"service", "command"}, {"op", "run"}};
  if (!argv.empty())
    run["argv"] = argv;
  else
    run["line"] = line;
  auto stream = env.conn.open_stream(std::move(run));
  Connection* conn = &env.conn;
  json target = stream.id();
  Interrupt interrupt(co_await asio::this_coro::executor, [conn, target] {
    if (::isatty(STDERR_FILENO)) std::fputs("\n", stderr);  // after the terminal's "^C"
    // Cancels the remote program; its final reply (`cancelled`) still ends the loop below.
    json cancel = {{"service", "core"}, {"op", "cancel"}, {"target", target}};
    if (conn->connected()) conn->client().open(std::move(cancel));
  });
  Frame final;
  for (;;) {
    Frame frame = co_await Connection::next(stream);
    if (stream.done()) {
      final = std::move(frame);
      break;
    }
    auto event = frame.head.value("event", "");
    if (event == "stdout") write_all(stdout, frame.body);
    if (event == "stderr") write_all(stderr, frame.body);
  }
  auto reply = Connection::checked(std::move(final));
  if (reply.value("truncated", false))
    std::cerr << "coserve-cli: the output was cut at the server's limit" << std::endl;
  if (reply.contains("signal"))
    throw Failure(kServerError, "the command was killed by signal " +
                                    reply.value("signal_name", reply["signal"].dump()));
  auto code = reply.value("exit_code", 0);
  if (code != 0) throw Failure(kServerError, "the command exited with code " + std::to_string(code));
}

namespace {

awaitable<std::string> join(Env env, const std::string& room, const std::string& nick) {
  json join = {{"service", "chat"}, {"op", "join"}, {"room", room}};
  if (!nick.empty()) {
    join["nick"] = nick;
  } else if (env.conn.user().empty()) {
    join["nick"] = "cli-" + std::to_string(::getpid());
  }
  auto reply = co_await env.conn.request(std::move(join));
  co_return reply.value("nick", nick);
}

}  // namespace

awaitable<void> chat_say(Env env, std::string room, std::string nick, std::string text) {
  co_await join(env, room, nick);
  json say = {{"service", "chat"}, {"op", "say"}, {"room", room}, {"text", text}};
  co_await env.conn.request(std::move(say));
}

namespace {

// Chat mode's input: a terminal or pipe is read asynchronously (Ctrl-C cancels the read); a
// regular file (`< script`), which epoll cannot watch, is read on the blocking pool.
class LineInput {
 public:
  explicit LineInput(asio::any_io_executor executor, asio::thread_pool& pool)
      : descriptor_(executor), pool_(pool) {
    int fd = ::dup(STDIN_FILENO);
    if (fd < 0) throw local_error("cannot read stdin");
    error_code ec;
    descriptor_.assign(fd, ec);
    if (ec) ::close(fd);
    watched_ = !ec;
  }
  ~LineInput() {
    error_code ignored;
    descriptor_.close(ignored);
    // The descriptor shared stdin's file description: give it back in blocking mode.
    ::fcntl(STDIN_FILENO, F_SETFL, ::fcntl(STDIN_FILENO, F_GETFL) & ~O_NONBLOCK);
  }
  void cancel() {
    error_code ignored;
    descriptor_.cancel(ignored);
  }
  // The next line without its newline, or nullopt at the end of input or after cancel().
  awaitable<std::optional<std::string>> next() {
    std::optional<std::string> line;
    if (watched_) {
      auto [ec, n] = co_await asio::async_read_until(descriptor_, asio::dynamic_buffer(buffer_),
                                                     '\n', use_nothrow);
      if (!ec) {
        line = buffer_.substr(0, n - 1);
        buffer_.erase(0, n);
      } else if (ec == asio::error::eof && !buffer_.empty()) {
        line = std::exchange(buffer_, {});
      }
    } else {
      auto read = [] {
        std::optional<std::string> got;
        char c;
        while (::read(STDIN_FILENO, &c, 1) == 1) {
          if (!got) got.emplace();
          if (c == '\n') break;
          *got += c;
        }
        return got;
      };
      line = co_await offload(pool_, std::move(read));
    }
    if (line && !line->empty() && line->back() == '\r') line->pop_back();
    co_return line;
  }

 private:
  asio::posix::stream_descriptor descriptor_;
  asio::thread_pool& pool_;
  bool watched_ = false;
  std::string buffer_;
};

}  // namespace

awaitable<void> chat_mode(Env env, std::string room, std::string nick) {
  LineInput input(co_await asio::this_coro::executor, env.pool);
  auto me = co_await join(env, room, nick);
  json who = {{"service", "chat"}, {"op", "who"}, {"room", room}};
  auto members = co_await env.conn.request(std::move(who));
  if (!env.quiet)
    std::cout << "* you are " << me << " in " << room << " with "
              << members.value("members", json::array()).dump()
              << "; type to talk, /who, /quit to leave" << std::endl;
  env.conn.print_chat(true);
  auto* reader = &input;
  Interrupt interrupt(co_await asio::this_coro::executor, [reader] {
    if (::isatty(STDOUT_FILENO)) std::fputs("\n", stdout);
    reader->cancel();
  });
  for (;;) {
    auto line = co_await input.next();
    if (!line || *line == "/quit") break;
    if (line->empty()) continue;
    bool lost = false;
    std::string message;
    try {
      if (*line == "/who") {
        json who_now = {{"service", "chat"}, {"op", "who"}, {"room", room}};
        auto reply = co_await env.conn.request(std::move(who_now));
        std::cout << "* " << reply.value("members", json::array()).dump() << std::endl;
      } else {
        json say = {{"service", "chat"}, {"op", "say"}, {"room", room}, {"text", *line}};
        co_await env.conn.request(std::move(say));
      }
    } catch (const Failure& f) {
      lost = f.exit_code() == kConnection;
      message = f.what();
    }
    if (lost) {
      env.conn.print_chat(false);
      throw connection_error(message);
    }
    if (!message.empty()) std::cerr << "coserve-cli: " << message << std::endl;
  }
  env.conn.print_chat(false);
  json leave = {{"service", "chat"}, {"op", "leave"}, {"room", room}};
  co_await env.conn.request(std::move(leave));
  if (!env.quiet) std::cout << "* left " << room << std::endl;
}

}  // namespace coserve::cli
