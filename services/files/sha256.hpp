#pragma once
// Incremental SHA-256 (OpenSSL EVP). Not thread-safe; BLOCKING in the sense that hashing a large
// buffer takes time, so the files service calls it on the blocking pool.
#include <memory>
#include <string>
#include <string_view>

namespace coserve::files {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  void update(std::string_view data);
  // Lower-case hex of the digest; the object cannot be updated afterwards.
  std::string hex_final();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

std::string sha256_hex(std::string_view data);
// A 64-digit lower-case hex string.
bool is_sha256_hex(std::string_view text);

}  // namespace coserve::files
