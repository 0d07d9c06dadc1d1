// The jail: a corpus of hostile paths, each tried with every op that takes a path, with the
// kernel resolver (openat2) and with the fallback, and with `command.cd` (the command service
// resolves its working directory with the same jail). Afterwards nothing outside the home was
// changed and no reply carried a byte of it.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <map>

#include "files_helpers.hpp"

using namespace coserve;
using namespace coserve::test;
using namespace coserve::test::files;
namespace fs = std::filesystem;

namespace {

const std::string kSecret = "TOPSECRET-7f3a9c";

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

// Path → content of every file under `root` (symlinks by their target), for before/after.
std::map<std::string, std::string> snapshot(const fs::path& root) {
  std::map<std::string, std::string> out;
  for (auto& entry : fs::recursive_directory_iterator(root)) {
    auto rel = fs::relative(entry.path(), root).string();
    if (entry.is_symlink()) {
      out[rel] = "-> " + fs::read_symlink(entry.path()).string();
    } else if (entry.is_regular_file()) {
      std::ifstream in(entry.path());
      out[rel] = std::string(std::istreambuf_iterator<char>(in), {});
    } else {
      out[rel] = "<dir>";
    }
  }
  return out;
}

// What lies outside alice's home and must not change: the other user's home, a directory
// beside the homes, and the user database.
std::map<std::string, std::string> outside_state(const fs::path& data_dir) {
  auto state = snapshot(data_dir / "outside");
  for (auto& [k, v] : snapshot(data_dir / "homes/bob")) state["bob/" + k] = v;
  std::ifstream users(data_dir / "users.json");
  state["users.json"] = std::string(std::istreambuf_iterator<char>(users), {});
  return state;
}

// Paths that climb out, pass through a symlink that leads out, or cannot be a name at all.
std::vector<std::string> corpus() {
  std::vector<std::string> paths = {
      "..", "../", "../..", "/..", "/../", "/../..", "../../..", "../../../../../../etc/passwd",
      "../bob", "../bob/secret.txt", "/../bob/secret.txt", "../../outside/secret.txt",
      "/../../outside/secret.txt", "docs/../../bob/secret.txt", "./../bob", "docs/../..",
      "/docs/../../", "docs/./../../bob", "a/b/c/../../../../bob", "//../bob/secret.txt",
      "/./../bob", "docs/..//../bob",
      // through symlinks that lead out (relative, absolute, to the other user, to /proc)
      "../alice", "../../homes/alice/victim.txt", "../../users.json", "/../users.json",
      "../../server.log", "link_out/../../users.json", "link_out/secret.txt",
      "/link_out/secret.txt", "link_out/./secret.txt", "link_out/newdir/x", "abs_link/passwd",
      "abs_link/shadow", "/abs_link/hostname", "link_bob/secret.txt", "link_bob/x/y",
      "proc_link/etc/passwd", "proc_link/self", "docs/up/outside/secret.txt",
      "docs/up/homes/bob/secret.txt", "docs/up/users.json", "loop/x", "docs/abs_in_docs/passwd",
      "dangling/x",
      // not names at all
      std::string("bad\0name", 8), std::string("docs/\0/../..", 12), std::string("\0", 1),
      std::string(256, 'a'), "docs/" + std::string(300, 'b'), std::string(5000, 'c'),
      std::string(2100, '/') + "..",
      // our own hidden upload files
      ".coserve-partial.0123456789abcdef0123456789abcdef",
      "docs/.coserve-partial.0123456789abcdef0123456789abcdef.meta",
      ".coserve-partial.x/../../bob"};
  return paths;
}

// Leaf symlinks out of the home: ops that follow the last component must refuse them.
std::vector<std::string> leaf_links() {
  return {"link_out", "abs_link", "link_bob",   "link_secret",     "proc_link",
          "docs/up",  "loop",     "abs_secret", "docs/abs_in_docs"};
}

bool refused(const std::string& code) {
  return code == "forbidden" || code == "bad_request" || code == "not_found";
}

bool leaked(const Frame& f) {
  return f.head.dump().find(kSecret) != std::string::npos ||
         f.body.find(kSecret) != std::string::npos;
}

// One request that must be refused without a byte of the secrets in the reply.
awaitable<void> refused_call(Client& c, std::string what, json request, std::size_t& checks) {
  auto reply = co_await files_call(c, std::move(request));
  INFO(what << " → " << reply.head.dump().substr(0, 300));
  CHECK(refused(error_of(reply)));
  CHECK(!leaked(reply));
  ++checks;
}

void run_corpus(const std::string& resolver) {
  TempDir dir;
  add_user(dir.path(), "alice", "pw");
  add_user(dir.path(), "bob", "pw-b");
  auto home = dir.path() / "homes/alice";
  write(dir.path() / "outside/secret.txt", kSecret + " outside\n");
  write(dir.path() / "homes/bob/secret.txt", kSecret + " bob\n");
  write(home / "docs/readme.txt", "harmless\n");
  write(home / "victim.txt", "mine\n");
  fs::create_directory_symlink("../../outside", home / "link_out");
  fs::create_directory_symlink("/etc", home / "abs_link");
  fs::create_directory_symlink("../bob", home / "link_bob");
  fs::create_symlink("../../outside/secret.txt", home / "link_secret");
  fs::create_symlink((dir.path() / "outside/secret.txt").string(), home / "abs_secret");
  fs::create_directory_symlink("/proc/self/root", home / "proc_link");
  fs::create_directory_symlink("../..", home / "docs/up");
  fs::create_directory_symlink("/etc", home / "docs/abs_in_docs");
  fs::create_symlink("loop", home / "loop");
  fs::create_symlink("/nonexistent/dir", home / "dangling");
  REQUIRE(::mkfifo((home / "fifo").c_str(), 0600) == 0);

  auto outside_before = outside_state(dir.path());
  ServerProcess server({"--set", "services.files.resolver=" + resolver}, dir.path());
  std::size_t checks = 0;
  run(
      [&]() -> awaitable<void> {
        auto c = co_await connect(server, "alice", "pw");
        auto expect_refused = [&](std::string what, json request) {
          return refused_call(*c, resolver + " " + what, std::move(request), checks);
        };
        auto paths = corpus();
        REQUIRE(paths.size() >= 50);
        for (auto& p : paths) {
          co_await expect_refused("cd " + p, Req("cd").set("path", p));
          co_await expect_refused("ls " + p, Req("ls").set("path", p));
          co_await expect_refused("stat " + p, Req("stat").set("path", p));
          co_await expect_refused("mkdir " + p, Req("mkdir").set("path", p).set("parents", true));
          co_await expect_refused("rm " + p, Req("rm").set("path", p).set("recursive", true));
          co_await expect_refused("mv from " + p, Req("mv").set("from", p).set("to", "stolen"));
          co_await expect_refused(
              "mv to " + p,
              Req("mv").set("from", "victim.txt").set("to", p).set("overwrite", true));
          co_await expect_refused("hash " + p, Req("hash").set("path", p));
          auto got = co_await get_file(*c, p);
          INFO(resolver << " get " << p << " → " << got.reply.head.dump().substr(0, 300));
          CHECK(refused(error_of(got.reply)));
          CHECK(got.data.empty());
          auto put = co_await put_file(*c, p, "evil", PutOptions().overwriting());
          INFO(resolver << " put " << p << " → " << put.reply.head.dump().substr(0, 300));
          CHECK(!put.got_credit);
          CHECK(refused(error_of(put.reply)));
          checks += 2;
          json command_cd = {{"service", "command"}, {"op", "cd"}, {"path", p}};
          auto cd = co_await c->call(command_cd);
          INFO(resolver << " command.cd " << p << " → " << cd.head.dump().substr(0, 300));
          CHECK(refused(error_of(cd)));
          // The session's cwds never moved.
          auto r1 = co_await files_call(*c, Req("pwd"));
          CHECK(r1.head["cwd"] == "/");
          json command_pwd = {{"service", "command"}, {"op", "pwd"}};
          auto r1c = co_await c->call(command_pwd);
          CHECK(r1c.head["cwd"] == "/");
        }
        for (auto& p : leaf_links()) {
          co_await expect_refused("cd " + p, Req("cd").set("path", p));
          json command_cd = {{"service", "command"}, {"op", "cd"}, {"path", p}};
          auto cd = co_await c->call(command_cd);
          INFO(resolver << " command.cd " << p << " → " << cd.head.dump().substr(0, 300));
          CHECK(refused(error_of(cd)));
          co_await expect_refused("ls " + p, Req("ls").set("path", p));
          co_await expect_refused("hash " + p, Req("hash").set("path", p));
          auto got = co_await get_file(*c, p);
          INFO(resolver << " get " << p << " → " << got.reply.head.dump().substr(0, 300));
          CHECK(refused(error_of(got.reply)));
          CHECK(!leaked(got.reply));
          CHECK(got.data.find(kSecret) == std::string::npos);
          // Writing "to" a leaf symlink replaces the link in the home, never its target.
          auto put = co_await put_file(*c, p, "replaced", PutOptions().overwriting());
          INFO(resolver << " put " << p << " → " << put.reply.head.dump().substr(0, 300));
          CHECK(!leaked(put.reply));
        }
        // A FIFO (or a device) is never opened for reading.
        auto r2 = co_await get_file(*c, "fifo");
        CHECK(error_of(r2.reply) == "bad_request");
        auto r3 = co_await files_call(*c, Req("hash").set("path", "fifo"));
        CHECK(error_of(r3) == "bad_request");
        // The home itself still works.
        auto r4 = co_await get_file(*c, "docs/readme.txt");
        CHECK(r4.data == "harmless\n");
      }(),
      std::chrono::seconds(120));
  CHECK(checks >= 50 * 10);
  CHECK(outside_state(dir.path()) == outside_before);
  CHECK(outside_before.size() == 3);
  CHECK(server.running());
}

}  // namespace

TEST_CASE("traversal corpus is refused with openat2", "[files][jail]") { run_corpus("auto"); }

TEST_CASE("traversal corpus is refused with the fallback resolver", "[files][jail]") {
  run_corpus("fallback");
}
