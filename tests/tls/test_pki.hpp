#pragma once
// Certificates for the TLS tests, made at test time with OpenSSL's C API (no `openssl` binary
// needed): a CA, a server certificate it signs for "localhost" and 127.0.0.1, and a second,
// unrelated CA and key for the failure cases. EC P-256 keys: fast to generate.
#include <filesystem>

namespace coserve::tls_test {

struct TestPki {
  std::filesystem::path ca_cert;      // the CA that signed server_cert
  std::filesystem::path server_cert;  // CN=localhost, SAN DNS:localhost, IP:127.0.0.1
  std::filesystem::path server_key;   // unencrypted PEM
  std::filesystem::path other_ca_cert;  // a CA that signed nothing we use
  std::filesystem::path other_key;      // a key that matches no certificate here
};

// Writes the files into `dir` (ca.pem, server.pem, server.key, other-ca.pem, other.key).
TestPki make_test_pki(const std::filesystem::path& dir);

}  // namespace coserve::tls_test
