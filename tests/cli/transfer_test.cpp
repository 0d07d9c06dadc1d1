// put/get: round trips checked by SHA-256, progress output, resume after Ctrl-C and SIGKILL on
// both sides, and a corrupt local partial that must fail instead of passing silently.
#include <signal.h>

#include <fstream>
#include <optional>
#include <thread>

#include <catch2/catch.hpp>

#include "cli_support.hpp"

using namespace coserve;
using namespace coserve::cli_test;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The server's partial upload data file in `dir`, if any.
std::optional<fs::path> partial_upload(const fs::path& dir) {
  for (auto& entry : fs::directory_iterator(dir)) {
    auto name = entry.path().filename().string();
    if (name.rfind(".coserve-partial.", 0) == 0 && entry.path().extension() == ".data")
      return entry.path();
  }
  return std::nullopt;
}

std::uint64_t size_or_zero(const std::optional<fs::path>& path) {
  std::error_code ec;
  if (!path) return 0;
  auto size = fs::file_size(*path, ec);
  return ec ? 0 : size;
}

// "resumed from offset N" in the CLI's result line.
std::uint64_t resumed_offset(const std::string& out) {
  // Plain search: <regex> trips g++ 12's -Wmaybe-uninitialized in optimised builds.
  const std::string marker = "resumed from offset ";
  auto at = out.find(marker);
  if (at == std::string::npos) return 0;
  auto digits = at + marker.size();
  auto end = out.find_first_not_of("0123456789", digits);
  if (end == digits) return 0;
  return std::stoull(out.substr(digits, end - digits));
}

}  // namespace

TEST_CASE("cli: put and get round trip with SHA-256, progress lines, --quiet", "[cli][transfer]") {
  AliceServer server;
  test::TempDir local;
  auto big = local.path() / "big.bin";
  write_random_file(big, 3 * 1024 * 1024 + 17);
  const auto digest = sha256_hex(big);

  auto put = server.cli({"put", big.string()});
  INFO(put.out << put.err);
  REQUIRE(put.status == 0);
  CHECK(contains(put.out, "put /big.bin"));
  CHECK(contains(put.out, digest));
  CHECK(contains(put.err, "put big.bin: 100%"));  // stderr is no terminal: plain lines
  CHECK(sha256_hex(server.home() / "big.bin") == digest);

  auto exists = server.cli({"put", big.string()});
  CHECK(exists.status == 1);
  CHECK(contains(exists.err, "coserve-cli: exists: "));
  CHECK(server.cli({"put", "-f", big.string()}).status == 0);

  auto copy = local.path() / "copy.bin";
  auto get = server.cli({"get", "big.bin", copy.string()});
  INFO(get.out << get.err);
  REQUIRE(get.status == 0);
  CHECK(contains(get.out, digest));
  CHECK(contains(get.err, "get big.bin: 100%"));
  CHECK(sha256_hex(copy) == digest);
  CHECK_FALSE(fs::exists(local.path() / ".copy.bin.part"));

  // Into a directory, empty files, --quiet prints nothing at all.
  CHECK(server.cli({"mkdir", "in"}).status == 0);
  auto empty = local.path() / "empty";
  write_random_file(empty, 0);
  auto quiet = server.cli({"--quiet", "put", empty.string(), "in"});
  CHECK(quiet.status == 0);
  CHECK(quiet.out.empty());
  CHECK(quiet.err.empty());
  CHECK(fs::exists(server.home() / "in" / "empty"));
  fs::create_directory(local.path() / "down");
  auto quiet_get = server.cli({"-q", "get", "in/empty", (local.path() / "down").string()});
  CHECK(quiet_get.status == 0);
  CHECK(quiet_get.out.empty());
  CHECK(fs::exists(local.path() / "down" / "empty"));

  auto missing = server.cli({"get", "nope.bin", copy.string()});
  CHECK(missing.status == 1);
  CHECK(contains(missing.err, "coserve-cli: not_found: "));
  auto no_local = server.cli({"put", (local.path() / "nope").string()});
  CHECK(no_local.status == 1);
  CHECK(contains(no_local.err, "cannot read"));
}

TEST_CASE("cli: get resumes from a local partial and rejects a corrupt one", "[cli][transfer]") {
  AliceServer server;
  test::TempDir local;
  write_random_file(server.home() / "data.bin", 2 * 1024 * 1024);
  const auto digest = sha256_hex(server.home() / "data.bin");
  const auto target = local.path() / "data.bin";
  const auto part = local.path() / ".data.bin.part";

  {  // a correct first MiB
    auto whole = read_file(server.home() / "data.bin");
    std::ofstream(part, std::ios::binary) << whole.substr(0, 1024 * 1024);
  }
  auto resumed = server.cli({"get", "data.bin", target.string()});
  INFO(resumed.out << resumed.err);
  REQUIRE(resumed.status == 0);
  CHECK(resumed_offset(resumed.out) == 1024 * 1024);
  CHECK(sha256_hex(target) == digest);
  CHECK_FALSE(fs::exists(part));

  fs::remove(target);
  write_random_file(part, 1024 * 1024);  // wrong bytes: only the final hash can tell
  auto corrupt = server.cli({"get", "data.bin", target.string()});
  CHECK(corrupt.status == 1);
  CHECK(contains(corrupt.err, "coserve-cli: checksum_mismatch: "));
  CHECK_FALSE(fs::exists(target));
  CHECK_FALSE(fs::exists(part));
  auto fresh = server.cli({"get", "data.bin", target.string()});
  CHECK(fresh.status == 0);
  CHECK(sha256_hex(target) == digest);
}

