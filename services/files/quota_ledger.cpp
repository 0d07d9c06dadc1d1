#include "files/quota_ledger.hpp"

#include <algorithm>

#include "files/path_jail.hpp"

namespace coserve::files {

bool QuotaLedger::known(const std::string& user) const {
  std::lock_guard lock(mutex_);
  return entries_.contains(user);
}

void QuotaLedger::learn(const std::string& user, std::uint64_t used_on_disk) {
  std::lock_guard lock(mutex_);
  entries_.try_emplace(user, Entry{used_on_disk, 0});
}

std::uint64_t QuotaLedger::scan(const std::filesystem::path& home) {
  namespace fs = std::filesystem;
  std::uint64_t total = 0;
  std::error_code ec;
  // recursive_directory_iterator does not follow directory symlinks by default.
  for (fs::recursive_directory_iterator it(home, fs::directory_options::skip_permission_denied, ec),
       end;
       !ec && it != end; it.increment(ec)) {
    std::error_code stat_ec;
    auto status = it->symlink_status(stat_ec);
    // An upload's metadata files are ours, not the user's; its partial data does count.
    auto name = it->path().filename().string();
    if (name.starts_with(kPartialPrefix) && !name.ends_with(kPartialDataSuffix)) continue;
    if (!stat_ec && fs::is_regular_file(status)) {
      auto size = it->file_size(stat_ec);
      if (!stat_ec) total += size;
    }
  }
  return total;
}

bool QuotaLedger::reserve(const std::string& user, std::uint64_t bytes, std::uint64_t limit) {
  std::lock_guard lock(mutex_);
  auto& e = entries_[user];
  if (limit != 0) {
    std::uint64_t taken = e.used + e.reserved;
    if (taken > limit || bytes > limit - taken) return false;
  }
  e.reserved += bytes;
  return true;
}

void QuotaLedger::release(const std::string& user, std::uint64_t bytes) {
  std::lock_guard lock(mutex_);
  auto& e = entries_[user];
  e.reserved -= std::min(e.reserved, bytes);
}

void QuotaLedger::commit(const std::string& user, std::uint64_t bytes) {
  std::lock_guard lock(mutex_);
  auto& e = entries_[user];
  bytes = std::min(e.reserved, bytes);
  e.reserved -= bytes;
  e.used += bytes;
}

void QuotaLedger::add_used(const std::string& user, std::uint64_t bytes) {
  std::lock_guard lock(mutex_);
  entries_[user].used += bytes;
}

void QuotaLedger::remove_used(const std::string& user, std::uint64_t bytes) {
  std::lock_guard lock(mutex_);
  auto& e = entries_[user];
  e.used -= std::min(e.used, bytes);
}

void QuotaLedger::forget_if_known(const std::string& user, std::uint64_t bytes) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(user);
  if (it == entries_.end()) return;
  it->second.used -= std::min(it->second.used, bytes);
}

bool QuotaLedger::fits_after_removing(const std::string& user, std::uint64_t removed,
                                      std::uint64_t limit) const {
  if (limit == 0) return true;
  std::lock_guard lock(mutex_);
  auto it = entries_.find(user);
  if (it == entries_.end()) return true;
  const auto& e = it->second;
  return e.used - std::min(e.used, removed) + e.reserved <= limit;
}

QuotaLedger::Usage QuotaLedger::usage(const std::string& user, std::uint64_t limit) const {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(user);
  if (it == entries_.end()) return Usage{0, 0, limit};
  return Usage{it->second.used, it->second.reserved, limit};
}

}  // namespace coserve::files
