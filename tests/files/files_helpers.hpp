#pragma once
// Shared by the files/auth tests: users made with the real `coserve user add`, logged-in
// clients, and the client side of the put/get protocol (services/files/PROTOCOL.md), with knobs
// to misbehave (corrupt a chunk, stop part way).
#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include "coserve/client.hpp"
#include "files/sha256.hpp"
#include "test_support.hpp"

namespace coserve::test::files {

using coserve::files::sha256_hex;

// `coserve user add NAME --password-stdin [--quota Q]` on `data_dir`; REQUIREs exit 0.
inline void add_user(const std::filesystem::path& data_dir, const std::string& name,
                     const std::string& password, const std::string& quota = {}) {
  std::vector<std::string> argv = {
      binary("coserve").string(), "user", "add", name, "--password-stdin", "--data-dir",
      data_dir.string()};
  if (!quota.empty()) {
    argv.push_back("--quota");
    argv.push_back(quota);
  }
  auto result = run_program(argv, password + "\n");
  INFO(result.err);
  REQUIRE(result.status == 0);
}

// Bytes of every regular file under `home`, hidden partial uploads and their metadata included:
// what the quota's `used` must equal once nothing is in flight.
inline std::uint64_t bytes_on_disk(const std::filesystem::path& home) {
  std::uint64_t total = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(home))
    if (e.is_regular_file() && !e.is_symlink()) total += e.file_size();
  return total;
}

inline std::string random_bytes(std::size_t n, std::uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (std::size_t i = 0; i < n; i += 8) {
    auto v = rng();
    for (std::size_t k = 0; k < 8 && i + k < n; ++k) out[i + k] = static_cast<char>(v >> (8 * k));
  }
  return out;
}

// A request built without braced JSON: GCC 12 cannot keep an initializer_list alive across a
// co_await in the same expression ("array used as initializer").
class Req {
 public:
  explicit Req(std::string op) { head_["op"] = std::move(op); }
  template <class T>
  Req& set(const std::string& key, T&& value) {
    head_[key] = std::forward<T>(value);
    return *this;
  }
  operator json() const { return head_; }

 private:
  json head_ = json::object();
};

inline std::string error_of(const Frame& reply) { return error_code_of(reply).value_or("ok"); }

// A connected client on the server's framed listener, logged in when a user is given.
inline awaitable<std::unique_ptr<Client>> connect(const ServerProcess& server,
                                                  const std::string& user = {},
                                                  const std::string& password = {}) {
  auto client = std::make_unique<Client>(co_await asio::this_coro::executor);
  co_await client->connect("127.0.0.1", server.port("framed"));
  if (!user.empty()) {
    auto reply = co_await client->call(
        Req("login").set("service", "auth").set("user", user).set("password", password));
    INFO(reply.head.dump());
    REQUIRE(!error_code_of(reply));
  }
  co_return client;
}

inline awaitable<Frame> files_call(Client& client, json request) {
  request["service"] = "files";
  co_return co_await client.call(std::move(request));
}

struct PutOptions {
  std::size_t chunk = 256 * 1024;
  bool overwrite = false;
  std::optional<std::uint64_t> stop_at;     // stop sending here (and return once written)
  std::optional<std::uint64_t> corrupt_at;  // flip the byte at this offset when sending
  std::optional<std::string> claimed_sha256;
  bool digest_at_end = false;  // no sha256 in the request; the end event carries it
  std::optional<std::string> end_sha256;  // what the end event claims (default: the true one)

  PutOptions& chunked(std::size_t n) {
    chunk = n;
    return *this;
  }
  PutOptions& overwriting() {
    overwrite = true;
    return *this;
  }
  PutOptions& stopping_at(std::uint64_t n) {
    stop_at = n;
    return *this;
  }
  PutOptions& corrupting(std::uint64_t n) {
    corrupt_at = n;
    return *this;
  }
  PutOptions& hashing_at_end(std::optional<std::string> claimed = std::nullopt) {
    digest_at_end = true;
    end_sha256 = std::move(claimed);
    return *this;
  }
};

struct PutOutcome {
  Frame reply;                     // the final reply, or the last credit event when stopped
  std::uint64_t first_offset = 0;  // the resume offset of the first credit event
  bool stopped = false;            // stop_at reached and confirmed written by the server
  bool got_credit = false;         // the server granted credit (data could move)
};

// The client side of `put`: waits for credit, sends at most what was granted, then `end`.
inline awaitable<PutOutcome> put_file(Client& client, const std::string& path,
                                      const std::string& data, PutOptions options = {}) {
  PutOutcome out;
  json request = {{"service", "files"},
                  {"op", "put"},
                  {"path", path},
                  {"size", data.size()},
                  {"overwrite", options.overwrite}};
  if (!options.digest_at_end)
    request["sha256"] = options.claimed_sha256.value_or(sha256_hex(data));
  auto stream = client.open(std::move(request));
  auto first = co_await stream.next();
  if (stream.done()) {
    out.reply = std::move(first);
    co_return out;
  }
  REQUIRE(first.head.value("event", "") == "credit");
  out.got_credit = true;
  std::uint64_t position = first.head.at("offset").get<std::uint64_t>();
  out.first_offset = position;
  std::uint64_t granted = position + first.head.at("bytes").get<std::uint64_t>();
  const std::uint64_t stop = options.stop_at.value_or(data.size());
  bool ended = false;
  for (;;) {
    while (position < granted && position < stop) {
      auto n = std::min<std::uint64_t>({options.chunk, granted - position, stop - position});
      std::string chunk = data.substr(position, n);
      if (options.corrupt_at && *options.corrupt_at >= position &&
          *options.corrupt_at < position + n)
        chunk[*options.corrupt_at - position] ^= 0x5a;
      stream.send({{"event", "data"}}, std::move(chunk));
      position += n;
    }
    if (!ended && position == data.size()) {
      json end = {{"event", "end"}};
      if (options.digest_at_end && options.end_sha256 != "")
        end["sha256"] = options.end_sha256.value_or(sha256_hex(data));
      stream.send(std::move(end));
      ended = true;
    }
    auto frame = co_await stream.next();
    if (stream.done()) {
      out.reply = std::move(frame);
      co_return out;
    }
    REQUIRE(frame.head.value("event", "") == "credit");
    granted += frame.head.at("bytes").get<std::uint64_t>();
    if (!ended && position >= stop && frame.head.at("offset").get<std::uint64_t>() >= stop) {
      out.reply = std::move(frame);
      out.stopped = true;
      co_return out;
    }
  }
}

struct GetOutcome {
  Frame reply;
  std::string data;
};

inline awaitable<GetOutcome> get_file(Client& client, const std::string& path,
                                      std::uint64_t offset = 0) {
  GetOutcome out;
  auto stream =
      client.open({{"service", "files"}, {"op", "get"}, {"path", path}, {"offset", offset}});
  for (;;) {
    auto frame = co_await stream.next();
    if (stream.done()) {
      out.reply = std::move(frame);
      co_return out;
    }
    REQUIRE(frame.head.value("event", "") == "data");
    REQUIRE(frame.head.at("offset").get<std::uint64_t>() == offset + out.data.size());
    out.data += frame.body;
  }
}

}  // namespace coserve::test::files
