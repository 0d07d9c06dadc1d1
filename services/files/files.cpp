#include "files/files.hpp"

#include <algorithm>
#include <cctype>

#include "auth/auth.hpp"
#include "coserve/log.hpp"
#include "coserve/metrics.hpp"
#include "coserve/runtime.hpp"
#include "coserve/session.hpp"
#include "files/file_ops.hpp"

namespace coserve::files {

// Per session: whose jail is open and where they are in it.
struct FilesSession {
  std::string user;
  std::shared_ptr<const jail::Jail> jail;
  std::string cwd = "/";
  std::uint64_t quota = 0;
};

namespace {

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

json to_json(const EntryInfo& e) {
  return {{"name", e.name}, {"type", e.type}, {"size", e.size}, {"mtime", e.mtime}};
}

// Marks an upload target busy for the life of the guard.
class UploadSlot {
 public:
  UploadSlot(std::mutex& mutex, std::set<std::string>& set, std::string key)
      : mutex_(mutex), set_(set), key_(std::move(key)) {
    std::lock_guard lock(mutex_);
    taken_ = set_.insert(key_).second;
  }
  ~UploadSlot() {
    if (!taken_) return;
    std::lock_guard lock(mutex_);
    set_.erase(key_);
  }
  UploadSlot(const UploadSlot&) = delete;
  UploadSlot& operator=(const UploadSlot&) = delete;
  bool taken() const noexcept { return taken_; }

 private:
  std::mutex& mutex_;
  std::set<std::string>& set_;
  std::string key_;
  bool taken_ = false;
};

}  // namespace

json FilesService::defaults() {
  return {{"chunk_bytes", 1024 * 1024},
          {"upload_window_bytes", 4 * 1024 * 1024},
          {"max_list_entries", 5000},
          {"max_depth", 64},
          {"max_inodes", 100000},
          {"partial_ttl_s", 24 * 3600},
          {"resolver", "auto"}};
}

FilesService::FilesService(ServiceContext& ctx)
    : runtime_(ctx.runtime),
      data_dir_(ctx.config.data_dir),
      auth_(ctx.find<auth::AuthService>()),
      resolver_mode_(ctx.settings.value("resolver", "auto") == "fallback" ? jail::Jail::Mode::fallback
                                                                          : jail::Jail::Mode::automatic),
      // At most the protocol's largest body (1 MiB), which every client accepts. The largest is
      // the default: each chunk costs a hop to the blocking pool and back on both ends, and
      // fewer, larger chunks make a download faster (bench/README.md, files).
      chunk_bytes_(std::clamp<std::size_t>(ctx.settings.value("chunk_bytes", 1024 * 1024), 4096,
                                           1024 * 1024)),
      // The window stays under the session's per-call inbox limit (8 MiB), so a client that
      // honours it is never cut off.
      window_bytes_(std::clamp<std::uint64_t>(
          ctx.settings.value("upload_window_bytes", std::uint64_t{4 << 20}), 64 * 1024,
          6 * 1024 * 1024)),
      max_list_entries_(ctx.settings.value("max_list_entries", std::size_t{5000})),
      // Depth costs the server a little on every walk of the home and nothing to the user, so
      // it is bounded like everything else: 64 levels is more than any real tree needs.
      max_depth_(ctx.settings.value("max_depth", std::size_t{64})),
      // Directories and empty files cost no quota bytes but do cost every scan and rm -r.
      max_inodes_(ctx.settings.value("max_inodes", std::uint64_t{100000})),
      partial_ttl_(std::max<std::int64_t>(1, ctx.settings.value("partial_ttl_s", 24 * 3600))),
      // Often enough that a partial outlives its TTL by at most half of it (an hour at most).
      sweep_interval_(std::clamp<std::chrono::seconds>(partial_ttl_ / 2, std::chrono::seconds(1),
                                                       std::chrono::hours(1))),
      sweep_timer_(ctx.runtime.context(0)),
      bytes_uploaded_(ctx.metrics.counter("files_bytes_uploaded_total", "Bytes received by put")),
      bytes_downloaded_(ctx.metrics.counter("files_bytes_downloaded_total", "Bytes sent by get")),
      abandoned_bytes_removed_(ctx.metrics.counter(
          "files_abandoned_bytes_removed_total",
          "Bytes of partial uploads deleted after services.files.partial_ttl_s")) {
  asio::co_spawn(ctx.runtime.context(0), sweep_loop(), [](std::exception_ptr failure) {
    if (!failure) return;
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      log::error("files: the sweep of abandoned uploads stopped: {}", e.what());
    }
  });
}

