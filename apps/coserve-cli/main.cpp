// coserve-cli: the native client. Exit codes: 0 ok, 1 server error (its code printed),
// 2 usage, 3 connection failure.
#include <iostream>

#include <boost/asio/io_context.hpp>
#include <CLI/CLI.hpp>

#include "coserve/client.hpp"

namespace {

enum Exit { kOk = 0, kServerError = 1, kUsage = 2, kConnection = 3 };

struct Options {
  std::string host = "127.0.0.1";
  std::string port = "7070";
};

coserve::awaitable<int> run_request(Options options, coserve::json request, bool print_text) {
  coserve::Client client(co_await coserve::asio::this_coro::executor);
  try {
    co_await client.connect(options.host, options.port);
  } catch (const boost::system::system_error& e) {
    std::cerr << "coserve-cli: cannot connect to " << options.host << ":" << options.port << ": "
              << e.code().message() << "\n";
    co_return kConnection;
  }
  coserve::Frame reply;
  try {
    reply = co_await client.call(std::move(request));
  } catch (const boost::system::system_error& e) {
    std::cerr << "coserve-cli: connection lost: " << e.code().message() << "\n";
    co_return kConnection;
  }
  if (auto code = coserve::error_code_of(reply)) {
    std::cerr << "coserve-cli: error " << *code << ": "
              << reply.head["error"].value("message", "") << "\n";
    co_return kServerError;
  }
  if (print_text) {
    std::cout << reply.head.value("text", "") << "\n";
  } else {
    reply.head.erase("id");
    reply.head.erase("ok");
    std::cout << reply.head.dump(2) << "\n";
  }
  co_return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"coserve-cli: client for a coserve server"};
  Options options;
  app.add_option("--host", options.host, "Server host")->capture_default_str();
  app.add_option("--port", options.port, "Framed protocol port")->capture_default_str();
  app.require_subcommand(1);
  auto* hello = app.add_subcommand("hello", "Show the server's name, version and services");
  auto* echo = app.add_subcommand("echo", "Send TEXT to the echo service and print the reply");
  std::vector<std::string> words;
  echo->add_option("text", words, "Text to echo")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kOk : kUsage;
  }

  coserve::json request;
  bool print_text = false;
  if (*hello) {
    request = {{"service", "core"}, {"op", "hello"}};
  } else if (*echo) {
    std::string text;
    for (auto& w : words) text += (text.empty() ? "" : " ") + w;
    request = {{"service", "echo"}, {"op", "echo"}, {"text", text}};
    print_text = true;
  }
  boost::asio::io_context io;
  int exit_code = kConnection;
  coserve::asio::co_spawn(io, run_request(options, std::move(request), print_text),
                          [&](std::exception_ptr e, int code) {
                            if (e) {
                              try {
                                std::rethrow_exception(e);
                              } catch (const std::exception& ex) {
                                std::cerr << "coserve-cli: " << ex.what() << "\n";
                              }
                              exit_code = kConnection;
                            } else {
                              exit_code = code;
                            }
                          });
  io.run();
  return exit_code;
}
