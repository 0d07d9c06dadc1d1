#include "transfer.hpp"

#include <fcntl.h>
#include <fnmatch.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>

#include <openssl/evp.h>

#include "coserve/runtime.hpp"  // offload.hpp needs Runtime declared first
#include "coserve/offload.hpp"
#include "failure.hpp"
#include "format.hpp"
#include "interrupt.hpp"
#include "progress.hpp"

namespace coserve::cli {

namespace fs = std::filesystem;

namespace {

// The protocol's largest upload body: fewer, larger chunks mean fewer hops between threads.
constexpr std::size_t kChunk = 1024 * 1024;

std::string errno_text(const std::string& what, const std::string& path) {
  return what + " '" + path + "': " + std::strerror(errno);
}

// A file descriptor shared with the blocking pool's lambdas; closed with the last owner.
class File {
 public:
  File(const std::string& path, int flags, mode_t mode = 0644) : fd_(::open(path.c_str(), flags | O_CLOEXEC, mode)) {
    if (fd_ < 0) throw local_error(errno_text("cannot open", path));
  }
  ~File() { ::close(fd_); }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  int fd() const noexcept { return fd_; }

 private:
  int fd_;
};

std::string base_name(const std::string& path) {
  auto trimmed = path;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  auto slash = trimmed.rfind('/');
  return slash == std::string::npos ? trimmed : trimmed.substr(slash + 1);
}

std::string lower(std::string text) {
  for (auto& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

// Incremental SHA-256 (OpenSSL EVP); not thread-safe, used by one pool job at a time.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
      throw local_error("SHA-256 is not available");
  }
  void update(const char* data, std::size_t n) { EVP_DigestUpdate(ctx_.get(), data, n); }
  std::string hex_final() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(ctx_.get(), digest, &length);
    static const char* const hex = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < length; ++i) {
      out += hex[digest[i] >> 4];
      out += hex[digest[i] & 15];
    }
    return out;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
};

// Hashes [0, length) of `fd` (to the end when length is npos). The buffer is small on purpose:
// 64 KiB stays in the core's cache between the copy out of the page cache and the hash, which
// makes hashing cheaper than with a buffer of a megabyte.
void hash_fd(int fd, std::uint64_t length, Sha256& sha, const std::string& path) {
  constexpr std::size_t kBuffer = 64 * 1024;
  auto buffer = std::make_unique_for_overwrite<char[]>(kBuffer);
  std::uint64_t done = 0;
  while (done < length) {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(kBuffer, length - done));
    ssize_t n = ::pread(fd, buffer.get(), want, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw local_error(errno_text("cannot read", path));
    if (n == 0) {
      if (length == std::numeric_limits<std::uint64_t>::max()) break;
      throw local_error("'" + path + "' shrank while it was being hashed");
    }
    sha.update(buffer.get(), static_cast<std::size_t>(n));
    done += static_cast<std::uint64_t>(n);
  }
}

// A download in progress: the partial file and the SHA-256 of everything written to it so far.
// Shared with the pool's jobs, which run one at a time (the CLI's pool has one thread and each
// job is awaited before the next is posted).
struct Download {
  explicit Download(const std::string& path) : file(path, O_RDWR | O_CREAT) {}
  File file;
  Sha256 sha;
};

}  // namespace


