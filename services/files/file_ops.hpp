#pragma once
// The file operations of the files service on one user's Jail: plain blocking functions, so the
// service calls them through offload() on the blocking pool, and tests call them directly.
// Every path argument is a normalized virtual path (normalize() in path_jail.hpp). Failures a
// client causes throw coserve::Error.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "jail/path_jail.hpp"
#include "files/sha256.hpp"

namespace coserve::files {

struct EntryInfo {
  std::string name;
  std::string type;  // "file", "dir", "symlink", "other"
  std::uint64_t size = 0;
  std::int64_t mtime = 0;  // seconds since the epoch
};

// What an operation took off the disk, for the quota ledger.
struct Freed {
  std::uint64_t bytes = 0;   // of regular files (partial data and metadata included)
  std::uint64_t inodes = 0;  // entries of any type
};

// Counts the directories make_dir creates against the user's inode limit: take() before each
// mkdir (false refuses it with quota_exceeded), give_back() when that mkdir created nothing.
struct InodeBudget {
  std::function<bool()> take;
  std::function<void()> give_back;
};

// lstat-like: a symlink is reported as one, not followed.
EntryInfo stat_path(const jail::Jail& jail, const std::string& path);
// Entries sorted by name, hidden upload files left out; at most `max_entries` (then truncated).
std::vector<EntryInfo> list_dir(const jail::Jail& jail, const std::string& path, std::size_t max_entries,
                                bool& truncated);
// Throws not_found unless `path` is a directory (cd).
void require_directory(const jail::Jail& jail, const std::string& path);
// Returns the number of directories created.
std::uint64_t make_dir(const jail::Jail& jail, const std::string& path, bool parents,
                       const InodeBudget& budget = {});
// A file, a symlink, or an empty directory; a whole tree when `recursive`, walked iteratively
// with a bounded number of descriptors (tree_walk.hpp), so a tree of any depth goes. Returns
// what was removed (for the quota ledger).
Freed remove_path(const jail::Jail& jail, const std::string& path, bool recursive);
// Rename; refuses to replace an existing target unless `overwrite`. With `max_depth` (0: none),
// refuses with bad_request a move that would put anything deeper than `max_depth` components
// (a directory's subtree counts). Returns the replaced target.
Freed move_path(const jail::Jail& jail, const std::string& from, const std::string& to, bool overwrite,
                std::size_t max_depth = 0);

struct Digest {
  std::uint64_t size = 0;
  std::string sha256;
};
Digest hash_file(const jail::Jail& jail, const std::string& path);

// Reads a regular file in chunks for `get`, hashing everything from byte 0 so the final digest
// covers the whole file even when the download started at an offset. A file stored by `put`
// carries its verified digest in an extended attribute (kDigestXattr: "<sha256> <size>
// <mtime ns>"); while size and mtime still match, that digest is used and nothing is hashed.
class FileReader {
 public:
  // Opens the file and hashes [0, offset). Throws bad_request past the end or for non-files.
  FileReader(const jail::Jail& jail, const std::string& path, std::uint64_t offset);
  // The next chunk of at most `max_bytes`; empty at the end.
  std::string read(std::size_t max_bytes);
  // For sendfile instead of read(), only when digest_cached() (nothing to hash): moves past the
  // next chunk of at most `max_bytes` and returns its length (0 at the end), after reading it
  // into the page cache, so that the I/O thread's sendfile of it never waits for a disk.
  std::size_t prepare_slice(std::size_t max_bytes);
  std::uint64_t size() const noexcept { return size_; }
  std::uint64_t position() const noexcept { return position_; }
  int fd() const noexcept { return fd_.get(); }
  Digest finish();
  // True when the digest comes from the attribute a verified upload left (no hashing).
  bool digest_cached() const noexcept { return !cached_sha256_.empty(); }

 private:
  jail::UniqueFd fd_;
  std::uint64_t size_ = 0;
  std::uint64_t position_ = 0;
  std::string cached_sha256_;
  Sha256 sha_;
};

inline constexpr const char* kDigestXattr = "user.coserve.sha256";

// The partial files that uploads have open, by inode, so the sweep of abandoned partials never
// deletes one that an upload is using, and two uploads never share one (two paths can reach the
// same file through a symlinked directory). Thread-safe; the mutex is held only around
// open/fstat/unlink on the blocking pool, never on an I/O thread.
class ActivePartials {
 public:
  using Key = std::pair<dev_t, ino_t>;
  // openat(dir, name, flags, mode) and claims the file; throws busy if an upload has it.
  jail::UniqueFd open_claimed(int dir, const std::string& name, int flags, unsigned mode, Key& key,
                        const std::string& shown);
  void release(const Key& key);
  // Runs `step` (the unlink or rename that ends the claimed file's name) and drops the claim
  // under one lock: once the name is gone the inode number may be reused by the next partial,
  // which a claim still held would refuse as busy.
  template <class Step>
  void release_after(const Key& key, Step&& step) {
    std::lock_guard lock(mutex_);
    step();
    claimed_.erase(key);
  }
  struct Removal {
    bool removed = false;
    bool claimed = false;     // an upload has it: it stays
    std::uint64_t bytes = 0;  // of the removed regular file
  };
  // Unlinks `name` in `dir` (never following a symlink) unless an upload has it open or
  // `should_remove` says no. A missing file is neither removed nor claimed.
  Removal remove_unless_claimed(int dir, const std::string& name,
                                const std::function<bool(const struct stat&)>& should_remove);

