// The files service against the real server: abandoned partial uploads expire and free their
// quota (services.files.partial_ttl_s); an overwrite reserves the whole new file, so no sequence
// of uploads, moves and dropped connections leaves more bytes on disk than the quota.
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>

#include "files_helpers.hpp"

using namespace coserve;
using namespace coserve::test;
using namespace coserve::test::files;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

std::vector<fs::path> partials_in(const fs::path& dir) {
  std::vector<fs::path> found;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().starts_with(".coserve-partial.")) found.push_back(e.path());
  return found;
}

std::uint64_t used_of(const Frame& quota_reply) {
  return quota_reply.head.at("used").get<std::uint64_t>();
}

}  // namespace

TEST_CASE("files: an abandoned partial upload expires after partial_ttl_s and frees its quota",
          "[files][quota][ttl]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw", "1M");
  // TTL 2 s: the sweep runs every second.
  ServerProcess server({"--set", "services.files.partial_ttl_s=2", "--set",
                        "services.files.upload_window_bytes=65536"},
                       dir.path());
  const fs::path home = dir.path() / "homes/alice";
  const std::string data = random_bytes(600 * 1024, 21);
  run(
      [&]() -> awaitable<void> {
        {
          auto c = co_await connect(server, "alice", "pw");
          auto part = co_await put_file(*c, "a.bin", data,
                                        PutOptions().chunked(65536).stopping_at(300 * 1024));
          REQUIRE(part.stopped);
          c->close();  // abandoned: nobody resumes it
        }
        auto c = co_await connect(server, "alice", "pw");
        auto before = co_await files_call(*c, Req("quota"));
        CHECK(used_of(before) == bytes_on_disk(home));  // the partial and its metadata
        CHECK(used_of(before) - 300 * 1024 < 1024);
        // 300 KiB partial + 900 KiB > 1 MiB: refused while the partial holds its quota.
        const std::string other = random_bytes(900 * 1024, 22);
        auto refused = co_await put_file(*c, "b.bin", other);
        CHECK(error_of(refused.reply) == "quota_exceeded");
        REQUIRE(partials_in(home).size() == 2);  // data + metadata

        // Gone after the TTL (plus one sweep interval), its quota given back.
        for (int i = 0; i < 80 && !partials_in(home).empty(); ++i) co_await sleep_for(100ms);
        CHECK(partials_in(home).empty());
        auto after = co_await files_call(*c, Req("quota"));
        CHECK(used_of(after) == 0);
        CHECK(after.head["reserved"] == 0);
        auto fits = co_await put_file(*c, "b.bin", other);
        CHECK(error_of(fits.reply) == "ok");
        // A put of the expired file starts over.
        auto again = co_await put_file(*c, "c.bin", data.substr(0, 100 * 1024));
        CHECK(error_of(again.reply) == "ok");
        CHECK(again.first_offset == 0);
      }(),
      std::chrono::seconds(30));
  CHECK(server.log().find("deleted abandoned uploads of alice") != std::string::npos);
}

TEST_CASE("files: an upload in progress is not swept, however long it pauses", "[files][ttl]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw", "10M");
  ServerProcess server({"--set", "services.files.partial_ttl_s=1", "--set",
                        "services.files.upload_window_bytes=65536"},
                       dir.path());
  const std::string data = random_bytes(512 * 1024, 23);
  run(
      [&]() -> awaitable<void> {
        auto c = co_await connect(server, "alice", "pw");
        auto stream = c->open(Req("put")
                                  .set("service", "files")
                                  .set("path", "slow.bin")
                                  .set("size", data.size())
                                  .set("sha256", sha256_hex(data)));
        auto first = co_await stream.next();
        REQUIRE(first.head.value("event", "") == "credit");
        json head = {{"event", "data"}};
        stream.send(head, data.substr(0, 65536));
        auto credit = co_await stream.next();  // the first chunk is on disk
        REQUIRE(credit.head.value("event", "") == "credit");
        // Three TTLs (several sweeps) without a write: the open upload keeps its partial.
        co_await sleep_for(3500ms);
        CHECK(partials_in(dir.path() / "homes/alice").size() == 2);
        std::uint64_t position = 65536;
        std::uint64_t granted = first.head.at("bytes").get<std::uint64_t>() +
                                credit.head.at("bytes").get<std::uint64_t>();
        for (;;) {
          while (position < granted) {
            auto n = std::min<std::uint64_t>(65536, granted - position);
            stream.send(head, data.substr(position, n));
            position += n;
          }
          if (position == data.size()) break;
          auto more = co_await stream.next();
          REQUIRE(!stream.done());
          granted += more.head.at("bytes").get<std::uint64_t>();
        }
        json end = {{"event", "end"}};
        stream.send(end);
        Frame reply;
        while (!stream.done()) reply = co_await stream.next();
        INFO(reply.head.dump());
        CHECK(error_of(reply) == "ok");
        auto got = co_await get_file(*c, "slow.bin");
        CHECK(sha256_hex(got.data) == sha256_hex(data));
      }(),
      std::chrono::seconds(30));
}

