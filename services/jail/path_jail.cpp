#include "jail/path_jail.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <system_error>
#include <vector>

#include "coserve/error.hpp"

namespace coserve::jail {
namespace {

// Set once openat2 returned ENOSYS: the kernel (or a seccomp profile) will not change its mind.
std::atomic<bool> openat2_missing{false};

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

bool is_reserved_name(std::string_view name) { return name.starts_with(kPartialPrefix); }

void throw_errno(int err, std::string_view what) {
  std::string message = std::string(what) + ": " + std::generic_category().message(err);
  switch (err) {
    case ENOENT:
      throw Error(errc::not_found, std::string(what) + ": no such file or directory");
    case ENOTDIR:
      throw Error(errc::not_found, std::string(what) + ": not a directory");
    case EEXIST:
      throw Error(errc::exists, std::string(what) + ": already exists");
    case ENOTEMPTY:
      throw Error(errc::not_empty, std::string(what) + ": directory not empty");
    // EXDEV: RESOLVE_BENEATH refused an escape; ELOOP: a symlink where none may be.
    case EXDEV:
    case ELOOP:
    case EACCES:
    case EPERM:
    case EAGAIN:  // openat2 RESOLVE_CACHED-style refusals and the like
      throw Error(errc::forbidden, std::string(what) + ": not allowed");
    case EISDIR:
      throw Error(errc::bad_request, std::string(what) + ": is a directory");
    case ENAMETOOLONG:
      throw Error(errc::bad_request, std::string(what) + ": name too long");
    case EINVAL:
      throw Error(errc::bad_request, message);
    case EBUSY:
      throw Error(errc::busy, message);
    case ENOSPC:
    case EDQUOT:
      throw Error(errc::quota_exceeded, std::string(what) + ": no space left");
    case EFBIG:
      throw Error(errc::too_large, message);
    default:
      throw std::system_error(err, std::generic_category(), std::string(what));
  }
}

std::string normalize(std::string_view cwd, std::string_view path) {
  if (path.size() > kMaxPathLength) throw Error(errc::bad_request, "path too long");
  if (path.find('\0') != std::string_view::npos)
    throw Error(errc::bad_request, "path contains a NUL byte");
  std::vector<std::string_view> parts;
  auto take = [&](std::string_view text) {
    std::size_t start = 0;
    while (start <= text.size()) {
      auto slash = text.find('/', start);
      auto part = text.substr(start, slash == std::string_view::npos ? text.npos : slash - start);
      if (part.empty() || part == ".") {
        // "a//b", "./a": nothing to do
      } else if (part == "..") {
        if (parts.empty()) throw Error(errc::forbidden, "path leads above the home directory");
        parts.pop_back();
      } else {
        if (part.size() > kMaxNameLength) throw Error(errc::bad_request, "file name too long");
        if (is_reserved_name(part)) throw Error(errc::forbidden, "reserved file name");
        parts.push_back(part);
      }
      if (slash == std::string_view::npos) break;
      start = slash + 1;
    }
  };
  if (!path.starts_with('/')) take(cwd);
  take(path);
  std::string out;
  for (auto part : parts) {
    out += '/';
    out += part;
  }
  if (out.empty()) out = "/";
  if (out.size() > kMaxPathLength) throw Error(errc::bad_request, "path too long");
  return out;
}

std::size_t depth_of(std::string_view virtual_path) {
  std::size_t depth = 0;
  for (std::size_t i = 0; i < virtual_path.size(); ++i)
    if (virtual_path[i] == '/' && i + 1 < virtual_path.size()) ++depth;
  return depth;
}

std::pair<std::string, std::string> split_parent(const std::string& virtual_path) {
  if (virtual_path == "/") throw Error(errc::forbidden, "not allowed on the home directory itself");
  auto slash = virtual_path.rfind('/');
  std::string parent = slash == 0 ? "/" : virtual_path.substr(0, slash);
  return {parent, virtual_path.substr(slash + 1)};
}

Jail::Jail(const std::string& home, Mode mode) : mode_(mode) {
  std::error_code ec;
  std::filesystem::create_directories(home, ec);
  int fd = ::open(home.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open home " + home);
  home_ = UniqueFd(fd);
}

bool Jail::uses_openat2() const noexcept {
  return mode_ == Mode::automatic && !openat2_missing.load(std::memory_order_relaxed);
}

UniqueFd Jail::open(const std::string& virtual_path, int flags, unsigned mode) const {
  // "/a/b" → "a/b"; the home itself is ".".
  std::string relative = virtual_path == "/" ? "." : virtual_path.substr(1);
  // openat2 is strict: with O_PATH only O_CLOEXEC, O_DIRECTORY and O_NOFOLLOW are accepted.
  flags |= O_CLOEXEC;
  if (!(flags & O_PATH)) flags |= O_NOCTTY;
  return open_relative(relative, flags, mode);
}

std::pair<UniqueFd, std::string> Jail::open_parent(const std::string& virtual_path) const {
  auto [parent, leaf] = split_parent(virtual_path);
  return {open(parent, O_PATH | O_DIRECTORY), leaf};
}

UniqueFd Jail::open_relative(const std::string& relative, int flags, unsigned mode) const {
  if (uses_openat2()) {
    open_how how{};
    how.flags = static_cast<std::uint64_t>(flags);
    how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    for (;;) {
      long fd = ::syscall(SYS_openat2, home_.get(), relative.c_str(), &how, sizeof how);
      if (fd >= 0) return UniqueFd(static_cast<int>(fd));
      if (errno == EINTR || errno == EAGAIN) continue;  // EAGAIN: a rename raced the lookup
      if (errno != ENOSYS) throw_errno(errno, relative == "." ? "/" : "/" + relative);
      openat2_missing.store(true, std::memory_order_relaxed);
      break;
    }
  }
  return open_walking(relative, flags, mode);
}

// The fallback: one component at a time, never following a symlink. normalize() already removed
// every "." and "..", so no component can climb.
UniqueFd Jail::open_walking(const std::string& relative, int flags, unsigned mode) const {
  std::string shown = relative == "." ? "/" : "/" + relative;
  UniqueFd dir(::fcntl(home_.get(), F_DUPFD_CLOEXEC, 0));
  if (!dir) throw_errno(errno, shown);
  if (relative == ".") {
    int fd = ::openat(home_.get(), ".", flags, mode);
    if (fd < 0) throw_errno(errno, shown);
    return UniqueFd(fd);
  }
  std::size_t start = 0;
  for (;;) {
    auto slash = relative.find('/', start);
    std::string part =
        relative.substr(start, slash == std::string::npos ? relative.npos : slash - start);
    if (part.empty() || part == "." || part == "..") throw Error(errc::forbidden, shown);
    if (slash == std::string::npos) {
      int fd = ::openat(dir.get(), part.c_str(), flags | O_NOFOLLOW, mode);
      // O_PATH|O_NOFOLLOW opens a symlink itself instead of failing: refuse it here.
      if (fd >= 0 && (flags & O_PATH)) {
        struct stat st {};
        if (::fstat(fd, &st) == 0 && S_ISLNK(st.st_mode)) {
          ::close(fd);
          throw Error(errc::forbidden, shown + ": not allowed");
        }
      }
      if (fd < 0) throw_errno(errno, shown);
      return UniqueFd(fd);
    }
    int next = ::openat(dir.get(), part.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) throw_errno(errno, shown);
    dir = UniqueFd(next);
    start = slash + 1;
  }
}

}  // namespace coserve::jail
