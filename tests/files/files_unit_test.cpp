// The plain classes under the auth and files services, without sockets: path normalization,
// the jail on real directories (both resolvers), the quota ledger, partial uploads, the
// throttle, size parsing and the user store.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <thread>

#include "auth/auth.hpp"
#include "auth/user_store.hpp"
#include "coserve/error.hpp"
#include "files/file_ops.hpp"
#include "jail/path_jail.hpp"
#include "files/quota_ledger.hpp"
#include "files/tree_walk.hpp"
#include "test_support.hpp"

using namespace coserve;
using namespace coserve::files;
namespace fs = std::filesystem;

namespace {
errc code_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.code();
  }
  FAIL("no coserve::Error thrown");
  return errc::internal;
}
}  // namespace

TEST_CASE("jail::normalize joins, folds and refuses", "[files][unit]") {
  CHECK(jail::normalize("/", "") == "/");
  CHECK(jail::normalize("/", ".") == "/");
  CHECK(jail::normalize("/docs", "a/b") == "/docs/a/b");
  CHECK(jail::normalize("/docs", "/a//b/") == "/a/b");
  CHECK(jail::normalize("/docs", "..") == "/");
  CHECK(jail::normalize("/docs", "../x/./y/..") == "/x");
  CHECK(code_of([] { jail::normalize("/", ".."); }) == errc::forbidden);
  CHECK(code_of([] { jail::normalize("/docs", "../.."); }) == errc::forbidden);
  CHECK(code_of([] { jail::normalize("/", "a/../../b"); }) == errc::forbidden);
  CHECK(code_of([] { jail::normalize("/", std::string("a\0b", 3)); }) == errc::bad_request);
  CHECK(code_of([] { jail::normalize("/", std::string(256, 'x')); }) == errc::bad_request);
  CHECK(jail::normalize("/", std::string(255, 'x')) == "/" + std::string(255, 'x'));
  CHECK(code_of([] { jail::normalize("/", std::string(4097, 'x')); }) == errc::bad_request);
  CHECK(code_of([] { jail::normalize("/", ".coserve-partial.abc"); }) == errc::forbidden);
  CHECK(jail::split_parent("/a/b") == std::pair<std::string, std::string>{"/a", "b"});
  CHECK(jail::split_parent("/a") == std::pair<std::string, std::string>{"/", "a"});
  CHECK(code_of([] { jail::split_parent("/"); }) == errc::forbidden);
}

TEST_CASE("jail::Jail refuses symlinks out with both resolvers", "[files][unit]") {
  test::TempDir dir;
  auto home = dir.path() / "home";
  fs::create_directories(home / "docs");
  std::ofstream(dir.path() / "secret") << "secret";
  std::ofstream(home / "docs/a.txt") << "a";
  fs::create_symlink("../secret", home / "out");
  fs::create_symlink("/etc/passwd", home / "abs");
  fs::create_symlink("docs/a.txt", home / "inside");
  for (auto mode : {jail::Jail::Mode::automatic, jail::Jail::Mode::fallback}) {
    jail::Jail jail(home.string(), mode);
    INFO("fallback " << (mode == jail::Jail::Mode::fallback));
    CHECK(jail.open("/docs/a.txt", O_RDONLY));
    CHECK(jail.open("/", O_RDONLY | O_DIRECTORY));
    CHECK(code_of([&] { jail.open("/out", O_RDONLY); }) == errc::forbidden);
    auto abs = code_of([&] { jail.open("/abs", O_RDONLY); });
    CHECK((abs == errc::forbidden || abs == errc::not_found));
    CHECK(code_of([&] { jail.open("/missing", O_RDONLY); }) == errc::not_found);
    if (mode == jail::Jail::Mode::automatic) {
      CHECK(jail.uses_openat2());
      CHECK(jail.open("/inside", O_RDONLY));  // a symlink that stays inside is fine
    } else {
      CHECK(!jail.uses_openat2());
      CHECK(code_of([&] { jail.open("/inside", O_RDONLY); }) == errc::forbidden);
    }
  }
}

