// RFC 6455 at the byte level against the real server's /ws: a plain TCP socket on loopback, a
// hand-written upgrade request and hand-built (masked) client frames, and a parser of the
// server's frames. No Beast WebSocket here: these tests pin the wire behaviour itself (accept
// key, fragmentation, control frames in the middle of a message, close codes for protocol
// errors, the closing handshake, upgrade refusals, bytes pipelined behind the upgrade, 64-bit
// lengths), whatever implements the framing in the server.
//
// g++ 12 destroys some temporaries of a co_await full-expression twice: every argument of an
// awaited call here is a named variable, and nothing is awaited inside a Catch macro.
#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "test_support.hpp"
#include "ws_client.hpp"

using namespace coserve;
using namespace coserve::test;
using namespace coserve::test::web;
using namespace std::chrono_literals;

namespace {

// RFC 6455 section 1.3's example: this key must be answered with this accept value.
constexpr std::string_view kKey = "dGhlIHNhbXBsZSBub25jZQ==";
constexpr std::string_view kAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
// Every masked client frame uses this key (non-zero, and different in each byte).
constexpr std::array<std::uint8_t, 4> kMask{0x37, 0xfa, 0x21, 0x3d};

constexpr int kContinuation = 0x0;
constexpr int kText = 0x1;
constexpr int kBinary = 0x2;
constexpr int kClose = 0x8;
constexpr int kPing = 0x9;
constexpr int kPong = 0xa;

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return std::string(s);
}

// Whether a comma-separated header value holds `token` (case-insensitive).
bool has_token(std::string_view value, std::string_view token) {
  const std::string wanted = lower(token);
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = value.find(',', start);
    const std::string item = lower(trim(value.substr(start, comma == std::string_view::npos
                                                                ? std::string_view::npos
                                                                : comma - start)));
    if (item == wanted) return true;
    if (comma == std::string_view::npos) return false;
    start = comma + 1;
  }
}

// One client frame: FIN, RSV bits (`rsv` 0-7, RSV1 = 4), opcode, 7/16/64-bit payload length,
// masked with kMask unless `masked` is false.
std::string client_frame(bool fin, int opcode, std::string_view payload, bool masked = true,
                         unsigned rsv = 0) {
  std::string out;
  out.push_back(static_cast<char>((fin ? 0x80u : 0u) | ((rsv & 7u) << 4) |
                                  (static_cast<unsigned>(opcode) & 0x0fu)));
  const unsigned mask_bit = masked ? 0x80u : 0u;
  const std::uint64_t n = payload.size();
  if (n < 126) {
    out.push_back(static_cast<char>(mask_bit | static_cast<unsigned>(n)));
  } else if (n <= 0xffff) {
    out.push_back(static_cast<char>(mask_bit | 126u));
    out.push_back(static_cast<char>((n >> 8) & 0xff));
    out.push_back(static_cast<char>(n & 0xff));
  } else {
    out.push_back(static_cast<char>(mask_bit | 127u));
    for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((n >> shift) & 0xff));
  }
  if (masked) {
    for (auto b : kMask) out.push_back(static_cast<char>(b));
    for (std::size_t i = 0; i < payload.size(); ++i)
      out.push_back(static_cast<char>(static_cast<std::uint8_t>(payload[i]) ^ kMask[i % 4]));
  } else {
    out.append(payload);
  }
  return out;
}

std::string close_payload(std::uint16_t code, std::string_view reason) {
  std::string out;
  out.push_back(static_cast<char>(code >> 8));
  out.push_back(static_cast<char>(code & 0xff));
  out.append(reason);
  return out;
}

void put_u32(std::string& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

std::uint32_t get_u32(std::string_view in) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<std::uint8_t>(in[static_cast<std::size_t>(i)]);
  return v;
}

