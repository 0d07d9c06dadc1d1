#pragma once
// Keeps every path a client names inside one home directory: the one jail of the services that
// act on a user's files (files, and command's working directory), and the one owning fd type.
//
// Two steps. normalize() works on text only: it joins the client's path to the session's
// virtual cwd (the user's "/" is their home, as a chrooted sftp shows it), folds "." and "..",
// and refuses what no file name may hold (NUL bytes, ".." above "/", over-long names, our own
// hidden partial files). Then Jail opens the normalized path relative to a directory fd of the
// home with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS): the kernel refuses any symlink
// that leads out. Where openat2 is missing (ENOSYS, old kernels or seccomp profiles) the checked
// fallback walks one component at a time with O_NOFOLLOW, refusing every symlink.
//
// Threading: plain blocking system calls; call from the blocking pool. A Jail is immutable
// after construction and may be shared between threads.
#include <string>
#include <string_view>
#include <utility>

namespace coserve::jail {

// An owned file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  ~UniqueFd();
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }
  explicit operator bool() const noexcept { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Names of the hidden files the files service's uploads keep next to their target. Never listed,
// never addressable through any service.
inline constexpr std::string_view kPartialPrefix = ".coserve-partial.";
inline constexpr std::string_view kPartialDataSuffix =
    ".data";  // the bytes; ".meta" describes them
bool is_reserved_name(std::string_view name);

inline constexpr std::size_t kMaxPathLength = 4096;
inline constexpr std::size_t kMaxNameLength = 255;

// Joins `path` to `cwd` (itself normalized, starting with "/") and returns the normalized
// virtual path: "/" or "/a/b". Throws coserve::Error: bad_request for NUL bytes and over-long
// paths or names, forbidden for ".." above "/" and for reserved names.
std::string normalize(std::string_view cwd, std::string_view path);

// Components of a normalized virtual path: "/" is 0 levels deep, "/a/b" 2.
std::size_t depth_of(std::string_view virtual_path);

// "/a/b" → {"/a", "b"}; "/" has no parent (forbidden: the home itself cannot be replaced).
std::pair<std::string, std::string> split_parent(const std::string& virtual_path);

class Jail {
 public:
  enum class Mode { automatic, fallback };
  // Opens the home directory (creating it if missing). Throws std::system_error.
  explicit Jail(const std::string& home, Mode mode = Mode::automatic);

  // Opens a normalized virtual path ("/" is the home itself) with open(2) flags; O_NOFOLLOW
  // applies to the last component only. Throws coserve::Error (not_found, forbidden, ...).
  UniqueFd open(const std::string& virtual_path, int flags, unsigned mode = 0) const;
  // The directory holding `virtual_path`, opened O_DIRECTORY, and the last component, for the
  // *at() calls (mkdirat, unlinkat, renameat2) that never follow a symlink in the last part.
  std::pair<UniqueFd, std::string> open_parent(const std::string& virtual_path) const;

  int home_fd() const noexcept { return home_.get(); }
  // False when forced to the fallback or once the kernel said ENOSYS (process-wide).
  bool uses_openat2() const noexcept;

 private:
  UniqueFd open_relative(const std::string& relative, int flags, unsigned mode) const;
  UniqueFd open_walking(const std::string& relative, int flags, unsigned mode) const;
  UniqueFd home_;
  Mode mode_;
};

// Throws coserve::Error for errno values a client causes (ENOENT → not_found, EXDEV/ELOOP →
// forbidden, ...) and std::system_error for the rest (an `internal` error).
[[noreturn]] void throw_errno(int err, std::string_view what);

}  // namespace coserve::jail
