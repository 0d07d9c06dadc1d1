// `coserve user add|passwd|del|list`: manages users.json beside (or without) a running server.
// Passwords come from a no-echo prompt on a terminal or one line of stdin, never from argv.
#include <sodium.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <string>

#include "auth/auth.hpp"
#include "coserve/error.hpp"

namespace coserve::auth {
namespace {

// One line from stdin without its line ending; nullopt at end of input.
std::optional<std::string> read_line() {
  std::string line;
  if (!std::getline(std::cin, line)) return std::nullopt;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

// Prompts on the terminal with echo turned off.
std::optional<std::string> prompt_hidden(const std::string& prompt) {
  std::cerr << prompt << std::flush;
  termios saved{};
  bool restore = ::tcgetattr(STDIN_FILENO, &saved) == 0;
  if (restore) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  }
  auto line = read_line();
  if (restore) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
  std::cerr << "\n";
  return line;
}

// The new password: a prompt (twice) on a terminal unless --password-stdin, else one line.
std::optional<std::string> read_new_password(bool from_stdin) {
  if (from_stdin || !::isatty(STDIN_FILENO)) return read_line();
  auto first = prompt_hidden("New password: ");
  if (!first) return std::nullopt;
  auto second = prompt_hidden("Repeat password: ");
  if (!second || *first != *second) {
    std::cerr << "coserve user: the passwords do not match\n";
    return std::nullopt;
  }
  sodium_memzero(second->data(), second->size());
  return first;
}

void wipe(std::string& secret) {
  if (!secret.empty()) sodium_memzero(secret.data(), secret.size());
}

std::string format_quota(std::uint64_t bytes) {
  if (bytes == 0) return "unlimited";
  const char* units[] = {"", "K", "M", "G", "T"};
  int unit = 0;
  while (unit < 4 && bytes % 1024 == 0 && bytes >= 1024) {
    bytes /= 1024;
    ++unit;
  }
  return std::to_string(bytes) + units[unit];
}

}  // namespace

int user_command(int argc, char** argv) {
  CLI::App app{"coserve user: manage the users of a coserve data directory", "coserve user"};
  app.require_subcommand(1);
  std::string data_dir = "coserve-data";
  std::string name;
  std::string quota_text;
  bool password_stdin = false;
  bool shell = false;

  auto add_data_dir = [&](CLI::App* sub) {
    sub->add_option("--data-dir", data_dir, "Data directory (as given to the server)")
        ->capture_default_str();
  };
  auto* add = app.add_subcommand("add", "Add a user (password from a prompt or stdin)");
  add->add_option("name", name, "User name")->required();
  add->add_option("--quota", quota_text, "Quota: bytes or K/M/G/T suffix (default unlimited)");
  add->add_flag("--password-stdin", password_stdin, "Read the password as one line of stdin");
  add->add_flag("--shell", shell, "Allow this user a shell (command service)");
  add_data_dir(add);
  auto* passwd = app.add_subcommand("passwd", "Change a user's password");
  passwd->add_option("name", name, "User name")->required();
  passwd->add_flag("--password-stdin", password_stdin, "Read the password as one line of stdin");
  add_data_dir(passwd);
  auto* del = app.add_subcommand("del", "Delete a user (their home stays on disk)");
  del->add_option("name", name, "User name")->required();
  add_data_dir(del);
  auto* list = app.add_subcommand("list", "List users");
  add_data_dir(list);
  add_data_dir(&app);  // also accepted before the subcommand

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }

  std::uint64_t quota = 0;
  if (!quota_text.empty()) {
    auto parsed = parse_size(quota_text);
    if (!parsed) {
      std::cerr << "coserve user: --quota: '" << quota_text << "' is not a size (e.g. 500M)\n";
      return 2;
    }
    quota = *parsed;
  }

  try {
    UserStore users(std::filesystem::absolute(data_dir));
    if (list->parsed()) {
      for (auto& user : users.list())
        std::cout << user.name << "\tquota=" << format_quota(user.quota_bytes)
                  << "\tshell=" << (user.shell ? "yes" : "no") << "\thome=" << user.home.string()
                  << "\n";
      return 0;
    }
    if (del->parsed()) {
      users.remove(name);
      std::cerr << "coserve user: deleted '" << name << "' (home left in place)\n";
      return 0;
    }
    if (add->parsed() && !UserStore::valid_name(name)) {
      std::cerr << "coserve user: invalid user name (1-32 of A-Z a-z 0-9 _ . -, not starting "
                   "with . or -)\n";
      return 1;
    }
    if (passwd->parsed() && !users.find(name)) {
      std::cerr << "coserve user: no user '" << name << "'\n";
      return 1;
    }
    auto password = read_new_password(password_stdin);
    if (!password || password->empty()) {
      std::cerr << "coserve user: no password given\n";
      return 1;
    }
    if (add->parsed()) {
      auto user = users.add(name, *password, quota, shell);
      std::cerr << "coserve user: added '" << user.name << "', home " << user.home.string() << "\n";
    } else {
      users.set_password(name, *password);
      std::cerr << "coserve user: password of '" << name << "' changed\n";
    }
    wipe(*password);
    return 0;
  } catch (const Error& e) {
    std::cerr << "coserve user: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "coserve user: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace coserve::auth