// The protocol's frame encoding, for a binary WebSocket message: u32 json_len, u32 body_len
// (big-endian), the JSON, the body.
std::string protocol_frame(const json& head, std::string_view body) {
  const std::string text = head.dump();
  std::string out;
  put_u32(out, static_cast<std::uint32_t>(text.size()));
  put_u32(out, static_cast<std::uint32_t>(body.size()));
  out += text;
  out.append(body);
  return out;
}

struct DecodedFrame {
  bool valid = false;
  json head;
  std::string body;
};

DecodedFrame decode_protocol_frame(std::string_view bytes) {
  DecodedFrame out;
  if (bytes.size() < 8) return out;
  const std::size_t json_len = get_u32(bytes.substr(0, 4));
  const std::size_t body_len = get_u32(bytes.substr(4, 4));
  if (bytes.size() != 8 + json_len + body_len) return out;
  out.head = json::parse(bytes.substr(8, json_len), nullptr, false);
  if (out.head.is_discarded()) return out;
  out.body = std::string(bytes.substr(8 + json_len));
  out.valid = true;
  return out;
}

json echo_request(int id, const std::string& text) {
  json head = json::object();
  head["id"] = id;
  head["service"] = "echo";
  head["op"] = "echo";
  head["text"] = text;
  return head;
}

std::string pattern(std::size_t n, unsigned seed) {
  std::string out(n, '\0');
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<char>((i * 31 + seed) & 0xff);
  return out;
}

// ---- the raw connection ------------------------------------------------------------------------

struct RawConn {
  explicit RawConn(beast::tcp_stream s) : stream(std::move(s)) {}
  beast::tcp_stream stream;
  std::string pending;  // read from the socket, not consumed yet
};

awaitable<std::unique_ptr<RawConn>> connect_raw(std::string port) {
  auto stream = co_await connect_tcp(port);
  co_return std::make_unique<RawConn>(std::move(stream));
}

// Writes all of `bytes`; a failure comes back as the error (the peer may have closed).
awaitable<error_code> send_bytes(RawConn& conn, std::string bytes) {
  conn.stream.expires_after(10s);
  auto [ec, n] = co_await asio::async_write(conn.stream, asio::buffer(bytes), use_nothrow);
  conn.stream.expires_never();
  (void)n;
  co_return ec;
}

// One read into `pending`, bounded by the deadline set by the caller (expires_after).
awaitable<error_code> fill(RawConn& conn) {
  char buf[16384];
  auto [ec, n] = co_await conn.stream.async_read_some(asio::buffer(buf), use_nothrow);
  conn.pending.append(buf, n);
  co_return ec;
}

struct HttpHead {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names in lower case
  std::string raw;
  std::string get(std::string_view name) const {
    const std::string wanted = lower(name);
    for (auto& [k, v] : headers)
      if (k == wanted) return v;
    return {};
  }
  bool has(std::string_view name) const {
    const std::string wanted = lower(name);
    for (auto& [k, v] : headers)
      if (k == wanted) return true;
    return false;
  }
};

// The response head up to its blank line; the bytes after it stay in `pending`. nullopt when
// the connection ends or the deadline passes first.
awaitable<std::optional<HttpHead>> read_head(RawConn& conn, std::chrono::milliseconds timeout) {
  conn.stream.expires_after(timeout);
  std::size_t end = std::string::npos;
  while ((end = conn.pending.find("\r\n\r\n")) == std::string::npos) {
    auto ec = co_await fill(conn);
    if (ec) break;
  }
  conn.stream.expires_never();
  if (end == std::string::npos) co_return std::nullopt;
  HttpHead head;
  head.raw = conn.pending.substr(0, end + 4);
  conn.pending.erase(0, end + 4);
  std::string_view rest(head.raw);
  auto line_end = rest.find("\r\n");
  std::string_view status_line = rest.substr(0, line_end);
  rest.remove_prefix(line_end + 2);
  // "HTTP/1.1 101 Switching Protocols"
  if (auto sp = status_line.find(' '); sp != std::string_view::npos)
    head.status = std::atoi(std::string(status_line.substr(sp + 1, 3)).c_str());
  while (!rest.empty()) {
    line_end = rest.find("\r\n");
    std::string_view line = rest.substr(0, line_end);
    rest.remove_prefix(line_end == std::string_view::npos ? rest.size() : line_end + 2);
    if (line.empty()) continue;
    auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    head.headers.emplace_back(lower(trim(line.substr(0, colon))), trim(line.substr(colon + 1)));
  }
  co_return head;
}