TEST_CASE("files: partials left before a restart are swept at start", "[files][ttl]") {
  TempDir dir;
  add_user(dir.path(), "alice", "pw", "1M");
  const fs::path home = dir.path() / "homes/alice";
  const std::string data = random_bytes(200 * 1024, 24);
  {
    // A small window, so the server confirms the first chunk with more credit.
    ServerProcess server({"--set", "services.files.upload_window_bytes=65536"}, dir.path());
    run([&]() -> awaitable<void> {
      auto c = co_await connect(server, "alice", "pw");
      auto made = co_await files_call(*c, Req("mkdir").set("path", "deep/er").set("parents", true));
      REQUIRE(error_of(made) == "ok");
      auto part = co_await put_file(*c, "deep/er/a.bin", data,
                                    PutOptions().chunked(65536).stopping_at(65536));
      REQUIRE(part.stopped);
    }());
    server.kill9();
  }
  // Two days without a write, with the default TTL (24 h).
  auto partials = partials_in(home);
  REQUIRE(partials.size() == 2);
  for (auto& p : partials) fs::last_write_time(p, fs::file_time_type::clock::now() - 48h);
  ServerProcess server({}, dir.path());
  for (int i = 0; i < 50 && !partials_in(home).empty(); ++i)
    run([]() -> awaitable<void> { co_await sleep_for(100ms); }());
  CHECK(partials_in(home).empty());
  CHECK(fs::is_directory(home / "deep/er"));
  run([&]() -> awaitable<void> {
    auto c = co_await connect(server, "alice", "pw");
    auto quota = co_await files_call(*c, Req("quota"));
    CHECK(used_of(quota) == 0);
  }());
}

TEST_CASE("files: an overwrite reserves the whole new file while the old one is on disk",
          "[files][quota]") {
  TempDir dir;
  add_user(dir.path(), "bob", "pw", "1048576");
  ServerProcess server({}, dir.path());
  const fs::path home = dir.path() / "homes/bob";
  const std::string a = random_bytes(700000, 31);
  // a + b = the quota but for a few hundred bytes: an upload's metadata file needs them while
  // it runs.
  const std::string b = random_bytes(348276, 32);
  run([&]() -> awaitable<void> {
    auto c = co_await connect(server, "bob", "pw");
    auto put_a = co_await put_file(*c, "a.bin", a);
    REQUIRE(error_of(put_a.reply) == "ok");
    auto put_b = co_await put_file(*c, "b.bin", b);
    REQUIRE(error_of(put_b.reply) == "ok");
    auto full = co_await files_call(*c, Req("quota"));
    REQUIRE(used_of(full) == 1048276);

    // At the quota even a same-size replacement is refused before a byte moves: until the
    // rename both files are on disk, and an upload may never end.
    const std::string a2 = random_bytes(700000, 33);
    auto same = co_await put_file(*c, "a.bin", a2, PutOptions().overwriting());
    CHECK(error_of(same.reply) == "quota_exceeded");
    CHECK(!same.got_credit);
    CHECK(bytes_on_disk(home) == 1048276);

    // With room for the whole new file it lands, and the old one's bytes are given back.
    auto removed = co_await files_call(*c, Req("rm").set("path", "b.bin"));
    REQUIRE(error_of(removed) == "ok");
    const std::string a3 = random_bytes(340000, 35);
    auto smaller = co_await put_file(*c, "a.bin", a3, PutOptions().overwriting());
    CHECK(error_of(smaller.reply) == "ok");
    auto q = co_await files_call(*c, Req("quota"));
    CHECK(used_of(q) == 340000);
    CHECK(q.head["reserved"] == 0);
    CHECK(bytes_on_disk(home) == 340000);
    auto got = co_await get_file(*c, "a.bin");
    CHECK(sha256_hex(got.data) == sha256_hex(a3));
  }());
}

