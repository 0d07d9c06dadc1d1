#pragma once
// TLS for the framed protocol (OpenSSL through asio::ssl): the server's context built from the
// tls.* config keys, the client's context (a CA file or the system trust store) with SNI and
// host name checks, and one-line reasons for failed handshakes.
//
// Why TLS is a separate listener (listeners.framed_tls) and not a mode of listeners.framed:
// - no guessing from the first bytes. A server that sniffs "TLS or clear?" lets a client fall
//   back to clear text without anyone noticing; a port that only speaks TLS fails loudly.
// - the plain listener keeps serving local tools, scripts and `nc`-style debugging unchanged
//   (and loopback-only deployments pay nothing), while the TLS port can face the network.
// - a client says what it wants (`coserve-cli --tls`) and gets exactly that or an error.
// The framed protocol itself is the same on both (docs/protocol.md): TLS only wraps the bytes.
//
// Threading: a context is built once (server: at setup; client: per connect) and then only read;
// OpenSSL allows SSL objects of one SSL_CTX to be created and used on several threads. A
// TlsStream, like any socket, is used from its connection's executor only.
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>

#include "coserve/asio.hpp"
#include "coserve/config.hpp"

namespace coserve {

using TlsStream = asio::ssl::stream<asio::ip::tcp::socket>;

// What the framed_tls listener needs from the config.
struct TlsServerSettings {
  std::filesystem::path cert_file;  // PEM: the server certificate, then any intermediates
  std::filesystem::path key_file;   // PEM: its private key, unencrypted
  std::chrono::milliseconds handshake_timeout{10000};
};

// Reads tls.cert_file, tls.key_file (relative paths are under the data dir) and
// tls.handshake_timeout_ms. Throws ConfigError when a file is not set or the timeout is not
// positive.
TlsServerSettings tls_server_settings(const Config& config);

// A TLS 1.2+ server context (TLS 1.2 with ECDHE + AES-GCM or ChaCha20-Poly1305 only, as
// Mozilla's "intermediate" profile; no CBC, no SHA-1 MACs) with the certificate chain and key loaded and checked against each
// other. Throws BindError with one line naming the file and the reason (missing, unreadable,
// not PEM, encrypted key, key does not match the certificate).
std::shared_ptr<asio::ssl::context> make_server_tls_context(const TlsServerSettings& settings);

// Runs the handshake (`side` = server or client) with a deadline: a peer that connects and
// never speaks must not hold a connection slot, nor a silent server a client. Returns an empty
// string on success, else why it failed in one line (describe_tls_failure, or the timeout).
awaitable<std::string> tls_handshake(TlsStream& stream, asio::ssl::stream_base::handshake_type side,
                                     std::chrono::milliseconds timeout);

// A TLS 1.2+ client context (the server's cipher list) that verifies the server against the PEM certificates in `ca_file`,
// or the system's default trust store when `ca_file` is empty. Throws std::runtime_error with
// one line when the CA file cannot be loaded.
std::shared_ptr<asio::ssl::context> make_client_tls_context(const std::string& ca_file);

// Makes the client's handshake on `stream` send `host` as SNI (DNS names only, as RFC 6066 asks)
// and accept only a certificate issued for `host` (a DNS name or an IP address literal).
void expect_server_name(TlsStream& stream, const std::string& host);

// Why a handshake failed, in one line: "certificate verify failed (self-signed certificate)",
// "handshake failed: wrong version number", ...
std::string describe_tls_failure(TlsStream& stream, const error_code& ec);

}  // namespace coserve
