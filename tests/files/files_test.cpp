// The files service against the real server: ops, two users side by side, quota, integrity,
// resume after a dropped connection and after kill -9.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>

#include "files_helpers.hpp"

using namespace coserve;
using namespace coserve::test;
using namespace coserve::test::files;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// "a,b,c": the names an `ls` reply lists, in order.
std::string names_in(const Frame& ls_reply) {
  std::string names;
  for (auto& e : ls_reply.head["entries"])
    names += (names.empty() ? "" : ",") + e["name"].get<std::string>();
  return names;
}

// Every file on disk in a home, hidden ones included.
std::vector<std::string> disk_names(const fs::path& dir) {
  std::vector<std::string> names;
  for (auto& e : fs::recursive_directory_iterator(dir))
    names.push_back(fs::relative(e.path(), dir).string());
  std::sort(names.begin(), names.end());
  return names;
}

bool any_partial_on_disk(const fs::path& dir) {
  for (auto& n : disk_names(dir))
    if (n.find(".coserve-partial.") != std::string::npos) return true;
  return false;
}

std::size_t test_file_size() {
  // 20 MiB by default; COSERVE_FILES_TEST_MIB=50 runs the full-size round trip.
  if (const char* mib = std::getenv("COSERVE_FILES_TEST_MIB")) return std::stoul(mib) << 20;
  return 20u << 20;
}

}  // namespace

TEST_CASE("files: pwd, cd, mkdir, ls, stat, mv, rm, hash", "[files]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw");
  ServerProcess server({}, dir.path());
  run([&]() -> awaitable<void> {
    auto c = co_await connect(server, "alice", "pw");
    auto r1 = co_await files_call(*c, Req("mkdir").set("path", "docs/a/b"));
    REQUIRE(error_of(r1) == "not_found");
    auto r2 = co_await files_call(*c, Req("mkdir").set("path", "docs/a/b").set("parents", true));
    REQUIRE(error_of(r2) == "ok");
    auto r3 = co_await files_call(*c, Req("mkdir").set("path", "/docs"));
    CHECK(error_of(r3) == "exists");
    auto cd = co_await files_call(*c, Req("cd").set("path", "docs"));
    CHECK(cd.head["cwd"] == "/docs");
    auto r4 = co_await files_call(*c, Req("pwd"));
    CHECK(r4.head["cwd"] == "/docs");
    auto r5 = co_await files_call(*c, Req("cd").set("path", "nope"));
    CHECK(error_of(r5) == "not_found");

    auto put = co_await put_file(*c, "hello.txt", "hello world\n");
    REQUIRE(error_of(put.reply) == "ok");
    CHECK(put.reply.head["path"] == "/docs/hello.txt");
    CHECK(fs::exists(dir.path() / "homes/alice/docs/hello.txt"));
    auto r6 = co_await put_file(*c, "hello.txt", "again");
    CHECK(error_of(r6.reply) == "exists");

    auto ls = co_await files_call(*c, Req("ls"));
    CHECK(names_in(ls) == "a,hello.txt");
    CHECK(ls.head["entries"][0]["type"] == "dir");
    CHECK(ls.head["entries"][1]["size"] == 12);
    CHECK(ls.head["entries"][1]["mtime"].get<std::int64_t>() > 0);

    auto st = co_await files_call(*c, Req("stat").set("path", "/docs/hello.txt"));
    CHECK(st.head["type"] == "file");
    CHECK(st.head["size"] == 12);
    auto hash = co_await files_call(*c, Req("hash").set("path", "hello.txt"));
    CHECK(hash.head["sha256"] == sha256_hex("hello world\n"));
    CHECK(hash.head["size"] == 12);  // the digest stored by put, with the file's size

    auto r7 =
        co_await files_call(*c, Req("mv").set("from", "hello.txt").set("to", "/greeting.txt"));
    CHECK(error_of(r7) == "ok");
    auto r8 = co_await files_call(*c, Req("stat").set("path", "hello.txt"));
    CHECK(error_of(r8) == "not_found");
    auto got = co_await get_file(*c, "../greeting.txt");
    CHECK(got.data == "hello world\n");
    CHECK(got.reply.head["sha256"] == sha256_hex("hello world\n"));
    auto tail = co_await get_file(*c, "/greeting.txt", 6);
    CHECK(tail.data == "world\n");
    CHECK(tail.reply.head["sha256"] == sha256_hex("hello world\n"));  // always the whole file
    auto r9 = co_await get_file(*c, "/greeting.txt", 13);
    CHECK(error_of(r9.reply) == "bad_request");

    auto r10 = co_await files_call(*c, Req("rm").set("path", "/docs"));
    CHECK(error_of(r10) == "not_empty");
    auto rm_root = Req("rm").set("path", "/").set("recursive", true);
    auto r11 = co_await files_call(*c, rm_root);
    CHECK(error_of(r11) == "forbidden");
    auto r12 = co_await files_call(*c, Req("rm").set("path", "/docs").set("recursive", true));
    CHECK(error_of(r12) == "ok");
    auto r13 = co_await files_call(*c, Req("ls").set("path", "/"));
    CHECK(names_in(r13) == "greeting.txt");
    // cwd was removed: operations there report not_found, cd / recovers.
    auto r14 = co_await files_call(*c, Req("ls"));
    CHECK(error_of(r14) == "not_found");
    auto r15 = co_await files_call(*c, Req("cd").set("path", "/"));
    CHECK(error_of(r15) == "ok");
  }());
}

