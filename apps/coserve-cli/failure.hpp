#pragma once
// How a command fails. Every failure ends up as one line on stderr,
// "coserve-cli: <message>", and an exit code from the stable list (DESIGN.md §9):
// 0 ok, 1 server error (its code printed first), 2 usage, 3 connection failure.
#include <stdexcept>
#include <string>

namespace coserve::cli {

enum Exit { kOk = 0, kServerError = 1, kUsage = 2, kConnection = 3 };

class Failure : public std::runtime_error {
 public:
  Failure(int exit_code, std::string message, std::string code = {})
      : std::runtime_error(std::move(message)), exit_code_(exit_code), code_(std::move(code)) {}
  int exit_code() const noexcept { return exit_code_; }
  // The protocol error code for server errors, empty otherwise.
  const std::string& code() const noexcept { return code_; }

 private:
  int exit_code_;
  std::string code_;
};

// A server's error reply (or a check of ours that uses the same closed list of codes).
inline Failure server_error(const std::string& code, const std::string& message) {
  return Failure(kServerError, code + ": " + message, code);
}
inline Failure connection_error(std::string message) {
  return Failure(kConnection, std::move(message));
}
inline Failure usage_error(std::string message) { return Failure(kUsage, std::move(message)); }
// A local problem (a file that cannot be read or written): exit 1, no protocol code.
inline Failure local_error(std::string message) { return Failure(kServerError, std::move(message)); }

}  // namespace coserve::cli
