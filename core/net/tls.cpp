#include "net/tls.hpp"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>

#include "coserve/listeners.hpp"

namespace coserve {
namespace {

// The most specific reason OpenSSL queued for the last failure, and an empty queue after it
// (a stale error would be blamed on the next, unrelated call on this thread).
std::string openssl_reason() {
  unsigned long code = ERR_peek_last_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  const char* reason = ERR_reason_error_string(code);
  return reason ? reason : "OpenSSL error " + std::to_string(code);
}

// A missing or unreadable file gets the system's reason, which OpenSSL's "system lib" hides.
std::string unreadable_reason(const std::filesystem::path& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::strerror(errno);
  ::close(fd);
  return {};
}

std::string describe_file(const char* key, const std::filesystem::path& file) {
  return std::string(key) + " '" + file.string() + "'";
}

[[noreturn]] void fail_setup(const std::string& message) {
  throw BindError("listener 'framed_tls': " + message);
}

// TLS 1.2 suites: Mozilla's "intermediate" profile without DHE: forward secrecy (ECDHE) and
// AEAD ciphers only. OpenSSL's defaults also offer CBC with SHA-1 MACs (e.g.
// ECDHE-RSA-AES128-SHA), open to padding-oracle attacks (Lucky13). TLS 1.3 suites are all
// AEAD and stay OpenSSL's defaults.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// Refuses every passphrase prompt: a server must never block on the terminal asking for one.
int no_passphrase(char*, int, int, void*) { return 0; }

struct BioCloser {
  void operator()(BIO* bio) const noexcept { BIO_free(bio); }
};
struct KeyFreer {
  void operator()(EVP_PKEY* key) const noexcept { EVP_PKEY_free(key); }
};

}  // namespace

TlsServerSettings tls_server_settings(const Config& config) {
  auto file = [&](const char* key) {
    auto value = config.get<std::string>(key);
    if (value.empty())
      throw ConfigError(std::string("listeners.framed_tls is set, so ") + key +
                        " must name a PEM file");
    std::filesystem::path path(value);
    return path.is_relative() ? config.data_dir / path : path;
  };
  TlsServerSettings settings;
  settings.cert_file = file("tls.cert_file");
  settings.key_file = file("tls.key_file");
  auto timeout = config.get<std::int64_t>("tls.handshake_timeout_ms");
  if (timeout <= 0) throw ConfigError("tls.handshake_timeout_ms must be positive");
  settings.handshake_timeout = std::chrono::milliseconds(timeout);
  return settings;
}

std::shared_ptr<asio::ssl::context> make_server_tls_context(const TlsServerSettings& settings) {
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  SSL_CTX* ctx = context->native_handle();
  ERR_clear_error();
  // TLS 1.0 and 1.1 are deprecated (RFC 8996).
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
    fail_setup("cannot require TLS 1.2: " + openssl_reason());
  if (SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) != 1)
    fail_setup("cannot set the TLS 1.2 cipher list: " + openssl_reason());
  SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);

  const auto cert = describe_file("tls.cert_file", settings.cert_file);
  if (auto why = unreadable_reason(settings.cert_file); !why.empty())
    fail_setup(cert + " cannot be read: " + why);
  if (SSL_CTX_use_certificate_chain_file(ctx, settings.cert_file.c_str()) != 1)
    fail_setup(cert + " holds no usable PEM certificate: " + openssl_reason());

  // The key is parsed on its own first so "not a key" and "not this certificate's key" get
  // different messages.
  const auto key = describe_file("tls.key_file", settings.key_file);
  if (auto why = unreadable_reason(settings.key_file); !why.empty())
    fail_setup(key + " cannot be read: " + why);
  std::unique_ptr<BIO, BioCloser> bio(BIO_new_file(settings.key_file.c_str(), "r"));
  if (!bio) fail_setup(key + " cannot be read: " + openssl_reason());
  std::unique_ptr<EVP_PKEY, KeyFreer> pkey(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
  if (!pkey)
    fail_setup(key + " holds no unencrypted PEM private key: " + openssl_reason());
  if (SSL_CTX_use_PrivateKey(ctx, pkey.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    fail_setup(key + " does not match the certificate in " + cert);
  }
  return context;
}

awaitable<std::string> tls_handshake(TlsStream& stream, asio::ssl::stream_base::handshake_type side,
                                     std::chrono::milliseconds timeout) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer deadline(stream.get_executor());
  deadline.expires_after(timeout);
  // Named first: g++ 12 mishandles temporaries made in a co_await full-expression.
  auto handshake = stream.async_handshake(side, use_nothrow);
  auto expiry = deadline.async_wait(use_nothrow);
  // The loser is cancelled (asio::ssl operations support per-operation cancellation).
  auto first = co_await (std::move(handshake) || std::move(expiry));
  if (first.index() == 1)
    co_return "no TLS handshake within " + std::to_string(timeout.count()) + " ms";
  auto [ec] = std::get<0>(first);
  if (ec) co_return describe_tls_failure(stream, ec);
  co_return std::string();
}

std::shared_ptr<asio::ssl::context> make_client_tls_context(const std::string& ca_file) {
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  SSL_CTX* ctx = context->native_handle();
  ERR_clear_error();
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
    throw std::runtime_error("cannot require TLS 1.2: " + openssl_reason());
  if (SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) != 1)
    throw std::runtime_error("cannot set the TLS 1.2 cipher list: " + openssl_reason());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (ca_file.empty()) {
    // A system without a trust store fails verification later, with a clear reason.
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) ERR_clear_error();
    return context;
  }
  if (auto why = unreadable_reason(ca_file); !why.empty())
    throw std::runtime_error("cannot read CA file '" + ca_file + "': " + why);
  if (SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr) != 1)
    throw std::runtime_error("CA file '" + ca_file + "' holds no PEM certificate: " +
                             openssl_reason());
  return context;
}

void expect_server_name(TlsStream& stream, const std::string& host) {
  SSL* ssl = stream.native_handle();
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  error_code not_an_address;
  (void)asio::ip::make_address(host, not_an_address);
  bool ok;
  if (!not_an_address) {
    ok = X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) == 1;
  } else {
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    ok = SSL_set_tlsext_host_name(ssl, host.c_str()) == 1 && SSL_set1_host(ssl, host.c_str()) == 1;
  }
  if (!ok) {
    ERR_clear_error();
    throw std::runtime_error("cannot check the server's certificate for host '" + host + "'");
  }
}

std::string describe_tls_failure(TlsStream& stream, const error_code& ec) {
  long verify = SSL_get_verify_result(stream.native_handle());
  if (verify != X509_V_OK)
    return std::string("certificate verify failed (") + X509_verify_cert_error_string(verify) + ")";
  if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated ||
      ec == asio::error::connection_reset)
    return "handshake failed: the peer closed the connection";
  if (ec == asio::error::operation_aborted) return "handshake cancelled";
  return "handshake failed: " + ec.message();
}

}  // namespace coserve