std::string upgrade_request(const std::string& port, std::string_view version, bool with_key) {
  std::string req = "GET /ws HTTP/1.1\r\n";
  req += "Host: 127.0.0.1:" + port + "\r\n";
  req += "Upgrade: websocket\r\n";
  req += "Connection: Upgrade\r\n";
  if (with_key) req += "Sec-WebSocket-Key: " + std::string(kKey) + "\r\n";
  req += "Sec-WebSocket-Version: " + std::string(version) + "\r\n";
  req += "\r\n";
  return req;
}

enum class ReadStatus { frame, closed, timeout };

const char* to_string(ReadStatus s) {
  switch (s) {
    case ReadStatus::frame: return "frame";
    case ReadStatus::closed: return "connection closed";
    case ReadStatus::timeout: return "timeout";
  }
  return "?";
}

// One frame from the server, or why there is none: `closed` when the connection ended (EOF or
// reset) and `timeout` when the deadline passed.
struct ServerFrame {
  ReadStatus status = ReadStatus::frame;
  error_code error;  // what ended the read when status is not frame
  bool fin = false;
  unsigned rsv = 0;
  bool masked = false;
  int opcode = -1;
  int fragments = 0;  // read_message: how many frames made the message
  std::string payload;

  // A close frame's status code; 1005 (none received) for an empty close payload.
  int close_code() const {
    if (payload.size() < 2) return 1005;
    return (static_cast<std::uint8_t>(payload[0]) << 8) | static_cast<std::uint8_t>(payload[1]);
  }
  std::string close_reason() const { return payload.size() > 2 ? payload.substr(2) : std::string(); }
  std::string describe() const {
    if (status != ReadStatus::frame) return std::string(to_string(status)) + " (" + error.message() + ")";
    std::string out = "frame opcode " + std::to_string(opcode) + (fin ? " FIN" : " no-FIN") +
                      " rsv " + std::to_string(rsv) + (masked ? " masked" : "") + ", " +
                      std::to_string(payload.size()) + " bytes";
    if (opcode == kClose) out += ", close code " + std::to_string(close_code()) + " '" + close_reason() + "'";
    return out;
  }
};

// Parses one frame from the front of `pending`; false when more bytes are needed.
bool parse_frame(std::string& pending, ServerFrame& out) {
  if (pending.size() < 2) return false;
  const auto b0 = static_cast<std::uint8_t>(pending[0]);
  const auto b1 = static_cast<std::uint8_t>(pending[1]);
  std::size_t pos = 2;
  std::uint64_t len = b1 & 0x7fu;
  if (len == 126) {
    if (pending.size() < 4) return false;
    len = (static_cast<std::uint64_t>(static_cast<std::uint8_t>(pending[2])) << 8) |
          static_cast<std::uint8_t>(pending[3]);
    pos = 4;
  } else if (len == 127) {
    if (pending.size() < 10) return false;
    len = 0;
    for (std::size_t i = 2; i < 10; ++i) len = (len << 8) | static_cast<std::uint8_t>(pending[i]);
    pos = 10;
  }
  const bool masked = (b1 & 0x80u) != 0;
  std::array<std::uint8_t, 4> mask{};
  if (masked) {
    if (pending.size() < pos + 4) return false;
    for (std::size_t i = 0; i < 4; ++i) mask[i] = static_cast<std::uint8_t>(pending[pos + i]);
    pos += 4;
  }
  if (pending.size() < pos + len) return false;
  out.status = ReadStatus::frame;
  out.fin = (b0 & 0x80u) != 0;
  out.rsv = (b0 >> 4) & 7u;
  out.opcode = b0 & 0x0f;
  out.masked = masked;
  out.payload = pending.substr(pos, static_cast<std::size_t>(len));
  if (masked)
    for (std::size_t i = 0; i < out.payload.size(); ++i)
      out.payload[i] = static_cast<char>(static_cast<std::uint8_t>(out.payload[i]) ^ mask[i % 4]);
  pending.erase(0, pos + static_cast<std::size_t>(len));
  return true;
}

