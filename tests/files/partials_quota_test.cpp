// The files service against the real server: abandoned partial uploads expire and free their
// quota (services.files.partial_ttl_s), and an overwrite is charged only for its growth.
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

// Sends all of `data` for an open put stream (honouring credit) but not `end`.
awaitable<void> send_all_but_end(Client::Stream& stream, const std::string& data) {
  auto first = co_await stream.next();
  REQUIRE(!stream.done());
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
    if (position == data.size()) co_return;
    auto credit = co_await stream.next();
    REQUIRE(!stream.done());
    granted += credit.head.at("bytes").get<std::uint64_t>();
  }
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
        CHECK(used_of(before) == 300 * 1024);
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

TEST_CASE("files: an overwrite at the quota reserves only the growth", "[files][quota]") {
  TempDir dir;
  add_user(dir.path(), "bob", "pw", "1048576");
  ServerProcess server({}, dir.path());
  const std::string a = random_bytes(700000, 31);
  const std::string b = random_bytes(348576, 32);  // a + b = the whole quota
  run([&]() -> awaitable<void> {
    auto c = co_await connect(server, "bob", "pw");
    auto put_a = co_await put_file(*c, "a.bin", a);
    REQUIRE(error_of(put_a.reply) == "ok");
    auto put_b = co_await put_file(*c, "b.bin", b);
    REQUIRE(error_of(put_b.reply) == "ok");
    auto full = co_await files_call(*c, Req("quota"));
    REQUIRE(used_of(full) == 1048576);

    // The same size again: fits, since the old bytes go when the new ones arrive.
    const std::string a2 = random_bytes(700000, 33);
    auto same = co_await put_file(*c, "a.bin", a2, PutOptions().overwriting());
    INFO(same.reply.head.dump());
    CHECK(error_of(same.reply) == "ok");
    auto got = co_await get_file(*c, "a.bin");
    CHECK(sha256_hex(got.data) == sha256_hex(a2));
    auto q1 = co_await files_call(*c, Req("quota"));
    CHECK(used_of(q1) == 1048576);
    CHECK(q1.head["reserved"] == 0);

    // One byte more does not fit; smaller does, and frees the difference.
    const std::string a_plus = random_bytes(700001, 34);
    auto bigger = co_await put_file(*c, "a.bin", a_plus, PutOptions().overwriting());
    CHECK(error_of(bigger.reply) == "quota_exceeded");
    CHECK(!bigger.got_credit);
    const std::string a3 = random_bytes(500000, 35);
    auto smaller = co_await put_file(*c, "a.bin", a3, PutOptions().overwriting());
    CHECK(error_of(smaller.reply) == "ok");
    auto q2 = co_await files_call(*c, Req("quota"));
    CHECK(used_of(q2) == 500000 + 348576);
    CHECK(!partials_in(dir.path() / "homes/bob").size());

    // Growth within what is left: 500000 → 700000 needs 200000 of the 200000 free.
    auto grow = co_await put_file(*c, "a.bin", a2, PutOptions().overwriting());
    CHECK(error_of(grow.reply) == "ok");
    auto q3 = co_await files_call(*c, Req("quota"));
    CHECK(used_of(q3) == 1048576);
  }());
}

TEST_CASE("files: an overwrite whose old file moved away must fit the quota at the end",
          "[files][quota]") {
  TempDir dir;
  add_user(dir.path(), "bob", "pw", "1048576");
  ServerProcess server({}, dir.path());
  const std::string a = random_bytes(700000, 41);
  const std::string b = random_bytes(348576, 42);
  const std::string a2 = random_bytes(700000, 43);
  run([&]() -> awaitable<void> {
    auto c = co_await connect(server, "bob", "pw");
    auto other = co_await connect(server, "bob", "pw");
    auto put_a = co_await put_file(*c, "a.bin", a);
    REQUIRE(error_of(put_a.reply) == "ok");
    auto put_b = co_await put_file(*c, "b.bin", b);
    REQUIRE(error_of(put_b.reply) == "ok");

    // The overwrite is credited with a.bin's bytes; then a.bin moves away, so nothing would be
    // replaced and the result (a + b + a2) would exceed the quota: refused at `end`.
    auto stream = c->open(Req("put")
                              .set("service", "files")
                              .set("path", "a.bin")
                              .set("size", a2.size())
                              .set("sha256", sha256_hex(a2))
                              .set("overwrite", true));
    co_await send_all_but_end(stream, a2);
    auto moved = co_await files_call(*other, Req("mv").set("from", "a.bin").set("to", "kept.bin"));
    REQUIRE(error_of(moved) == "ok");
    json end = {{"event", "end"}};
    stream.send(end);
    Frame reply;
    while (!stream.done()) reply = co_await stream.next();
    CHECK(error_of(reply) == "quota_exceeded");
    auto kept = co_await get_file(*c, "kept.bin");
    CHECK(sha256_hex(kept.data) == sha256_hex(a));
    auto st = co_await files_call(*c, Req("stat").set("path", "a.bin"));
    CHECK(error_of(st) == "not_found");

    // Room made: the same put resumes from its complete partial and lands.
    auto removed = co_await files_call(*c, Req("rm").set("path", "kept.bin"));
    REQUIRE(error_of(removed) == "ok");
    auto again = co_await put_file(*c, "a.bin", a2, PutOptions().overwriting());
    CHECK(error_of(again.reply) == "ok");
    CHECK(again.first_offset == a2.size());
    auto q = co_await files_call(*c, Req("quota"));
    CHECK(used_of(q) == 700000 + 348576);
    CHECK(q.head["reserved"] == 0);
  }());
}