TEST_CASE("files: two users at once each see only their own home", "[files]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw-a");
  add_user(dir.path(), "bob", "pw-b");
  ServerProcess server({}, dir.path());
  run([&]() -> awaitable<void> {
    auto alice = co_await connect(server, "alice", "pw-a");
    auto bob = co_await connect(server, "bob", "pw-b");
    auto r16 = co_await put_file(*alice, "/mine.txt", "alice's secret");
    REQUIRE(error_of(r16.reply) == "ok");
    auto r17 = co_await put_file(*bob, "/mine.txt", "bob's own");
    REQUIRE(error_of(r17.reply) == "ok");
    auto r18 = co_await get_file(*alice, "mine.txt");
    CHECK(r18.data == "alice's secret");
    auto r19 = co_await get_file(*bob, "mine.txt");
    CHECK(r19.data == "bob's own");
    auto r20 = co_await files_call(*bob, Req("ls").set("path", "/"));
    CHECK(names_in(r20) == "mine.txt");
    const std::vector<std::string> hostile = {"../alice/mine.txt", "/../alice/mine.txt",
                                              "../../homes/alice", "/alice/mine.txt", "../alice"};
    for (const auto& path : hostile) {
      INFO(path);
      auto r = co_await get_file(*bob, path);
      CHECK(r.data.empty());
      CHECK((error_of(r.reply) == "forbidden" || error_of(r.reply) == "not_found"));
    }
    // A session that logs in as someone else gets a fresh jail.
    auto c = co_await connect(server, "alice", "pw-a");
    auto r21 = co_await files_call(*c, Req("mkdir").set("path", "/sub"));
    REQUIRE(error_of(r21) == "ok");
    auto r22 = co_await files_call(*c, Req("cd").set("path", "/sub"));
    REQUIRE(error_of(r22) == "ok");
    auto relogin = Req("login").set("service", "auth").set("user", "bob").set("password", "pw-b");
    auto r23 = co_await c->call(relogin);
    REQUIRE(error_of(r23) == "ok");
    auto r24 = co_await files_call(*c, Req("pwd"));
    CHECK(r24.head["cwd"] == "/");
    auto r25 = co_await get_file(*c, "/mine.txt");
    CHECK(r25.data == "bob's own");
  }());
}

