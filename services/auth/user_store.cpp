#include "auth/user_store.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "coserve/error.hpp"

namespace coserve::auth {
namespace {

using json = nlohmann::json;

// Interactive limits: ~64 MiB and a fraction of a second per hash, which bounds what a burst of
// logins costs the blocking pool.
constexpr unsigned long long kOpsLimit = crypto_pwhash_OPSLIMIT_INTERACTIVE;
constexpr std::size_t kMemLimit = crypto_pwhash_MEMLIMIT_INTERACTIVE;

void init_sodium() {
  // sodium_init is thread-safe and idempotent; < 0 means no usable randomness.
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
}

std::string hash_password(std::string_view password) {
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str(out, password.data(), password.size(), kOpsLimit, kMemLimit) != 0)
    throw std::runtime_error("out of memory while hashing a password");
  return out;
}

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

void fsync_directory(const std::filesystem::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_errno("open " + dir.string());
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw_errno("fsync " + dir.string());
}

// Temp file + fsync + rename + fsync of the directory: after a crash the file is either the old
// or the new version, never half of one.
void write_durably(const std::filesystem::path& path, std::string_view content) {
  auto tmp = path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw_errno("open " + tmp.string());
  std::size_t done = 0;
  while (done < content.size()) {
    auto n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      throw std::system_error(err, std::generic_category(), "write " + tmp.string());
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    throw std::system_error(err, std::generic_category(), "fsync " + tmp.string());
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw_errno("rename " + tmp.string());
  fsync_directory(path.parent_path());
}

// An exclusive flock on <data_dir>/users.json.lock for the life of the object: serialises
// writers across processes (the server and `coserve user ...`).
class FileLock {
 public:
  explicit FileLock(const std::filesystem::path& path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0) throw_errno("open " + path.string());
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) {
        int err = errno;
        ::close(fd_);
        throw std::system_error(err, std::generic_category(), "flock " + path.string());
      }
    }
  }
  ~FileLock() { ::close(fd_); }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

template <class Records>
void sort_by_name(Records& records) {
  std::sort(records.begin(), records.end(),
            [](const auto& a, const auto& b) { return a.user.name < b.user.name; });
}

