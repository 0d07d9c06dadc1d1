// The framed protocol over TLS (listeners.framed_tls), through the real server binary: the
// client library and coserve-cli with a CA made at test time, certificate and name checks,
// clients that speak clear text or nothing, shutdown, and the server refusing bad key material.
#include <catch2/catch.hpp>

#include <signal.h>
#include <stdlib.h>

#include <algorithm>
#include <fstream>
#include <random>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include <openssl/ssl.h>

#include "coserve/client.hpp"
#include "net/tls.hpp"
#include "test_pki.hpp"
#include "test_support.hpp"

using namespace coserve;
using namespace std::chrono_literals;
using asio::ip::tcp;
namespace fs = std::filesystem;

namespace {

constexpr const char* kPassword = "secret";

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string random_bytes(std::size_t n) {
  std::mt19937 gen(7);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(gen());
  return s;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A data dir with user alice and the test PKI under tls/, and the real server with framed_tls
// on. The certificate paths are given relative, so they must resolve under the data dir.
class TlsServer {
 public:
  explicit TlsServer(std::vector<std::string> extra_args = {}) {
    fs::create_directories(dir_.path() / "tls");
    pki_ = tls_test::make_test_pki(dir_.path() / "tls");
    auto added = test::run_program({test::binary("coserve").string(), "user", "add", "alice",
                                    "--data-dir", dir_.path().string(), "--password-stdin"},
                                   std::string(kPassword) + "\n");
    if (added.status != 0) throw std::runtime_error("user add failed: " + added.err);
    std::vector<std::string> args = {"--set", "listeners.framed_tls=127.0.0.1:0",
                                     "--set", "tls.cert_file=tls/server.pem",
                                     "--set", "tls.key_file=tls/server.key",
                                     "--set", "server.log_level=debug"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    server_.emplace(std::move(args), dir_.path());
  }

  test::ServerProcess& server() { return *server_; }
  const tls_test::TestPki& pki() const { return pki_; }
  std::string tls_port() const { return server_->port("framed_tls"); }
  std::string plain_port() const { return server_->port("framed"); }
  TlsOptions options() const {
    TlsOptions options;
    options.ca_file = pki_.ca_cert.string();
    return options;
  }

  // coserve-cli --port <TLS port> --tls --ca-file ca.pem [--user alice --password-stdin] args
  test::ProgramResult cli(std::vector<std::string> args, bool login = false) const {
    std::vector<std::string> argv = {test::binary("coserve-cli").string(), "--port", tls_port(),
                                     "--tls", "--ca-file", pki_.ca_cert.string()};
    if (login) argv.insert(argv.end(), {"--user", "alice", "--password-stdin"});
    argv.insert(argv.end(), args.begin(), args.end());
    return test::run_program(argv, login ? std::string(kPassword) + "\n" : "");
  }

 private:
  test::TempDir dir_;
  tls_test::TestPki pki_;
  std::optional<test::ServerProcess> server_;
};

// Connects with TLS; "" when it worked, else the TlsError's message.
awaitable<std::string> tls_failure(const std::string& host, const std::string& port,
                                   const TlsOptions& options) {
  Client client(co_await asio::this_coro::executor);
  std::string failure;
  try {
    co_await client.connect_tls(host, port, options);
  } catch (const TlsError& e) {
    failure = e.what();
  }
  co_return failure;
}

// Reads from `socket` until it fails; how long that took, or nullopt if `limit` came first.
awaitable<std::optional<std::chrono::milliseconds>> time_until_closed(
    tcp::socket& socket, std::chrono::milliseconds limit) {
  using namespace asio::experimental::awaitable_operators;
  auto start = std::chrono::steady_clock::now();
  asio::steady_timer timer(socket.get_executor());
  timer.expires_after(limit);
  char byte[256];
  std::optional<std::chrono::milliseconds> took;
  for (;;) {
    auto read = socket.async_read_some(asio::buffer(byte), use_nothrow);
    auto expiry = timer.async_wait(use_nothrow);
    auto first = co_await (std::move(read) || std::move(expiry));
    if (first.index() == 1) break;
    auto [ec, n] = std::get<0>(first);
    if (ec) {
      took = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - start);
      break;
    }
  }
  co_return took;
}

// Plain arguments for a server that must not get as far as binding anything.
std::vector<std::string> refused_start_args(const fs::path& data_dir) {
  return {"--data-dir", data_dir.string(),
          "--set", "listeners.framed=127.0.0.1:0",
          "--set", "listeners.http=127.0.0.1:0",
          "--set", "listeners.echo_tcp=127.0.0.1:0",
          "--set", "listeners.echo_udp=127.0.0.1:0",
          "--set", "listeners.chat_line=127.0.0.1:0",
          "--set", "listeners.framed_tls=127.0.0.1:0"};
}

std::size_t line_count(const std::string& text) {
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

}  // namespace

TEST_CASE("tls: hello and echo over TLS with the client library", "[tls]") {
  TlsServer server;
  auto bound = server.server().bound();
  REQUIRE(bound.contains("framed_tls"));
  CHECK(contains(bound["framed_tls"].get<std::string>(), "127.0.0.1:"));
  CHECK(bound.contains("framed"));  // the plain listener is unaffected

  test::run([&]() -> awaitable<void> {
    // A DNS name (SNI + name check) and an IP address (checked against the IP SAN).
    std::vector<std::string> hosts = {"localhost", "127.0.0.1"};
    const auto port = server.tls_port();
    const auto options = server.options();
    for (const auto& host : hosts) {
      Client client(co_await asio::this_coro::executor);
      co_await client.connect_tls(host, port, options);
      json hello = {{"service", "core"}, {"op", "hello"}};
      auto reply = co_await client.call(hello);
      CHECK(reply.head.value("ok", false));
      CHECK(reply.head.value("server", "") == "coserve");
      // Several TLS records each way, and frames split across them.
      auto body = random_bytes(700 * 1024);
      json echo = {{"service", "echo"}, {"op", "echo"}, {"text", "über TLS"}};
      auto echoed = co_await client.call(echo, body);
      CHECK(echoed.head.value("ok", false));
      CHECK(echoed.head.value("text", "") == "über TLS");
      CHECK(echoed.body == body);
    }
  }());
  // The session's transport kind is "tls" (its open line at debug level names it).
  CHECK(contains(server.server().log(), "(tls 127.0.0.1:"));
}

TEST_CASE("tls: the client refuses a server it cannot verify", "[tls]") {
  TlsServer server;
  test::run([&]() -> awaitable<void> {
    // Arguments are named: g++ 12 mishandles temporaries in a co_await full-expression.
    const auto port = server.tls_port();
    const std::string ip = "127.0.0.1", name = "localhost";

    TlsOptions other_ca;
    other_ca.ca_file = server.pki().other_ca_cert.string();
    auto wrong_ca = co_await tls_failure(ip, port, other_ca);
    CHECK(contains(wrong_ca, "TLS: certificate verify failed ("));

    // The system's trust store does not know the test CA either.
    TlsOptions system_default;
    auto system_store = co_await tls_failure(ip, port, system_default);
    CHECK(contains(system_store, "TLS: certificate verify failed ("));

    auto other_name = server.options();
    other_name.server_name = "coserve.invalid";
    auto wrong_name = co_await tls_failure(ip, port, other_name);
    CHECK(contains(wrong_name, "TLS: certificate verify failed (hostname mismatch)"));

    TlsOptions missing_ca;
    missing_ca.ca_file = "/nonexistent/ca.pem";
    auto no_file = co_await tls_failure(ip, port, missing_ca);
    CHECK(contains(no_file, "cannot read CA file '/nonexistent/ca.pem': No such file"));

    // The server shrugs all of that off.
    const auto good = server.options();
    auto fine = co_await tls_failure(name, port, good);
    CHECK(fine.empty());
  }());
  CHECK(server.server().running());
}

TEST_CASE("tls: coserve-cli --tls --ca-file: hello, put and get, wrong CA exits 3", "[tls][cli]") {
  TlsServer server;
  auto hello = server.cli({"hello"});
  CHECK(hello.status == 0);
  CHECK(contains(hello.out, "\"server\""));
  CHECK(hello.err.empty());

  test::TempDir local;
  auto original = local.path() / "data.bin";
  std::ofstream(original, std::ios::binary) << random_bytes(3 * 1024 * 1024 + 17);
  auto put = server.cli({"-q", "put", original.string(), "/data.bin"}, true);
  INFO(put.err);
  CHECK(put.status == 0);
  auto fetched = local.path() / "fetched.bin";
  auto get = server.cli({"-q", "get", "/data.bin", fetched.string()}, true);
  INFO(get.err);
  CHECK(get.status == 0);
  CHECK(read_file(fetched) == read_file(original));

  auto cli = test::binary("coserve-cli").string();
  // --ca-file alone means TLS; --host localhost is checked as a DNS name.
  auto implied = test::run_program({cli, "--host", "localhost", "--port", server.tls_port(),
                                    "--ca-file", server.pki().ca_cert.string(), "hello"});
  CHECK(implied.status == 0);

  auto wrong = test::run_program({cli, "--port", server.tls_port(), "--tls", "--ca-file",
                                  server.pki().other_ca_cert.string(), "hello"});
  CHECK(wrong.status == 3);
  CHECK(contains(wrong.err, "coserve-cli: cannot connect to 127.0.0.1:" + server.tls_port() +
                                ": TLS: certificate verify failed ("));
  CHECK(line_count(wrong.err) == 1);

  // COSERVE_CA_FILE names the CA when --tls has no --ca-file.
  ::setenv("COSERVE_CA_FILE", server.pki().ca_cert.string().c_str(), 1);
  auto from_env = test::run_program({cli, "--port", server.tls_port(), "--tls", "hello"});
  auto plain_with_env = test::run_program({cli, "--port", server.plain_port(), "hello"});
  ::unsetenv("COSERVE_CA_FILE");
  CHECK(from_env.status == 0);
  CHECK(plain_with_env.status == 0);  // the variable alone does not turn TLS on
}

TEST_CASE("tls: the shell's open follows --tls and takes --tls/--no-tls/--ca-file", "[tls][cli]") {
  TlsServer server;
  auto cli = test::binary("coserve-cli").string();
  std::string script = "open 127.0.0.1:" + server.tls_port() + "\n" +  // TLS from the command line
                       "echo one\n" +
                       "open --no-tls 127.0.0.1:" + server.plain_port() + "\n" +
                       "echo two\n" +
                       "open --ca-file " + server.pki().ca_cert.string() + " localhost:" +
                       server.tls_port() + "\n" +
                       "echo three\n";
  auto result = test::run_program({cli, "--port", server.tls_port(), "--tls", "--ca-file",
                                   server.pki().ca_cert.string(), "shell"},
                                  script);
  INFO(result.err);
  CHECK(result.status == 0);
  CHECK(contains(result.out, "connected to 127.0.0.1:" + server.tls_port() + " (TLS)\none\n"));
  CHECK(contains(result.out, "connected to 127.0.0.1:" + server.plain_port() + "\ntwo\n"));
  CHECK(contains(result.out, "connected to localhost:" + server.tls_port() + " (TLS)\nthree\n"));
}

TEST_CASE("tls: clear text on the TLS port is closed, TLS on the plain port fails clearly",
          "[tls]") {
  TlsServer server;
  test::run([&]() -> awaitable<void> {
    const std::string ip = "127.0.0.1";
    const auto tls_port = server.tls_port(), plain_port = server.plain_port();
    const auto options = server.options();
    Client plain(co_await asio::this_coro::executor);
    co_await plain.connect(ip, tls_port);
    json ping = {{"service", "core"}, {"op", "ping"}};
    bool closed = false;
    try {
      (void)co_await plain.call(ping);
    } catch (const boost::system::system_error&) {
      closed = true;
    }
    CHECK(closed);

    auto on_plain_port = co_await tls_failure(ip, plain_port, options);
    CHECK(contains(on_plain_port, "TLS: handshake failed: "));

    // Still serving TLS.
    Client secure(co_await asio::this_coro::executor);
    co_await secure.connect_tls(ip, tls_port, options);
    auto pong = co_await secure.call(ping);
    CHECK(pong.head.value("ok", false));
  }());

  auto cli = test::binary("coserve-cli").string();
  auto no_tls = test::run_program({cli, "--port", server.tls_port(), "hello"});
  CHECK(no_tls.status == 3);
  auto tls_on_plain = test::run_program({cli, "--port", server.plain_port(), "--tls",
                                         "--ca-file", server.pki().ca_cert.string(), "hello"});
  CHECK(tls_on_plain.status == 3);
  CHECK(contains(tls_on_plain.err, ": TLS: handshake failed: "));
  CHECK(line_count(tls_on_plain.err) == 1);
  auto refused = test::run_program({cli, "--port", "1", "--tls", "hello"});
  CHECK(refused.status == 3);
  CHECK(contains(refused.err, "coserve-cli: cannot connect to 127.0.0.1:1 with TLS: "));
  CHECK(server.server().running());
}

TEST_CASE("tls: a client that never handshakes is closed after tls.handshake_timeout_ms",
          "[tls]") {
  // One connection slot in all: the silent client holds it only until its handshake deadline.
  TlsServer server({"--set", "tls.handshake_timeout_ms=1000", "--set", "access.max_connections=1"});
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"),
                           static_cast<unsigned short>(std::stoi(server.tls_port())));
    tcp::socket silent(ex);
    co_await silent.async_connect(endpoint, use_awaitable);
    tcp::socket second(ex);
    co_await second.async_connect(endpoint, use_awaitable);
    auto refused_after = co_await time_until_closed(second, 5000ms);
    REQUIRE(refused_after);
    CHECK(*refused_after < 900ms);  // refused at once: the silent client holds the only slot

    auto closed_after = co_await time_until_closed(silent, 10000ms);
    REQUIRE(closed_after);
    CHECK(*closed_after >= 800ms);

    // The slot is free again (released right after the close; allow for that moment).
    const std::string ip = "127.0.0.1";
    const auto port = server.tls_port();
    const auto options = server.options();
    std::string failure = "never tried";
    for (int attempt = 0; attempt < 50 && !failure.empty(); ++attempt) {
      failure = co_await tls_failure(ip, port, options);
      if (!failure.empty()) co_await test::sleep_for(50ms);
    }
    CHECK(failure.empty());
  }());
  CHECK(contains(server.server().log(), "no TLS handshake within 1000 ms"));
}