TEST_CASE("files: quota refuses before data moves, holds under 20 parallel uploads, frees on rm",
          "[files][quota]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw", "1M");
  ServerProcess server({}, dir.path());
  run([&]() -> awaitable<void> {
    auto c = co_await connect(server, "alice", "pw");
    auto quota = co_await files_call(*c, Req("quota"));
    CHECK(quota.head["used"] == 0);
    CHECK(quota.head["limit"] == 1 << 20);

    // Too big: the final error is the first answer, no credit was ever granted.
    auto big = co_await put_file(*c, "big.bin", random_bytes((1 << 20) + 1));
    CHECK(error_of(big.reply) == "quota_exceeded");
    CHECK(!big.got_credit);
    CHECK(!any_partial_on_disk(dir.path() / "homes/alice"));

    // 20 uploads of 100 KiB at once over 4 connections: only 10 fit in 1 MiB.
    std::vector<std::unique_ptr<Client>> clients;
    for (int i = 0; i < 4; ++i) clients.push_back(co_await connect(server, "alice", "pw"));
    const std::string piece = random_bytes(100 * 1024, 7);
    auto ex = co_await asio::this_coro::executor;
    int ok = 0, refused = 0, finished = 0;
    asio::steady_timer all_done(ex, std::chrono::steady_clock::time_point::max());
    for (int i = 0; i < 20; ++i) {
      asio::co_spawn(
          ex,
          [](Client& client, std::string path, const std::string& data, int& ok, int& refused,
             int& finished, asio::steady_timer& done) -> awaitable<void> {
            auto r = co_await put_file(client, path, data, PutOptions().chunked(16 * 1024));
            auto code = error_of(r.reply);
            if (code == "ok")
              ++ok;
            else if (code == "quota_exceeded")
              ++refused;
            if (++finished == 20) done.cancel();
          }(*clients[i % 4], "p" + std::to_string(i) + ".bin", piece, ok, refused, finished,
                                                      all_done),
          [](std::exception_ptr e) {
            if (e) std::rethrow_exception(e);  // fails the test run
          });
    }
    co_await all_done.async_wait(use_nothrow);
    CHECK(ok == 10);
    CHECK(refused == 10);
    quota = co_await files_call(*c, Req("quota"));
    CHECK(quota.head["used"] == 10 * 100 * 1024);
    CHECK(quota.head["reserved"] == 0);
    std::uint64_t on_disk = 0;
    for (auto& e : fs::recursive_directory_iterator(dir.path() / "homes/alice"))
      if (e.is_regular_file()) on_disk += e.file_size();
    CHECK(on_disk <= (1u << 20));
    CHECK(on_disk == 10 * 100 * 1024);

    // Full: one more is refused; deleting one makes room for it.
    auto ls = co_await files_call(*c, Req("ls").set("path", "/"));
    auto victim = ls.head["entries"][0]["name"].get<std::string>();
    auto r26 = co_await put_file(*c, "extra.bin", piece);
    CHECK(error_of(r26.reply) == "quota_exceeded");
    auto r27 = co_await files_call(*c, Req("rm").set("path", victim));
    CHECK(error_of(r27) == "ok");
    auto r28 = co_await files_call(*c, Req("quota"));
    CHECK(r28.head["used"] == 9 * 100 * 1024);
    auto r29 = co_await put_file(*c, "extra.bin", piece);
    CHECK(error_of(r29.reply) == "ok");
  }());
}

TEST_CASE("files: a large random file round-trips with equal SHA-256", "[files][integrity]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw");
  ServerProcess server({}, dir.path());
  const std::string data = random_bytes(test_file_size(), 42);
  const std::string digest = sha256_hex(data);
  run(
      [&]() -> awaitable<void> {
        auto c = co_await connect(server, "alice", "pw");
        auto put = co_await put_file(*c, "big.bin", data, PutOptions().chunked(512 * 1024));
        REQUIRE(error_of(put.reply) == "ok");
        CHECK(put.reply.head["sha256"] == digest);
        CHECK(put.reply.head["size"] == data.size());
        auto got = co_await get_file(*c, "big.bin");
        REQUIRE(error_of(got.reply) == "ok");
        CHECK(got.reply.head["sha256"] == digest);
        CHECK(sha256_hex(got.data) == digest);
        CHECK(got.data.size() == data.size());
        auto hash = co_await files_call(*c, Req("hash").set("path", "big.bin"));
        CHECK(hash.head["sha256"] == digest);
        CHECK(hash.head["size"] == data.size());
      }(),
      120s);
}

