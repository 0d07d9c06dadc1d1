#include "shell.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>

#include <editline/readline.h>

#include "commands.hpp"
#include "failure.hpp"
#include "interrupt.hpp"
#include "password.hpp"
#include "runner.hpp"
#include "transfer.hpp"
#include "words.hpp"

namespace coserve::cli {

namespace {

const char* const kHelp =
    "open [--tls|--no-tls] [--ca-file FILE] HOST[:PORT]\n"
    "                          connect (anonymous until login); TLS as on the command line\n"
    "                          unless --tls/--no-tls; --ca-file implies --tls\n"
    "login [USER]              log in; the password is asked without echo\n"
    "logout | whoami           end the login | show the user\n"
    "pwd | cd [DIR]            working directory (files and exec)\n"
    "ls [DIR]                  type, size, modified, name\n"
    "mkdir [-p] DIR            create a directory (-p: with its parents)\n"
    "rm [-r] PATH              remove (-r: a directory and its contents)\n"
    "mv [-f] FROM TO           move or rename (-f: replace the target)\n"
    "put [-f] LOCAL [REMOTE]   upload (resumes a partial upload); LOCAL may be a glob\n"
    "get REMOTE [LOCAL]        download (resumes from .NAME.part); REMOTE may be a glob\n"
    "quota                     disk usage and limit\n"
    "exec COMMAND LINE         run on the server; Ctrl-C cancels the command\n"
    "chat [ROOM] [NICK]        chat mode: lines you type are said, /who, /quit returns\n"
    "echo TEXT | hello         echo service | server name, version, services\n"
    "help | quit               this text | leave (also Ctrl-D)\n";

// Removes `flag` (e.g. "-r") from the arguments after the command name; true if it was there.
bool take_flag(std::vector<std::string>& words, const std::string& flag) {
  for (std::size_t i = 1; i < words.size(); ++i) {
    if (words[i] == flag) {
      words.erase(words.begin() + static_cast<std::ptrdiff_t>(i));
      return true;
    }
  }
  return false;
}

// Removes `option` and the value after it; the value, or nullopt when the option is absent.
std::optional<std::string> take_option(std::vector<std::string>& words, const std::string& option,
                                       const char* usage) {
  for (std::size_t i = 1; i < words.size(); ++i) {
    if (words[i] == option) {
      if (i + 1 >= words.size()) throw usage_error(std::string("usage: ") + usage);
      auto value = words[i + 1];
      auto at = words.begin() + static_cast<std::ptrdiff_t>(i);
      words.erase(at, at + 2);
      return value;
    }
  }
  return std::nullopt;
}

class Shell {
 public:
  Shell(asio::io_context& io, Env env) : io_(io), env_(env), tty_(::isatty(STDIN_FILENO)) {}

  int run() {
    if (tty_) {
      if (const char* home = std::getenv("HOME")) history_ = std::string(home) + "/.coserve_history";
      using_history();
      if (!history_.empty()) read_history(history_.c_str());
      std::cout << "coserve-cli shell; type help for the commands" << std::endl;
    }
    std::string line;
    while (read_line(line)) {
      if (tty_ && !line.empty()) add_history(line.c_str());
      if (!execute(line)) break;
    }
    if (tty_ && !history_.empty()) write_history(history_.c_str());
    return last_failure_;
  }

 private:
  std::string prompt() const {
    if (!env_.conn.ever_opened()) return "coserve (not connected)> ";
    std::string who = env_.conn.user().empty() ? "" : env_.conn.user() + "@";
    return "coserve " + who + env_.conn.host() + ":" + env_.conn.port() + ":" + cwd_ + "> ";
  }

  bool read_line(std::string& line) {
    if (!tty_) {  // byte by byte, so chat mode finds the rest of stdin unread
      line.clear();
      char c;
      ssize_t n;
      while ((n = ::read(STDIN_FILENO, &c, 1)) == 1 && c != '\n') line += c;
      return n == 1 || !line.empty();
    }
    for (;;) {
      poll(io_);  // print pushes that came while the shell was idle
      // Ctrl-C at the prompt only abandons the line; asio's handler is gone between commands.
      catch_sigint_at_prompt();
      auto text = prompt();
      errno = 0;
      char* got = readline(text.c_str());
      if (got) {
        line = got;
        std::free(got);
        return true;
      }
      // The line editor's own handler may have taken the signal first: its interrupted read
      // says so even before ours has run.
      if (!prompt_interrupted() && errno != EINTR) {
        std::cout << std::endl;
        return false;  // end of input (Ctrl-D)
      }
      std::cout << std::endl;
    }
  }

  // Runs one command line; false to leave the shell.
  bool execute(const std::string& line) {
    auto words = split_words(line);
    if (words.empty() || words[0][0] == '#') return true;
    const auto command = words[0];
    if (command == "quit" || command == "exit") return false;
    if (command == "help") {
      std::cout << kHelp;
      return true;
    }
    try {
      dispatch(command, words, line);
      last_failure_ = 0;
    } catch (const Failure& f) {
      std::cerr << "coserve-cli: " << f.what() << std::endl;
      last_failure_ = f.exit_code();
    } catch (const std::exception& e) {
      std::cerr << "coserve-cli: internal: " << e.what() << std::endl;
      last_failure_ = kServerError;
    }
    return true;
  }

