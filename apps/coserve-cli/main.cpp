// coserve-cli: the native client. One-shot subcommands for scripts, or an interactive shell
// when no subcommand is given on a terminal. Exit codes (DESIGN.md §9): 0 ok, 1 server error
// (its code printed), 2 usage, 3 connection failure.
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <CLI/CLI.hpp>

#include "coserve/runtime.hpp"
#include "commands.hpp"
#include "failure.hpp"
#include "password.hpp"
#include "runner.hpp"
#include "shell.hpp"
#include "transfer.hpp"

using namespace coserve;
using namespace coserve::cli;

namespace {

std::string join_words(const std::vector<std::string>& words) {
  std::string text;
  for (const auto& w : words) text += (text.empty() ? "" : " ") + w;
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  coserve::tune_malloc_for_frames();
  CLI::App app{"coserve-cli: client for a coserve server.\n"
               "Without a subcommand on a terminal it starts an interactive shell."};
  std::string host = "127.0.0.1", port = "7070", user;
  bool password_stdin = false, quiet = false;
  app.add_option("--host", host, "Server host")->capture_default_str();
  app.add_option("--port", port, "Framed protocol port")->capture_default_str();
  app.add_option("--user", user, "Log in as USER (password: --password-stdin, "
                                 "COSERVE_PASSWORD, or a prompt)");
  app.add_flag("--password-stdin", password_stdin, "Read the password from stdin's first line");
  app.add_flag("-q,--quiet", quiet, "No progress output");
  bool tls = false;
  std::string ca_file;
  app.add_flag("--tls", tls, "Connect with TLS (the server's listeners.framed_tls port); the "
                             "certificate is checked against --ca-file, COSERVE_CA_FILE or the "
                             "system's trust store, and must name --host");
  app.add_option("--ca-file", ca_file, "PEM CA certificates to trust (implies --tls)");
  app.require_subcommand(0, 1);

  auto* hello_cmd = app.add_subcommand("hello", "Show the server's name, version and services");
  auto* echo_cmd = app.add_subcommand("echo", "Send TEXT to the echo service, print the reply");
  std::vector<std::string> words;
  echo_cmd->add_option("text", words, "Text to echo")->required();
  auto* login_cmd = app.add_subcommand("login", "Check that --user can log in");
  auto* whoami_cmd = app.add_subcommand("whoami", "Print the user name of the session");
  auto* ls_cmd = app.add_subcommand("ls", "List a remote directory");
  std::string path, path2;
  ls_cmd->add_option("path", path, "Remote directory (default: /)");
  auto* mkdir_cmd = app.add_subcommand("mkdir", "Create a remote directory");
  bool parents = false, recursive = false, force = false;
  mkdir_cmd->add_option("path", path)->required();
  mkdir_cmd->add_flag("-p,--parents", parents, "Create missing parents too");
  auto* rm_cmd = app.add_subcommand("rm", "Remove a remote file or directory");
  rm_cmd->add_option("path", path)->required();
  rm_cmd->add_flag("-r,--recursive", recursive, "Remove a directory and everything in it");
  auto* mv_cmd = app.add_subcommand("mv", "Move or rename a remote file or directory");
  mv_cmd->add_option("from", path)->required();
  mv_cmd->add_option("to", path2)->required();
  mv_cmd->add_flag("-f,--force", force, "Replace an existing target");
  auto* quota_cmd = app.add_subcommand("quota", "Show disk usage and quota");
  auto* put_cmd = app.add_subcommand("put", "Upload LOCAL (resumes a partial upload)");
  put_cmd->add_option("local", path)->required();
  put_cmd->add_option("remote", path2, "Remote path or directory (default: LOCAL's name)");
  put_cmd->add_flag("-f,--force", force, "Replace an existing remote file");
  auto* get_cmd = app.add_subcommand("get", "Download REMOTE (resumes from .NAME.part)");
  get_cmd->add_option("remote", path)->required();
  get_cmd->add_option("local", path2, "Local path or directory (default: REMOTE's name)");
  auto* exec_cmd = app.add_subcommand("exec", "Run a program on the server, output streamed");
  exec_cmd->prefix_command();
  auto* chat_cmd = app.add_subcommand(
      "chat", "Say TEXT in a chat room; without --say: chat mode on stdin (lines are said, "
              "messages printed, /quit or end of input leaves)");
  std::string room, say, nick;
  chat_cmd->add_option("--room", room, "Room")->required();
  chat_cmd->add_option("--say", say, "Text to say");
  chat_cmd->add_option("--nick", nick, "Nick (default: the user name)");
  auto* shell_cmd = app.add_subcommand("shell", "Interactive shell, also reading commands "
                                                "from a non-terminal stdin");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kOk : kUsage;
  }
  std::vector<std::string> exec_argv = exec_cmd->remaining();
  if (*exec_cmd && exec_argv.empty()) {
    std::cerr << "coserve-cli: exec needs a command\n";
    return kUsage;
  }
  const bool no_subcommand = app.get_subcommands().empty();
  if (no_subcommand && !::isatty(STDIN_FILENO)) {
    std::cerr << "coserve-cli: a subcommand is required when stdin is not a terminal "
                 "(see --help; `shell` reads commands from stdin)\n";
    return kUsage;
  }
  if (*login_cmd && user.empty()) {
    std::cerr << "coserve-cli: login needs --user\n";
    return kUsage;
  }