awaitable<ServerFrame> read_frame(RawConn& conn, std::chrono::milliseconds timeout = 10s) {
  ServerFrame frame;
  conn.stream.expires_after(timeout);
  while (!parse_frame(conn.pending, frame)) {
    auto ec = co_await fill(conn);
    if (ec) {
      frame.status = ec == beast::error::timeout ? ReadStatus::timeout : ReadStatus::closed;
      frame.error = ec;
      break;
    }
  }
  conn.stream.expires_never();
  co_return frame;
}

// The next data message, its fragments joined (opcode of the first frame, FIN of the last).
// Pings and pongs in between are skipped; a close frame, the end of the connection or the
// deadline is returned as it is.
awaitable<ServerFrame> read_message(RawConn& conn, std::chrono::milliseconds timeout = 10s) {
  ServerFrame message;
  for (;;) {
    auto frame = co_await read_frame(conn, timeout);
    if (frame.status != ReadStatus::frame || frame.opcode == kClose) co_return frame;
    if (frame.opcode == kPing || frame.opcode == kPong) continue;
    if (message.fragments == 0) {
      message = frame;
      message.fragments = 1;
    } else {
      message.payload += frame.payload;
      message.fin = frame.fin;
      message.rsv |= frame.rsv;
      message.masked = message.masked || frame.masked;
      ++message.fragments;
    }
    if (frame.fin) co_return message;
  }
}

// Sends `bytes` (an upgrade request, perhaps with frames after it) and reads the answer's head;
// nullopt when the send fails or no head comes within 10 s.
awaitable<std::optional<HttpHead>> send_upgrade(RawConn& conn, std::string bytes) {
  auto ec = co_await send_bytes(conn, std::move(bytes));
  if (ec) co_return std::nullopt;
  auto head = co_await read_head(conn, 10s);
  co_return head;
}

// Connects and upgrades with kKey; fails the test unless the answer is 101.
awaitable<std::unique_ptr<RawConn>> open_ws(std::string port) {
  auto conn = co_await connect_raw(port);
  const std::string req = upgrade_request(port, "13", true);
  auto head = co_await send_upgrade(*conn, req);
  REQUIRE(head.has_value());
  INFO(head->raw);
  REQUIRE(head->status == 101);
  co_return conn;
}

// What happened after the client broke the protocol (or asked to close): the first thing the
// server sent, and what came after it.
struct CloseOutcome {
  ServerFrame first;  // expected: a close frame
  ServerFrame after;  // expected: the connection closed
};

awaitable<CloseOutcome> read_close(RawConn& conn) {
  CloseOutcome out;
  out.first = co_await read_frame(conn, 10s);
  if (out.first.status == ReadStatus::frame) out.after = co_await read_frame(conn, 5s);
  co_return out;
}

void check_close(const CloseOutcome& out, int code) {
  INFO("first: " << out.first.describe());
  INFO("after: " << out.after.describe());
  REQUIRE(out.first.status == ReadStatus::frame);
  CHECK(out.first.opcode == kClose);
  CHECK(out.first.fin);
  CHECK_FALSE(out.first.masked);
  CHECK(out.first.close_code() == code);
  // ...and then the server closes TCP: the next read is EOF (or a reset), not a timeout.
  CHECK(out.after.status == ReadStatus::closed);
}

