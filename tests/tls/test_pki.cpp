#include "test_pki.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

namespace coserve::tls_test {
namespace {

struct KeyFree {
  void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
};
struct CertFree {
  void operator()(X509* p) const noexcept { X509_free(p); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
using Cert = std::unique_ptr<X509, CertFree>;

[[noreturn]] void fail(const std::string& what) {
  char reason[256] = "no OpenSSL error queued";
  if (auto code = ERR_get_error()) ERR_error_string_n(code, reason, sizeof reason);
  throw std::runtime_error("test PKI: " + what + ": " + reason);
}

Key make_key() {
  Key key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) fail("EC key generation");
  return key;
}

void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (!ext) fail(std::string("extension ") + value);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// A certificate for `key` named `common_name`, signed by `issuer`/`issuer_key` (itself when
// both are null: a self-signed CA).
Cert make_cert(EVP_PKEY* key, const char* common_name, long serial, X509* issuer,
               EVP_PKEY* issuer_key, bool is_ca, const char* subject_alt_names = nullptr) {
  Cert cert(X509_new());
  if (!cert) fail("X509_new");
  X509_set_version(cert.get(), 2);  // v3, for the extensions
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 7L * 24 * 3600);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("coserve tests"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name), -1, -1, 0);
  X509* signer = issuer ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  add_extension(cert.get(), signer, NID_subject_key_identifier, "hash");
  if (is_ca) {
    add_extension(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE");
    add_extension(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_extension(cert.get(), signer, NID_authority_key_identifier, "keyid:always");
    add_extension(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
    add_extension(cert.get(), signer, NID_key_usage, "critical,digitalSignature");
    add_extension(cert.get(), signer, NID_ext_key_usage, "serverAuth");
    if (subject_alt_names)
      add_extension(cert.get(), signer, NID_subject_alt_name, subject_alt_names);
  }
  if (X509_sign(cert.get(), issuer_key ? issuer_key : key, EVP_sha256()) == 0)
    fail(std::string("signing ") + common_name);
  return cert;
}

struct FileCloser {
  void operator()(FILE* f) const noexcept { std::fclose(f); }
};

std::unique_ptr<FILE, FileCloser> open_for_writing(const std::filesystem::path& path) {
  std::unique_ptr<FILE, FileCloser> file(std::fopen(path.c_str(), "w"));
  if (!file) throw std::runtime_error("test PKI: cannot write " + path.string());
  return file;
}

void write_cert(const std::filesystem::path& path, X509* cert) {
  auto file = open_for_writing(path);
  if (PEM_write_X509(file.get(), cert) != 1) fail("writing " + path.string());
}

void write_key(const std::filesystem::path& path, EVP_PKEY* key) {
  auto file = open_for_writing(path);
  if (PEM_write_PrivateKey(file.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    fail("writing " + path.string());
}

}  // namespace

TestPki make_test_pki(const std::filesystem::path& dir) {
  TestPki pki{dir / "ca.pem", dir / "server.pem", dir / "server.key", dir / "other-ca.pem",
              dir / "other.key"};
  auto ca_key = make_key();
  auto ca = make_cert(ca_key.get(), "coserve test CA", 1, nullptr, nullptr, true);
  auto server_key = make_key();
  auto server = make_cert(server_key.get(), "localhost", 2, ca.get(), ca_key.get(), false,
                          "DNS:localhost,IP:127.0.0.1");
  auto other_key = make_key();
  auto other_ca = make_cert(other_key.get(), "another CA", 3, nullptr, nullptr, true);
  write_cert(pki.ca_cert, ca.get());
  write_cert(pki.server_cert, server.get());
  write_key(pki.server_key, server_key.get());
  write_cert(pki.other_ca_cert, other_ca.get());
  write_key(pki.other_key, other_key.get());
  return pki;
}

}  // namespace coserve::tls_test
