#pragma once
// A depth-first walk of a directory tree that any tree on disk can afford: no recursion, at most
// three descriptors open at a time, and memory only for the names of the directories still to
// visit along the current path (a few bytes per level, plus the pending siblings). A tree
// thousands of levels deep (made by a program the command service ran, or by hand) is walked
// like a shallow one; paths longer than PATH_MAX never arise, since every open is relative to
// the directory just above.
//
// Going back up goes through "..", and the walk checks that it arrived in the directory it left
// (device and inode): a directory moved meanwhile ends the walk with `busy` instead of walking a
// tree it was not asked to. Symlinks are never followed.
//
// Threading: plain blocking system calls; call from the blocking pool.
#include <sys/stat.h>

#include <cstddef>
#include <functional>
#include <string>

namespace coserve::files {

enum class WalkStep {
  next,  // go on (into it, if it is a directory)
  skip,  // do not descend into this directory
  stop,  // end the walk now
};

// Called for every entry below the root: `dir` is the directory holding it (an fd valid for the
// call), `depth` is 1 for a child of the root. A callback may unlink a non-directory entry.
using WalkEntry =
    std::function<WalkStep(int dir, const char* name, const struct stat& st, std::size_t depth)>;
// Called once a directory below the root has had all its entries visited; `parent` holds it.
using WalkLeave = std::function<void(int parent, const std::string& name)>;

// BLOCKING. Walks everything below the directory `root` (not owned, not closed; may be O_PATH).
// Returns false when a callback said stop. Throws coserve::Error for a root that cannot be
// read, and busy when the tree moved under the walk. Directories it may not read are skipped.
bool walk_tree(int root, const WalkEntry& entry, const WalkLeave& leave = {});

}  // namespace coserve::files