void FilesService::stop() {
  stopping_ = true;
  sweep_timer_.cancel();
}

awaitable<void> FilesService::sweep_loop() {
  while (!stopping_) {
    std::string failed;
    try {
      auto sweep = [this] { return sweep_homes(); };
      co_await offload(runtime_.blocking(), std::move(sweep));
    } catch (const std::exception& e) {
      failed = e.what();  // logged outside the handler (GCC 12 and co_await in catch blocks)
    }
    if (!failed.empty()) log::warn("files: sweep of abandoned uploads failed: {}", failed);
    if (stopping_) break;
    sweep_timer_.expires_after(sweep_interval_);
    auto [ec] = co_await sweep_timer_.async_wait(use_nothrow);
    if (ec) break;  // cancelled by stop()
  }
}

std::uint64_t FilesService::sweep_homes() {
  std::vector<std::pair<std::string, std::filesystem::path>> homes;  // user, home
  if (auth_) {
    for (auto& user : auth_->users().list()) homes.emplace_back(user.name, user.home);
  } else {
    std::error_code ec;
    for (std::filesystem::directory_iterator it(data_dir_ / "homes", ec), end; !ec && it != end;
         it.increment(ec))
      if (it->is_directory(ec)) homes.emplace_back(it->path().filename().string(), it->path());
  }
  std::uint64_t total = 0;
  for (auto& [user, home] : homes) {
    auto freed = sweep_partials(home.string(), partial_ttl_, active_partials_);
    if (freed.inodes == 0) continue;
    ledger_.forget_if_known(user, freed.bytes);
    ledger_.forget_inodes_if_known(user, freed.inodes);
    abandoned_bytes_removed_.inc(freed.bytes);
    log::info("files: deleted abandoned uploads of {} ({} bytes) after {} s without a write", user,
              freed.bytes, partial_ttl_.count());
    total += freed.bytes;
  }
  return total;
}

std::optional<FilesService::Home> FilesService::locate(const std::string& user) const {
  if (!auth_) return Home{data_dir_ / "homes" / user, 0};
  auto found = auth_->users().find(user);
  if (!found) return std::nullopt;
  return Home{found->home, found->quota_bytes};
}

void FilesService::check_depth(const std::string& path) const {
  if (max_depth_ != 0 && jail::depth_of(path) > max_depth_)
    throw Error(errc::bad_request, path + ": more than " + std::to_string(max_depth_) +
                                       " levels deep (services.files.max_depth)");
}

awaitable<std::uint64_t> FilesService::remaining(std::string user) {
  auto home = locate(user);
  if (!home) co_return 0;
  if (!ledger_.known(user)) {
    auto scan_home = [dir = home->dir] { return QuotaLedger::scan(dir); };
    auto found = co_await offload(runtime_.blocking(), std::move(scan_home));
    ledger_.learn(user, found.bytes, found.inodes);
  }
  co_return ledger_.remaining(user, home->quota);
}

awaitable<void> FilesService::rescan(std::string user) {
  auto home = locate(user);
  if (!home) co_return;
  auto scan_home = [dir = home->dir] { return QuotaLedger::scan(dir); };
  auto found = co_await offload(runtime_.blocking(), std::move(scan_home));
  ledger_.relearn(user, found);
}

awaitable<FilesSession*> FilesService::enter(Call& call) {
  auto& session = call.session();
  const std::string name = session.user();
  if (name.empty()) throw Error(errc::unauthenticated, "service 'files' needs a login");
  auto located = locate(name);
  if (!located) throw Error(errc::unauthenticated, "user '" + name + "' no longer exists");
  const std::filesystem::path home = located->dir;
  const std::uint64_t quota = located->quota;
  auto& state = session.state<FilesSession>();
  if (state.user != name || !state.jail) {
    // A new login on this session: a fresh jail, back at "/".
    auto open_jail = [home, mode = resolver_mode_] {
      return std::make_shared<const jail::Jail>(home.string(), mode);
    };
    auto jail = co_await offload(runtime_.blocking(), std::move(open_jail));
    state.jail = std::move(jail);
    state.user = name;
    state.cwd = "/";
  }
  if (!ledger_.known(name)) {
    auto scan_home = [home] { return QuotaLedger::scan(home); };
    auto used = co_await offload(runtime_.blocking(), std::move(scan_home));
    ledger_.learn(name, used.bytes, used.inodes);
  }
  state.quota = quota;
  co_return &state;
}

