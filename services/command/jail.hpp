#pragma once
// The per-session working directory inside a user's home (same rules as files: the home is
// `/`). Pure path logic plus one kernel-checked open. Thread-safe (no state).
#include <filesystem>
#include <string>
#include <string_view>

namespace coserve::command {

// Joins `path` (absolute = from the home, or relative to `cwd`) to `cwd` (home-relative, ""
// for the home itself) and normalizes `.` and `..`. Throws Error(forbidden) when `..` would
// leave the home, Error(bad_request) for a NUL byte. Returns the home-relative result ("" or
// "a/b").
std::string jail_join(std::string_view cwd, std::string_view path);

// Opens home/rel as an O_PATH directory fd, resolved by the kernel beneath the home
// (openat2 RESOLVE_BENEATH: no `..` escape, no symlink out, no magic links); a checked
// realpath fallback when openat2 is missing. Throws Error(not_found | forbidden | bad_request).
// BLOCKING (a path walk): call it on the blocking pool. The caller closes the fd.
int open_jailed_dir(const std::filesystem::path& home, const std::string& rel);

}  // namespace coserve::command
