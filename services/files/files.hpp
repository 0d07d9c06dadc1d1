#pragma once
// Service `files`: each logged-in user's home directory as a small chrooted file system
// (docs/protocol.md has every op, field, event and error).
//
//   pwd · cd {path} · ls {path?} · stat {path} · mkdir {path, parents?} · rm {path, recursive?}
//   mv {from, to, overwrite?} · quota · hash {path} · get {path, offset?}
//   put {path, size, sha256, overwrite?} with credit-based flow control and resume
//
// The handlers are thin: paths go through normalize() and a Jail (path_jail.hpp), disk work
// through file_ops.hpp on the blocking pool, quota through the QuotaLedger.
//
// Limits that bound what a user can make the server hold or walk (docs/operations.md, "Security
// model"): the byte quota (every regular file, partials and their metadata included; an upload
// reserves all it may write before it writes), services.files.max_inodes entries per home, and
// services.files.max_depth levels for anything mkdir, put or mv creates. Every walk of a home
// (quota scan, rm -r, mv's depth check) is iterative with a bounded number of descriptors, so
// a tree deeper than the limit that reached the disk another way costs time, not the server.
//
// Abandoned uploads: partials nobody has written for services.files.partial_ttl_s are deleted
// (freeing their quota) at start and then periodically, by a sweep on the blocking pool.
//
// Threading: handlers run on their session's executor; per-session state (cwd, jail) lives in
// Session::state<>. Shared state (ledger, the set of uploads in progress, the partials open) is
// thread-safe. The sweep's timer lives on context 0, where stop() is called.
#include <atomic>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "coserve/server.hpp"
#include "coserve/service.hpp"
#include "files/file_ops.hpp"
#include "jail/path_jail.hpp"
#include "files/quota_ledger.hpp"

namespace coserve {
class Runtime;
class Counter;
}  // namespace coserve

namespace coserve::auth {
class AuthService;
}

namespace coserve::files {

struct FilesSession;

class FilesService final : public BasicService<FilesService> {
 public:
  static constexpr std::string_view kName = "files";
  static constexpr auto ops() {
    return std::array{op("pwd", &FilesService::pwd),     op("cd", &FilesService::cd),
                      op("ls", &FilesService::ls),       op("stat", &FilesService::stat),
                      op("mkdir", &FilesService::mkdir), op("rm", &FilesService::rm),
                      op("mv", &FilesService::mv),       op("quota", &FilesService::quota),
                      op("hash", &FilesService::hash),   op("get", &FilesService::get),
                      op("put", &FilesService::put)};
  }
  static json defaults();
  static constexpr bool kLoginRequired = true;

  explicit FilesService(ServiceContext& ctx);

  awaitable<Outcome> pwd(Call& call);
  awaitable<Outcome> cd(Call& call);
  awaitable<Outcome> ls(Call& call);
  awaitable<Outcome> stat(Call& call);
  awaitable<Outcome> mkdir(Call& call);
  awaitable<Outcome> rm(Call& call);
  awaitable<Outcome> mv(Call& call);
  awaitable<Outcome> quota(Call& call);
  awaitable<Outcome> hash(Call& call);
  awaitable<Outcome> get(Call& call);
  awaitable<Outcome> put(Call& call);

  QuotaLedger& ledger() noexcept { return ledger_; }
  void stop() override;

  // --- For other services (the command service runs programs that write into a home) --------
  // Thread-safe: call from a coroutine on any executor, concurrently with anything. The disk
  // work runs on the blocking pool, never on the caller's thread; the ledger's figures change
  // under its mutex, which is never held across a co_await. Both throw only for bugs.
  //
  // Bytes `user` may still add under their quota: limit - used - reserved, 0 when over it,
  // QuotaLedger::kUnlimited for a user without a quota, 0 for a user that does not exist.
  // Scans the home first when the usage is not known yet.
  awaitable<std::uint64_t> remaining(std::string user);
  // Scans `user`'s home again and replaces the bytes and entries on record with what is on
  // disk, keeping the reservations of uploads in progress. Call after anything outside this
  // service changed the home (a command run ended). Nothing for a user that does not exist.
  awaitable<void> rescan(std::string user);

 private:
  // Sweeps at start, then every sweep_interval_, until stop().
  awaitable<void> sweep_loop();
  // BLOCKING: sweeps every user's home; returns the bytes freed.
  std::uint64_t sweep_homes();

  // The caller's per-session state, with the jail opened and the quota usage known. Throws
  // Error(unauthenticated) for an anonymous session or a user that no longer exists.
  awaitable<FilesSession*> enter(Call& call);
  struct Home {
    std::filesystem::path dir;
    std::uint64_t quota = 0;  // bytes, 0 = none
  };
  // Where `user` lives and their quota; nullopt for a user the auth service does not know.
  std::optional<Home> locate(const std::string& user) const;
  // Refuses (bad_request) a path that would nest deeper than max_depth_.
  void check_depth(const std::string& path) const;
  // `field` of the request, resolved against the session's cwd.
  std::string path_field(Call& call, FilesSession& session, std::string_view field) const;

  Runtime& runtime_;
  std::filesystem::path data_dir_;
  // Empty when the server has no auth service: homes are then <data_dir>/homes/<user>.
  ServiceRef<auth::AuthService> auth_;
  jail::Jail::Mode resolver_mode_;
  std::size_t chunk_bytes_;
  std::uint64_t window_bytes_;
  std::size_t max_list_entries_;
  std::size_t max_depth_;       // components of a path mkdir, put or mv may create; 0 = none
  std::uint64_t max_inodes_;    // entries per home; 0 = none
  QuotaLedger ledger_;
  std::mutex uploads_mutex_;
  std::set<std::string> uploads_;  // "user:path" of uploads in progress; uploads_mutex_
  ActivePartials active_partials_;
  std::chrono::seconds partial_ttl_;
  std::chrono::seconds sweep_interval_;
  asio::steady_timer sweep_timer_;
  std::atomic<bool> stopping_{false};
  Counter& bytes_uploaded_;
  Counter& bytes_downloaded_;
  Counter& abandoned_bytes_removed_;
};

}  // namespace coserve::files