TEST_CASE("tls: shutdown reaches TLS sessions and connections still handshaking", "[tls]") {
  // Long grace and handshake deadlines: only the shutdown itself can end things quickly.
  TlsServer server({"--set", "server.shutdown_grace_ms=30000", "--set",
                    "tls.handshake_timeout_ms=30000"});
  test::run([&]() -> awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    Client client(ex);
    const std::string ip = "127.0.0.1";
    const auto port = server.tls_port();
    const auto options = server.options();
    co_await client.connect_tls(ip, port, options);
    json ping = {{"service", "core"}, {"op", "ping"}};
    (void)co_await client.call(ping);
    tcp::socket silent(ex);
    tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"),
                           static_cast<unsigned short>(std::stoi(server.tls_port())));
    co_await silent.async_connect(endpoint, use_awaitable);
    co_await test::sleep_for(200ms);  // accepted and handshaking

    ::kill(server.server().pid(), SIGTERM);
    auto push = co_await client.next_push();
    CHECK(push.head.value("event", "") == "shutdown");
    auto silent_closed = co_await time_until_closed(silent, 10000ms);
    CHECK(silent_closed.has_value());
  }());
  CHECK(server.server().wait(10s) == 0);
}

TEST_CASE("tls: the server refuses to start without usable key material", "[tls]") {
  test::TempDir dir;
  auto pki = tls_test::make_test_pki(dir.path());
  auto args = refused_start_args(dir.path() / "data");
  auto with = [&](std::vector<std::string> more) {
    auto all = args;
    all.insert(all.end(), more.begin(), more.end());
    return all;
  };
  std::string err;

  SECTION("a missing key file") {
    auto missing = (dir.path() / "missing.key").string();
    CHECK(test::run_binary(with({"--set", "tls.cert_file=" + pki.server_cert.string(), "--set",
                                 "tls.key_file=" + missing}),
                           &err) == 1);
    CHECK(err == "coserve: listener 'framed_tls': tls.key_file '" + missing +
                     "' cannot be read: No such file or directory\n");
  }
  SECTION("a relative path is under the data dir") {
    CHECK(test::run_binary(with({"--set", "tls.cert_file=" + pki.server_cert.string(), "--set",
                                 "tls.key_file=server.key"}),
                           &err) == 1);
    CHECK(contains(err, "tls.key_file '" + (dir.path() / "data" / "server.key").string() + "'"));
    CHECK(line_count(err) == 1);
  }
  SECTION("a key that does not belong to the certificate") {
    CHECK(test::run_binary(with({"--set", "tls.cert_file=" + pki.server_cert.string(), "--set",
                                 "tls.key_file=" + pki.other_key.string()}),
                           &err) == 1);
    CHECK(contains(err, "does not match the certificate in tls.cert_file"));
    CHECK(line_count(err) == 1);
  }
  SECTION("a certificate file that holds no certificate") {
    CHECK(test::run_binary(with({"--set", "tls.cert_file=" + pki.server_key.string(), "--set",
                                 "tls.key_file=" + pki.server_key.string()}),
                           &err) == 1);
    CHECK(contains(err, "holds no usable PEM certificate"));
    CHECK(line_count(err) == 1);
  }
  SECTION("no key file configured") {
    CHECK(test::run_binary(with({"--set", "tls.cert_file=" + pki.server_cert.string()}), &err) ==
          2);
    CHECK(err == "coserve: listeners.framed_tls is set, so tls.key_file must name a PEM file\n");
  }
  SECTION("framed_tls off: no certificate needed") {
    test::ServerProcess plain;
    CHECK_FALSE(plain.bound().contains("framed_tls"));
  }
}

