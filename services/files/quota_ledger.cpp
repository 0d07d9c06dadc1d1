#include "files/quota_ledger.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>

#include "coserve/error.hpp"
#include "jail/path_jail.hpp"
#include "files/tree_walk.hpp"

namespace coserve::files {

bool QuotaLedger::known(const std::string& user) const {
  std::lock_guard lock(mutex_);
  return entries_.contains(user);
}

void QuotaLedger::learn(const std::string& user, std::uint64_t used_on_disk,
                        std::uint64_t inodes) {
  std::lock_guard lock(mutex_);
  entries_.try_emplace(user, Entry{used_on_disk, 0, inodes});
}

void QuotaLedger::relearn(const std::string& user, DiskUsage on_disk) {
  std::lock_guard lock(mutex_);
  auto& e = entries_[user];
  e.used = on_disk.bytes;
  e.inodes = on_disk.inodes;
}

QuotaLedger::DiskUsage QuotaLedger::scan(const std::filesystem::path& home) {
  DiskUsage total;
  jail::UniqueFd root(::open(home.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) return total;  // no home yet: nothing stored
  // recursive_directory_iterator held a descriptor and the full path per level: a tree 24 000
  // levels deep took it to gigabytes. The walk holds neither.
  // A tree moved while walking it (busy) is walked again; a home that keeps changing under three
  // walks (a program running in it) is counted as the last walk found it.
  for (int attempt = 0;; ++attempt) {
    total = DiskUsage{};
    try {
      walk_tree(root.get(), [&](int, const char*, const struct stat& st, std::size_t) {
        ++total.inodes;
        if (S_ISREG(st.st_mode)) total.bytes += static_cast<std::uint64_t>(st.st_size);
        return WalkStep::next;
      });
      return total;
    } catch (const Error&) {
      if (attempt == 2) return total;
    }
  }
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

void QuotaLedger::forget_inodes_if_known(const std::string& user, std::uint64_t inodes) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(user);
  if (it == entries_.end()) return;
  it->second.inodes -= std::min(it->second.inodes, inodes);
}

bool QuotaLedger::take_inodes(const std::string& user, std::uint64_t n, std::uint64_t max) {
  std::lock_guard lock(mutex_);
  auto& e = entries_[user];
  if (max != 0 && (e.inodes > max || n > max - e.inodes)) return false;
  e.inodes += n;
  return true;
}

void QuotaLedger::drop_inodes(const std::string& user, std::uint64_t n) {
  std::lock_guard lock(mutex_);
  auto& e = entries_[user];
  e.inodes -= std::min(e.inodes, n);
}

QuotaLedger::Usage QuotaLedger::usage(const std::string& user, std::uint64_t limit) const {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(user);
  if (it == entries_.end()) return Usage{0, 0, limit, 0};
  return Usage{it->second.used, it->second.reserved, limit, it->second.inodes};
}

std::uint64_t QuotaLedger::remaining(const std::string& user, std::uint64_t limit) const {
  if (limit == 0) return kUnlimited;
  auto u = usage(user, limit);
  const std::uint64_t taken = u.used + u.reserved;
  return taken >= limit ? 0 : limit - taken;
}

}  // namespace coserve::files
