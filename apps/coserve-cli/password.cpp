#include "password.hpp"

#include <fcntl.h>
#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "failure.hpp"
#include "interrupt.hpp"

namespace coserve::cli {

namespace {

// Reads one line from `fd`; false on end of input or an interrupting signal.
bool read_line(int fd, std::string& line) {
  line.clear();
  for (;;) {
    char c;
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR && !prompt_interrupted()) continue;
    if (n <= 0) return !line.empty() && n == 0;
    if (c == '\n') return true;
    line += c;
  }
}

}  // namespace

std::string prompt_password(const std::string& prompt) {
  int tty = ::open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (tty < 0)
    throw usage_error("no password: use --password-stdin or COSERVE_PASSWORD without a terminal");
  termios saved{};
  bool restore = ::tcgetattr(tty, &saved) == 0;
  if (restore) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    quiet.c_lflag |= ECHONL;
    ::tcsetattr(tty, TCSAFLUSH, &quiet);
  }
  // Ctrl-C must give the terminal its echo back, so it only interrupts the read here.
  struct sigaction previous = catch_sigint_at_prompt();
  (void)!::write(tty, prompt.data(), prompt.size());
  std::string password;
  bool got = read_line(tty, password);
  if (restore) ::tcsetattr(tty, TCSAFLUSH, &saved);
  ::sigaction(SIGINT, &previous, nullptr);
  if (!got) (void)!::write(tty, "\n", 1);
  ::close(tty);
  if (prompt_interrupted()) throw server_error("cancelled", "no password given");
  if (!got) throw usage_error("no password given");
  return password;
}

std::string read_stdin_line() {
  std::string line;
  if (!read_line(STDIN_FILENO, line)) throw usage_error("--password-stdin: stdin is empty");
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

std::string obtain_password(const std::string& user, bool from_stdin) {
  if (from_stdin) return read_stdin_line();
  if (const char* env = std::getenv("COSERVE_PASSWORD")) return env;
  return prompt_password("Password for " + user + ": ");
}

}  // namespace coserve::cli