TEST_CASE("files: get from any offset, whether the kernel sends the file or it is read and hashed",
          "[files][integrity]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw");
  // Small chunks: many data events, the last one short.
  ServerProcess server({"--set", "services.files.chunk_bytes=65536"}, dir.path());
  const std::string data = random_bytes(1000 * 1000 + 7, 7);
  const std::string digest = sha256_hex(data);
  run(
      [&]() -> awaitable<void> {
        auto c = co_await connect(server, "alice", "pw");
        // Uploaded: its digest is stored, so a get over TCP is sent with sendfile.
        auto put = co_await put_file(*c, "sent.bin", data);
        REQUIRE(error_of(put.reply) == "ok");
        // Copied in behind the server's back: no stored digest, so it is read and hashed.
        {
          std::ofstream out(dir.path() / "homes/alice/copied.bin", std::ios::binary);
          out << data;
        }
        for (std::string path : {"sent.bin", "copied.bin"}) {
          for (std::uint64_t offset : {0ull, 1ull, 4095ull, 65536ull, 999999ull, 1000007ull}) {
            INFO(path << " from offset " << offset);
            auto got = co_await get_file(*c, path, offset);
            REQUIRE(error_of(got.reply) == "ok");
            CHECK(got.reply.head["sha256"] == digest);
            CHECK(got.reply.head["size"] == data.size());
            CHECK(got.data == data.substr(offset));
          }
        }
      }(),
      60s);
}

TEST_CASE("files: a corrupted chunk gives checksum_mismatch and no target file",
          "[files][integrity]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw", "10M");
  ServerProcess server({}, dir.path());
  const std::string data = random_bytes(3 << 20, 5);
  run([&]() -> awaitable<void> {
    auto c = co_await connect(server, "alice", "pw");
    auto put = co_await put_file(*c, "x.bin", data, PutOptions().corrupting(2'000'000));
    CHECK(error_of(put.reply) == "checksum_mismatch");
    auto r30 = co_await files_call(*c, Req("stat").set("path", "x.bin"));
    CHECK(error_of(r30) == "not_found");
    CHECK(disk_names(dir.path() / "homes/alice").empty());
    auto r31 = co_await files_call(*c, Req("quota"));
    CHECK(r31.head["used"] == 0);
    // An honest retry then works.
    auto r32 = co_await put_file(*c, "x.bin", data);
    CHECK(error_of(r32.reply) == "ok");
  }());
}

TEST_CASE("files: upload resumes after a dropped connection", "[files][resume]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw", "100M");
  ServerProcess server({"--set", "services.files.upload_window_bytes=262144"}, dir.path());
  const std::string data = random_bytes(4 << 20, 9);
  const std::uint64_t cut = data.size() * 4 / 10;
  run([&]() -> awaitable<void> {
    {
      auto c = co_await connect(server, "alice", "pw");
      auto part =
          co_await put_file(*c, "r.bin", data, PutOptions().chunked(65536).stopping_at(cut));
      REQUIRE(part.stopped);
      // Nothing partial is visible while the upload is incomplete.
      auto ls = co_await files_call(*c, Req("ls").set("path", "/"));
      CHECK(names_in(ls).empty());
      c->close();
    }
    co_await sleep_for(200ms);
    auto c = co_await connect(server, "alice", "pw");
    auto r33 = co_await files_call(*c, Req("ls").set("path", "/"));
    CHECK(names_in(r33).empty());
    auto r34 = co_await files_call(*c, Req("quota"));
    // Counted once: the partial's bytes (and its small metadata file), as on disk.
    CHECK(r34.head["used"] == bytes_on_disk(dir.path() / "homes/alice"));
    CHECK(r34.head["used"].get<std::uint64_t>() - cut < 1024);
    auto rest = co_await put_file(*c, "r.bin", data);
    REQUIRE(error_of(rest.reply) == "ok");
    CHECK(rest.first_offset == cut);
    CHECK(rest.reply.head["resumed_from"] == cut);
    auto got = co_await get_file(*c, "r.bin");
    CHECK(sha256_hex(got.data) == sha256_hex(data));
    auto r35 = co_await files_call(*c, Req("quota"));
    CHECK(r35.head["used"] == data.size());
    CHECK(!any_partial_on_disk(dir.path() / "homes/alice"));
  }());
}

