#include "connection.hpp"

#include <iostream>

#include "failure.hpp"

namespace coserve::cli {

awaitable<void> Connection::open(std::string host, std::string port, TlsChoice tls) {
  if (client_) {
    client_->close();
    retired_.push_back(std::move(client_));
  }
  auto client = std::make_unique<Client>(executor_);
  TlsOptions tls_options;
  tls_options.ca_file = tls.ca_file;
  std::string where = host + ":" + port, failure;
  try {
    if (tls.enabled)
      co_await client->connect_tls(host, port, tls_options);
    else
      co_await client->connect(host, port);
  } catch (const TlsError& e) {
    failure = e.what();  // already one line: "TLS: certificate verify failed (...)"
  } catch (const boost::system::system_error& e) {
    // Says TLS was asked for: a refused TLS connection may mean the wrong port was given.
    if (tls.enabled) where += " with TLS";
    failure = e.code().message();
  }
  if (!failure.empty()) throw connection_error("cannot connect to " + where + ": " + failure);
  client_ = std::move(client);
  host_ = std::move(host);
  port_ = std::move(port);
  tls_ = std::move(tls);
  user_.clear();
  password_.clear();
  asio::co_spawn(executor_, print_pushes(client_.get(), &print_chat_),
                 [](std::exception_ptr) { /* the connection closed: nothing left to print */ });
}

awaitable<void> Connection::login(std::string user, std::string password) {
  json login = {{"service", "auth"}, {"op", "login"}, {"user", user}, {"password", password}};
  co_await request(std::move(login));
  user_ = std::move(user);
  password_ = std::move(password);
}

awaitable<void> Connection::reopen() {
  auto user = user_, password = password_;
  co_await open(host_, port_, tls_);
  if (!user.empty()) co_await login(std::move(user), std::move(password));
}

Client& Connection::client() {
  if (!connected()) throw connection_error("not connected (use: open HOST[:PORT])");
  return *client_;
}

void Connection::close() {
  if (client_) client_->close();
}

awaitable<json> Connection::request(json request) {
  auto& client = this->client();
  Frame reply;
  bool lost = false;
  try {
    reply = co_await client.call(std::move(request));
  } catch (const boost::system::system_error&) {
    lost = true;
  }
  if (lost) throw connection_error("connection lost");
  co_return checked(std::move(reply));
}

Client::Stream Connection::open_stream(json request) {
  return client().open(std::move(request));
}

awaitable<Frame> Connection::next(Client::Stream& stream) {
  Frame frame;
  bool lost = false;
  try {
    frame = co_await stream.next();
  } catch (const boost::system::system_error&) {
    lost = true;
  }
  if (lost) throw connection_error("connection lost");
  co_return frame;
}

json Connection::checked(Frame reply) {
  if (auto code = error_code_of(reply)) {
    std::string message;
    if (auto err = reply.head.find("error"); err != reply.head.end() && err->is_object())
      message = err->value("message", "");
    throw server_error(*code, message.empty() ? "(no message)" : message);
  }
  reply.head.erase("id");
  reply.head.erase("ok");
  return std::move(reply.head);
}

awaitable<void> Connection::print_pushes(Client* client, const bool* print_chat) {
  for (;;) {
    Frame push = co_await client->next_push();
    const auto service = push.head.value("service", "");
    const auto event = push.head.value("event", "");
    if (service == "chat") {
      if (!*print_chat) continue;
      if (event == "message") {
        std::string where = push.head.value("pm", false)
                                ? "[pm] "
                                : "[" + push.head.value("room", "") + "] ";
        std::cout << where << push.head.value("from", "") << ": " << push.head.value("text", "")
                  << std::endl;
      } else if (event == "joined" || event == "left") {
        std::cout << "* " << push.head.value("nick", "") << " " << event << " "
                  << push.head.value("room", "") << std::endl;
      } else if (event == "dropped") {
        std::cout << "* dropped from chat: " << push.head.value("reason", "") << std::endl;
      }
    } else if (event == "shutdown") {
      std::cerr << "coserve-cli: the server closes the connection: "
                << push.head.value("reason", "") << std::endl;
    }
  }
}

}  // namespace coserve::cli
