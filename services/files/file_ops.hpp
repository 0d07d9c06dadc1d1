#pragma once
// The file operations of the files service on one user's Jail: plain blocking functions, so the
// service calls them through offload() on the blocking pool, and tests call them directly.
// Every path argument is a normalized virtual path (normalize() in path_jail.hpp). Failures a
// client causes throw coserve::Error.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "files/path_jail.hpp"
#include "files/sha256.hpp"

namespace coserve::files {

struct EntryInfo {
  std::string name;
  std::string type;  // "file", "dir", "symlink", "other"
  std::uint64_t size = 0;
  std::int64_t mtime = 0;  // seconds since the epoch
};

// lstat-like: a symlink is reported as one, not followed.
EntryInfo stat_path(const Jail& jail, const std::string& path);
// Entries sorted by name, hidden upload files left out; at most `max_entries` (then truncated).
std::vector<EntryInfo> list_dir(const Jail& jail, const std::string& path, std::size_t max_entries,
                                bool& truncated);
// Throws not_found unless `path` is a directory (cd).
void require_directory(const Jail& jail, const std::string& path);
void make_dir(const Jail& jail, const std::string& path, bool parents);
// A file, a symlink, or an empty directory; a whole tree when `recursive`. Returns the bytes of
// regular files removed (for the quota ledger).
std::uint64_t remove_path(const Jail& jail, const std::string& path, bool recursive);
// Rename; refuses to replace an existing target unless `overwrite`. Returns the bytes of a
// replaced regular file.
std::uint64_t move_path(const Jail& jail, const std::string& from, const std::string& to,
                        bool overwrite);

struct Digest {
  std::uint64_t size = 0;
  std::string sha256;
};
Digest hash_file(const Jail& jail, const std::string& path);

// Reads a regular file in chunks for `get`, hashing everything from byte 0 so the final digest
// covers the whole file even when the download started at an offset.
class FileReader {
 public:
  // Opens the file and hashes [0, offset). Throws bad_request past the end or for non-files.
  FileReader(const Jail& jail, const std::string& path, std::uint64_t offset);
  // The next chunk of at most `max_bytes`; empty at the end.
  std::string read(std::size_t max_bytes);
  std::uint64_t size() const noexcept { return size_; }
  std::uint64_t position() const noexcept { return position_; }
  Digest finish();

 private:
  UniqueFd fd_;
  std::uint64_t size_ = 0;
  std::uint64_t position_ = 0;
  Sha256 sha_;
};

// An upload in progress: a hidden partial file next to the target plus a small metadata file
// (target name, size, sha256), both written so that a dropped connection or a crashed server
// leaves something a later `put` of the same path, size and sha256 resumes from.
//
//   dir/.coserve-partial.<key>.data   the bytes received so far (counts against the quota)
//   dir/.coserve-partial.<key>.meta   {"name", "size", "sha256"} (does not)
//
// <key> is derived from the target name, so every name fits and each target has one partial.
class PartialUpload {
 public:
  // Opens the upload for `path`. Resumes when the metadata matches size and sha256, otherwise
  // replaces any old partial (its bytes are added to `freed`). Throws exists when the target
  // exists and !overwrite, bad_request when the target is a directory.
  PartialUpload(const Jail& jail, const std::string& path, std::uint64_t size, std::string sha256,
                bool overwrite, std::uint64_t& freed);
  ~PartialUpload();
  PartialUpload(const PartialUpload&) = delete;
  PartialUpload& operator=(const PartialUpload&) = delete;

  std::uint64_t offset() const noexcept { return offset_; }
  std::uint64_t size() const noexcept { return size_; }
  bool resumed() const noexcept { return resumed_; }

  // Appends and hashes a chunk. Throws bad_request past the announced size.
  void write(std::string_view data);

  struct Result {
    bool verified = false;
    std::string actual_sha256;
    std::uint64_t freed = 0;  // bytes of the replaced target, or of the discarded partial
  };
  // All bytes are in: fsync, check the digest, then rename into place and fsync the directory.
  // On a mismatch the partial is deleted and the target left untouched.
  Result finish();
  // Deletes the partial and its metadata (a fresh upload that was refused). Returns its bytes.
  std::uint64_t discard();

 private:
  UniqueFd dir_;
  std::string leaf_;
  std::string partial_;
  std::string meta_;
  UniqueFd fd_;
  std::uint64_t size_ = 0;
  std::uint64_t offset_ = 0;
  std::string sha256_;
  bool overwrite_ = false;
  bool resumed_ = false;
  Sha256 sha_;
};

// Hidden names of the upload files of `leaf` (tests look for them).
std::string partial_name_for(const std::string& leaf);

}  // namespace coserve::files
