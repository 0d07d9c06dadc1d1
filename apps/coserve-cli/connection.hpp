#pragma once
// One connection to a coserve server as the CLI sees it: connect, log in, send requests and
// turn every reply or lost connection into a value or a Failure (failure.hpp).
//
// Threading: one executor (the CLI's single io_context); every member is called from it.
// Pushes (chat messages, `shutdown`) are printed by a coroutine started at connect time, so they
// never pile up; chat messages are printed only while `print_chat(true)`.
#include <memory>
#include <string>
#include <vector>

#include "coserve/client.hpp"

namespace coserve::cli {

// How to connect: plain TCP, or TLS with the server's certificate checked against `ca_file`
// (empty: the system's trust store) and the host name.
struct TlsChoice {
  bool enabled = false;
  std::string ca_file;
};

class Connection {
 public:
  explicit Connection(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  // Connects, replacing any previous connection. Throws Failure(kConnection), also when the
  // TLS handshake or the certificate check fails ("TLS: certificate verify failed (...)").
  awaitable<void> open(std::string host, std::string port, TlsChoice tls = {});
  // Throws Failure(kServerError, "unauthenticated: ...") on a wrong password. The password is
  // kept in memory so the shell can log in again after the server closed an idle connection.
  awaitable<void> login(std::string user, std::string password);
  // After `auth.logout`: a reconnect stays anonymous.
  void forget_login() {
    user_.clear();
    password_.clear();
  }
  // After an idle timeout or a server restart: connects and logs in again (shell only).
  awaitable<void> reopen();

  bool connected() const noexcept { return client_ && client_->is_open(); }
  bool ever_opened() const noexcept { return !host_.empty(); }
  const std::string& host() const noexcept { return host_; }
  const std::string& port() const noexcept { return port_; }
  const std::string& user() const noexcept { return user_; }
  bool tls() const noexcept { return tls_.enabled; }

  // Sends a request and returns the head of its ok reply; throws Failure otherwise.
  awaitable<json> request(json request);
  // Starts a streamed request (get, put, run). Throws Failure(kConnection) when not connected.
  Client::Stream open_stream(json request);
  // The next event or final reply of `stream`; a lost connection becomes Failure(kConnection).
  static awaitable<Frame> next(Client::Stream& stream);
  // The head of an ok final reply, or throws the server's error as a Failure.
  static json checked(Frame reply);

  Client& client();
  void print_chat(bool on) noexcept { print_chat_ = on; }
  void close();

 private:
  static awaitable<void> print_pushes(Client* client, const bool* print_chat);

  asio::any_io_executor executor_;
  std::unique_ptr<Client> client_;
  // Replaced clients stay alive until exit: their push printer may still be suspended inside
  // Client::next_push, which must not outlive the Client.
  std::vector<std::unique_ptr<Client>> retired_;
  std::string host_, port_, user_, password_;
  TlsChoice tls_;  // of the current connection; a reconnect uses it again
  bool print_chat_ = false;
};

}  // namespace coserve::cli