std::string FilesService::path_field(Call& call, FilesSession& session,
                                     std::string_view field) const {
  return jail::normalize(session.cwd, call.get<std::string>(field));
}

awaitable<Outcome> FilesService::pwd(Call& call) {
  auto* s = co_await enter(call);
  co_return Outcome::ok({{"cwd", s->cwd}});
}

awaitable<Outcome> FilesService::cd(Call& call) {
  auto* s = co_await enter(call);
  auto path = path_field(call, *s, "path");
  auto check_dir = [jail = s->jail, path] { require_directory(*jail, path); };
  co_await offload(runtime_.blocking(), std::move(check_dir));
  s->cwd = path;
  co_return Outcome::ok({{"cwd", path}});
}

awaitable<Outcome> FilesService::ls(Call& call) {
  auto* s = co_await enter(call);
  auto path = jail::normalize(s->cwd, call.get_or<std::string>("path", "."));
  struct Listing {
    std::vector<EntryInfo> entries;
    bool truncated = false;
  };
  auto list = [jail = s->jail, path, max = max_list_entries_] {
    Listing l;
    l.entries = list_dir(*jail, path, max, l.truncated);
    return l;
  };
  auto listing = co_await offload(runtime_.blocking(), std::move(list));
  json entries = json::array();
  for (auto& e : listing.entries) entries.push_back(to_json(e));
  co_return Outcome::ok(
      {{"path", path}, {"entries", std::move(entries)}, {"truncated", listing.truncated}});
}

awaitable<Outcome> FilesService::stat(Call& call) {
  auto* s = co_await enter(call);
  auto path = path_field(call, *s, "path");
  auto stat_it = [jail = s->jail, path] { return stat_path(*jail, path); };
  auto info = co_await offload(runtime_.blocking(), std::move(stat_it));
  json out = to_json(info);
  out["path"] = path;
  co_return Outcome::ok(std::move(out));
}

awaitable<Outcome> FilesService::mkdir(Call& call) {
  auto* s = co_await enter(call);
  auto path = path_field(call, *s, "path");
  bool parents = call.get_or<bool>("parents", false);
  check_depth(path);
  auto make = [this, jail = s->jail, path, parents, user = s->user] {
    InodeBudget budget{[&] { return ledger_.take_inodes(user, 1, max_inodes_); },
                       [&] { ledger_.drop_inodes(user, 1); }};
    make_dir(*jail, path, parents, budget);
  };
  co_await offload(runtime_.blocking(), std::move(make));
  co_return Outcome::ok({{"path", path}});
}

awaitable<Outcome> FilesService::rm(Call& call) {
  auto* s = co_await enter(call);
  auto path = path_field(call, *s, "path");
  bool recursive = call.get_or<bool>("recursive", false);
  auto remove_it = [jail = s->jail, path, recursive] {
    return remove_path(*jail, path, recursive);
  };
  auto freed = co_await offload(runtime_.blocking(), std::move(remove_it));
  ledger_.remove_used(s->user, freed.bytes);
  ledger_.drop_inodes(s->user, freed.inodes);
  co_return Outcome::ok({{"path", path}, {"freed", freed.bytes}});
}

awaitable<Outcome> FilesService::mv(Call& call) {
  auto* s = co_await enter(call);
  auto from = path_field(call, *s, "from");
  auto to = path_field(call, *s, "to");
  bool overwrite = call.get_or<bool>("overwrite", false);
  auto move_it = [jail = s->jail, from, to, overwrite, max = max_depth_] {
    return move_path(*jail, from, to, overwrite, max);
  };
  auto freed = co_await offload(runtime_.blocking(), std::move(move_it));
  ledger_.remove_used(s->user, freed.bytes);
  ledger_.drop_inodes(s->user, freed.inodes);
  co_return Outcome::ok({{"from", from}, {"to", to}});
}

awaitable<Outcome> FilesService::quota(Call& call) {
  auto* s = co_await enter(call);
  auto usage = ledger_.usage(s->user, s->quota);
  co_return Outcome::ok({{"used", usage.used},
                        {"reserved", usage.reserved},
                        {"limit", usage.limit},
                        {"inodes", usage.inodes},
                        {"max_inodes", max_inodes_}});
}