  void ensure_connected() {
    poll(io_);
    if (env_.conn.connected()) return;
    if (!env_.conn.ever_opened()) throw connection_error("not connected (use: open HOST[:PORT])");
    std::cerr << "coserve-cli: reconnecting to " << env_.conn.host() << ":" << env_.conn.port()
              << std::endl;
    run_sync(io_, env_.conn.reopen());
    if (!env_.conn.user().empty() && cwd_ != "/") cwd_ = run_sync(io_, cd(env_, cwd_));
  }

  void need_args(const std::vector<std::string>& words, std::size_t min, std::size_t max,
                 const char* usage) {
    if (words.size() - 1 < min || words.size() - 1 > max)
      throw usage_error(std::string("usage: ") + usage);
  }

  void dispatch(const std::string& command, std::vector<std::string>& words,
                const std::string& line) {
    if (command == "open") {
      const char* usage = "open [--tls|--no-tls] [--ca-file FILE] HOST[:PORT]";
      TlsChoice tls = env_.tls;
      if (auto ca_file = take_option(words, "--ca-file", usage)) {
        tls.enabled = true;
        tls.ca_file = *ca_file;
      }
      if (take_flag(words, "--tls")) tls.enabled = true;
      if (take_flag(words, "--no-tls")) tls.enabled = false;
      need_args(words, 1, 1, usage);
      auto target = words[1];
      std::string host = target, port = env_.conn.ever_opened() ? env_.conn.port() : "7070";
      if (auto colon = target.rfind(':'); colon != std::string::npos && target.find(']') == std::string::npos) {
        host = target.substr(0, colon);
        port = target.substr(colon + 1);
      }
      run_sync(io_, env_.conn.open(host, port, tls));
      cwd_ = "/";
      std::cout << "connected to " << host << ":" << port << (tls.enabled ? " (TLS)" : "")
                << std::endl;
      return;
    }
    ensure_connected();
    if (command == "login") {
      need_args(words, 0, 1, "login [USER]");
      std::string user = words.size() > 1 ? words[1] : env_.conn.user();
      if (user.empty()) throw usage_error("usage: login USER");
      std::string password;
      if (tty_) {
        password = prompt_password("Password for " + user + ": ");
      } else if (const char* from_env = std::getenv("COSERVE_PASSWORD")) {
        password = from_env;
      } else if (!read_line(password)) {
        throw usage_error("no password on stdin");
      }
      run_sync(io_, env_.conn.login(user, password));
      cwd_ = "/";
      std::cout << "logged in as " << user << std::endl;
    } else if (command == "logout") {
      json logout = {{"service", "auth"}, {"op", "logout"}};
      run_sync(io_, env_.conn.request(logout));
      env_.conn.forget_login();
      cwd_ = "/";
    } else if (command == "whoami") {
      run_sync(io_, whoami(env_));
    } else if (command == "pwd") {
      cwd_ = run_sync(io_, pwd(env_));
      std::cout << cwd_ << std::endl;
    } else if (command == "cd") {
      need_args(words, 0, 1, "cd [DIR]");
      cwd_ = run_sync(io_, cd(env_, words.size() > 1 ? words[1] : "/"));
    } else if (command == "ls") {
      need_args(words, 0, 1, "ls [DIR]");
      run_sync(io_, ls(env_, words.size() > 1 ? words[1] : ""));
    } else if (command == "mkdir") {
      bool parents = take_flag(words, "-p");
      need_args(words, 1, 1, "mkdir [-p] DIR");
      run_sync(io_, mkdir(env_, words[1], parents));
    } else if (command == "rm") {
      bool recursive = take_flag(words, "-r");
      need_args(words, 1, 1, "rm [-r] PATH");
      run_sync(io_, rm(env_, words[1], recursive));
    } else if (command == "mv") {
      bool force = take_flag(words, "-f");
      need_args(words, 2, 2, "mv [-f] FROM TO");
      run_sync(io_, mv(env_, words[1], words[2], force));
    } else if (command == "put") {
      bool force = take_flag(words, "-f");
      need_args(words, 1, 2, "put [-f] LOCAL [REMOTE]");
      run_sync(io_, put_files(env_, words[1], words.size() > 2 ? words[2] : "", force));
    } else if (command == "get") {
      need_args(words, 1, 2, "get REMOTE [LOCAL]");
      run_sync(io_, get_files(env_, words[1], words.size() > 2 ? words[2] : ""));
    } else if (command == "quota") {
      run_sync(io_, quota(env_));
    } else if (command == "exec") {
      auto rest = rest_of_line(line);
      if (rest.empty()) throw usage_error("usage: exec COMMAND [ARGS...]");
      run_sync(io_, exec(env_, {}, rest));
    } else if (command == "chat") {
      need_args(words, 0, 2, "chat [ROOM] [NICK]");
      run_sync(io_, chat_mode(env_, words.size() > 1 ? words[1] : "lobby",
                              words.size() > 2 ? words[2] : ""));
    } else if (command == "echo") {
      run_sync(io_, echo(env_, rest_of_line(line)));
    } else if (command == "hello") {
      run_sync(io_, hello(env_));
    } else {
      throw usage_error("unknown command '" + command + "' (try help)");
    }
  }

  asio::io_context& io_;
  Env env_;
  bool tty_;
  std::string cwd_ = "/";
  std::string history_;
  int last_failure_ = 0;
};

}  // namespace

int run_shell(asio::io_context& io, Env env) { return Shell(io, env).run(); }

}  // namespace coserve::cli
