#pragma once
// The user database: `<data_dir>/users.json`, Argon2id password hashes (libsodium
// crypto_pwhash_str), a quota and flags per user. The server and `coserve user ...` share it.
//
// Threading: every member is thread-safe. In-memory reads (find, list) are cheap and may run on
// an I/O thread. Members marked BLOCKING hash passwords (Argon2id, ~50-100 ms) or touch the disk:
// the server calls them through offload() on the blocking pool, never on an I/O thread.
//
// Writers (add, set_password, remove, ensure_admin) take an flock on `users.json.lock`, reload
// the file, change it and write it atomically (temp + fsync + rename + fsync of the directory),
// so a `coserve user add` beside a running server never loses an update. The server picks such
// changes up with reload_if_changed().
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coserve::auth {

struct User {
  std::string name;
  std::filesystem::path home;     // <data_dir>/homes/<name>
  std::uint64_t quota_bytes = 0;  // 0 = no limit
  bool shell = false;             // may run a shell (services/command policy)
};

class UserStore {
 public:
  // BLOCKING. Loads users.json when present (an empty store otherwise). Throws
  // std::runtime_error when the file exists but cannot be parsed.
  explicit UserStore(std::filesystem::path data_dir);

  // The user named so, or nullopt. Thread-safe, in-memory.
  std::optional<User> find(std::string_view name) const;
  // The names equal to `name` ignoring ASCII case ("Alice" → {"alice"}), for look-alike checks
  // such as chat nicks. Thread-safe, in-memory.
  std::vector<std::string> names_like(std::string_view name) const;
  // Every user, sorted by name. Thread-safe, in-memory.
  std::vector<User> list() const;
  bool empty() const;

  // BLOCKING (Argon2id). True when the user exists and the password matches. An unknown user
  // is checked against a dummy hash so both failures take the same time.
  bool verify(std::string_view name, std::string_view password) const;

  // BLOCKING. Adds a user and creates their home. Throws coserve::Error(exists) when taken,
  // Error(bad_request) for an invalid name or an empty password.
  User add(std::string_view name, std::string_view password, std::uint64_t quota_bytes, bool shell);
  // BLOCKING. Throws Error(not_found) for an unknown user.
  void set_password(std::string_view name, std::string_view password);
  // BLOCKING. Removes the user from users.json; their home is left on disk (an operator's
  // decision). Throws Error(not_found).
  void remove(std::string_view name);

  // BLOCKING. First start: when there is no user at all, creates `admin` with `password`
  // (or a random one when empty). Returns the password it set, nullopt when users existed.
  std::optional<std::string> ensure_admin(std::string_view password);

  // BLOCKING (a stat). Rereads users.json if another process changed it since the last read.
  // Returns the names whose password changed or who were removed by that change (their
  // sessions must end). Throws std::runtime_error when the new file cannot be parsed (the old
  // users stay).
  std::vector<std::string> reload_if_changed();

  const std::filesystem::path& data_dir() const noexcept { return data_dir_; }
  std::filesystem::path file() const { return data_dir_ / "users.json"; }

  // A user name: 1-32 of [A-Za-z0-9_.-], not starting with '.' or '-'.
  static bool valid_name(std::string_view name);

 private:
  // Identity of the users.json last read: a rename makes a new inode, so the inode alone catches
  // edits that land within one mtime tick.
  struct Stamp {
    std::uint64_t inode = 0;
    std::int64_t mtime_ns = 0;
    std::int64_t size = -1;
    bool operator==(const Stamp&) const = default;
  };
  static Stamp stamp_of(const std::filesystem::path& file);
  struct Record {
    User user;
    std::string hash;  // crypto_pwhash_str output
  };
  // Reads users.json (no lock: touches no member but data_dir_). Empty when there is none.
  std::vector<Record> read_records(Stamp& stamp) const;
  std::string serialize(const std::vector<Record>& records) const;
  template <class Fn>
  void modify(Fn&& change);  // flock, reread, change(records), atomic write, swap in

  std::filesystem::path data_dir_;
  mutable std::mutex mutex_;  // guards records_ and loaded_stamp_; held for in-memory work only
  std::vector<Record> records_;
  Stamp loaded_stamp_{};
};

// Parses a size: bytes, or a number with a K/M/G/T suffix (powers of 1024). nullopt if invalid.
std::optional<std::uint64_t> parse_size(std::string_view text);

}  // namespace coserve::auth