TEST_CASE("QuotaLedger never lets reservations exceed the limit", "[files][unit]") {
  QuotaLedger ledger;
  ledger.learn("u", 100);
  ledger.learn("u", 999);  // a later scan does not override the first
  CHECK(ledger.usage("u", 1000).used == 100);
  CHECK(ledger.reserve("u", 900, 1000));
  CHECK(!ledger.reserve("u", 1, 1000));
  {
    Reservation r(ledger, "u", 900);
    r.commit(400);
    CHECK(ledger.usage("u", 1000).used == 500);
    CHECK(ledger.usage("u", 1000).reserved == 500);
  }  // the unused 500 go back
  CHECK(ledger.usage("u", 1000).reserved == 0);
  CHECK(ledger.reserve("u", 500, 1000));
  ledger.release("u", 500);
  CHECK(ledger.reserve("u", 12345678, 0));  // no limit
  ledger.release("u", 12345678);
  ledger.remove_used("u", 10000);
  CHECK(ledger.usage("u", 0).used == 0);

  // Many threads racing for the same quota: the total granted never passes it.
  QuotaLedger racing;
  racing.learn("v", 0);
  std::atomic<int> granted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i)
        if (racing.reserve("v", 7, 7000)) ++granted;
    });
  for (auto& t : threads) t.join();
  CHECK(granted == 1000);
}

TEST_CASE("PartialUpload resumes, verifies and hides its files", "[files][unit]") {
  test::TempDir dir;
  jail::Jail jail((dir.path() / "home").string());
  std::string data = "0123456789";
  auto sha = sha256_hex(data);
  std::uint64_t freed = 0;
  {
    PartialUpload up(jail, "/f", data.size(), sha, false, freed);
    CHECK(up.offset() == 0);
    up.write(data.substr(0, 4));
  }  // dropped
  bool truncated = false;
  CHECK(list_dir(jail, "/", 100, truncated).empty());
  {
    PartialUpload up(jail, "/f", data.size(), sha, false, freed);
    CHECK(up.resumed());
    CHECK(up.offset() == 4);
    CHECK(code_of([&] { up.write("too much data"); }) == errc::bad_request);
    up.write(data.substr(4));
    auto result = up.finish();
    CHECK(result.verified);
  }
  CHECK(hash_file(jail, "/f").sha256 == sha);
  auto names = list_dir(jail, "/", 100, truncated);
  REQUIRE(names.size() == 1);
  CHECK(names[0].name == "f");
  CHECK(code_of([&] { PartialUpload(jail, "/f", 1, sha, false, freed); }) == errc::exists);
  {
    PartialUpload up(jail, "/g", 3, sha256_hex("abc"), false, freed);
    up.write("abd");
    auto result = up.finish();
    CHECK(!result.verified);
    CHECK(result.freed == 3 + up.meta_bytes());  // the data and its metadata file
    CHECK(result.inodes_freed == 2);
  }
  CHECK(code_of([&] { stat_path(jail, "/g"); }) == errc::not_found);
  CHECK(fs::is_empty(dir.path() / "home") == false);
  int entries = 0;
  for (auto& e : fs::directory_iterator(dir.path() / "home")) {
    (void)e;
    ++entries;
  }
  CHECK(entries == 1);  // only "f": the failed upload left nothing behind
}

TEST_CASE("Throttle backs off after the free failures and forgets on success", "[auth][unit]") {
  using namespace std::chrono_literals;
  auth::Throttle throttle({.free_failures = 2, .base = 100ms, .cap = 350ms, .forget_after = 10min});
  auto t0 = auth::Throttle::Clock::now();
  CHECK(throttle.wait_time("k", t0) == 0ms);
  throttle.failure("k", t0);
  throttle.failure("k", t0);
  CHECK(throttle.wait_time("k", t0) == 100ms);
  CHECK(throttle.wait_time("k", t0 + 100ms) == 0ms);
  throttle.failure("k", t0);
  CHECK(throttle.wait_time("k", t0) == 200ms);
  throttle.failure("k", t0);
  CHECK(throttle.wait_time("k", t0) == 350ms);  // capped
  CHECK(throttle.wait_time("other", t0) == 0ms);
  throttle.success("k");
  CHECK(throttle.wait_time("k", t0) == 0ms);
}