awaitable<Outcome> FilesService::hash(Call& call) {
  auto* s = co_await enter(call);
  auto path = path_field(call, *s, "path");
  auto hash_it = [jail = s->jail, path] { return hash_file(*jail, path); };
  auto digest = co_await offload(runtime_.blocking(), std::move(hash_it));
  co_return Outcome::ok({{"path", path}, {"size", digest.size}, {"sha256", digest.sha256}});
}

awaitable<Outcome> FilesService::get(Call& call) {
  auto* s = co_await enter(call);
  auto path = path_field(call, *s, "path");
  auto offset = call.get_or<std::uint64_t>("offset", 0);
  auto open_reader = [jail = s->jail, path, offset] {
    return std::make_shared<FileReader>(*jail, path, offset);
  };
  auto reader = co_await offload(runtime_.blocking(), std::move(open_reader));
  // A stored digest leaves nothing to hash: then, on a plain socket, the kernel sends the file
  // (half the CPU of reading it into memory and writing it out).
  const bool send_file = reader->digest_cached() && call.can_send_file();
  for (;;) {
    auto at = reader->position();
    if (send_file) {
      auto prepare = [reader, n = chunk_bytes_] { return reader->prepare_slice(n); };
      const auto length = co_await offload(runtime_.blocking(), std::move(prepare));
      if (length == 0) break;
      bytes_downloaded_.inc(length);
      json fields = {{"offset", at}};
      FileSlice slice{reader, reader->fd(), at, length};
      co_await call.emit("data", std::move(fields), std::move(slice));
      continue;
    }
    auto read_chunk = [reader, n = chunk_bytes_] { return reader->read(n); };
    auto chunk = co_await offload(runtime_.blocking(), std::move(read_chunk));
    if (chunk.empty()) break;
    bytes_downloaded_.inc(chunk.size());
    // emit waits while the connection's out-queue is full: the client's reading paces us. No
    // read-ahead: that queue already hides the pread (a read-ahead was measured no faster).
    json fields = {{"offset", at}};  // a named value: GCC 12 mis-compiles braced JSON in co_await
    co_await call.emit("data", std::move(fields), std::move(chunk));
  }
  auto digest = reader->finish();
  co_return Outcome::ok(
      {{"path", path}, {"offset", offset}, {"size", digest.size}, {"sha256", digest.sha256}});
}

