#pragma once
// Bytes and inodes each user stores, against their quota.
//
// Per user: `used` = bytes on disk in the home (every regular file: hidden partial uploads and
// their metadata included, so what `quota` reports is what the disk holds), `reserved` = bytes
// promised to uploads in progress and not yet written, and `inodes` = entries in the home
// (files, directories, symlinks, partials), against services.files.max_inodes. An upload
// reserves everything it may still write before its first byte moves (an overwrite too: the old
// file stays on disk until the new one is complete); as it writes, bytes move from reserved to
// used. The check and the reservation are one step under the mutex, so concurrent uploads of one
// user can never together exceed the quota: used + reserved <= limit holds whenever the service
// itself put bytes on disk.
//
// The ledger is the one owner of these numbers. Threading: every member is thread-safe and may
// be called from any thread (an I/O thread included); the mutex guards only in-memory
// arithmetic and is never held across a co_await. A user's usage is learned by scanning the
// home (scan(): blocking, on the blocking pool) and then kept up to date by the files service's
// own changes; whoever changes the home behind its back (the command service running a
// program) asks for a rescan (FilesService::rescan) so the figures follow the disk again.
#include <cstdint>
#include <filesystem>
#include <limits>
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
    std::uint64_t inodes = 0;
  };
  // What a scan found on disk.
  struct DiskUsage {
    std::uint64_t bytes = 0;   // of regular files
    std::uint64_t inodes = 0;  // entries of any type below the home
  };
  static constexpr std::uint64_t kUnlimited = std::numeric_limits<std::uint64_t>::max();

  // True once the user's usage is known.
  bool known(const std::string& user) const;
  // Records a scan result unless another scan was first (whose figure then stands, since
  // changes made after it were counted on top of it).
  void learn(const std::string& user, std::uint64_t used_on_disk, std::uint64_t inodes = 0);
  // Replaces what is on disk with a fresh scan's figures; reservations stay. Changes the files
  // service makes while the scan runs may be counted twice or not at all until the next scan.
  void relearn(const std::string& user, DiskUsage on_disk);
  // BLOCKING: bytes in regular files and the number of entries under `home`, not following
  // symlinks. Iterative with bounded descriptors (tree_walk.hpp): any depth is fine.
  static DiskUsage scan(const std::filesystem::path& home);

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
  void forget_inodes_if_known(const std::string& user, std::uint64_t inodes);

  // Counts `n` new entries if inodes + n <= max (max 0: always). False otherwise.
  bool take_inodes(const std::string& user, std::uint64_t n, std::uint64_t max);
  // Entries left the disk (or were not created after all).
  void drop_inodes(const std::string& user, std::uint64_t n);

  Usage usage(const std::string& user, std::uint64_t limit) const;
  // Bytes the user may still add: limit - used - reserved, 0 when over, kUnlimited when limit
  // is 0. A user not known yet counts as using nothing (learn first).
  std::uint64_t remaining(const std::string& user, std::uint64_t limit) const;

 private:
  struct Entry {
    std::uint64_t used = 0;
    std::uint64_t reserved = 0;
    std::uint64_t inodes = 0;
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
  // `bytes` were written: they move from reserved to used. The caller never writes more than
  // left() (put refuses such data before it reaches the disk).
  void commit(std::uint64_t bytes) {
    if (bytes > left_) {  // a bug if it happens: stay exact
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