  // A CA file given on the command line means TLS (never clear text by mistake); the
  // environment's only says which CA to trust when TLS is asked for.
  TlsChoice tls_choice;
  tls_choice.enabled = tls || !ca_file.empty();
  tls_choice.ca_file = ca_file;
  if (const char* from_env = std::getenv("COSERVE_CA_FILE"); from_env && ca_file.empty())
    tls_choice.ca_file = from_env;

  asio::io_context io;
  asio::thread_pool pool(1);
  Connection conn(io.get_executor());
  Env env{conn, pool, quiet, tls_choice};
  int exit_code = kOk;
  try {
    std::string password;
    if (!user.empty()) password = obtain_password(user, password_stdin);
    if (no_subcommand || *shell_cmd) {
      // The shell stays usable when the first connection fails: `open` tries again.
      try {
        run_sync(io, conn.open(host, port, tls_choice));
        if (!user.empty()) run_sync(io, conn.login(user, password));
      } catch (const Failure& f) {
        std::cerr << "coserve-cli: " << f.what() << std::endl;
      }
      exit_code = run_shell(io, env);
    } else {
      run_sync(io, conn.open(host, port, tls_choice));
      if (!user.empty()) run_sync(io, conn.login(user, password));
      if (*hello_cmd) run_sync(io, hello(env));
      if (*echo_cmd) run_sync(io, echo(env, join_words(words)));
      if (*login_cmd && !quiet) std::cout << "logged in as " << user << std::endl;
      if (*whoami_cmd) run_sync(io, whoami(env));
      if (*ls_cmd) run_sync(io, ls(env, path));
      if (*mkdir_cmd) run_sync(io, mkdir(env, path, parents));
      if (*rm_cmd) run_sync(io, rm(env, path, recursive));
      if (*mv_cmd) run_sync(io, mv(env, path, path2, force));
      if (*quota_cmd) run_sync(io, quota(env));
      if (*put_cmd) run_sync(io, put_files(env, path, path2, force));
      if (*get_cmd) run_sync(io, get_files(env, path, path2));
      if (*exec_cmd) run_sync(io, exec(env, exec_argv, {}));
      if (*chat_cmd && chat_cmd->count("--say") > 0) run_sync(io, chat_say(env, room, nick, say));
      if (*chat_cmd && chat_cmd->count("--say") == 0) run_sync(io, chat_mode(env, room, nick));
    }
  } catch (const Failure& f) {
    std::cerr << "coserve-cli: " << f.what() << std::endl;
    exit_code = f.exit_code();
  } catch (const std::exception& e) {
    // A bug or an unexpected local failure: one line, never a stack trace.
    std::cerr << "coserve-cli: internal: " << e.what() << std::endl;
    exit_code = kServerError;
  }
  conn.close();
  pool.join();
  return exit_code;
}