namespace {

// An upload in progress: the local file and the SHA-256 of everything read from it so far.
// Shared with the pool's jobs, which run one at a time (each is awaited before the next).
struct Upload {
  explicit Upload(const std::string& path) : file(path, O_RDONLY) {}
  File file;
  Sha256 sha;
};

// Reads [offset, offset + n) and hashes it, in 64 KiB slices so each is hashed while cached.
std::string read_and_hash(Upload& upload, std::uint64_t offset, std::size_t n,
                          const std::string& path) {
  constexpr std::size_t kSlice = 64 * 1024;
  auto chunk = std::make_unique_for_overwrite<char[]>(n);
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(upload.file.fd(), chunk.get() + got, std::min(kSlice, n - got),
                        static_cast<off_t>(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw local_error(errno_text("cannot read", path));
    if (r == 0) throw local_error("'" + path + "' shrank while it was being sent");
    upload.sha.update(chunk.get() + got, static_cast<std::size_t>(r));
    got += static_cast<std::size_t>(r);
  }
  return std::string(chunk.get(), n);
}

enum class PutResult { done, start_over };

// One `put` of the whole file. The digest goes with the end event: the file is read once, and
// hashed as it is sent. start_over: a resumed partial turned out to be of another file of the
// same size (the server discarded it), so a new put starts from 0.
awaitable<PutResult> put_once(Env env, const std::string& local, const std::string& remote,
                              std::uint64_t size, bool overwrite) {
  auto upload = std::make_shared<Upload>(local);
  json put = {{"service", "files"}, {"op", "put"}, {"path", remote}, {"size", size},
              {"overwrite", overwrite}};
  auto stream = env.conn.open_stream(std::move(put));
  Connection* conn = &env.conn;
  Interrupt interrupt(co_await asio::this_coro::executor, [conn] { conn->close(); });
  Progress progress(Progress::mode_for(env.quiet), "put " + base_name(local), size, 0);

  bool started = false, end_sent = false;
  std::uint64_t sent = 0, granted = 0, resumed_from = 0;
  std::string sha256;
  json reply;
  for (;;) {
    Frame frame;
    bool lost = false;
    try {
      frame = co_await Connection::next(stream);
    } catch (const Failure&) {
      lost = true;
    }
    if (lost) {
      progress.abandon();
      if (interrupt.hit())
        throw server_error("cancelled", "interrupted after " + human_size(sent) +
                                            "; the same put resumes the upload");
      throw connection_error("connection lost after " + human_size(sent) +
                             "; the same put resumes the upload");
    }
    if (stream.done()) {
      if (error_code_of(frame)) progress.abandon();
      if (resumed_from > 0 && error_code_of(frame) == "checksum_mismatch") {
        progress.note("put: the server's partial " + remote +
                      " was of another file; uploading it again from the start");
        co_return PutResult::start_over;
      }
      reply = Connection::checked(std::move(frame));  // throws the server's error
      break;
    }
    if (frame.head.value("event", "") != "credit") continue;
    if (!started) {
      started = true;
      sent = granted = resumed_from = frame.head.value("offset", std::uint64_t{0});
      if (sent > 0) {
        // The digest covers the whole file: first the part the server already has.
        progress.status("hashing the " + human_size(sent) + " already uploaded ...");
        auto hash_sent = [upload, sent, local] { hash_fd(upload->file.fd(), sent, upload->sha, local); };
        std::string unreadable;
        try {
          co_await offload(env.pool, std::move(hash_sent));
        } catch (const Failure& f) {
          unreadable = f.what();
        }
        progress.clear_status();
        if (!unreadable.empty()) {
          env.conn.close();
          throw local_error(unreadable);
        }
      }
      progress = Progress(Progress::mode_for(env.quiet), "put " + base_name(local), size, sent);
      if (frame.head.value("resumed", false))
        progress.note("put: resuming " + remote + " at " + human_size(sent) + " (offset " +
                      std::to_string(sent) + ")");
    }
    granted += frame.head.value("bytes", std::uint64_t{0});
    while (sent < granted && sent < size) {
      const auto n =
          static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, std::min(granted, size) - sent));
      auto read_chunk = [upload, offset = sent, n, local] {
        return read_and_hash(*upload, offset, n, local);
      };
      std::string chunk, read_error;
      try {
        chunk = co_await offload(env.pool, std::move(read_chunk));
      } catch (const Failure& f) {
        read_error = f.what();
      }
      if (!read_error.empty()) {
        // Ends the server's side of the upload too; its partial stays for a later put.
        env.conn.close();
        progress.abandon();
        throw local_error(read_error);
      }
      json data = {{"event", "data"}};
      stream.send(std::move(data), std::move(chunk));
      sent += n;
      progress.update(sent);
    }
    if (sent == size && !end_sent) {
      end_sent = true;
      sha256 = upload->sha.hex_final();
      json end = {{"event", "end"}, {"sha256", sha256}};
      stream.send(std::move(end));
    }
  }
  if (lower(reply.value("sha256", "")) != sha256) {
    progress.abandon();
    throw server_error("checksum_mismatch", "the server stored " + reply.value("sha256", "?") +
                                                " but the local file's SHA-256 is " + sha256);
  }
  progress.update(size);
  progress.finish();
  if (!env.quiet) {
    std::string line = "put " + reply.value("path", remote) + " (" + human_size(size) +
                       ", sha256 " + sha256 + ")";
    if (resumed_from > 0) line += ", resumed from offset " + std::to_string(resumed_from);
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }
  co_return PutResult::done;
}

}  // namespace

