#pragma once
// put and get with SHA-256 verification, resume and progress (services/files/PROTOCOL.md).
//
// put: asks the server to `put` the file; the first credit event says where the server's
// partial ends (0 for a new upload), the rest is sent within the credit window, hashed as it
// is read, and the SHA-256 goes with the end event (on a resume the part already sent is hashed
// first). A resumed partial that was of another file fails the check: the server discards it
// and the put starts over once.
// get: downloads into `.NAME.part` beside the target, asking for `offset` = the partial's size;
// hashes the partial's existing bytes first and every chunk as it is written (the file is not
// read again), compares with the server's SHA-256 and renames it into place. A mismatch
// discards the partial and fails with `checksum_mismatch`.
// Ctrl-C (or a lost connection) leaves both partials in place: the same command resumes.
#include <string>

#include "env.hpp"

namespace coserve::cli {

awaitable<void> put_file(Env env, std::string local, std::string remote, bool overwrite);
awaitable<void> get_file(Env env, std::string remote, std::string local);

// With a glob (`*`, `?`, `[`) in LOCAL (put) or in REMOTE's last component (get): every match
// goes into the REMOTE / LOCAL directory (default: the current one), one after the other; the
// first failure stops. Without a glob these are put_file / get_file.
awaitable<void> put_files(Env env, std::string local, std::string remote, bool overwrite);
awaitable<void> get_files(Env env, std::string remote, std::string local);

}  // namespace coserve::cli