// Sends `bytes` on a fresh upgraded connection and reads what the server does about it.
awaitable<CloseOutcome> send_and_read_close(std::string port, std::string bytes) {
  auto conn = co_await open_ws(port);
  auto ec = co_await send_bytes(*conn, bytes);
  REQUIRE_FALSE(ec);
  auto out = co_await read_close(*conn);
  co_return out;
}

// A text reply to an echo request: an unmasked text message {"id", "ok": true, "text"}.
void check_text_echo(const ServerFrame& reply, int id, const std::string& text) {
  INFO(reply.describe());
  REQUIRE(reply.status == ReadStatus::frame);
  CHECK(reply.opcode == kText);
  CHECK_FALSE(reply.masked);
  auto j = json::parse(reply.payload, nullptr, false);
  REQUIRE_FALSE(j.is_discarded());
  CHECK(j["id"] == id);
  CHECK(j["ok"] == true);
  CHECK(j["text"] == text);
}

// A binary reply to an echo request with a body: one protocol frame carrying the same body.
void check_binary_echo(const ServerFrame& reply, int id, const std::string& text,
                       const std::string& body) {
  INFO(reply.describe());
  REQUIRE(reply.status == ReadStatus::frame);
  CHECK(reply.opcode == kBinary);
  CHECK_FALSE(reply.masked);
  auto decoded = decode_protocol_frame(reply.payload);
  REQUIRE(decoded.valid);
  CHECK(decoded.head["id"] == id);
  CHECK(decoded.head["ok"] == true);
  CHECK(decoded.head["text"] == text);
  CHECK(decoded.body.size() == body.size());
  CHECK(decoded.body == body);
}

}  // namespace

TEST_CASE("ws raw: the 101 carries the RFC 6455 accept key and a text request gets one text frame back") {
  ServerProcess server;
  run([&]() -> awaitable<void> {
    const std::string port = server.port("http");
    auto conn = co_await connect_raw(port);
    const std::string req = upgrade_request(port, "13", true);
    auto head = co_await send_upgrade(*conn, req);
    REQUIRE(head.has_value());
    INFO(head->raw);
    CHECK(head->status == 101);
    CHECK(head->get("sec-websocket-accept") == kAccept);
    CHECK(lower(head->get("upgrade")) == "websocket");
    CHECK(has_token(head->get("connection"), "upgrade"));
    CHECK(conn->pending.empty());  // nothing before the client's first frame

    const std::string text = echo_request(1, "hi").dump();
    const std::string frame = client_frame(true, kText, text);
    auto ec = co_await send_bytes(*conn, frame);
    REQUIRE_FALSE(ec);
    auto reply = co_await read_frame(*conn);
    check_text_echo(reply, 1, "hi");
    CHECK(reply.fin);
    CHECK(reply.rsv == 0);
  }());
  CHECK(server.running());
}

TEST_CASE("ws raw: a request in three fragments with a ping between them gets the pong first and then the reply") {
  ServerProcess server;
  run([&]() -> awaitable<void> {
    const std::string port = server.port("http");
    auto conn = co_await open_ws(port);
    const std::string text = echo_request(2, "fragmented hello").dump();
    const std::string f1 = client_frame(false, kText, std::string_view(text).substr(0, 10));
    const std::string ping = client_frame(true, kPing, "abc");
    const std::string f2 = client_frame(false, kContinuation, std::string_view(text).substr(10, 20));
    const std::string f3 = client_frame(true, kContinuation, std::string_view(text).substr(30));
    auto ec = co_await send_bytes(*conn, f1);
    REQUIRE_FALSE(ec);
    ec = co_await send_bytes(*conn, ping);
    REQUIRE_FALSE(ec);
    ec = co_await send_bytes(*conn, f2);
    REQUIRE_FALSE(ec);
    // The ping is answered in the middle of the message, before its last fragment is sent.
    auto pong = co_await read_frame(*conn, 5s);
    {
      INFO(pong.describe());
      REQUIRE(pong.status == ReadStatus::frame);
      CHECK(pong.opcode == kPong);
      CHECK(pong.fin);
      CHECK_FALSE(pong.masked);
      CHECK(pong.payload == "abc");
    }
    ec = co_await send_bytes(*conn, f3);
    REQUIRE_FALSE(ec);
    auto reply = co_await read_message(*conn);
    check_text_echo(reply, 2, "fragmented hello");
  }());
  CHECK(server.running());
}