awaitable<void> put_file(Env env, std::string local, std::string remote, bool overwrite) {
  struct stat st{};
  if (::stat(local.c_str(), &st) != 0) throw local_error(errno_text("cannot read", local));
  if (!S_ISREG(st.st_mode)) throw local_error("'" + local + "' is not a regular file");
  const auto size = static_cast<std::uint64_t>(st.st_size);

  if (remote.empty()) {
    remote = base_name(local);
  } else if (remote.back() == '/') {
    remote += base_name(local);
  } else {
    // An existing remote directory receives the file under its own name, like cp.
    json stat_request = {{"service", "files"}, {"op", "stat"}, {"path", remote}};
    auto stream = env.conn.open_stream(std::move(stat_request));
    auto reply = co_await Connection::next(stream);
    if (!error_code_of(reply) && reply.head.value("type", "") == "dir")
      remote += "/" + base_name(local);
  }
  auto result = co_await put_once(env, local, remote, size, overwrite);
  if (result == PutResult::start_over) result = co_await put_once(env, local, remote, size, overwrite);
  if (result == PutResult::start_over)
    throw server_error("checksum_mismatch", "the upload of " + local + " did not verify twice");
}

awaitable<void> get_file(Env env, std::string remote, std::string local) {
  if (local.empty()) local = base_name(remote);
  if (fs::is_directory(local)) local = (fs::path(local) / base_name(remote)).string();
  const fs::path target(local);
  const fs::path part = target.parent_path() / ("." + target.filename().string() + ".part");

  json stat_request = {{"service", "files"}, {"op", "stat"}, {"path", remote}};
  auto info = co_await env.conn.request(std::move(stat_request));
  if (info.value("type", "") != "file")
    throw server_error("bad_request", remote + " is not a regular file");
  const auto size = info.value("size", std::uint64_t{0});

  std::uint64_t offset = 0;
  {
    std::error_code ec;
    auto existing = fs::file_size(part, ec);
    if (!ec) offset = existing;
  }
  auto download = std::make_shared<Download>(part.string());
  if (offset > size) {  // the remote file changed since: start over
    if (::ftruncate(download->file.fd(), 0) != 0)
      throw local_error(errno_text("cannot truncate", part.string()));
    offset = 0;
  }
  if (offset > 0) {
    // The digest covers the whole file: what an earlier run left, then every chunk as written.
    auto hash_partial = [download, offset, p = part.string()] {
      hash_fd(download->file.fd(), offset, download->sha, p);
    };
    std::string unreadable;
    try {
      co_await offload(env.pool, std::move(hash_partial));
    } catch (const Failure& f) {
      unreadable = f.what();
    }
    if (!unreadable.empty()) throw local_error(unreadable);
  }
  Connection* conn = &env.conn;
  Interrupt interrupt(co_await asio::this_coro::executor, [conn] { conn->close(); });

  json get = {{"service", "files"}, {"op", "get"}, {"path", remote}, {"offset", offset}};
  auto stream = env.conn.open_stream(std::move(get));
  Progress progress(Progress::mode_for(env.quiet), "get " + base_name(remote), size, offset);
  if (offset > 0)
    progress.note("get: resuming " + remote + " at " + human_size(offset) + " (offset " +
                  std::to_string(offset) + ")");
  std::uint64_t position = offset;
  Frame final;
  for (;;) {
    Frame frame;
    bool lost = false;
    try {
      frame = co_await Connection::next(stream);
    } catch (const Failure&) {
      lost = true;
    }
    if (lost) {
      progress.abandon();
      std::string where = "after " + human_size(position) + "; " + part.string() +
                          " is kept and the same get resumes the download";
      if (interrupt.hit()) throw server_error("cancelled", "interrupted " + where);
      throw connection_error("connection lost " + where);
    }
    if (stream.done()) {
      final = std::move(frame);
      break;
    }
    if (frame.head.value("event", "") != "data") continue;
    if (frame.head.value("offset", std::uint64_t{0}) != position) {
      env.conn.close();
      progress.abandon();
      throw server_error("internal", "the server sent offset " + frame.head["offset"].dump() +
                                         ", expected " + std::to_string(position));
    }
    const auto n = frame.body.size();
    // Writes and hashes in one job, so the file is not read again at the end.
    auto write_chunk = [download, at = position, body = std::move(frame.body), part] {
      std::size_t done = 0;
      while (done < body.size()) {
        ssize_t w = ::pwrite(download->file.fd(), body.data() + done, body.size() - done,
                             static_cast<off_t>(at + done));
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) throw local_error(errno_text("cannot write", part.string()));
        done += static_cast<std::size_t>(w);
      }
      download->sha.update(body.data(), body.size());
    };
    std::string write_error;
    try {
      co_await offload(env.pool, std::move(write_chunk));
    } catch (const Failure& f) {
      write_error = f.what();
    }
    if (!write_error.empty()) {
      env.conn.close();  // stops the server's stream; the partial keeps what was written
      progress.abandon();
      throw local_error(write_error);
    }
    position += n;
    progress.update(position);
  }
  if (error_code_of(final)) progress.abandon();
  json reply = Connection::checked(std::move(final));
  const auto final_size = reply.value("size", std::uint64_t{0});
  if (position != final_size) {
    progress.abandon();
    throw server_error("internal", "received " + std::to_string(position) + " of " +
                                       std::to_string(final_size) + " bytes");
  }
  progress.finish();
  auto sync_and_hash = [download] {
    ::fsync(download->file.fd());
    return download->sha.hex_final();
  };
  const std::string actual = co_await offload(env.pool, std::move(sync_and_hash));
  const std::string expected = lower(reply.value("sha256", ""));
  if (actual != expected) {
    std::error_code ignored;
    fs::remove(part, ignored);
    throw server_error("checksum_mismatch",
                       "the download's SHA-256 is " + actual + " but the server's file has " +
                           expected + "; the partial was discarded, get again to start over");
  }
  std::error_code ec;
  fs::rename(part, target, ec);
  if (ec)
    throw local_error("cannot rename " + part.string() + " to " + local + ": " + ec.message());
  if (!env.quiet) {
    std::string line = "get " + reply.value("path", remote) + " -> " + local + " (" +
                       human_size(final_size) + ", sha256 " + actual + ")";
    if (offset > 0) line += ", resumed from offset " + std::to_string(offset);
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }
}

