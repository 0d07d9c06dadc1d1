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

namespace {

// Every member's type, recursively: 1 and 1u compare equal in nlohmann, but a service asking
// for an unsigned field sees the difference.
std::string typed_dump(const json& v) {
  // type(), not type_name(): the name is "number" for all three kinds of number.
  if (!v.is_structured()) return std::to_string(static_cast<int>(v.type())) + ":" + v.dump();
  std::string out = v.is_object() ? "{" : "[";
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (v.is_object()) out += it.key() + "=";
    out += typed_dump(it.value()) + ",";
  }
  return out + (v.is_object() ? "}" : "]");
}

}  // namespace

TEST_CASE("the flat-object reader takes the common request shapes") {
  for (std::string_view text : {
           R"({"id":1,"service":"echo","op":"echo","text":"x"})",
           R"( { "id" : -42 , "ok" : true, "n": null, "f": false } )",
           R"({})",
           "{\n\t\"a\":\"b c\"\r\n}",
           R"({"id":"abc","id":7})",
           R"({"big":999999999999999999,"neg":-999999999999999999,"zero":-0})",
       }) {
    INFO(text);
    auto flat = detail::parse_flat_object(text);
    REQUIRE(flat);
    CHECK(typed_dump(*flat) == typed_dump(json::parse(text)));
  }
}

TEST_CASE("the flat-object reader leaves everything unusual to the full parser") {
  for (std::string_view text : {
           R"({"a":"\n"})", "{\"a\":\"\xc3\xa9\"}", R"({"a":1.5})", R"({"a":1e3})",
           R"({"a":1234567890123456789})", R"({"a":[1]})", R"({"a":{}})", R"({"a":01})",
           R"({"a":-})", R"({"a":tru})", R"({"a":1,})", R"({"a" 1})", R"({"a":1} x)", R"([])",
           R"("a")", "{\"a\":\"\x01\"}", R"({"a":1)", R"({a:1})", "{\"a\":\"\x7f\"}", R"({"a":"x)",
       }) {
    INFO(text);
    CHECK_FALSE(detail::parse_flat_object(text));
  }
}

TEST_CASE("the flat-object reader agrees with the full parser on random texts") {
  // Pieces of valid and broken JSON, glued at random: most results are invalid, many are flat
  // objects, some need the full parser. Whatever the fast reader accepts must parse, in full,
  // to the same value with the same types.
  const std::vector<std::string> pieces = {
      "{", "}", "{", "}", ":", ":", ",", ",", " ", "\n", R"("id")", R"("op")", R"("a b")",
      R"("")", R"("\"")", "\"\xc3\xa9\"", "\"\xff\"", "1", "0", "-0", "-7", "01", "1.5", "2e3",
      "123456789012345678", "1234567890123456789", "true", "false", "null", "nul", "[", "]",
      "\"\t\"", "x", "-",
  };
  std::mt19937 rng(20261126);
  std::size_t fast = 0;
  for (int i = 0; i < 200000; ++i) {
    std::string text;
    if (i % 2 == 0) {
      // Shaped like an object, so that a good share of them are flat objects.
      text = "{";
      const int members = static_cast<int>(rng() % 4);
      for (int m = 0; m < members; ++m) {
        if (m > 0) text += pieces[6 + rng() % 4];  // usually ",", sometimes ":" or " "
        text += pieces[10 + rng() % 8] + pieces[4 + rng() % 4] + pieces[13 + rng() % 20];
      }
      text += pieces[rng() % 4];
    } else {
      const int count = 1 + static_cast<int>(rng() % 8);
      for (int k = 0; k < count; ++k) text += pieces[rng() % pieces.size()];
    }
    auto flat = detail::parse_flat_object(text);
    if (!flat) continue;
    ++fast;
    INFO(text);
    json full = json::parse(text, nullptr, /*allow_exceptions=*/false);
    REQUIRE_FALSE(full.is_discarded());
    REQUIRE(typed_dump(*flat) == typed_dump(full));
  }
  CHECK(fast > 10000);
}

