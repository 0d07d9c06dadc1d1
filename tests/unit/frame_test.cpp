// The frame codec, byte by byte: every split of a stream, limits, garbage.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <random>

#include "coserve/frame.hpp"

using namespace coserve;

namespace {

std::string wire(const OutFrame& f) { return f->head + f->body; }

std::string raw_frame(std::string_view json_text, std::string_view body) {
  std::string out(8, '\0');
  auto put = [&](std::size_t at, std::uint32_t v) {
    out[at] = char(v >> 24);
    out[at + 1] = char(v >> 16);
    out[at + 2] = char(v >> 8);
    out[at + 3] = char(v);
  };
  put(0, static_cast<std::uint32_t>(json_text.size()));
  put(4, static_cast<std::uint32_t>(body.size()));
  out += json_text;
  out += body;
  return out;
}

std::vector<DecodeResult> drain(FrameDecoder& d) {
  std::vector<DecodeResult> out;
  while (auto r = d.next()) out.push_back(std::move(*r));
  return out;
}

}  // namespace

TEST_CASE("encode writes big-endian lengths, JSON, then body") {
  auto f = encode_frame({{"id", 1}}, std::string("\x00\x01", 2));
  auto bytes = wire(f);
  REQUIRE(bytes.size() == 8 + 8 + 2);
  CHECK(bytes.substr(0, 8) == std::string("\0\0\0\x08\0\0\0\x02", 8));
  CHECK(bytes.substr(8, 8) == R"({"id":1})");
  CHECK(f->json_text() == R"({"id":1})");
}

TEST_CASE("every split of a two-frame stream decodes to the same frames") {
  std::string stream = wire(encode_frame({{"id", 1}, {"op", "a"}}, "body-one")) +
                       wire(encode_frame({{"id", 2}}, "")) +
                       wire(encode_frame({{"id", 3}, {"x", "y"}}, std::string(300, 'z')));
  for (std::size_t cut1 = 0; cut1 <= stream.size(); cut1 += 1) {
    for (std::size_t cut2 = cut1; cut2 <= stream.size(); cut2 += 37) {
      FrameDecoder d;
      std::vector<DecodeResult> got;
      for (auto part : {stream.substr(0, cut1), stream.substr(cut1, cut2 - cut1),
                        stream.substr(cut2)}) {
        d.feed(part);
        for (auto& r : drain(d)) got.push_back(std::move(r));
      }
      REQUIRE(got.size() == 3);
      CHECK(std::get<Frame>(got[0]).head["id"] == 1);
      CHECK(std::get<Frame>(got[0]).body == "body-one");
      CHECK(std::get<Frame>(got[1]).body.empty());
      CHECK(std::get<Frame>(got[2]).body == std::string(300, 'z'));
      CHECK(d.buffered() == 0);
    }
  }
}

TEST_CASE("a large body is read in place, whatever the splits and reads around it") {
  // 40 KiB is over the size from which the decoder reads a body straight into the frame.
  std::string big(40 * 1024, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + 3);
  std::string stream = wire(encode_frame({{"id", 1}}, "small")) +
                       wire(encode_frame({{"id", 2}, {"event", "data"}}, big)) +
                       raw_frame("{not json", big) + wire(encode_frame({{"id", 4}}, "after"));
  for (std::size_t step : {1u, 7u, 4096u, 65536u, 1u << 20}) {
    FrameDecoder d;
    std::vector<DecodeResult> got;
    for (std::size_t at = 0; at < stream.size(); at += step) {
      // The way a transport reads: into whatever prepare() offers, never more than it offers.
      std::string_view rest = std::string_view(stream).substr(at, step);
      while (!rest.empty()) {
        auto space = d.prepare(rest.size());
        auto n = std::min(space.size(), rest.size());
        std::copy_n(rest.data(), n, space.data());
        d.commit(n);
        rest.remove_prefix(n);
        for (auto& r : drain(d)) got.push_back(std::move(r));
      }
    }
    INFO("read size " << step);
    REQUIRE(got.size() == 4);
    CHECK(std::get<Frame>(got[0]).body == "small");
    CHECK(std::get<Frame>(got[1]).head["event"] == "data");
    CHECK(std::get<Frame>(got[1]).body == big);
    CHECK(std::get<DecodeError>(got[2]).code == errc::bad_frame);
    CHECK_FALSE(std::get<DecodeError>(got[2]).fatal);
    CHECK(std::get<Frame>(got[3]).body == "after");
    CHECK(d.idle());
  }
}

TEST_CASE("one byte at a time") {
  std::string stream = wire(encode_frame({{"id", "s"}, {"text", "héllo"}}, "abc"));
  FrameDecoder d;
  std::size_t frames = 0;
  for (char c : stream) {
    d.feed(std::string_view(&c, 1));
    for (auto& r : drain(d)) {
      ++frames;
      CHECK(std::get<Frame>(r).head["text"] == "héllo");
    }
  }
  CHECK(frames == 1);
}