awaitable<Outcome> FilesService::put(Call& call) {
  auto* s = co_await enter(call);
  auto path = path_field(call, *s, "path");
  auto size = call.get<std::uint64_t>("size");
  // Given now, or else with the end event: then the client hashes as it sends instead of
  // reading the whole file once before the first byte moves.
  auto sha256 = lower(call.get_or<std::string>("sha256", ""));
  if (!sha256.empty() && !is_sha256_hex(sha256))
    co_return Outcome::fail(errc::bad_request, "sha256 must be 64 hex digits");
  bool overwrite = call.get_or<bool>("overwrite", false);
  check_depth(path);
  const std::string user = s->user;
  const std::uint64_t limit = s->quota;
  if (limit != 0 && size > limit)
    co_return Outcome::fail(errc::quota_exceeded, "the file is larger than your quota");

  UploadSlot slot(uploads_mutex_, uploads_, user + ":" + path);
  if (!slot.taken())
    co_return Outcome::fail(errc::busy, "another upload to this path is in progress");

  struct Opened {
    std::shared_ptr<PartialUpload> upload;
    std::uint64_t freed = 0;
  };
  auto open_upload = [jail = s->jail, path, size, sha256, overwrite, active = &active_partials_] {
    Opened o;
    o.upload =
        std::make_shared<PartialUpload>(*jail, path, size, sha256, overwrite, o.freed, active);
    return o;
  };
  auto opened = co_await offload(runtime_.blocking(), std::move(open_upload));
  auto upload = std::move(opened.upload);
  ledger_.remove_used(user, opened.freed);
  ledger_.drop_inodes(user, upload->inodes_removed());

  // The quota is reserved for every byte still to come before the first one moves; the check
  // and the reservation are one step, so parallel uploads cannot overshoot together. An
  // overwrite reserves the whole new file too: the old one stays on disk until the rename, and
  // an upload that never ends (or whose target moved away meanwhile) leaves its partial next to
  // it. Crediting the old file's bytes let put-overwrite / mv / put ... pile partials up to
  // seven times the quota. A fresh upload's metadata file, already written, is charged with it.
  const std::uint64_t start = upload->offset();
  const std::uint64_t meta = upload->resumed() ? 0 : upload->meta_bytes();
  const std::uint64_t need = size - start;
  const std::uint64_t created = upload->inodes_created();
  const bool inodes_fit = ledger_.take_inodes(user, created, max_inodes_);
  if (!inodes_fit || !ledger_.reserve(user, need + meta, limit)) {
    if (inodes_fit) ledger_.drop_inodes(user, created);
    // A fresh partial was never charged: it just goes.
    if (!upload->resumed()) {
      auto discard = [upload] { return upload->discard(); };
      co_await offload(runtime_.blocking(), std::move(discard));
    }
    if (!inodes_fit)
      co_return Outcome::fail(errc::quota_exceeded,
                              "too many files and directories: the limit is " +
                                  std::to_string(max_inodes_) + " (services.files.max_inodes)");
    co_return Outcome::fail(errc::quota_exceeded,
                            "upload needs " + std::to_string(need + meta) + " bytes; " +
                                std::to_string(ledger_.remaining(user, limit)) +
                                " left of your quota");
  }
  Reservation reservation(ledger_, user, need + meta);
  reservation.commit(meta);

  // Credit: the client may send up to `granted` (an absolute offset); each write moves it on.
  std::uint64_t granted = std::min(size, start + window_bytes_);
  json first_credit = {
      {"offset", start}, {"bytes", granted - start}, {"resumed", upload->resumed()}};
  co_await call.emit("credit", std::move(first_credit));
  for (;;) {
    auto frame = co_await call.receive();
    if (!frame)
      co_return Outcome::fail(errc::cancelled, "upload interrupted; a new put resumes it");
    auto event = frame->head.value("event", std::string());
    if (event == "data") {
      const std::uint64_t n = frame->body.size();
      if (n > granted - upload->offset())
        co_return Outcome::fail(errc::bad_request, "data beyond the granted credit");
      // Credit never runs past the size, so past the reservation neither; checked all the same,
      // since a byte written unreserved is a byte over the quota.
      if (n > reservation.left())
        co_return Outcome::fail(errc::quota_exceeded, "data beyond the quota reserved for it");
      auto write_chunk = [upload, body = std::move(frame->body)] { upload->write(body); };
      co_await offload(runtime_.blocking(), std::move(write_chunk));
      reservation.commit(n);
      bytes_uploaded_.inc(n);
      std::uint64_t next = std::min(size, upload->offset() + window_bytes_);
      if (next > granted) {
        json credit = {{"offset", upload->offset()}, {"bytes", next - granted}};
        co_await call.emit("credit", std::move(credit));
        granted = next;
      }
    } else if (event == "end") {
      auto given = frame->head.find("sha256");
      if (given != frame->head.end() && !given->is_string())
        co_return Outcome::fail(errc::bad_request, "sha256 must be 64 hex digits");
      const std::string at_end =
          given == frame->head.end() ? std::string() : lower(given->get<std::string>());
      if (!at_end.empty() && !is_sha256_hex(at_end))
        co_return Outcome::fail(errc::bad_request, "sha256 must be 64 hex digits");
      if (!sha256.empty() && !at_end.empty() && at_end != sha256)
        co_return Outcome::fail(errc::bad_request,
                                "the end event's sha256 differs from the put request's");
      const std::string expected = sha256.empty() ? at_end : sha256;
      if (expected.empty())
        co_return Outcome::fail(errc::bad_request,
                                "the put request had no sha256, so the end event needs one");
      if (upload->offset() != size)
        co_return Outcome::fail(errc::bad_request, "end after " + std::to_string(upload->offset()) +
                                                       " of " + std::to_string(size) +
                                                       " bytes; a new put resumes it");
      // Everything was reserved: whatever the target is by now, replacing it only frees bytes.
      auto finish = [upload, expected] { return upload->finish(expected); };
      auto result = co_await offload(runtime_.blocking(), std::move(finish));
      ledger_.remove_used(user, result.freed);
      ledger_.drop_inodes(user, result.inodes_freed);
      if (!result.verified)
        co_return Outcome::fail(
            errc::checksum_mismatch,
            "the data's SHA-256 is " + result.actual_sha256 + "; the upload was discarded");
      co_return Outcome::ok(
          {{"path", path}, {"size", size}, {"sha256", expected}, {"resumed_from", start}});
    } else {
      co_return Outcome::fail(errc::bad_request,
                              "an upload frame needs \"event\": \"data\" or \"end\"");
    }
  }
}

}  // namespace coserve::files
