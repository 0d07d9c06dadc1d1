// The files service against the real server: the limits that keep one user from costing the
// server without bound (issue 15 §3) — path depth (services.files.max_depth), entries per home
// (services.files.max_inodes), and trees deeper than any limit that are already on disk (made by
// a program the command service ran, or by hand): the quota scan and `rm -r` walk them
// iteratively with a bounded number of descriptors.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "files_helpers.hpp"

using namespace coserve;
using namespace coserve::test;
using namespace coserve::test::files;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// "a/a/.../a": `levels` components.
std::string nested(std::size_t levels, const std::string& name = "a") {
  std::string path;
  for (std::size_t i = 0; i < levels; ++i) path += (i ? "/" : "") + name;
  return path;
}

// Makes `levels` directories named "d", each inside the last, under `home` with mkdirat (no path
// ever gets long), and a file of `bottom_bytes` in the deepest one.
void make_deep_tree(const fs::path& home, std::size_t levels, std::size_t bottom_bytes) {
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
  int file = ::openat(fd, "bottom.bin", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  REQUIRE(file >= 0);
  std::string data(bottom_bytes, 'z');
  REQUIRE(::write(file, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
  ::close(file);
  ::close(fd);
}

// The usual default of 1024 descriptors for the running server (it raises its soft limit to the
// hard one at start, so both are set): a walk holding one per level runs out well before 3000.
void limit_descriptors(pid_t pid, rlim_t n) {
  struct rlimit lim {n, n};
  REQUIRE(::prlimit(pid, RLIMIT_NOFILE, &lim, nullptr) == 0);
}

}  // namespace

TEST_CASE("files: a tree 3000 levels deep already on disk costs the server nothing",
          "[files][limits][security]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw", "1M");
  const fs::path home = dir.path() / "homes/alice";
  constexpr std::size_t kLevels = 3000;
  make_deep_tree(home, kLevels, 1000);
  for (int start = 0; start < 2; ++start) {  // a start, then a restart over the same tree
    ServerProcess server({}, dir.path());
    limit_descriptors(server.pid(), 1024);
    run(
        [&]() -> awaitable<void> {
          auto c = co_await connect(server, "alice", "pw");
          // The scan after the (re)start reaches the bottom: every level and the file count.
          auto q = co_await files_call(*c, Req("quota"));
          INFO(q.head.dump());
          CHECK(error_of(q) == "ok");
          CHECK(q.head["used"] == 1000);
          CHECK(q.head["inodes"] == kLevels + 1);
          auto ls = co_await files_call(*c, Req("ls").set("path", "/"));
          CHECK(error_of(ls) == "ok");
          // Nothing may be made deeper through the service.
          auto deeper = co_await files_call(
              *c, Req("mkdir").set("path", nested(70, "d") + "/x").set("parents", true));
          CHECK(error_of(deeper) == "bad_request");
        }(),
        std::chrono::seconds(60));
    CHECK(server.running());
    if (start == 0) server.stop();
    if (start == 1) {
      run(
          [&]() -> awaitable<void> {
            auto c = co_await connect(server, "alice", "pw");
            // rm -r walks it iteratively: one descriptor per level would need 3000.
            auto rm = co_await files_call(*c, Req("rm").set("path", "d").set("recursive", true));
            INFO(rm.head.dump());
            CHECK(error_of(rm) == "ok");
            CHECK(rm.head["freed"] == 1000);
            auto q = co_await files_call(*c, Req("quota"));
            CHECK(q.head["used"] == 0);
            CHECK(q.head["inodes"] == 0);
            auto ping = co_await files_call(*c, Req("pwd"));
            CHECK(error_of(ping) == "ok");
          }(),
          std::chrono::seconds(60));
      CHECK(server.running());
      CHECK(!fs::exists(home / "d"));
    }
  }
}

TEST_CASE("files: paths are at most services.files.max_depth levels deep", "[files][limits]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw");
  ServerProcess server({"--set", "services.files.max_depth=16"}, dir.path());
  run([&]() -> awaitable<void> {
    auto c = co_await connect(server, "alice", "pw");
    auto at_limit =
        co_await files_call(*c, Req("mkdir").set("path", nested(16)).set("parents", true));
    CHECK(error_of(at_limit) == "ok");
    auto over = co_await files_call(*c, Req("mkdir").set("path", nested(17)).set("parents", true));
    CHECK(error_of(over) == "bad_request");
    CHECK(over.head["error"]["message"].get<std::string>().find("max_depth") != std::string::npos);
    auto one_more = co_await files_call(*c, Req("mkdir").set("path", nested(17)));
    CHECK(error_of(one_more) == "bad_request");
    // A file counts as a level too.
    auto deep_put = co_await put_file(*c, nested(16) + "/f", "x");
    CHECK(error_of(deep_put.reply) == "bad_request");
    auto put_ok = co_await put_file(*c, nested(15) + "/f", "x");
    CHECK(error_of(put_ok.reply) == "ok");

    // Moving a directory carries its subtree: two trees at the limit, one moved into the other,
    // would double the depth with each mv.
    auto b =
        co_await files_call(*c, Req("mkdir").set("path", nested(10, "b")).set("parents", true));
    REQUIRE(error_of(b) == "ok");
    auto doubled =
        co_await files_call(*c, Req("mv").set("from", "a").set("to", nested(10, "b") + "/a"));
    CHECK(error_of(doubled) == "bad_request");
    auto still = co_await files_call(*c, Req("stat").set("path", nested(16)));
    CHECK(error_of(still) == "ok");
    // Within the limit it moves: "b" (10 levels) into a 5-level directory.
    auto shallow =
        co_await files_call(*c, Req("mkdir").set("path", nested(5, "s")).set("parents", true));
    REQUIRE(error_of(shallow) == "ok");
    auto fits =
        co_await files_call(*c, Req("mv").set("from", "b").set("to", nested(5, "s") + "/b"));
    CHECK(error_of(fits) == "ok");
    // A plain file: only its own depth counts.
    auto file_mv =
        co_await files_call(*c, Req("mv").set("from", nested(15) + "/f").set("to", "f"));
    CHECK(error_of(file_mv) == "ok");
  }());
}