TEST_CASE("many frames in one read") {
  std::string stream;
  for (int i = 0; i < 1000; ++i) stream += wire(encode_frame({{"id", i}}, std::to_string(i)));
  FrameDecoder d;
  d.feed(stream);
  auto got = drain(d);
  REQUIRE(got.size() == 1000);
  CHECK(std::get<Frame>(got[999]).body == "999");
}

TEST_CASE("a body over the limit is reported with the request id and skipped") {
  FrameDecoder d(FrameLimits{1024, 16});
  d.feed(raw_frame(R"({"id":9})", std::string(17, 'b')));
  d.feed(wire(encode_frame({{"id", 10}}, "ok")));
  auto got = drain(d);
  REQUIRE(got.size() == 2);
  auto& err = std::get<DecodeError>(got[0]);
  CHECK(err.code == errc::too_large);
  CHECK(err.id == 9);
  CHECK_FALSE(err.fatal);
  CHECK(std::get<Frame>(got[1]).body == "ok");
}

TEST_CASE("a JSON part over the limit is fatal") {
  FrameDecoder d(FrameLimits{16, 1024});
  d.feed(raw_frame(R"({"id":1,"pad":"xxxxxxxxxxxxxxxx"})", ""));
  auto got = drain(d);
  REQUIRE(got.size() == 1);
  CHECK(std::get<DecodeError>(got[0]).code == errc::too_large);
  CHECK(std::get<DecodeError>(got[0]).fatal);
}

TEST_CASE("an HTTP request on the framed port is garbage, not a 1 GB allocation") {
  FrameDecoder d;
  d.feed("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  auto got = drain(d);
  REQUIRE(got.size() == 1);
  CHECK(std::get<DecodeError>(got[0]).fatal);
}

TEST_CASE("bad JSON, non-objects and empty JSON parts are bad_frame but not fatal") {
  for (std::string_view text : {"{not json", "[1,2]", "42", "\"s\"", "", "null"}) {
    FrameDecoder d;
    d.feed(raw_frame(text, "body"));
    d.feed(wire(encode_frame({{"id", 1}})));
    auto got = drain(d);
    INFO("json part: " << text);
    REQUIRE(got.size() == 2);
    CHECK(std::get<DecodeError>(got[0]).code == errc::bad_frame);
    CHECK_FALSE(std::get<DecodeError>(got[0]).fatal);
    CHECK(std::get<Frame>(got[1]).head["id"] == 1);
  }
}

TEST_CASE("zero-length body and partial header wait for more bytes") {
  FrameDecoder d;
  d.feed(std::string("\0\0\0", 3));
  CHECK_FALSE(d.next());
  d.feed(std::string("\x02\0\0\0\0{}", 7));
  auto r = d.next();
  REQUIRE(r);
  CHECK(std::get<Frame>(*r).head.is_object());
}

TEST_CASE("whole-message decoding (WebSocket) checks lengths and limits") {
  FrameLimits limits{64, 8};
  CHECK(std::holds_alternative<Frame>(decode_whole_frame(wire(encode_frame({{"id", 1}}, "abc")), limits)));
  CHECK(std::get<DecodeError>(decode_whole_frame("short", limits)).code == errc::bad_frame);
  auto extra = wire(encode_frame({{"id", 1}}, "abc")) + "x";
  CHECK(std::get<DecodeError>(decode_whole_frame(extra, limits)).code == errc::bad_frame);
  auto big = wire(encode_frame({{"id", 5}}, std::string(9, 'b')));
  auto err = std::get<DecodeError>(decode_whole_frame(big, limits));
  CHECK(err.code == errc::too_large);
  CHECK(err.id == 5);
  CHECK(std::get<DecodeError>(decode_json_only("[]", limits)).code == errc::bad_frame);
  CHECK(std::holds_alternative<Frame>(decode_json_only(R"({"id":1})", limits)));
}

TEST_CASE("invalid UTF-8 from a service is replaced, not thrown") {
  auto f = encode_frame({{"text", std::string("\xff\xfe")}});
  CHECK(f->json_text().find("text") != std::string_view::npos);
}

TEST_CASE("tagged frames are valid JSON: the fields with our id and tag") {
  const std::vector<json> values = {
      nullptr, true, false, 0, -1, std::int64_t{-9223372036854775807 - 1},
      std::uint64_t{18446744073709551615u}, 1.5, -0.25, 1e300, "", "plain text", "tab\there",
      "quote\"", "back\\slash", "\xc3\xa9t\xc3\xa9", std::string("nul\0x", 5), "\x7f",
      "\xff\xfe bad utf-8", json::array({1, "two", nullptr}), json{{"nested", {{"a", 1}}}},
      json::object(), json::array(),
  };
  const std::vector<std::string> keys = {"text", "ok", "id", "with space", "qu\"ote", "\xc3\xa9",
                                         "ctl\x01", "size"};
  // What a client reads: invalid UTF-8 from a service arrives replaced, not as an error.
  auto as_read = [](const json& v) {
    return json::parse(v.dump(-1, ' ', false, json::error_handler_t::replace));
  };
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    json id = i % 3 == 0 ? json("req-" + std::to_string(i)) : json(i);
    json fields = i % 50 == 0 ? json(nullptr) : json::object();
    const int count = fields.is_null() ? 0 : static_cast<int>(rng() % 5);
    for (int k = 0; k < count; ++k) fields[keys[rng() % keys.size()]] = values[rng() % values.size()];
    const json& tag_value = values[rng() % values.size()];
    const std::string tag = i % 2 ? "ok" : "event";
    json expected = fields.is_object() ? fields : json::object();
    expected["id"] = id;
    expected[tag] = tag_value;
    auto frame = i % 4 == 0 ? encode_tagged(id, tag, tag_value, fields, "body")  // a copy
                            : encode_tagged(id, tag, tag_value, std::move(fields), "body");
    INFO(expected.dump(-1, ' ', false, json::error_handler_t::replace));
    json got = json::parse(frame->json_text(), nullptr, /*allow_exceptions=*/false);
    REQUIRE_FALSE(got.is_discarded());
    REQUIRE(got == as_read(expected));
    REQUIRE(frame->head.size() == 8 + frame->json_text().size());
    REQUIRE(frame->body == "body");
  }
}