namespace {
bool has_glob(const std::string& text) { return text.find_first_of("*?[") != std::string::npos; }
}  // namespace

awaitable<void> put_files(Env env, std::string local, std::string remote, bool overwrite) {
  if (!has_glob(local)) {
    co_await put_file(env, std::move(local), std::move(remote), overwrite);
    co_return;
  }
  std::vector<std::string> matches;
  glob_t found{};
  if (::glob(local.c_str(), 0, nullptr, &found) == 0)
    for (std::size_t i = 0; i < found.gl_pathc; ++i)
      if (fs::is_regular_file(found.gl_pathv[i])) matches.emplace_back(found.gl_pathv[i]);
  ::globfree(&found);
  if (matches.empty()) throw local_error("no local file matches '" + local + "'");
  if (!remote.empty() && remote.back() != '/') remote += '/';
  for (const auto& match : matches) co_await put_file(env, match, remote, overwrite);
}

awaitable<void> get_files(Env env, std::string remote, std::string local) {
  auto slash = remote.rfind('/');
  std::string dir = slash == std::string::npos ? "" : remote.substr(0, slash + 1);
  std::string pattern = slash == std::string::npos ? remote : remote.substr(slash + 1);
  if (!has_glob(pattern)) {
    co_await get_file(env, std::move(remote), std::move(local));
    co_return;
  }
  if (has_glob(dir)) throw usage_error("a remote glob may only be in the last path component");
  if (local.empty()) local = ".";
  if (!fs::is_directory(local)) throw local_error("'" + local + "' is not a directory");
  json list = {{"service", "files"}, {"op", "ls"}, {"path", dir.empty() ? "." : dir}};
  auto listing = co_await env.conn.request(std::move(list));
  std::vector<std::string> names;
  for (const auto& entry : listing.value("entries", json::array()))
    if (entry.value("type", "") == "file" &&
        ::fnmatch(pattern.c_str(), entry.value("name", "").c_str(), FNM_PERIOD) == 0)
      names.push_back(entry.value("name", ""));
  if (names.empty()) throw server_error("not_found", "no remote file matches '" + remote + "'");
  for (const auto& name : names) {
    std::string path = dir + name;
    co_await get_file(env, std::move(path), local);
  }
}

}  // namespace coserve::cli