TEST_CASE("ws raw: a binary request in fragments with a body gets a binary reply with the same body") {
  ServerProcess server;
  run([&]() -> awaitable<void> {
    const std::string port = server.port("http");
    auto conn = co_await open_ws(port);
    const std::string body = pattern(3000, 7);
    const json head = echo_request(3, "binary fragments");
    const std::string message = protocol_frame(head, body);
    // Split inside the 8-byte header, inside the JSON, and the rest (JSON tail + body: a 16-bit
    // length).
    const std::string f1 = client_frame(false, kBinary, std::string_view(message).substr(0, 5));
    const std::string f2 = client_frame(false, kContinuation, std::string_view(message).substr(5, 30));
    const std::string f3 = client_frame(true, kContinuation, std::string_view(message).substr(35));
    auto ec = co_await send_bytes(*conn, f1);
    REQUIRE_FALSE(ec);
    ec = co_await send_bytes(*conn, f2);
    REQUIRE_FALSE(ec);
    ec = co_await send_bytes(*conn, f3);
    REQUIRE_FALSE(ec);
    auto reply = co_await read_message(*conn);
    check_binary_echo(reply, 3, "binary fragments", body);
  }());
  CHECK(server.running());
}

TEST_CASE("ws raw: an unmasked client frame gets close 1002 and the connection is closed") {
  ServerProcess server;
  auto out = run([&]() -> awaitable<CloseOutcome> {
    const std::string port = server.port("http");
    const std::string text = echo_request(4, "unmasked").dump();
    const std::string frame = client_frame(true, kText, text, false);
    auto result = co_await send_and_read_close(port, frame);
    co_return result;
  }());
  check_close(out, 1002);
  CHECK(server.running());
}

TEST_CASE("ws raw: a text message that is not UTF-8 gets close 1007 and the connection is closed") {
  ServerProcess server;
  auto out = run([&]() -> awaitable<CloseOutcome> {
    const std::string port = server.port("http");
    const std::string text = "{\"id\":5,\"service\":\"echo\",\"op\":\"echo\",\"text\":\"\xff\xfe\"}";
    const std::string frame = client_frame(true, kText, text);
    auto result = co_await send_and_read_close(port, frame);
    co_return result;
  }());
  check_close(out, 1007);
  CHECK(server.running());
}

TEST_CASE("ws raw: protocol errors get close 1002 - reserved opcode, long control frame, stray continuation, RSV1") {
  ServerProcess server;
  const std::string text = echo_request(6, "protocol error").dump();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"reserved opcode 3", client_frame(true, 3, "abc")},
      {"ping with a 126-byte payload", client_frame(true, kPing, std::string(126, 'p'))},
      {"continuation with no message started", client_frame(true, kContinuation, text)},
      {"RSV1 set without an extension", client_frame(true, kText, text, true, 4)},
  };
  for (const auto& c : cases) {
    auto out = run([&]() -> awaitable<CloseOutcome> {
      const std::string port = server.port("http");
      const std::string frame = c.second;
      auto result = co_await send_and_read_close(port, frame);
      co_return result;
    }());
    INFO(c.first);
    check_close(out, 1002);
    CHECK(server.running());
  }
  // The server still takes new connections and requests.
  run([&]() -> awaitable<void> {
    const std::string port = server.port("http");
    auto conn = co_await open_ws(port);
    const std::string request = echo_request(60, "still here").dump();
    const std::string frame = client_frame(true, kText, request);
    auto ec = co_await send_bytes(*conn, frame);
    REQUIRE_FALSE(ec);
    auto reply = co_await read_message(*conn);
    check_text_echo(reply, 60, "still here");
  }());
  CHECK(server.running());
}