TEST_CASE("a reply head is one line of JSON with its header") {
  auto frame = encode_tagged(7, "ok", true, json{{"text", "x"}});
  CHECK(frame->json_text() == R"({"id":7,"ok":true,"text":"x"})");
  CHECK(frame->head.substr(0, 8) == std::string("\0\0\0\x1d\0\0\0\0", 8));
}

namespace {

// A frame header and JSON part that announce a body of `body_len` bytes, without the body.
std::string header_claiming(std::string_view json_text, std::uint32_t body_len) {
  std::string out = raw_frame(json_text, "");
  out[4] = char(body_len >> 24);
  out[5] = char(body_len >> 16);
  out[6] = char(body_len >> 8);
  out[7] = char(body_len);
  return out;
}

}  // namespace

TEST_CASE("a header claiming a large body does not make the decoder reserve it", "[frame][budget]") {
  // 46 bytes announcing 1 MiB: a server must not commit the MiB before it arrives.
  const std::string head = R"({"id":1,"service":"echo","op":"echo"})";
  const std::uint32_t body_len = 1 << 20;
  FrameDecoder d(FrameLimits{64 * 1024, body_len});
  d.feed(header_claiming(head, body_len));
  CHECK_FALSE(d.next());
  CHECK(d.buffered_capacity() <= 2 * FrameDecoder::kGrowStep);

  // As the body arrives, what the decoder holds stays within twice what came plus a step.
  std::string body(body_len, '\0');
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 13 + 5);
  std::size_t sent = 0;
  std::optional<DecodeResult> got;
  while (sent < body.size()) {
    auto space = d.prepare(64 * 1024);
    REQUIRE(space.size() > 0);
    const auto n = std::min<std::size_t>({space.size(), body.size() - sent, 4096});
    std::memcpy(space.data(), body.data() + sent, n);
    d.commit(n);
    sent += n;
    INFO("after " << sent << " bytes of the body");
    CHECK(d.buffered_capacity() <= 2 * sent + 2 * FrameDecoder::kGrowStep);
    got = d.next();
    if (got) break;
  }
  REQUIRE(got);
  CHECK(std::get<Frame>(*got).body == body);
  CHECK(std::get<Frame>(*got).wire_size == kFrameHeaderSize + head.size() + body_len);
  CHECK(d.buffered_capacity() <= 2 * FrameDecoder::kGrowStep);
}

TEST_CASE("a partly received small frame grows the buffer by steps, not by what a reader asks",
          "[frame][budget]") {
  // A body under the in-place size goes through the buffer: a reader asking for 64 KiB to read
  // into gets at most a step more than what has arrived.
  FrameDecoder d;
  d.feed(header_claiming(R"({"id":2})", 30 * 1024));
  CHECK_FALSE(d.next());
  auto space = d.prepare(64 * 1024);
  CHECK(space.size() <= FrameDecoder::kGrowStep);
  CHECK(d.buffered_capacity() <= 2 * FrameDecoder::kGrowStep);
  std::memset(space.data(), 'q', space.size());
  d.commit(space.size());
  CHECK_FALSE(d.next());
  // The rest arrives in whatever the decoder offers; the frame comes out whole.
  std::size_t left = 30 * 1024 - space.size();
  while (left > 0) {
    auto more = d.prepare(left);
    const auto n = std::min(more.size(), left);
    std::memset(more.data(), 'q', n);
    d.commit(n);
    left -= n;
  }
  auto got = d.next();
  REQUIRE(got);
  CHECK(std::get<Frame>(*got).body == std::string(30 * 1024, 'q'));
}