TEST_CASE("parse_size and user names", "[auth][unit]") {
  CHECK(auth::parse_size("0") == 0u);
  CHECK(auth::parse_size("1234") == 1234u);
  CHECK(auth::parse_size("500M") == 500ull << 20);
  CHECK(auth::parse_size("2G") == 2ull << 30);
  CHECK(auth::parse_size("1k") == 1024u);
  CHECK(auth::parse_size("3MB") == 3ull << 20);
  CHECK(!auth::parse_size(""));
  CHECK(!auth::parse_size("M"));
  CHECK(!auth::parse_size("12X"));
  CHECK(!auth::parse_size("99999999999999999999"));
  CHECK(!auth::parse_size("99999999999T"));
  CHECK(auth::UserStore::valid_name("alice.b-c_1"));
  CHECK(!auth::UserStore::valid_name(""));
  CHECK(!auth::UserStore::valid_name("../x"));
  CHECK(!auth::UserStore::valid_name(".hidden"));
  CHECK(!auth::UserStore::valid_name("-opt"));
  CHECK(!auth::UserStore::valid_name(std::string(33, 'a')));
}

TEST_CASE("UserStore adds, verifies, survives a reload, and finds users", "[auth][unit]") {
  test::TempDir dir;
  auth::UserStore store(dir.path());
  CHECK(store.empty());
  auto admin = store.ensure_admin("");
  REQUIRE(admin);
  CHECK(!store.ensure_admin(""));
  CHECK(store.verify("admin", *admin));
  auto alice = store.add("alice", "pw", 1000, false);
  CHECK(alice.home == dir.path() / "homes" / "alice");
  CHECK(fs::is_directory(alice.home));
  CHECK(code_of([&] { store.add("alice", "x", 0, false); }) == errc::exists);
  CHECK(store.verify("alice", "pw"));
  CHECK(!store.verify("alice", "PW"));
  CHECK(!store.verify("nobody", "pw"));

  // Another process's change shows after reload_if_changed.
  auth::UserStore other(dir.path());
  other.add("bob", "pw-b", 0, true);
  CHECK(!store.find("bob"));
  store.reload_if_changed();
  auto bob = store.find("bob");
  REQUIRE(bob);
  CHECK(bob->shell);
  store.remove("bob");
  CHECK(!store.find("bob"));
  CHECK(code_of([&] { store.set_password("bob", "x"); }) == errc::not_found);
  // No temp file is left behind.
  for (auto& e : fs::directory_iterator(dir.path()))
    CHECK(e.path().filename().string().find(".tmp") == std::string::npos);
}

TEST_CASE("A stored file's digest is reused only while size and mtime match", "[files][unit]") {
  test::TempDir dir;
  jail::Jail jail((dir.path() / "home").string());
  const std::string data(300000, 'x');
  std::uint64_t freed = 0;
  {
    PartialUpload up(jail, "/f", data.size(), sha256_hex(data), false, freed);
    up.write(data);
    REQUIRE(up.finish().verified);
  }
  const fs::path file = dir.path() / "home/f";
  char value[200] = {};
  if (::getxattr(file.c_str(), kDigestXattr, value, sizeof value - 1) <= 0 && errno == ENOTSUP) {
    WARN("this file system keeps no user xattrs: every get hashes");
    return;
  }
  {
    FileReader reader(jail, "/f", 1000);
    CHECK(reader.digest_cached());
    while (!reader.read(65536).empty()) {
    }
    CHECK(reader.finish().sha256 == sha256_hex(data));
  }
  // Changed behind the service's back (same size): the attribute no longer counts.
  {
    std::fstream out(file, std::ios::in | std::ios::out | std::ios::binary);
    out.seekp(10);
    out.put('y');
  }
  std::string changed = data;
  changed[10] = 'y';
  FileReader reader(jail, "/f", 0);
  CHECK(!reader.digest_cached());
  CHECK(hash_file(jail, "/f").sha256 == sha256_hex(changed));
  // A forged attribute with the wrong size is ignored too.
  std::string forged = sha256_hex("nope") + " 1 0";
  REQUIRE(::setxattr(file.c_str(), kDigestXattr, forged.data(), forged.size(), 0) == 0);
  CHECK(hash_file(jail, "/f").sha256 == sha256_hex(changed));
}