namespace {

// One round of the attack: an overwrite of `path` is sent in full; before its `end`, another
// session moves the old file away to `moved_to`; then `end`. Returns the final reply's code
// (the first answer when no credit was granted).
awaitable<std::string> overwrite_then_move(Client& c, Client& other, const std::string& path,
                                           const std::string& moved_to, const std::string& data) {
  auto stream = c.open(Req("put")
                           .set("service", "files")
                           .set("path", path)
                           .set("size", data.size())
                           .set("sha256", sha256_hex(data))
                           .set("overwrite", true));
  auto first = co_await stream.next();
  if (stream.done()) co_return error_of(first);
  REQUIRE(first.head.value("event", "") == "credit");
  std::uint64_t position = first.head.at("offset").get<std::uint64_t>();
  std::uint64_t granted = position + first.head.at("bytes").get<std::uint64_t>();
  for (;;) {
    while (position < granted) {
      auto n = std::min<std::uint64_t>(64 * 1024, granted - position);
      json data_event = {{"event", "data"}};
      stream.send(std::move(data_event), data.substr(position, n));
      position += n;
    }
    if (position == data.size()) break;
    auto credit = co_await stream.next();
    if (stream.done()) co_return error_of(credit);
    granted += credit.head.at("bytes").get<std::uint64_t>();
  }
  auto moved = co_await files_call(other, Req("mv").set("from", path).set("to", moved_to));
  CHECK(error_of(moved) == "ok");
  json end = {{"event", "end"}};
  stream.send(end);
  Frame reply;
  while (!stream.done()) reply = co_await stream.next();
  co_return error_of(reply);
}

}  // namespace

TEST_CASE("files: put-overwrite, mv, put ... never leaves more on disk than the quota",
          "[files][quota][security]") {
  // The attack of issue 15: an overwrite reserved only its growth; moving the old file away
  // before `end` made the end refuse with quota_exceeded, and the partial stayed (for a day) on
  // top of both files. Round after round: 7 MB on disk under a 1 MiB quota.
  TempDir dir;
  add_user(dir.path(), "eve", "pw", "1048576");
  ServerProcess server({"--set", "services.files.upload_window_bytes=65536"}, dir.path());
  const fs::path home = dir.path() / "homes/eve";
  constexpr std::uint64_t kQuota = 1048576;
  run(
      [&]() -> awaitable<void> {
        auto c = co_await connect(server, "eve", "pw");
        auto other = co_await connect(server, "eve", "pw");
        const std::string first = random_bytes(400000, 51);
        auto seed = co_await put_file(*c, "f0", first);
        REQUIRE(error_of(seed.reply) == "ok");
        int landed = 0;
        for (int round = 0; round < 10; ++round) {
          const std::string data = random_bytes(400000, 60 + round);
          const std::string path = "f" + std::to_string(round);
          const std::string moved = "f" + std::to_string(round + 1);
          auto code = co_await overwrite_then_move(*c, *other, path, moved, data);
          INFO("round " << round << ": " << code);
          CHECK((code == "ok" || code == "quota_exceeded"));
          if (code == "ok") ++landed;
          CHECK(bytes_on_disk(home) <= kQuota);
          // The files the server left are moved on too, so the next round overwrites one.
          auto st = co_await files_call(*c, Req("stat").set("path", moved));
          if (error_of(st) == "not_found") {
            auto mv = co_await files_call(*other, Req("mv").set("from", path).set("to", moved));
            CHECK(error_of(mv) == "ok");
          }
        }
        CHECK(landed >= 1);  // the first round fits (400000 + 400000 <= 1 MiB)

        // A dropped connection in the middle of an overwrite: the partial stays, counted.
        const std::string big = random_bytes(500000, 70);
        auto drop = co_await connect(server, "eve", "pw");
        auto part = co_await put_file(*drop, "f10", big,
                                      PutOptions().overwriting().chunked(65536).stopping_at(65536));
        CHECK((part.stopped || error_of(part.reply) == "quota_exceeded"));
        drop->close();
        co_await sleep_for(200ms);
        CHECK(bytes_on_disk(home) <= kQuota);

        // The ledger agrees with the disk, and nothing more fits than the quota leaves.
        auto q = co_await files_call(*c, Req("quota"));
        CHECK(used_of(q) == bytes_on_disk(home));
        CHECK(q.head["reserved"] == 0);
        auto fill = co_await put_file(*c, "fill", random_bytes(kQuota - used_of(q) + 1, 71));
        CHECK(error_of(fill.reply) == "quota_exceeded");
        CHECK(bytes_on_disk(home) <= kQuota);
      }(),
      std::chrono::seconds(60));
  CHECK(server.running());
}