TEST_CASE("files: a put may give its sha256 with the end event instead, and still resumes",
          "[files][integrity][resume]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw", "100M");
  ServerProcess server({"--set", "services.files.upload_window_bytes=262144"}, dir.path());
  const std::string data = random_bytes(2 << 20, 11);
  const std::string digest = sha256_hex(data);
  const std::uint64_t cut = data.size() * 4 / 10;
  run([&]() -> awaitable<void> {
    auto c = co_await connect(server, "alice", "pw");
    auto ok = co_await put_file(*c, "late.bin", data, PutOptions().hashing_at_end());
    REQUIRE(error_of(ok.reply) == "ok");
    CHECK(ok.reply.head["sha256"] == digest);
    auto got = co_await get_file(*c, "late.bin");
    CHECK(got.reply.head["sha256"] == digest);
    CHECK(got.data == data);

    // A wrong digest at the end: nothing stored, quota given back.
    auto wrong = co_await put_file(*c, "wrong.bin", data,
                                   PutOptions().hashing_at_end(std::string(64, 'a')));
    CHECK(error_of(wrong.reply) == "checksum_mismatch");
    auto r1 = co_await files_call(*c, Req("stat").set("path", "wrong.bin"));
    CHECK(error_of(r1) == "not_found");
    // No digest at either end, or two that differ.
    auto none = co_await put_file(*c, "none.bin", data, PutOptions().hashing_at_end(""));
    CHECK(error_of(none.reply) == "bad_request");
    auto differ = co_await put_file(*c, "two.bin", data, PutOptions().overwriting());
    REQUIRE(error_of(differ.reply) == "ok");
    json two = {{"service", "files"}, {"op", "put"}, {"path", "two.bin"}, {"size", 1},
                {"sha256", sha256_hex("x")}, {"overwrite", true}};
    auto stream = c->open(std::move(two));
    auto credit = co_await stream.next();
    REQUIRE(credit.head.value("event", "") == "credit");
    stream.send({{"event", "data"}}, "x");
    stream.send({{"event", "end"}, {"sha256", sha256_hex("y")}});
    Frame last;
    while (!stream.done()) last = co_await stream.next();
    CHECK(error_of(last) == "bad_request");

    // Dropped at 40 %, resumed by another digest-less put of the same path and size.
    {
      auto first = co_await connect(server, "alice", "pw");
      auto part = co_await put_file(*first, "r.bin", data,
                                    PutOptions().hashing_at_end().chunked(65536).stopping_at(cut));
      REQUIRE(part.stopped);
      first->close();
    }
    co_await sleep_for(200ms);
    auto rest = co_await put_file(*c, "r.bin", data, PutOptions().hashing_at_end());
    REQUIRE(error_of(rest.reply) == "ok");
    CHECK(rest.first_offset == cut);
    auto again = co_await get_file(*c, "r.bin");
    CHECK(again.data == data);
    auto quota = co_await files_call(*c, Req("quota"));
    // late.bin, two.bin, r.bin, and the partials the two refused ends keep for a resume (with
    // their metadata files): what is on disk.
    CHECK(quota.head["used"] == bytes_on_disk(dir.path() / "homes/alice"));
    CHECK(quota.head["used"].get<std::uint64_t>() - (4 * data.size() + 1) < 2048);
  }());
}

TEST_CASE("files: a different file at the same path does not resume", "[files][resume]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw");
  ServerProcess server({"--set", "services.files.upload_window_bytes=65536"}, dir.path());
  const std::string first = random_bytes(1 << 20, 1), second = random_bytes(1 << 20, 2);
  run([&]() -> awaitable<void> {
    {
      auto c = co_await connect(server, "alice", "pw");
      auto part =
          co_await put_file(*c, "f.bin", first, PutOptions().chunked(16384).stopping_at(300000));
      REQUIRE(part.stopped);
      c->close();
    }
    co_await sleep_for(200ms);
    auto c = co_await connect(server, "alice", "pw");
    auto other = co_await put_file(*c, "f.bin", second);
    REQUIRE(error_of(other.reply) == "ok");
    CHECK(other.first_offset == 0);
    auto r36 = co_await get_file(*c, "f.bin");
    CHECK(sha256_hex(r36.data) == sha256_hex(second));
    auto r37 = co_await files_call(*c, Req("quota"));
    CHECK(r37.head["used"] == second.size());
  }());
}