TEST_CASE("sweep_partials deletes only abandoned partials nobody has open", "[files][unit]") {
  test::TempDir dir;
  const std::string home = (dir.path() / "home").string();
  jail::Jail jail(home);
  make_dir(jail, "/d", false);
  ActivePartials active;
  std::uint64_t freed = 0;
  auto old = std::make_unique<PartialUpload>(jail, "/d/old", 100, sha256_hex("x"), false, freed,
                                             &active);
  old->write(std::string(40, 'a'));
  auto open = std::make_unique<PartialUpload>(jail, "/open", 100, sha256_hex("y"), false, freed,
                                              &active);
  open->write(std::string(30, 'b'));
  const auto old_meta = old->meta_bytes();
  old.reset();  // abandoned; `open` is still in progress
  const auto long_ago = fs::file_time_type::clock::now() - std::chrono::hours(48);
  for (auto& e : fs::recursive_directory_iterator(home)) fs::last_write_time(e.path(), long_ago);
  // A second upload of the same file while it is open: busy, and its partial stays.
  CHECK(code_of([&] {
          PartialUpload(jail, "/open", 100, sha256_hex("other"), false, freed, &active);
        }) == errc::busy);

  CHECK(sweep_partials(home, std::chrono::hours(1), active).bytes == 40 + old_meta);
  int partials = 0;
  for (auto& e : fs::recursive_directory_iterator(home))
    if (e.path().filename().string().starts_with(jail::kPartialPrefix)) ++partials;
  CHECK(partials == 2);  // /open's data and metadata
  CHECK(fs::is_directory(fs::path(home) / "d"));
  const auto open_meta = open->meta_bytes();
  open.reset();  // ended: now it is abandoned too, once older than the TTL
  CHECK(sweep_partials(home, std::chrono::hours(1000), active).bytes == 0);
  auto swept = sweep_partials(home, std::chrono::hours(1), active);
  CHECK(swept.bytes == 30 + open_meta);
  CHECK(swept.inodes == 2);
  CHECK(fs::is_empty(home) == false);  // "d" stays
}

TEST_CASE("QuotaLedger counts entries against max_inodes and tells what is left",
          "[files][unit][quota]") {
  QuotaLedger ledger;
  ledger.learn("u", 100, 5);
  CHECK(ledger.usage("u", 1000).inodes == 5);
  CHECK(ledger.take_inodes("u", 5, 10));
  CHECK(!ledger.take_inodes("u", 1, 10));
  CHECK(ledger.take_inodes("u", 1, 0));  // no limit
  ledger.drop_inodes("u", 3);
  CHECK(ledger.usage("u", 1000).inodes == 8);
  CHECK(ledger.remaining("u", 1000) == 900);
  CHECK(ledger.reserve("u", 850, 1000));
  CHECK(ledger.remaining("u", 1000) == 50);
  CHECK(ledger.remaining("u", 0) == QuotaLedger::kUnlimited);
  // A rescan replaces what is on disk and keeps the reservation.
  ledger.relearn("u", QuotaLedger::DiskUsage{2000, 1});
  CHECK(ledger.usage("u", 1000).used == 2000);
  CHECK(ledger.usage("u", 1000).reserved == 850);
  CHECK(ledger.usage("u", 1000).inodes == 1);
  CHECK(ledger.remaining("u", 1000) == 0);
  CHECK(ledger.remaining("nobody", 1000) == 1000);
}