TEST_CASE("ws raw: a client close 1000 is answered with close 1000 and then the server closes TCP") {
  ServerProcess server;
  auto out = run([&]() -> awaitable<CloseOutcome> {
    const std::string port = server.port("http");
    const std::string payload = close_payload(1000, "bye");
    const std::string frame = client_frame(true, kClose, payload);
    auto result = co_await send_and_read_close(port, frame);
    co_return result;
  }());
  check_close(out, 1000);
  CHECK(server.running());
}

TEST_CASE("ws raw: upgrade refusals - version 8 gets 426 naming version 13 and a missing key gets 400") {
  ServerProcess server;
  run([&]() -> awaitable<void> {
    const std::string port = server.port("http");
    {
      auto conn = co_await connect_raw(port);
      const std::string req = upgrade_request(port, "8", true);
      auto head = co_await send_upgrade(*conn, req);
      REQUIRE(head.has_value());
      INFO(head->raw);
      CHECK(head->status == 426);
      CHECK(has_token(head->get("sec-websocket-version"), "13"));
      CHECK_FALSE(head->has("sec-websocket-accept"));
    }
    {
      auto conn = co_await connect_raw(port);
      const std::string req = upgrade_request(port, "13", false);
      auto head = co_await send_upgrade(*conn, req);
      REQUIRE(head.has_value());
      INFO(head->raw);
      CHECK(head->status == 400);
      CHECK_FALSE(head->has("sec-websocket-accept"));
    }
  }());
  CHECK(server.running());
}

TEST_CASE("ws raw: a first frame sent in the same write as the upgrade request still gets its reply") {
  ServerProcess server;
  run([&]() -> awaitable<void> {
    const std::string port = server.port("http");
    auto conn = co_await connect_raw(port);
    const std::string text = echo_request(9, "pipelined").dump();
    const std::string bytes = upgrade_request(port, "13", true) + client_frame(true, kText, text);
    auto head = co_await send_upgrade(*conn, bytes);
    REQUIRE(head.has_value());
    INFO(head->raw);
    REQUIRE(head->status == 101);
    auto reply = co_await read_message(*conn, 5s);
    check_text_echo(reply, 9, "pipelined");
  }());
  CHECK(server.running());
}

TEST_CASE("ws raw: a 20 KiB binary message sent in the same write as the upgrade request is read whole") {
  // Larger than Beast's own read buffer: the WebSocket stream reads the bytes the HTTP parser
  // already holds in several pieces, then the rest from the socket.
  ServerProcess server;
  run([&]() -> awaitable<void> {
    const std::string port = server.port("http");
    auto conn = co_await connect_raw(port);
    const std::string body = pattern(20 * 1024, 5);
    const std::string message = protocol_frame(echo_request(13, "pipelined big"), body);
    const std::string bytes = upgrade_request(port, "13", true) + client_frame(true, kBinary, message);
    auto head = co_await send_upgrade(*conn, bytes);
    REQUIRE(head.has_value());
    INFO(head->raw);
    REQUIRE(head->status == 101);
    auto reply = co_await read_message(*conn, 5s);
    check_binary_echo(reply, 13, "pipelined big", body);
  }());
  CHECK(server.running());
}

