#include "files/tree_walk.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "coserve/error.hpp"
#include "jail/path_jail.hpp"

namespace coserve::files {
namespace {

// One directory on the current path.
struct Level {
  std::string name;                  // in its parent ("" for the root)
  dev_t dev = 0;
  ino_t ino = 0;
  std::vector<std::string> pending;  // subdirectories still to visit
};

// Lists `dir` (the current directory), calling `entry` for each child; the subdirectories to
// walk go to `level.pending`. False when the callback said stop.
bool list(int dir, Level& level, std::size_t depth, const WalkEntry& entry) {
  int fd = ::openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return true;  // unreadable (mode 000): nothing to see in it
  DIR* listing = ::fdopendir(fd);
  if (!listing) {
    ::close(fd);
    return true;
  }
  bool go_on = true;
  while (auto* e = ::readdir(listing)) {
    const char* name = e->d_name;
    if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) continue;
    struct stat st {};
    if (::fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone meanwhile
    auto step = entry(dir, name, st, depth);
    if (step == WalkStep::stop) {
      go_on = false;
      break;
    }
    if (step == WalkStep::next && S_ISDIR(st.st_mode)) level.pending.emplace_back(name);
  }
  ::closedir(listing);
  return go_on;
}

}  // namespace

bool walk_tree(int root, const WalkEntry& entry, const WalkLeave& leave) {
  jail::UniqueFd current(::openat(root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!current) jail::throw_errno(errno, "/");
  std::vector<Level> path(1);
  {
    struct stat st {};
    if (::fstat(current.get(), &st) != 0) jail::throw_errno(errno, "/");
    path[0].dev = st.st_dev;
    path[0].ino = st.st_ino;
  }
  if (!list(current.get(), path[0], 1, entry)) return false;
  while (!path.empty()) {
    auto& top = path.back();
    if (!top.pending.empty()) {
      std::string name = std::move(top.pending.back());
      top.pending.pop_back();
      jail::UniqueFd child(
          ::openat(current.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!child) continue;  // gone, replaced by a symlink, or unreadable: nothing to walk
      struct stat st {};
      if (::fstat(child.get(), &st) != 0) continue;
      current = std::move(child);
      Level level;
      level.name = std::move(name);
      level.dev = st.st_dev;
      level.ino = st.st_ino;
      path.push_back(std::move(level));
      if (!list(current.get(), path.back(), path.size(), entry)) return false;
      continue;
    }
    if (path.size() == 1) break;  // the root is done
    // Back up one level, and make sure it is the directory we came from.
    jail::UniqueFd parent(::openat(current.get(), "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    struct stat st {};
    const auto& above = path[path.size() - 2];
    if (!parent || ::fstat(parent.get(), &st) != 0 || st.st_dev != above.dev ||
        st.st_ino != above.ino)
      throw Error(errc::busy, "the directory tree changed during the walk; try again");
    current = std::move(parent);
    std::string name = std::move(top.name);
    path.pop_back();
    if (leave) leave(current.get(), name);
  }
  return true;
}

}  // namespace coserve::files