std::string random_password() {
  // 18 random bytes → 24 URL-safe characters.
  unsigned char raw[18];
  randombytes_buf(raw, sizeof raw);
  char out[sodium_base64_ENCODED_LEN(sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
  sodium_bin2base64(out, sizeof out, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  return out;
}

}  // namespace

std::optional<std::uint64_t> parse_size(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::uint64_t value = 0;
  std::size_t i = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    if (value > (UINT64_MAX - 9) / 10) return std::nullopt;
    value = value * 10 + static_cast<std::uint64_t>(text[i] - '0');
  }
  if (i == 0) return std::nullopt;
  std::string_view suffix = text.substr(i);
  if (suffix.size() == 2 && (suffix[1] == 'B' || suffix[1] == 'b')) suffix = suffix.substr(0, 1);
  unsigned shift = 0;
  if (suffix.empty() || suffix == "B" || suffix == "b")
    shift = 0;
  else if (suffix == "K" || suffix == "k")
    shift = 10;
  else if (suffix == "M" || suffix == "m")
    shift = 20;
  else if (suffix == "G" || suffix == "g")
    shift = 30;
  else if (suffix == "T" || suffix == "t")
    shift = 40;
  else
    return std::nullopt;
  if (shift && value > (UINT64_MAX >> shift)) return std::nullopt;
  return value << shift;
}

UserStore::Stamp UserStore::stamp_of(const std::filesystem::path& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return Stamp{};
  return Stamp{static_cast<std::uint64_t>(st.st_ino),
               static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
               static_cast<std::int64_t>(st.st_size)};
}

bool UserStore::valid_name(std::string_view name) {
  if (name.empty() || name.size() > 32 || name[0] == '.' || name[0] == '-') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

UserStore::UserStore(std::filesystem::path data_dir) : data_dir_(std::move(data_dir)) {
  init_sodium();
  records_ = read_records(loaded_stamp_);
}

std::vector<UserStore::Record> UserStore::read_records(Stamp& stamp) const {
  auto path = file();
  stamp = stamp_of(path);
  std::ifstream in(path);
  if (!in) return {};  // no users yet
  std::stringstream text;
  text << in.rdbuf();
  std::vector<Record> loaded;
  try {
    json doc = json::parse(text.str());
    for (auto& entry : doc.at("users")) {
      Record r;
      r.user.name = entry.at("name").get<std::string>();
      if (!valid_name(r.user.name))
        throw std::runtime_error("invalid user name '" + r.user.name + "'");
      r.hash = entry.at("hash").get<std::string>();
      r.user.quota_bytes = entry.value("quota_bytes", std::uint64_t{0});
      r.user.shell = entry.value("shell", false);
      std::filesystem::path home = entry.value("home", "homes/" + r.user.name);
      r.user.home = home.is_absolute() ? home : data_dir_ / home;
      loaded.push_back(std::move(r));
    }
  } catch (const json::exception& e) {
    throw std::runtime_error(path.string() + ": " + e.what());
  }
  sort_by_name(loaded);
  return loaded;
}

std::string UserStore::serialize(const std::vector<Record>& records) const {
  json users = json::array();
  for (auto& r : records) {
    auto home = r.user.home.lexically_relative(data_dir_);
    users.push_back(
        {{"name", r.user.name},
         {"hash", r.hash},
         {"quota_bytes", r.user.quota_bytes},
         {"shell", r.user.shell},
         {"home", home.empty() || *home.begin() == ".." ? r.user.home.string() : home.string()}});
  }
  return json{{"version", 1}, {"users", std::move(users)}}.dump(2) + "\n";
}

template <class Fn>
void UserStore::modify(Fn&& change) {
  std::filesystem::create_directories(data_dir_);
  // The flock serialises writers across processes (and threads: each lock is its own open file
  // description). The disk work happens on a copy; mutex_ is taken only to swap it in.
  FileLock file_lock(data_dir_ / "users.json.lock");
  Stamp ignored;
  auto records = read_records(ignored);
  change(records);
  write_durably(file(), serialize(records));
  auto stamp = stamp_of(file());
  std::lock_guard lock(mutex_);
  records_ = std::move(records);
  loaded_stamp_ = stamp;
}

std::optional<User> UserStore::find(std::string_view name) const {
  std::lock_guard lock(mutex_);
  for (auto& r : records_)
    if (r.user.name == name) return r.user;
  return std::nullopt;
}

std::vector<std::string> UserStore::names_like(std::string_view name) const {
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  std::vector<std::string> out;
  std::lock_guard lock(mutex_);
  for (auto& r : records_) {
    const auto& candidate = r.user.name;
    if (candidate.size() == name.size() &&
        std::equal(candidate.begin(), candidate.end(), name.begin(),
                   [&](char a, char b) { return lower(a) == lower(b); }))
      out.push_back(candidate);
  }
  return out;
}

std::vector<User> UserStore::list() const {
  std::lock_guard lock(mutex_);
  std::vector<User> users;
  for (auto& r : records_) users.push_back(r.user);
  return users;
}

bool UserStore::empty() const {
  std::lock_guard lock(mutex_);
  return records_.empty();
}

bool UserStore::verify(std::string_view name, std::string_view password) const {
  std::string hash;
  {
    std::lock_guard lock(mutex_);
    for (auto& r : records_)
      if (r.user.name == name) hash = r.hash;
  }
  bool known = !hash.empty();
  if (!known) {
    // Same work for an unknown user as for a wrong password: no timing oracle for names.
    static const std::string dummy = hash_password("coserve dummy password");
    hash = dummy;
  }
  bool match = crypto_pwhash_str_verify(hash.c_str(), password.data(), password.size()) == 0;
  return known && match;
}

User UserStore::add(std::string_view name, std::string_view password, std::uint64_t quota_bytes,
                    bool shell) {
  if (!valid_name(name))
    throw Error(errc::bad_request,
                "invalid user name (1-32 of A-Z a-z 0-9 _ . -, not starting with . or -)");
  if (password.empty()) throw Error(errc::bad_request, "empty password");
  std::string hash = hash_password(password);  // before any lock: it is the slow part
  User added;
  modify([&](std::vector<Record>& records) {
    for (auto& r : records)
      if (r.user.name == name) throw Error(errc::exists, "user '" + std::string(name) + "' exists");
    Record r{User{std::string(name), data_dir_ / "homes" / std::string(name), quota_bytes, shell},
             std::move(hash)};
    std::filesystem::create_directories(r.user.home);
    std::filesystem::permissions(r.user.home, std::filesystem::perms::owner_all);
    added = r.user;
    records.push_back(std::move(r));
    sort_by_name(records);
  });
  return added;
}

void UserStore::set_password(std::string_view name, std::string_view password) {
  if (password.empty()) throw Error(errc::bad_request, "empty password");
  std::string hash = hash_password(password);
  modify([&](std::vector<Record>& records) {
    for (auto& r : records)
      if (r.user.name == name) {
        r.hash = std::move(hash);
        return;
      }
    throw Error(errc::not_found, "no user '" + std::string(name) + "'");
  });
}

void UserStore::remove(std::string_view name) {
  modify([&](std::vector<Record>& records) {
    auto it = std::find_if(records.begin(), records.end(),
                           [&](const Record& r) { return r.user.name == name; });
    if (it == records.end()) throw Error(errc::not_found, "no user '" + std::string(name) + "'");
    records.erase(it);
  });
}

std::optional<std::string> UserStore::ensure_admin(std::string_view password) {
  if (!empty()) return std::nullopt;
  std::string chosen = password.empty() ? random_password() : std::string(password);
  std::string hash = hash_password(chosen);
  bool created = false;
  modify([&](std::vector<Record>& records) {
    if (!records.empty()) return;  // another process was first
    Record r{User{"admin", data_dir_ / "homes" / "admin", 0, true}, std::move(hash)};
    std::filesystem::create_directories(r.user.home);
    std::filesystem::permissions(r.user.home, std::filesystem::perms::owner_all);
    records.push_back(std::move(r));
    created = true;
  });
  if (!created) return std::nullopt;
  return chosen;
}

std::vector<std::string> UserStore::reload_if_changed() {
  auto now = stamp_of(file());
  {
    std::lock_guard lock(mutex_);
    if (now == loaded_stamp_) return {};
  }
  Stamp stamp;
  std::vector<Record> fresh;
  try {
    fresh = read_records(stamp);
  } catch (...) {
    // Keep serving with the users we had rather than locking everyone out over a bad edit;
    // remember the stamp so the error is reported once, not on every login.
    std::lock_guard lock(mutex_);
    loaded_stamp_ = now;
    throw;
  }
  // Compared under the lock with what is swapped out, so two concurrent reloads report each
  // change once.
  std::vector<std::string> revoked;
  std::lock_guard lock(mutex_);
  for (auto& old : records_) {
    auto it = std::find_if(fresh.begin(), fresh.end(),
                           [&](const Record& r) { return r.user.name == old.user.name; });
    if (it == fresh.end() || it->hash != old.hash) revoked.push_back(old.user.name);
  }
  records_ = std::move(fresh);
  loaded_stamp_ = stamp;
  return revoked;
}

}  // namespace coserve::auth