namespace {

// A bare TLS 1.2 client that offers only `ciphers` (OpenSSL names) and checks no certificate:
// what a client stuck on old suites would send. Returns the suite the server chose, or "" when
// the handshake failed.
awaitable<std::string> negotiated_tls12_cipher(const std::string& port, const char* ciphers) {
  asio::ssl::context context(asio::ssl::context::tls_client);
  SSL_CTX* ctx = context.native_handle();
  REQUIRE(SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1);
  REQUIRE(SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION) == 1);
  REQUIRE(SSL_CTX_set_cipher_list(ctx, ciphers) == 1);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  TlsStream stream(co_await asio::this_coro::executor, context);
  co_await stream.next_layer().async_connect(
      {asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(std::stoi(port))},
      use_awaitable);
  auto failure = co_await tls_handshake(stream, asio::ssl::stream_base::client, 5s);
  if (!failure.empty()) co_return std::string();
  co_return std::string(SSL_get_cipher_name(stream.native_handle()));
}

}  // namespace

TEST_CASE("tls: TLS 1.2 takes ECDHE with AES-GCM or ChaCha20 only, never CBC with SHA-1",
          "[tls]") {
  TlsServer server;
  test::run([&]() -> awaitable<void> {
    const auto port = server.tls_port();
    // The test certificate has an EC key: the ECDSA suites are the ones it could serve.
    auto cbc = co_await negotiated_tls12_cipher(port, "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA");
    CHECK(cbc == "");
    auto cbc_sha2 = co_await negotiated_tls12_cipher(
        port, "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384");
    CHECK(cbc_sha2 == "");
    // The same client with a modern suite gets through: the refusal above is the suite's.
    auto gcm = co_await negotiated_tls12_cipher(port, "ECDHE-ECDSA-AES128-GCM-SHA256");
    CHECK(gcm == "ECDHE-ECDSA-AES128-GCM-SHA256");
    auto chacha = co_await negotiated_tls12_cipher(port, "ECDHE-ECDSA-CHACHA20-POLY1305");
    CHECK(chacha == "ECDHE-ECDSA-CHACHA20-POLY1305");
  }());
  CHECK(server.server().running());
}