namespace {

// `levels` directories "d" inside each other under `home`, made with mkdirat, a file of
// `bytes` at the bottom.
void make_deep(const std::string& home, std::size_t levels, std::size_t bytes) {
  fs::create_directories(home);
  int fd = ::open(home.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  for (std::size_t i = 0; i < levels; ++i) {
    REQUIRE(::mkdirat(fd, "d", 0755) == 0);
    int next = ::openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(next >= 0);
    ::close(fd);
    fd = next;
  }
  int file = ::openat(fd, "f", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  REQUIRE(file >= 0);
  std::string data(bytes, 'x');
  REQUIRE(::write(file, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
  ::close(file);
  ::close(fd);
}

// Lowers this process's soft descriptor limit for the scope.
class FewDescriptors {
 public:
  explicit FewDescriptors(rlim_t n) {
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved_) == 0);
    struct rlimit lower = saved_;
    lower.rlim_cur = n;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &lower) == 0);
  }
  ~FewDescriptors() { ::setrlimit(RLIMIT_NOFILE, &saved_); }

 private:
  struct rlimit saved_ {};
};

}  // namespace

TEST_CASE("A tree thousands of levels deep is scanned and removed with few descriptors",
          "[files][unit][limits]") {
  test::TempDir dir;
  const std::string home = (dir.path() / "home").string();
  make_deep(home, 5000, 123);
  jail::Jail jail(home);
  {
    FewDescriptors few(64);  // a descriptor per level would need 5000
    auto usage = QuotaLedger::scan(home);
    CHECK(usage.bytes == 123);
    CHECK(usage.inodes == 5001);
    // The walk sees every level, deepest included, and stops when told.
    std::size_t deepest = 0;
    walk_tree(jail.home_fd(), [&](int, const char*, const struct stat&, std::size_t depth) {
      deepest = std::max(deepest, depth);
      return WalkStep::next;
    });
    CHECK(deepest == 5001);
    std::size_t seen = 0;
    CHECK(!walk_tree(jail.home_fd(), [&](int, const char*, const struct stat&, std::size_t) {
      return ++seen == 10 ? WalkStep::stop : WalkStep::next;
    }));
    CHECK(seen == 10);
    // mv refuses to carry the tree under a depth limit, and leaves it where it was.
    make_dir(jail, "/shallow", false);
    CHECK(code_of([&] { move_path(jail, "/d", "/shallow/d", false, 64); }) == errc::bad_request);
    auto freed = remove_path(jail, "/d", true);
    CHECK(freed.bytes == 123);
    CHECK(freed.inodes == 5001);
  }
  CHECK(!fs::exists(fs::path(home) / "d"));
  CHECK(QuotaLedger::scan(home).inodes == 1);  // "shallow"
}

TEST_CASE("make_dir asks the inode budget before each directory it creates",
          "[files][unit][limits]") {
  test::TempDir dir;
  jail::Jail jail((dir.path() / "home").string());
  int left = 3, given_back = 0;
  InodeBudget budget{[&] { return left > 0 ? (--left, true) : false; }, [&] { ++given_back; }};
  CHECK(make_dir(jail, "/a/b", true, budget) == 2);
  CHECK(make_dir(jail, "/a/b", true, budget) == 0);  // existing prefixes cost nothing
  CHECK(left == 1);
  CHECK(code_of([&] { make_dir(jail, "/a/b/c/d", true, budget); }) == errc::quota_exceeded);
  CHECK(fs::is_directory(dir.path() / "home/a/b/c"));
  CHECK(code_of([&] { make_dir(jail, "/a", false, InodeBudget{[] { return true; }, [&] {
                                                                   ++given_back;
                                                                 }}); }) == errc::exists);
  CHECK(given_back == 1);  // the refused mkdir of an existing name gave its inode back
  CHECK(jail::depth_of("/") == 0);
  CHECK(jail::depth_of("/a") == 1);
  CHECK(jail::depth_of("/a/b/c") == 3);
}