TEST_CASE("a flat head finds fields by name, the last of a repeated key, in a moved copy too") {
  auto parsed = FlatHead::parse(
      R"({"id":7,"service":"echo","op":"echo","n":-3,"ok":true,"none":null,"op":"again"})");
  REQUIRE(parsed);
  FlatHead head = *parsed;
  parsed.reset();
  auto* op = head.find("op");
  REQUIRE(op);
  CHECK(head.string(*op) == "again");
  CHECK(head.value(*head.find("id")) == json(7));
  CHECK(head.value(*head.find("id")).is_number_unsigned());
  CHECK(head.value(*head.find("n")).is_number_integer());
  CHECK(head.value(*head.find("ok")) == json(true));
  CHECK(head.find("none")->type == json::value_t::null);
  CHECK(head.find("missing") == nullptr);
  CHECK(head.to_json() == json::parse(R"({"id":7,"service":"echo","op":"again","n":-3,
                                          "ok":true,"none":null})"));
  // A short text lives inside the string object: the head keeps places, not pointers (views
  // into the original, or into the moved-from copy, would read freed or cleared characters).
  auto tiny = FlatHead::parse(R"({"a":"b"})");
  REQUIRE(tiny);
  FlatHead copy = *tiny;
  tiny.reset();
  FlatHead moved = std::move(copy);
  copy = FlatHead();
  CHECK(moved.string(*moved.find("a")) == "b");

  // Past kMaxMembers members the document path takes over.
  std::string many = "{";
  for (std::size_t i = 0; i <= FlatHead::kMaxMembers; ++i)
    many += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":" + std::to_string(i);
  many += "}";
  CHECK_FALSE(FlatHead::parse(many));
  CHECK(detail::parse_flat_object(many) == std::nullopt);
}

TEST_CASE("a decoder asked for flat heads gives them for flat requests only") {
  FrameDecoder decoder({}, /*flat_heads=*/true);
  decoder.feed(raw_frame(R"({"id":1,"service":"echo","op":"echo","text":"x"})", "body"));
  decoder.feed(raw_frame(R"({"id":2,"service":"echo","op":"echo","text":"\u00e9"})", ""));
  decoder.feed(raw_frame(R"({"id":3,)", ""));
  auto results = drain(decoder);
  REQUIRE(results.size() == 3);
  auto& flat = std::get<Frame>(results[0]);
  REQUIRE(flat.flat);
  CHECK(flat.head.is_null());
  CHECK(flat.body == "body");
  CHECK(flat.flat->string(*flat.flat->find("text")) == "x");
  auto& escaped = std::get<Frame>(results[1]);
  CHECK_FALSE(escaped.flat);
  CHECK(escaped.head["text"] == "\u00e9");
  CHECK(std::get<DecodeError>(results[2]).code == errc::bad_frame);

  FrameDecoder documents;
  documents.feed(raw_frame(R"({"id":1,"service":"echo","op":"echo","text":"x"})", ""));
  auto plain = drain(documents);
  REQUIRE(plain.size() == 1);
  CHECK_FALSE(std::get<Frame>(plain[0]).flat);
  CHECK(std::get<Frame>(plain[0]).head["text"] == "x");
}

TEST_CASE("tagged frames are written exactly as nlohmann would write them") {
  // The writer handles plain values itself and hands the rest to nlohmann: the text must not
  // depend on which did it.
  auto reference = [](const json& id, std::string_view tag, const json& tag_value,
                      const json& fields) {
    auto dump = [](const json& v) { return v.dump(-1, ' ', false, json::error_handler_t::replace); };
    std::string out = "{\"id\":" + dump(id) + "," + dump(json(tag)) + ":" + dump(tag_value);
    for (auto it = fields.begin(); it != fields.end(); ++it) {
      if (it.key() == "id" || it.key() == tag) continue;
      out += "," + dump(json(it.key())) + ":" + dump(it.value());
    }
    return out + "}";
  };
  const std::vector<json> values = {
      nullptr, true, false, 0, -1, std::int64_t{-9223372036854775807 - 1},
      std::uint64_t{18446744073709551615u}, 1.5, -0.25, 1e300, "", "plain text", "tab\there",
      "quote\"", "back\\slash", "\xc3\xa9t\xc3\xa9", std::string("nul\0x", 5), "\x7f",
      "\xff\xfe bad utf-8", json::array({1, "two", nullptr}), json{{"nested", {{"a", 1}}}},
      json::object(), json::array(),
  };
  const std::vector<std::string> keys = {"text", "ok", "id", "with space", "qu\"ote", "\xc3\xa9",
                                         "ctl\x01", "size"};
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    json id = i % 3 == 0 ? json("req-" + std::to_string(i)) : json(i);
    json fields = json::object();
    const int count = static_cast<int>(rng() % 5);
    for (int k = 0; k < count; ++k) fields[keys[rng() % keys.size()]] = values[rng() % values.size()];
    const json& tag_value = values[rng() % values.size()];
    const std::string_view tag = i % 2 ? "ok" : "event";
    auto frame = encode_tagged(id, tag, tag_value, fields, "body");
    INFO(fields.dump(-1, ' ', false, json::error_handler_t::replace));
    REQUIRE(frame->json_text() == reference(id, tag, tag_value, fields));
    REQUIRE(frame->head.size() == 8 + frame->json_text().size());
    REQUIRE(frame->body == "body");
  }
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
