#include "files/file_ops.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "coserve/error.hpp"
#include "files/tree_walk.hpp"

namespace coserve::files {
namespace {

// Reads that hash go in slices small enough to stay in a core's cache between pread's copy and
// the hash: reading and hashing a cached file in 64 KiB slices cost 0.84 CPU s/GiB, in 256 KiB
// to 1 MiB pieces 1.17 (the hash alone is ~0.69; 2 vCPU EPYC, files in tmpfs).
constexpr std::size_t kSliceBytes = 64 * 1024;
constexpr std::size_t kReadChunk = 2 * kSliceBytes;  // the buffer of hash-only reads
// An upload starts the disk writing every this many bytes, so the final fsync waits only for
// the tail instead of for the whole file piled up in the page cache.
constexpr std::uint64_t kWritebackBytes = 8 * 1024 * 1024;

std::int64_t mtime_ns(const struct stat& st) {
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

// The digest a verified upload attached to `fd`, if size and mtime still say it is that file.
std::string cached_digest(int fd, const struct stat& st) {
  char value[160];
  auto n = ::fgetxattr(fd, kDigestXattr, value, sizeof value - 1);
  if (n <= 0) return {};
  value[n] = '\0';
  char hex[65];
  unsigned long long size = 0;
  long long mtime = 0;
  if (std::sscanf(value, "%64s %llu %lld", hex, &size, &mtime) != 3) return {};
  if (size != static_cast<unsigned long long>(st.st_size) || mtime != mtime_ns(st) ||
      !is_sha256_hex(hex))
    return {};
  return hex;
}

std::string type_of(mode_t mode) {
  if (S_ISREG(mode)) return "file";
  if (S_ISDIR(mode)) return "dir";
  if (S_ISLNK(mode)) return "symlink";
  return "other";
}

EntryInfo info_from(std::string name, const struct stat& st) {
  return EntryInfo{std::move(name), type_of(st.st_mode),
                   S_ISREG(st.st_mode) ? static_cast<std::uint64_t>(st.st_size) : 0,
                   static_cast<std::int64_t>(st.st_mtim.tv_sec)};
}

// fstatat without following a symlink in the last component; nullopt when it does not exist.
std::optional<struct stat> lstat_at(int dir, const std::string& name, const std::string& shown) {
  struct stat st {};
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return st;
  if (errno == ENOENT) return std::nullopt;
  jail::throw_errno(errno, shown);
}

void fsync_dir(int dir, const std::string& shown) {
  jail::UniqueFd fd(::openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd || ::fsync(fd.get()) != 0) jail::throw_errno(errno, shown);
}

void write_all_at(int fd, std::string_view data, std::uint64_t offset, const std::string& shown) {
  while (!data.empty()) {
    auto n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) jail::throw_errno(errno, shown);
    data.remove_prefix(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
}

// Reads up to `max` bytes at `offset` into `out`; fewer only at the end of the file. With
// `sha`, hashes what it read slice by slice (each slice still cached from the copy).
std::size_t read_into(int fd, char* out, std::size_t max, std::uint64_t offset, Sha256* sha,
                      const std::string& shown) {
  std::size_t got = 0;
  while (got < max) {
    const auto want = sha ? std::min(kSliceBytes, max - got) : max - got;
    auto n = ::pread(fd, out + got, want, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) jail::throw_errno(errno, shown);
    if (n == 0) break;
    if (sha) sha->update(std::string_view(out + got, static_cast<std::size_t>(n)));
    got += static_cast<std::size_t>(n);
  }
  return got;
}

std::string read_at(int fd, std::size_t max, std::uint64_t offset, const std::string& shown) {
  std::string out(max, '\0');
  out.resize(read_into(fd, out.data(), max, offset, nullptr, shown));
  return out;
}

// Hashes [0, length) of `fd` into `sha`, through one buffer that fits in the cache.
void hash_prefix(int fd, std::uint64_t length, Sha256& sha, const std::string& shown) {
  auto buffer = std::make_unique_for_overwrite<char[]>(kReadChunk);
  std::uint64_t done = 0;
  while (done < length) {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(kReadChunk, length - done));
    const auto got = read_into(fd, buffer.get(), want, done, &sha, shown);
    if (got == 0) throw Error(errc::internal, shown + ": file shrank while reading");
    done += got;
  }
}

// Removes `name` in `dir` and everything below it, never following a symlink. Iterative
// (walk_tree): a tree thousands of levels deep used to take a descriptor and a stack frame per
// level here, and ran the server out of both.
Freed remove_tree(int dir, const std::string& name, const std::string& shown) {
  Freed freed;
  auto st = lstat_at(dir, name, shown);
  if (!st) return freed;
  if (!S_ISDIR(st->st_mode)) {
    if (::unlinkat(dir, name.c_str(), 0) != 0) jail::throw_errno(errno, shown);
    return Freed{S_ISREG(st->st_mode) ? static_cast<std::uint64_t>(st->st_size) : 0, 1};
  }
  jail::UniqueFd root(::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!root) jail::throw_errno(errno, shown);
  walk_tree(
      root.get(),
      [&](int at, const char* child, const struct stat& cst, std::size_t) {
        if (S_ISDIR(cst.st_mode)) return WalkStep::next;  // emptied, then removed on leaving
        if (::unlinkat(at, child, 0) != 0) {
          if (errno == ENOENT) return WalkStep::next;
          jail::throw_errno(errno, shown);
        }
        if (S_ISREG(cst.st_mode)) freed.bytes += static_cast<std::uint64_t>(cst.st_size);
        ++freed.inodes;
        return WalkStep::next;
      },
      [&](int parent, const std::string& child) {
        if (::unlinkat(parent, child.c_str(), AT_REMOVEDIR) != 0) jail::throw_errno(errno, shown);
        ++freed.inodes;
      });
  root = jail::UniqueFd();
  if (::unlinkat(dir, name.c_str(), AT_REMOVEDIR) != 0) jail::throw_errno(errno, shown);
  ++freed.inodes;
  return freed;
}

// The depth of the deepest entry below the directory `dir`/`name` (0 for an empty one), or
// `stop_above` + 1 as soon as something is deeper than `stop_above`.
std::size_t tree_height(int dir, const std::string& name, std::size_t stop_above,
                        const std::string& shown) {
  jail::UniqueFd root(::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!root) jail::throw_errno(errno, shown);
  std::size_t height = 0;
  walk_tree(root.get(), [&](int, const char*, const struct stat&, std::size_t depth) {
    height = std::max(height, depth);
    return height > stop_above ? WalkStep::stop : WalkStep::next;
  });
  return height;
}

}  // namespace

std::string partial_name_for(const std::string& leaf) {
  return std::string(jail::kPartialPrefix) + sha256_hex(leaf).substr(0, 32) +
         std::string(jail::kPartialDataSuffix);
}

EntryInfo stat_path(const jail::Jail& jail, const std::string& path) {
  struct stat st {};
  if (path == "/") {
    if (::fstat(jail.home_fd(), &st) != 0) jail::throw_errno(errno, path);
    return info_from("/", st);
  }
  auto [dir, leaf] = jail.open_parent(path);
  auto found = lstat_at(dir.get(), leaf, path);
  if (!found) throw Error(errc::not_found, path + ": no such file or directory");
  return info_from(leaf, *found);
}

std::vector<EntryInfo> list_dir(const jail::Jail& jail, const std::string& path, std::size_t max_entries,
                                bool& truncated) {
  jail::UniqueFd fd = jail.open(path, O_RDONLY | O_DIRECTORY);
  DIR* listing = ::fdopendir(fd.get());
  if (!listing) jail::throw_errno(errno, path);
  fd.release();  // owned by `listing` now
  std::vector<EntryInfo> entries;
  while (auto* entry = ::readdir(listing)) {
    std::string name = entry->d_name;
    if (name == "." || name == ".." || jail::is_reserved_name(name)) continue;
    struct stat st {};
    if (::fstatat(::dirfd(listing), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    entries.push_back(info_from(std::move(name), st));
  }
  ::closedir(listing);
  std::sort(entries.begin(), entries.end(),
            [](const EntryInfo& a, const EntryInfo& b) { return a.name < b.name; });
  truncated = entries.size() > max_entries;
  if (truncated) entries.resize(max_entries);
  return entries;
}

void require_directory(const jail::Jail& jail, const std::string& path) {
  jail.open(path, O_PATH | O_DIRECTORY);
}

std::uint64_t make_dir(const jail::Jail& jail, const std::string& path, bool parents,
                       const InodeBudget& budget) {
  // One directory, counted against the inode limit first; false: it was there already.
  auto make_one = [&](int dir, const std::string& leaf, const std::string& shown) {
    if (budget.take && !budget.take())
      throw Error(errc::quota_exceeded,
                  shown + ": too many files and directories (services.files.max_inodes)");
    if (::mkdirat(dir, leaf.c_str(), 0755) == 0) return true;
    const int err = errno;
    if (budget.give_back) budget.give_back();
    if (err != EEXIST || !parents) jail::throw_errno(err, shown);
    return false;
  };
  if (path == "/") {
    if (parents) return 0;
    throw Error(errc::exists, "/: already exists");
  }
  if (!parents) {
    auto [dir, leaf] = jail.open_parent(path);
    make_one(dir.get(), leaf, path);
    return 1;
  }
  std::uint64_t created = 0;
  // Each prefix in turn: "/a", "/a/b", ...; an existing directory is fine, anything else is not.
  std::size_t next = 1;
  for (;;) {
    auto slash = path.find('/', next);
    std::string prefix = path.substr(0, slash);
    auto [dir, leaf] = jail.open_parent(prefix);
    // An existing prefix costs nothing: look before charging the inode limit for it.
    auto existing = lstat_at(dir.get(), leaf, prefix);
    if (!existing && make_one(dir.get(), leaf, prefix)) {
      ++created;
    } else {
      auto st = existing ? existing : lstat_at(dir.get(), leaf, prefix);
      if (st && !S_ISDIR(st->st_mode) && !S_ISLNK(st->st_mode))
        throw Error(errc::exists, prefix + ": exists and is not a directory");
      // A symlink is fine only where the jail lets us through it to a directory.
      if (st && S_ISLNK(st->st_mode)) jail.open(prefix, O_PATH | O_DIRECTORY);
    }
    if (slash == std::string::npos) return created;
    next = slash + 1;
  }
}

Freed remove_path(const jail::Jail& jail, const std::string& path, bool recursive) {
  auto [dir, leaf] = jail.open_parent(path);
  auto st = lstat_at(dir.get(), leaf, path);
  if (!st) throw Error(errc::not_found, path + ": no such file or directory");
  if (S_ISDIR(st->st_mode)) {
    if (recursive) return remove_tree(dir.get(), leaf, path);
    if (::unlinkat(dir.get(), leaf.c_str(), AT_REMOVEDIR) != 0) jail::throw_errno(errno, path);
    return Freed{0, 1};
  }
  if (::unlinkat(dir.get(), leaf.c_str(), 0) != 0) jail::throw_errno(errno, path);
  return Freed{S_ISREG(st->st_mode) ? static_cast<std::uint64_t>(st->st_size) : 0, 1};
}

Freed move_path(const jail::Jail& jail, const std::string& from, const std::string& to, bool overwrite,
                std::size_t max_depth) {
  auto [from_dir, from_leaf] = jail.open_parent(from);
  auto [to_dir, to_leaf] = jail.open_parent(to);
  auto source = lstat_at(from_dir.get(), from_leaf, from);
  if (!source) throw Error(errc::not_found, from + ": no such file or directory");
  if (max_depth != 0) {
    // A directory carries its subtree along: two trees at the limit, one moved into the other,
    // would double the depth with each mv.
    const std::size_t at = jail::depth_of(to);
    const std::size_t below =
        at > max_depth || !S_ISDIR(source->st_mode)
            ? 0
            : tree_height(from_dir.get(), from_leaf, max_depth - at, from);
    if (at + below > max_depth)
      throw Error(errc::bad_request, to + ": would be more than " + std::to_string(max_depth) +
                                         " levels deep (services.files.max_depth)");
  }
  Freed replaced;
  if (auto target = lstat_at(to_dir.get(), to_leaf, to)) {
    if (!overwrite) throw Error(errc::exists, to + ": already exists");
    if (S_ISREG(target->st_mode)) replaced.bytes = static_cast<std::uint64_t>(target->st_size);
    replaced.inodes = 1;
  }
  if (::renameat2(from_dir.get(), from_leaf.c_str(), to_dir.get(), to_leaf.c_str(),
                  overwrite ? 0 : RENAME_NOREPLACE) != 0)
    jail::throw_errno(errno, from + " → " + to);
  return from == to ? Freed{} : replaced;
}

Digest hash_file(const jail::Jail& jail, const std::string& path) {
  FileReader reader(jail, path, 0);
  if (!reader.digest_cached()) {
    // Hashing all of it: one buffer that fits in the cache, no string per chunk.
    Sha256 sha;
    auto buffer = std::make_unique_for_overwrite<char[]>(kReadChunk);
    std::uint64_t done = 0;
    while (done < reader.size()) {
      const auto want =
          static_cast<std::size_t>(std::min<std::uint64_t>(kReadChunk, reader.size() - done));
      const auto got = read_into(reader.fd(), buffer.get(), want, done, &sha, path);
      if (got == 0) break;  // shrank under us: the digest of what is there
      done += got;
    }
    return Digest{done, sha.hex_final()};
  }
  // The stored digest is of the whole file: its size, not the bytes read (none).
  return Digest{reader.size(), reader.finish().sha256};
}

FileReader::FileReader(const jail::Jail& jail, const std::string& path, std::uint64_t offset) {
  // O_NONBLOCK: opening a FIFO someone planted must not hang a pool thread.
  fd_ = jail.open(path, O_RDONLY | O_NONBLOCK);
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) jail::throw_errno(errno, path);
  if (!S_ISREG(st.st_mode)) throw Error(errc::bad_request, path + ": not a regular file");
  size_ = static_cast<std::uint64_t>(st.st_size);
  if (offset > size_) throw Error(errc::bad_request, "offset is past the end of the file");
  cached_sha256_ = cached_digest(fd_.get(), st);
  if (cached_sha256_.empty()) hash_prefix(fd_.get(), offset, sha_, path);
  position_ = offset;
}

std::string FileReader::read(std::size_t max_bytes) {
  // Stop at the size seen at open: the digest then describes exactly the bytes sent.
  auto want = static_cast<std::size_t>(std::min<std::uint64_t>(max_bytes, size_ - position_));
  if (want == 0) return {};
  std::string chunk(want, '\0');
  chunk.resize(
      read_into(fd_.get(), chunk.data(), want, position_, cached_sha256_.empty() ? &sha_ : nullptr,
                "file"));
  position_ += chunk.size();
  if (chunk.size() < want) size_ = position_;  // the file shrank under us
  return chunk;
}

std::size_t FileReader::prepare_slice(std::size_t max_bytes) {
  const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(max_bytes, size_ - position_));
  if (want == 0) return 0;
  // MAP_POPULATE faults every page in, from the disk if need be, without copying anything out.
  // Should it fail, sendfile reads the disk itself: slower for other sessions, still correct.
  static const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t start = position_ - position_ % page;
  const auto length = static_cast<std::size_t>(position_ + want - start);
  void* mapped = ::mmap(nullptr, length, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd_.get(),
                        static_cast<off_t>(start));
  if (mapped != MAP_FAILED) ::munmap(mapped, length);
  position_ += want;
  return want;
}

Digest FileReader::finish() {
  // A file changed under a cached digest no longer matches it; the client's check catches that.
  return Digest{position_, cached_sha256_.empty() ? sha_.hex_final() : cached_sha256_};
}

// --- PartialUpload ----------------------------------------------------------------------------

PartialUpload::PartialUpload(const jail::Jail& jail, const std::string& path, std::uint64_t size,
                             std::string sha256, bool overwrite, std::uint64_t& freed,
                             ActivePartials* active)
    : size_(size), sha256_(std::move(sha256)), overwrite_(overwrite), active_(active) {
  std::tie(dir_, leaf_) = jail.open_parent(path);
  partial_ = partial_name_for(leaf_);
  meta_ = partial_.substr(0, partial_.size() - jail::kPartialDataSuffix.size()) + ".meta";
  if (auto target = lstat_at(dir_.get(), leaf_, path)) {
    if (S_ISDIR(target->st_mode)) throw Error(errc::bad_request, path + ": is a directory");
    if (!overwrite_) throw Error(errc::exists, path + ": already exists");
    if (S_ISREG(target->st_mode)) replacing_ = static_cast<std::uint64_t>(target->st_size);
  }

  // Opens (and, with an ActivePartials, claims) the partial data file.
  auto open_partial = [&](int flags, unsigned mode) {
    if (!active_) return jail::UniqueFd(::openat(dir_.get(), partial_.c_str(), flags, mode));
    claim_.reset();
    jail::UniqueFd fd = active_->open_claimed(dir_.get(), partial_, flags, mode, claim_.key, path);
    if (fd) claim_.active = active_;
    return fd;
  };

  // Resume only when the metadata names the same file (name, size, digest) and the partial is
  // not longer than the announced size.
  bool matches = false;
  if (jail::UniqueFd meta{::openat(dir_.get(), meta_.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC)}) {
    std::string text = read_at(meta.get(), 4096, 0, path);
    meta_bytes_ = text.size();
    auto doc = nlohmann::json::parse(text, nullptr, false);
    matches = doc.is_object() && doc.value("name", "") == leaf_ &&
              doc.value("size", std::uint64_t{0}) == size_ && doc.value("sha256", "") == sha256_;
  }
  if (matches) {
    fd_ = open_partial(O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
    struct stat st {};
    if (fd_ && ::fstat(fd_.get(), &st) == 0 && S_ISREG(st.st_mode) &&
        static_cast<std::uint64_t>(st.st_size) <= size_) {
      offset_ = static_cast<std::uint64_t>(st.st_size);
      hash_prefix(fd_.get(), offset_, sha_, path);
      resumed_ = true;
      return;
    }
    fd_ = jail::UniqueFd();
    claim_.reset();
  }

  // A fresh start: drop whatever partial was there (another file's, or a torn one), unless an
  // upload through another path to the same directory still writes it.
  if (active_) {
    auto old = active_->remove_unless_claimed(dir_.get(), partial_,
                                              [](const struct stat&) { return true; });
    if (old.claimed) throw Error(errc::busy, path + ": another upload to this file is in progress");
    freed += old.bytes;
    if (old.removed) ++inodes_removed_;
  } else if (auto old = lstat_at(dir_.get(), partial_, path)) {
    if (S_ISREG(old->st_mode)) freed += static_cast<std::uint64_t>(old->st_size);
    if (::unlinkat(dir_.get(), partial_.c_str(), 0) == 0)
      ++inodes_removed_;
    else if (errno != ENOENT)
      jail::throw_errno(errno, path);
  }
  if (auto old_meta = lstat_at(dir_.get(), meta_, path);
      old_meta && ::unlinkat(dir_.get(), meta_.c_str(), 0) == 0) {
    if (S_ISREG(old_meta->st_mode)) freed += static_cast<std::uint64_t>(old_meta->st_size);
    ++inodes_removed_;
  }
  fd_ = open_partial(O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (!fd_) jail::throw_errno(errno, path);

  // The metadata goes in durably (temp + fsync + rename) so a crash never leaves a half one.
  std::string tmp = meta_ + ".tmp";
  std::string text =
      nlohmann::json{{"name", leaf_}, {"size", size_}, {"sha256", sha256_}}.dump() + "\n";
  {
    jail::UniqueFd out(::openat(dir_.get(), tmp.c_str(),
                          O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (!out) jail::throw_errno(errno, path);
    write_all_at(out.get(), text, 0, path);
    if (::fsync(out.get()) != 0) jail::throw_errno(errno, path);
  }
  if (::renameat(dir_.get(), tmp.c_str(), dir_.get(), meta_.c_str()) != 0) jail::throw_errno(errno, path);
  meta_bytes_ = text.size();
  fsync_dir(dir_.get(), path);
}

PartialUpload::~PartialUpload() = default;  // claim_ releases the partial

void PartialUpload::write(std::string_view data) {
  if (data.size() > size_ - offset_)
    throw Error(errc::bad_request, "more data than the announced size");
  // Whole chunks: slicing them, or hashing on a second pool thread, was measured no faster.
  write_all_at(fd_.get(), data, offset_, leaf_);
  sha_.update(data);
  offset_ += data.size();
  if (offset_ - writeback_from_ >= kWritebackBytes) {
    // Starts writeback without waiting for it; errors surface at the final fsync.
    ::sync_file_range(fd_.get(), static_cast<off_t>(writeback_from_),
                      static_cast<off_t>(offset_ - writeback_from_), SYNC_FILE_RANGE_WRITE);
    writeback_from_ = offset_;
  }
}

PartialUpload::Result PartialUpload::finish(
    const std::string& sha256_at_end,
    const std::function<bool(std::uint64_t replaced)>& may_replace) {
  Result result;
  const std::string& expected = sha256_.empty() ? sha256_at_end : sha256_;
  if (::fsync(fd_.get()) != 0) jail::throw_errno(errno, leaf_);
  result.actual_sha256 = sha_.hex_final();
  if (expected.empty() || result.actual_sha256 != expected) {
    auto gone = discard();
    result.freed = gone.bytes;
    result.inodes_freed = gone.inodes;
    return result;
  }
  std::uint64_t replaced = 0;
  std::uint64_t replaced_inodes = 0;
  if (overwrite_) {
    if (auto target = lstat_at(dir_.get(), leaf_, leaf_)) {
      if (S_ISREG(target->st_mode)) replaced = static_cast<std::uint64_t>(target->st_size);
      replaced_inodes = 1;
    }
  }
  // The target may have changed since open (an mv or rm of the user's own): the caller checks
  // the quota against what is actually replaced now.
  if (may_replace && !may_replace(replaced)) {
    result.refused = true;
    return result;
  }
  // The metadata file goes too (below).
  result.freed = replaced + meta_bytes_;
  result.inodes_freed = replaced_inodes + 1;
  // The verified digest travels with the file (rename keeps attributes), so `get` and `hash`
  // need not hash it again. Best effort: a file system without user xattrs just hashes.
  struct stat st {};
  if (::fstat(fd_.get(), &st) == 0) {
    std::string value = expected + " " + std::to_string(st.st_size) + " " +
                        std::to_string(mtime_ns(st));
    ::fsetxattr(fd_.get(), kDigestXattr, value.data(), value.size(), 0);
  }
  int rename_error = 0;
  claim_.release_after([&] {
    if (::renameat2(dir_.get(), partial_.c_str(), dir_.get(), leaf_.c_str(),
                    overwrite_ ? 0 : RENAME_NOREPLACE) != 0)
      rename_error = errno;
  });
  if (rename_error != 0) jail::throw_errno(rename_error, leaf_);
  // The metadata goes after the rename: a crash in between leaves a stray metadata file, which
  // a later put ignores because no partial goes with it.
  ::unlinkat(dir_.get(), meta_.c_str(), 0);
  fsync_dir(dir_.get(), leaf_);
  result.verified = true;
  return result;
}

Freed PartialUpload::discard() {
  Freed gone;
  struct stat st {};
  const std::uint64_t bytes =
      fd_ && ::fstat(fd_.get(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  claim_.release_after([&] {
    if (::unlinkat(dir_.get(), partial_.c_str(), 0) == 0) gone = Freed{bytes, 1};
  });
  if (::unlinkat(dir_.get(), meta_.c_str(), 0) == 0) {
    gone.bytes += meta_bytes_;
    ++gone.inodes;
  }
  fd_ = jail::UniqueFd();
  return gone;
}

// --- ActivePartials and the sweep of abandoned uploads ------------------------------------------

jail::UniqueFd ActivePartials::open_claimed(int dir, const std::string& name, int flags, unsigned mode,
                                      Key& key, const std::string& shown) {
  std::lock_guard lock(mutex_);
  jail::UniqueFd fd(::openat(dir, name.c_str(), flags, mode));
  if (!fd) return fd;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) jail::throw_errno(errno, shown);
  Key k{st.st_dev, st.st_ino};
  if (!claimed_.insert(k).second)
    throw Error(errc::busy, shown + ": another upload to this file is in progress");
  key = k;
  return fd;
}

void ActivePartials::release(const Key& key) {
  std::lock_guard lock(mutex_);
  claimed_.erase(key);
}

ActivePartials::Removal ActivePartials::remove_unless_claimed(
    int dir, const std::string& name, const std::function<bool(const struct stat&)>& should_remove) {
  Removal out;
  std::lock_guard lock(mutex_);
  struct stat st {};
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return out;
  if (claimed_.contains(Key{st.st_dev, st.st_ino})) {
    out.claimed = true;
    return out;
  }
  if (!should_remove(st)) return out;
  if (::unlinkat(dir, name.c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) != 0) return out;
  out.removed = true;
  if (S_ISREG(st.st_mode)) out.bytes = static_cast<std::uint64_t>(st.st_size);
  return out;
}

namespace {

// Directories nested deeper than this are not swept (each level holds a descriptor open).
constexpr int kMaxSweepDepth = 128;

struct Sweep {
  std::time_t cutoff = 0;  // mtime at or before this: abandoned
  ActivePartials& active;
  Freed freed;
};

// Unlinks `name` in `dir` if it is a regular file; counts it in `freed`.
void unlink_counted(int dir, const std::string& name, Freed& freed) {
  struct stat st {};
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) return;
  if (::unlinkat(dir, name.c_str(), 0) != 0) return;
  freed.bytes += static_cast<std::uint64_t>(st.st_size);
  ++freed.inodes;
}

bool abandoned(const struct stat& st, std::time_t cutoff) {
  return S_ISREG(st.st_mode) && st.st_mtim.tv_sec <= cutoff;
}

// `dir` is owned here (closed on return).
void sweep_dir(int dir, Sweep& sweep, int depth) {
  DIR* listing = ::fdopendir(dir);
  if (!listing) {
    ::close(dir);
    return;
  }
  std::vector<std::string> names;
  while (auto* entry = ::readdir(listing)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  const int fd = ::dirfd(listing);
  for (const auto& name : names) {
    if (name.starts_with(jail::kPartialPrefix)) {
      if (name.ends_with(jail::kPartialDataSuffix)) {
        auto gone = sweep.active.remove_unless_claimed(
            fd, name, [&](const struct stat& st) { return abandoned(st, sweep.cutoff); });
        if (gone.removed) {
          sweep.freed.bytes += gone.bytes;
          ++sweep.freed.inodes;
          std::string meta = name.substr(0, name.size() - jail::kPartialDataSuffix.size()) + ".meta";
          unlink_counted(fd, meta, sweep.freed);
          unlink_counted(fd, meta + ".tmp", sweep.freed);
        }
      } else if (auto dot = name.find(".meta"); dot != std::string::npos) {
        // Metadata whose data is gone (a crash between the two): old enough, it goes too.
        std::string data = name.substr(0, dot) + std::string(jail::kPartialDataSuffix);
        struct stat st {};
        if (::fstatat(fd, data.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT &&
            ::fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            abandoned(st, sweep.cutoff))
          unlink_counted(fd, name, sweep.freed);
      }
      continue;
    }
    if (depth >= kMaxSweepDepth) continue;
    struct stat st {};
    if (::fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
      continue;
    int child = ::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (child >= 0) sweep_dir(child, sweep, depth + 1);
  }
  ::closedir(listing);
}

}  // namespace

Freed sweep_partials(const std::string& home, std::chrono::seconds ttl, ActivePartials& active) {
  int dir = ::open(home.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return Freed{};  // no home yet: nothing to sweep
  Sweep sweep{std::time(nullptr) - static_cast<std::time_t>(ttl.count()), active, Freed{}};
  sweep_dir(dir, sweep, 0);
  return sweep.freed;
}

}  // namespace coserve::files