TEST_CASE("ws raw: a 200 KiB binary message with a 64-bit length round-trips its body") {
  ServerProcess server;
  run([&]() -> awaitable<void> {
    const std::string port = server.port("http");
    auto conn = co_await open_ws(port);
    const std::string body = pattern(200 * 1024, 11);
    const json head = echo_request(10, "big");
    const std::string message = protocol_frame(head, body);
    const std::string frame = client_frame(true, kBinary, message);
    REQUIRE(message.size() >= 65536);
    REQUIRE((static_cast<std::uint8_t>(frame[1]) & 0x7f) == 127);  // the 64-bit length form
    auto ec = co_await send_bytes(*conn, frame);
    REQUIRE_FALSE(ec);
    auto reply = co_await read_message(*conn);
    check_binary_echo(reply, 10, "big", body);
  }());
  CHECK(server.running());
}

TEST_CASE("ws raw: a client that sends pings and never reads the pongs is held back, then served") {
  ServerProcess server;
  run([&]() -> awaitable<void> {
    const std::string port = server.port("http");
    auto conn = co_await open_ws(port);
    // 1 MiB of 125-byte pings per write. The server answers each with a pong the client does
    // not read: once the socket buffers are full it must stop reading pings, so the client's
    // writes stall; a server that kept reading would queue pongs without bound.
    std::string batch;
    const std::string payload(125, 'p');
    while (batch.size() < (1u << 20)) batch += client_frame(true, kPing, payload);
    std::size_t sent = 0;
    bool stalled = false;
    while (sent < (64u << 20)) {
      conn->stream.expires_after(2s);
      auto [ec, n] = co_await asio::async_write(conn->stream, asio::buffer(batch), use_nothrow);
      conn->stream.expires_never();
      sent += n;
      if (ec == beast::error::timeout) {
        stalled = true;
        break;
      }
      REQUIRE_FALSE(ec);
    }
    INFO("sent " << sent << " bytes of pings");
    CHECK(stalled);
    // A timed-out write leaves the stream unusable: a fresh connection shows the server is fine.
    auto again = co_await open_ws(port);
    const std::string text = echo_request(12, "after the flood").dump();
    auto ec = co_await send_bytes(*again, client_frame(true, kText, text));
    REQUIRE_FALSE(ec);
    auto reply = co_await read_message(*again);
    check_text_echo(reply, 12, "after the flood");
  }());
  CHECK(server.running());
}

TEST_CASE("ws raw: a client that sends requests and never reads the replies is held back, then dropped at the write timeout") {
  ServerProcess server({"--set", "limits.write_timeout_ms=1000"});
  run([&]() -> awaitable<void> {
    const std::string port = server.port("http");
    auto conn = co_await open_ws(port);
    // Echo requests with 64 KiB bodies, each answered with the same body, and nothing read.
    // Once the replies fill the socket buffers and the session's out-queue, the server reads
    // no more requests: the client's writes stall (or fail, once the server gave up on the
    // stuck write and closed), long before 64 MiB went out.
    const std::string body = pattern(64 * 1024, 3);
    std::size_t sent = 0;
    error_code ec;
    for (int id = 100; sent < (64u << 20); ++id) {
      const std::string frame =
          client_frame(true, kBinary, protocol_frame(echo_request(id, "unread"), body));
      conn->stream.expires_after(3s);
      std::size_t n = 0;
      std::tie(ec, n) = co_await asio::async_write(conn->stream, asio::buffer(frame), use_nothrow);
      conn->stream.expires_never();
      sent += n;
      if (ec) break;
    }
    INFO("sent " << sent << " bytes, ended with " << ec.message());
    CHECK(ec);
    CHECK(sent < (64u << 20));
    // The server is fine: a fresh connection is served.
    auto again = co_await open_ws(port);
    const std::string text = echo_request(14, "after the unread replies").dump();
    const std::string request = client_frame(true, kText, text);
    auto send_ec = co_await send_bytes(*again, request);
    REQUIRE_FALSE(send_ec);
    auto reply = co_await read_message(*again);
    check_text_echo(reply, 14, "after the unread replies");
  }());
  CHECK(server.running());
  CHECK(server.log().find("write timeout") != std::string::npos);
}