TEST_CASE("files: entries per home are limited by services.files.max_inodes",
          "[files][limits][quota]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw");  // no byte quota: directories cost bytes nowhere
  ServerProcess server({"--set", "services.files.max_inodes=20"}, dir.path());
  const fs::path home = dir.path() / "homes/alice";
  run([&]() -> awaitable<void> {
    auto c = co_await connect(server, "alice", "pw");
    auto first = co_await files_call(*c, Req("mkdir").set("path", nested(15)).set("parents", true));
    CHECK(error_of(first) == "ok");
    // 15 + 6 > 20: refused part way; what was made stays counted.
    auto more = co_await files_call(
        *c, Req("mkdir").set("path", nested(15) + "/" + nested(6, "b")).set("parents", true));
    CHECK(error_of(more) == "quota_exceeded");
    CHECK(more.head["error"]["message"].get<std::string>().find("max_inodes") !=
          std::string::npos);
    auto q = co_await files_call(*c, Req("quota"));
    CHECK(q.head["inodes"] == 20);
    CHECK(q.head["max_inodes"] == 20);
    std::size_t on_disk = 0;
    for (auto it = fs::recursive_directory_iterator(home); it != fs::recursive_directory_iterator();
         ++it)
      ++on_disk;
    CHECK(on_disk == 20);
    // Full: no directory, no upload (its partial and metadata are two entries).
    auto dir_refused = co_await files_call(*c, Req("mkdir").set("path", "x"));
    CHECK(error_of(dir_refused) == "quota_exceeded");
    auto put_refused = co_await put_file(*c, "f", "data");
    CHECK(error_of(put_refused.reply) == "quota_exceeded");
    CHECK(bytes_on_disk(home) == 0);  // the refused upload left no partial
    // rm gives entries back.
    auto rm = co_await files_call(*c, Req("rm").set("path", "a").set("recursive", true));
    CHECK(error_of(rm) == "ok");
    auto q2 = co_await files_call(*c, Req("quota"));
    CHECK(q2.head["inodes"] == 0);
    auto put_ok = co_await put_file(*c, "f", "data");
    CHECK(error_of(put_ok.reply) == "ok");
    auto q3 = co_await files_call(*c, Req("quota"));
    CHECK(q3.head["inodes"] == 1);  // the partial became the file; its metadata is gone
  }());
}