TEST_CASE("cli: an interrupted or killed upload resumes where the server's partial ends",
          "[cli][transfer]") {
  // A small credit window and chunk size slow the transfers down enough to interrupt them.
  AliceServer server({"--set", "services.files.upload_window_bytes=65536", "--set",
                      "services.files.chunk_bytes=4096"});
  test::TempDir local;
  auto big = local.path() / "big.bin";
  write_random_file(big, 64 * 1024 * 1024);
  const auto digest = sha256_hex(big);
  const std::uint64_t total = 64 * 1024 * 1024;

  // Ctrl-C: the CLI says how to go on and exits 1.
  {
    Background put(server.argv({"put", big.string()}), "secret\n");
    REQUIRE(wait_until([&] { return size_or_zero(partial_upload(server.home())) > 0; }, 30s));
    put.signal(SIGINT);
    CHECK(put.wait() == 1);
    INFO(put.err());
    CHECK(contains(put.err(), "coserve-cli: cancelled: interrupted"));
  }
  // SIGKILL: nothing runs in the client; the server keeps its partial anyway.
  std::uint64_t before = 0;
  {
    Background put(server.argv({"-q", "put", big.string()}), "secret\n");
    auto first = size_or_zero(partial_upload(server.home()));
    REQUIRE(wait_until(
        [&] { return size_or_zero(partial_upload(server.home())) > first + 65536; }, 30s));
    put.signal(SIGKILL);
    CHECK(put.wait() == 128 + SIGKILL);
    // The server notices the closed connection and stops writing: wait for a stable size.
    auto last = size_or_zero(partial_upload(server.home()));
    for (int i = 0; i < 50; ++i) {
      std::this_thread::sleep_for(100ms);
      auto now = size_or_zero(partial_upload(server.home()));
      if (now == last) break;
      last = now;
    }
    before = last;
  }
  REQUIRE(before > 0);
  REQUIRE(before < total);
  CHECK_FALSE(fs::exists(server.home() / "big.bin"));

  auto rerun = server.cli({"put", big.string()}, true, 120s);
  INFO(rerun.out << rerun.err);
  REQUIRE(rerun.status == 0);
  CHECK(contains(rerun.err, "put: resuming big.bin at "));
  CHECK(resumed_offset(rerun.out) > 0);
  CHECK(resumed_offset(rerun.out) <= total);
  CHECK(sha256_hex(server.home() / "big.bin") == digest);
  CHECK_FALSE(partial_upload(server.home()));

  // Downloads: SIGKILL mid-way keeps .big.bin.part, the rerun continues from it.
  auto target = local.path() / "back.bin";
  auto part = local.path() / ".back.bin.part";
  {
    Background get(server.argv({"-q", "get", "big.bin", target.string()}), "secret\n");
    REQUIRE(wait_until([&] { return size_or_zero(part) > 0; }, 30s));
    get.signal(SIGKILL);
    get.wait();
  }
  auto kept = size_or_zero(part);
  REQUIRE(kept > 0);
  REQUIRE(kept < total);
  auto again = server.cli({"get", "big.bin", target.string()}, true, 120s);
  INFO(again.out << again.err);
  REQUIRE(again.status == 0);
  CHECK(resumed_offset(again.out) >= kept);
  CHECK(sha256_hex(target) == digest);
}

TEST_CASE("cli: a server partial of another file of the same size is redone, not completed",
          "[cli][transfer]") {
  AliceServer server({"--set", "services.files.upload_window_bytes=65536", "--set",
                      "services.files.chunk_bytes=4096"});
  test::TempDir local;
  auto file = local.path() / "same.bin";
  const std::uint64_t total = 16 * 1024 * 1024;
  write_random_file(file, total);
  {
    Background put(server.argv({"-q", "put", file.string()}), "secret\n");
    REQUIRE(wait_until([&] { return size_or_zero(partial_upload(server.home())) > 0; }, 30s));
    put.signal(SIGKILL);
    put.wait();
  }
  // The local file changes but keeps its size: the partial on the server no longer matches.
  write_random_file(file, total);
  const auto digest = sha256_hex(file);
  auto rerun = server.cli({"put", file.string()}, true, 120s);
  INFO(rerun.out << rerun.err);
  REQUIRE(rerun.status == 0);
  CHECK(contains(rerun.err, "was of another file; uploading it again from the start"));
  CHECK(sha256_hex(server.home() / "same.bin") == digest);
  CHECK_FALSE(partial_upload(server.home()));
}

TEST_CASE("cli: put and get several files with a glob", "[cli][transfer]") {
  AliceServer server;
  test::TempDir local;
  for (auto name : {"a.txt", "b.txt", "c.log"}) std::ofstream(local.path() / name) << name;
  CHECK(server.cli({"mkdir", "t"}).status == 0);
  auto put = server.cli({"put", (local.path() / "*.txt").string(), "t"});
  INFO(put.out << put.err);
  CHECK(put.status == 0);
  CHECK(read_file(server.home() / "t" / "a.txt") == "a.txt");
  CHECK(read_file(server.home() / "t" / "b.txt") == "b.txt");
  CHECK_FALSE(fs::exists(server.home() / "t" / "c.log"));

  fs::create_directory(local.path() / "down");
  auto get = server.cli({"get", "t/*.txt", (local.path() / "down").string()});
  CHECK(get.status == 0);
  CHECK(read_file(local.path() / "down" / "a.txt") == "a.txt");
  CHECK(read_file(local.path() / "down" / "b.txt") == "b.txt");

  auto none = server.cli({"get", "t/*.zip", (local.path() / "down").string()});
  CHECK(none.status == 1);
  CHECK(contains(none.err, "coserve-cli: not_found: no remote file matches"));
  auto no_local = server.cli({"put", (local.path() / "*.zip").string()});
  CHECK(no_local.status == 1);
  CHECK(contains(no_local.err, "no local file matches"));
}