TEST_CASE("files: upload resumes after kill -9 of the server", "[files][resume]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw", "100M");
  const std::string data = random_bytes(4 << 20, 11);
  const std::uint64_t cut = data.size() * 4 / 10;
  std::vector<std::string> args = {"--set", "services.files.upload_window_bytes=262144"};
  {
    ServerProcess server(args, dir.path());
    run([&]() -> awaitable<void> {
      auto c = co_await connect(server, "alice", "pw");
      auto part =
          co_await put_file(*c, "k.bin", data, PutOptions().chunked(65536).stopping_at(cut));
      REQUIRE(part.stopped);
    }());
    server.kill9();
  }
  ServerProcess server(args, dir.path());
  run([&]() -> awaitable<void> {
    auto c = co_await connect(server, "alice", "pw");
    auto r38 = co_await files_call(*c, Req("ls").set("path", "/"));
    CHECK(names_in(r38).empty());
    auto r39 = co_await files_call(*c, Req("stat").set("path", "k.bin"));
    CHECK(error_of(r39) == "not_found");
    auto r40 = co_await files_call(*c, Req("quota"));
    CHECK(r40.head["used"] == bytes_on_disk(dir.path() / "homes/alice"));
    CHECK(r40.head["used"].get<std::uint64_t>() - cut < 1024);
    auto rest = co_await put_file(*c, "k.bin", data);
    REQUIRE(error_of(rest.reply) == "ok");
    CHECK(rest.first_offset == cut);
    auto got = co_await get_file(*c, "k.bin");
    CHECK(sha256_hex(got.data) == sha256_hex(data));
    CHECK(!any_partial_on_disk(dir.path() / "homes/alice"));
  }());
}

TEST_CASE("files: protocol misuse in an upload", "[files]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw");
  ServerProcess server({}, dir.path());
  run([&]() -> awaitable<void> {
    auto c = co_await connect(server, "alice", "pw");
    auto bad_sha = Req("put").set("path", "a").set("size", 3).set("sha256", "xyz");
    auto r41 = co_await files_call(*c, bad_sha);
    CHECK(error_of(r41) == "bad_request");
    auto r42 = co_await files_call(*c, Req("put").set("path", "a"));
    CHECK(error_of(r42) == "bad_request");
    // More data than announced.
    auto s = c->open(Req("put")
                         .set("service", "files")
                         .set("path", "a")
                         .set("size", 3)
                         .set("sha256", sha256_hex("abc")));
    auto credit = co_await s.next();
    REQUIRE(credit.head["event"] == "credit");
    s.send({{"event", "data"}}, "abcd");
    auto r = co_await s.next();
    CHECK(error_of(r) == "bad_request");
    // `end` too early keeps the partial for a resume.
    s = c->open(Req("put")
                    .set("service", "files")
                    .set("path", "b")
                    .set("size", 6)
                    .set("sha256", sha256_hex("abcdef")));
    auto r43 = co_await s.next();
    REQUIRE(r43.head["event"] == "credit");
    s.send({{"event", "data"}}, "abc");
    s.send({{"event", "end"}});
    auto credit_or_end = co_await s.next();
    while (!s.done()) credit_or_end = co_await s.next();
    CHECK(error_of(credit_or_end) == "bad_request");
    auto resumed = co_await put_file(*c, "b", "abcdef");
    CHECK(error_of(resumed.reply) == "ok");
    CHECK(resumed.first_offset == 3);
    // Zero-byte files work.
    auto r44 = co_await put_file(*c, "empty", "");
    CHECK(error_of(r44.reply) == "ok");
    auto r45 = co_await get_file(*c, "empty");
    CHECK(r45.reply.head["sha256"] == sha256_hex(""));
  }());
}