 private:
  std::mutex mutex_;
  std::set<Key> claimed_;
};

// An upload in progress: a hidden partial file next to the target plus a small metadata file
// (target name, size, sha256), both written so that a dropped connection or a crashed server
// leaves something a later `put` of the same path, size and sha256 resumes from. The sha256 is
// empty for an upload whose client sends the digest at the end (docs/protocol.md, `put`): such a
// partial resumes for another digest-less put of the same path and size, and the digest at the
// end catches a partial that was of another file.
//
//   dir/.coserve-partial.<key>.data   the bytes received so far (counts against the quota)
//   dir/.coserve-partial.<key>.meta   {"name", "size", "sha256"} (does not)
//
// <key> is derived from the target name, so every name fits and each target has one partial.
class PartialUpload {
 public:
  // Opens the upload for `path`. Resumes when the metadata matches size and sha256, otherwise
  // replaces any old partial (its bytes, metadata included, are added to `freed`). Throws exists
  // when the target exists and !overwrite, bad_request when the target is a directory, busy when
  // another upload has the partial open. `active` (may be null in unit tests) records the partial as in use.
  PartialUpload(const jail::Jail& jail, const std::string& path, std::uint64_t size, std::string sha256,
                bool overwrite, std::uint64_t& freed, ActivePartials* active = nullptr);
  ~PartialUpload();
  PartialUpload(const PartialUpload&) = delete;
  PartialUpload& operator=(const PartialUpload&) = delete;

  std::uint64_t offset() const noexcept { return offset_; }
  std::uint64_t size() const noexcept { return size_; }
  bool resumed() const noexcept { return resumed_; }
  // Bytes of the regular file an overwrite will replace, as seen at open (0 if none).
  std::uint64_t replacing() const noexcept { return replacing_; }
  // Entries an old partial (data, metadata) left when this upload started over.
  std::uint64_t inodes_removed() const noexcept { return inodes_removed_; }
  // Bytes of the metadata file (it counts against the quota like the data).
  std::uint64_t meta_bytes() const noexcept { return meta_bytes_; }
  // Entries a fresh upload created: its data and metadata files (0 when resumed).
  std::uint64_t inodes_created() const noexcept { return resumed_ ? 0 : 2; }

  // Appends and hashes a chunk. Throws bad_request past the announced size.
  void write(std::string_view data);

  struct Result {
    bool verified = false;
    bool refused = false;  // may_replace said no: the target and the partial stay as they are
    std::string actual_sha256;
    // The replaced target and the metadata file, or the discarded partial and its metadata.
    std::uint64_t freed = 0;
    std::uint64_t inodes_freed = 0;
  };
  // All bytes are in: fsync, check the digest, then rename into place and fsync the directory.
  // On a mismatch the partial is deleted and the target left untouched. Just before the rename,
  // `may_replace` (if given) is asked with the size of the regular file about to be replaced
  // (0 if none); false keeps everything as it is (refused). The digest checked is the one given
  // at open, or else `sha256_at_end`.
  Result finish(const std::string& sha256_at_end = {},
                const std::function<bool(std::uint64_t replaced)>& may_replace = {});
  // Deletes the partial and its metadata (a fresh upload that was refused).
  Freed discard();

 private:
  jail::UniqueFd dir_;
  std::string leaf_;
  std::string partial_;
  std::string meta_;
  jail::UniqueFd fd_;
  std::uint64_t size_ = 0;
  std::uint64_t offset_ = 0;
  std::string sha256_;
  bool overwrite_ = false;
  bool resumed_ = false;
  std::uint64_t replacing_ = 0;
  std::uint64_t inodes_removed_ = 0;
  std::uint64_t meta_bytes_ = 0;
  std::uint64_t writeback_from_ = 0;  // bytes before this were handed to the disk already
  // Releases the claim on the partial when the upload ends, also when its constructor throws.
  struct Claim {
    ActivePartials* active = nullptr;
    ActivePartials::Key key{};
    Claim() = default;
    Claim(const Claim&) = delete;
    Claim& operator=(const Claim&) = delete;
    ~Claim() { reset(); }
    void reset() {
      if (active) active->release(key);
      active = nullptr;
    }
    // `step` ends the file's name; the claim goes with it (ActivePartials::release_after).
    template <class Step>
    void release_after(Step&& step) {
      if (!active) return step();
      auto* owner = std::exchange(active, nullptr);
      owner->release_after(key, std::forward<Step>(step));
    }
  };
  ActivePartials* active_ = nullptr;
  Claim claim_;
  Sha256 sha_;
};

// Hidden names of the upload files of `leaf` (tests look for them).
std::string partial_name_for(const std::string& leaf);

// BLOCKING. Deletes the abandoned uploads under `home`: partial data (with its metadata) not
// written for `ttl`, and stray metadata files as old, except what `active` has open. Walks by
// directory fds from the home without following any symlink. Returns what it deleted (partial
// data and metadata: they counted against the quota).
Freed sweep_partials(const std::string& home, std::chrono::seconds ttl,
                             ActivePartials& active);

}  // namespace coserve::files
