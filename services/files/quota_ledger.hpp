#pragma once
// Bytes each user stores, against their quota.
//
// Per user: `used` = bytes on disk in the home (every regular file, hidden partial uploads
// included, so a partial counts exactly once), and `reserved` = bytes promised to uploads in
// progress and not yet written. An upload reserves what it still has to write before its first
// byte moves; as it writes, bytes move from reserved to used. The check and the reservation are
// one step under the mutex, so concurrent uploads of one user can never together exceed the
// quota.
//
// The ledger is the one owner of these numbers. Threading: every member is thread-safe; the
// mutex guards only in-memory arithmetic. A user's usage is learned once by scanning the home
// (blocking, on the blocking pool) and then kept up to date by the files service's own changes.
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace coserve::files {

class QuotaLedger {
 public:
  struct Usage {
    std::uint64_t used = 0;
    std::uint64_t reserved = 0;
    std::uint64_t limit = 0;  // 0 = no limit
  };

  // True once the user's usage is known.
  bool known(const std::string& user) const;
  // Records a scan result unless another scan was first (whose figure then stands, since
  // changes made after it were counted on top of it).
  void learn(const std::string& user, std::uint64_t used_on_disk);
  // BLOCKING: bytes in regular files under `home`, not following symlinks.
  static std::uint64_t scan(const std::filesystem::path& home);

  // Reserves `bytes` if used + reserved + bytes <= limit (limit 0: always). False otherwise.
  bool reserve(const std::string& user, std::uint64_t bytes, std::uint64_t limit);
  // Gives back an unused reservation.
  void release(const std::string& user, std::uint64_t bytes);
  // `bytes` of a reservation were written to disk.
  void commit(const std::string& user, std::uint64_t bytes);
  // Bytes appeared on disk without a reservation (never refused) or left it.
  void add_used(const std::string& user, std::uint64_t bytes);
  void remove_used(const std::string& user, std::uint64_t bytes);
  // remove_used for bytes that left the disk behind the service's back (the sweep of abandoned
  // uploads): a user whose usage is not known yet will count the disk as it is when scanned.
  void forget_if_known(const std::string& user, std::uint64_t bytes);
  // True if used - `removed` + reserved <= limit (limit 0: always): an overwrite about to
  // replace `removed` bytes leaves the user within their quota.
  bool fits_after_removing(const std::string& user, std::uint64_t removed,
                           std::uint64_t limit) const;

  Usage usage(const std::string& user, std::uint64_t limit) const;

 private:
  struct Entry {
    std::uint64_t used = 0;
    std::uint64_t reserved = 0;
  };
  mutable std::mutex mutex_;
  std::map<std::string, Entry, std::less<>> entries_;
};

// Releases what is left of a reservation when it goes out of scope (an upload that failed or
// was dropped), so no early return can leak reserved bytes.
class Reservation {
 public:
  Reservation() = default;
  Reservation(QuotaLedger& ledger, std::string user, std::uint64_t bytes)
      : ledger_(&ledger), user_(std::move(user)), left_(bytes) {}
  Reservation(Reservation&& other) noexcept
      : ledger_(std::exchange(other.ledger_, nullptr)),
        user_(std::move(other.user_)),
        left_(std::exchange(other.left_, 0)) {}
  Reservation& operator=(Reservation&&) = delete;
  ~Reservation() {
    if (ledger_ && left_) ledger_->release(user_, left_);
  }
  // `bytes` were written: they move from reserved to used.
  void commit(std::uint64_t bytes) {
    if (bytes > left_) {  // never written beyond the reservation, but stay exact if so
      ledger_->add_used(user_, bytes - left_);
      bytes = left_;
    }
    ledger_->commit(user_, bytes);
    left_ -= bytes;
  }
  std::uint64_t left() const noexcept { return left_; }

 private:
  QuotaLedger* ledger_ = nullptr;
  std::string user_;
  std::uint64_t left_ = 0;
};

}  // namespace coserve::files
