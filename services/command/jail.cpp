#include "command/jail.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "coserve/error.hpp"

namespace coserve::command {

std::string jail_join(std::string_view cwd, std::string_view path) {
  if (path.find('\0') != std::string_view::npos)
    throw Error(errc::bad_request, "a path cannot contain a NUL byte");
  std::vector<std::string> parts;
  auto push_all = [&](std::string_view p) {
    std::size_t start = 0;
    while (start <= p.size()) {
      auto slash = p.find('/', start);
      auto part = p.substr(start, slash == std::string_view::npos ? p.size() - start : slash - start);
      if (part == "..") {
        if (parts.empty()) throw Error(errc::forbidden, "'..' would leave your home directory");
        parts.pop_back();
      } else if (!part.empty() && part != ".") {
        parts.emplace_back(part);
      }
      if (slash == std::string_view::npos) break;
      start = slash + 1;
    }
  };
  if (path.empty() || path.front() != '/') push_all(cwd);
  push_all(path);
  std::string out;
  for (auto& p : parts) {
    if (!out.empty()) out += '/';
    out += p;
  }
  return out;
}

namespace {

[[noreturn]] void throw_open_error(int err, const std::string& rel) {
  std::string shown = "/" + rel;
  switch (err) {
    case ENOENT: throw Error(errc::not_found, "no such directory: " + shown);
    case ENOTDIR: throw Error(errc::bad_request, "not a directory: " + shown);
    case EXDEV:
    case ELOOP:
    case EACCES:
    case EPERM: throw Error(errc::forbidden, "'" + shown + "' leads out of your home directory");
    default:
      throw Error(errc::internal, "cannot open " + shown + ": " + std::string(std::strerror(err)));
  }
}

}  // namespace

int open_jailed_dir(const std::filesystem::path& home, const std::string& rel) {
  int home_fd = ::open(home.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (home_fd < 0) {
    if (errno == ENOENT) throw Error(errc::not_found, "your home directory does not exist");
    throw_open_error(errno, rel);
  }
  if (rel.empty()) return home_fd;
  open_how how{};
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  long fd = ::syscall(SYS_openat2, home_fd, rel.c_str(), &how, sizeof(how));
  int err = errno;
  if (fd < 0 && err == ENOSYS) {
    // Old kernel: resolve fully, then require the result to stay under the real home.
    std::error_code ec;
    auto real_home = std::filesystem::canonical(home, ec);
    auto real = std::filesystem::canonical(home / rel, ec);
    if (ec) {
      ::close(home_fd);
      throw_open_error(ENOENT, rel);
    }
    auto [h, r] = std::mismatch(real_home.begin(), real_home.end(), real.begin(), real.end());
    if (h != real_home.end()) {
      ::close(home_fd);
      throw_open_error(EXDEV, rel);
    }
    fd = ::open(real.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    err = errno;
  }
  ::close(home_fd);
  if (fd < 0) throw_open_error(err, rel);
  return static_cast<int>(fd);
}

}  // namespace coserve::command
