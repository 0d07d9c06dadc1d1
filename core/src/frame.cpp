#include "coserve/frame.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <span>

namespace coserve {
namespace {

std::uint32_t read_be32(const char* p) noexcept {
  auto b = reinterpret_cast<const unsigned char*>(p);
  return (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) | (std::uint32_t(b[2]) << 8) |
         std::uint32_t(b[3]);
}

void write_be32(char* p, std::uint32_t v) noexcept {
  p[0] = char(v >> 24);
  p[1] = char(v >> 16);
  p[2] = char(v >> 8);
  p[3] = char(v);
}

json id_of(const json& head) {
  if (head.is_object()) {
    auto it = head.find("id");
    if (it != head.end()) return *it;
  }
  return nullptr;
}

// Parses and validates the JSON part of a frame.
std::variant<json, DecodeError> parse_head(std::string_view text) {
  if (text.empty()) return DecodeError{errc::bad_frame, "empty JSON part", nullptr};
  if (auto flat = detail::parse_flat_object(text)) return std::move(*flat);
  json head = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (head.is_discarded()) return DecodeError{errc::bad_frame, "JSON part does not parse", nullptr};
  if (!head.is_object())
    return DecodeError{errc::bad_frame, "JSON part is not an object", nullptr};
  return head;
}

}  // namespace

namespace {

// A character a JSON string holds as itself: printable ASCII other than '"' and '\\'. The flat
// reader accepts strings of only these, and the head writer writes them without nlohmann.
bool plain_char(char c) noexcept {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x20 && u < 0x7f && c != '"' && c != '\\';
}

bool plain_text(std::string_view text) noexcept {
  return std::all_of(text.begin(), text.end(), plain_char);
}

}  // namespace

namespace detail {
namespace {

// A cursor over the text for parse_flat_object; every method fails (false) on anything it does
// not know, and the caller then leaves the text to the full parser.
struct FlatScanner {
  const char* p;
  const char* end;

  void skip_space() noexcept {
    while (p != end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) ++p;
  }
  bool take(char c) noexcept {
    skip_space();
    if (p == end || *p != c) return false;
    ++p;
    return true;
  }
  // A string of printable ASCII without escapes.
  bool string(std::string_view& out) noexcept {
    if (!take('"')) return false;
    const char* start = p;
    while (p != end && *p != '"') {
      if (!plain_char(*p)) return false;
      ++p;
    }
    if (p == end) return false;
    out = std::string_view(start, static_cast<std::size_t>(p - start));
    ++p;
    return true;
  }
  bool word(std::string_view w) noexcept {
    if (static_cast<std::size_t>(end - p) < w.size() || std::string_view(p, w.size()) != w)
      return false;
    p += w.size();
    return true;
  }
  // An integer of at most 18 digits (it fits either 64-bit type). Fractions and exponents fail.
  bool integer(FlatHead::Member& out) noexcept {
    const bool negative = p != end && *p == '-';
    if (negative) ++p;
    const char* digits = p;
    std::uint64_t value = 0;
    while (p != end && *p >= '0' && *p <= '9') value = value * 10 + std::uint64_t(*p++ - '0');
    const auto count = p - digits;
    if (count == 0 || count > 18 || (*digits == '0' && count > 1)) return false;
    if (p != end && (*p == '.' || *p == 'e' || *p == 'E')) return false;
    // As nlohmann reads them: a minus sign makes a signed integer, else an unsigned one.
    out.type = negative ? json::value_t::number_integer : json::value_t::number_unsigned;
    out.magnitude = value;
    return true;
  }
  // A value; a string's place is relative to `base`.
  bool value(FlatHead::Member& out, const char* base) noexcept {
    skip_space();
    if (p == end) return false;
    switch (*p) {
      case '"': {
        std::string_view text;
        if (!string(text)) return false;
        out.type = json::value_t::string;
        out.text_at = static_cast<std::uint32_t>(text.data() - base);
        out.text_size = static_cast<std::uint32_t>(text.size());
        return true;
      }
      case 't': out.type = json::value_t::boolean; out.boolean = true; return word("true");
      case 'f': out.type = json::value_t::boolean; return word("false");
      case 'n': out.type = json::value_t::null; return word("null");
      default: return integer(out);
    }
  }
};

}  // namespace

std::optional<json> parse_flat_object(std::string_view text) {
  auto head = FlatHead::parse(text);
  if (!head) return std::nullopt;
  return head->to_json();
}

}  // namespace detail

std::shared_ptr<const FlatHead> FlatHead::parse(std::string_view text) {
  // Offsets are 32-bit; a head is far smaller (FrameLimits::max_json).
  if (text.size() > UINT32_MAX) return nullptr;
  auto head = std::make_shared<FlatHead>();
  head->text_.assign(text);
  const char* base = head->text_.data();
  detail::FlatScanner in{base, base + head->text_.size()};
  if (!in.take('{')) return nullptr;
  in.skip_space();
  if (in.p != in.end && *in.p == '}') {
    ++in.p;
  } else {
    for (;;) {
      if (head->count_ == kMaxMembers) return nullptr;
      Member& member = head->members_[head->count_++];
      std::string_view key;
      if (!in.string(key) || !in.take(':') || !in.value(member, base)) return nullptr;
      member.key_at = static_cast<std::uint32_t>(key.data() - base);
      member.key_size = static_cast<std::uint32_t>(key.size());
      if (in.take(',')) continue;
      if (!in.take('}')) return nullptr;
      break;
    }
  }
  in.skip_space();
  if (in.p != in.end) return nullptr;
  return head;
}

const FlatHead::Member* FlatHead::find(std::string_view key) const noexcept {
  for (std::size_t i = count_; i-- > 0;) {
    const Member& m = members_[i];
    if (std::string_view(text_).substr(m.key_at, m.key_size) == key) return &m;
  }
  return nullptr;
}

json FlatHead::value(const Member& member) const {
  switch (member.type) {
    case json::value_t::string: return json(std::string(string(member)));
    case json::value_t::boolean: return json(member.boolean);
    case json::value_t::number_integer: return json(-static_cast<std::int64_t>(member.magnitude));
    case json::value_t::number_unsigned: return json(member.magnitude);
    default: return json(nullptr);
  }
}

json FlatHead::to_json() const {
  json object = json::object();
  auto& members = object.get_ref<json::object_t&>();
  for (std::size_t i = 0; i < count_; ++i) {
    const Member& m = members_[i];
    // The last of duplicate keys wins, as with nlohmann's parser.
    members.insert_or_assign(std::string(text_, m.key_at, m.key_size), value(m));
  }
  return object;
}

OutFrame encode_frame(const json& head, std::string body) {
  auto frame = std::make_shared<EncodedFrame>();
  std::string& out = frame->head;
  out.assign(kFrameHeaderSize, '\0');
  // error_handler::replace: a service that puts invalid UTF-8 in a string must not crash us.
  nlohmann::detail::serializer<json> writer(nlohmann::detail::output_adapter<char>(out), ' ',
                                            json::error_handler_t::replace);
  writer.dump(head, false, false, 0);
  write_be32(out.data(), static_cast<std::uint32_t>(out.size() - kFrameHeaderSize));
  write_be32(out.data() + 4, static_cast<std::uint32_t>(body.size()));
  frame->body = std::move(body);
  return frame;
}

namespace {

// Appends JSON to a frame head. Plain strings, integers, booleans and null (nearly every value of
// a reply) are written here; anything else goes to nlohmann's serializer, made only when needed
// (making one costs an allocation, a 512-byte clear and a localeconv()).
class HeadWriter {
 public:
  explicit HeadWriter(std::string& out) : out_(out) {}

  void value(const json& v) {
    switch (v.type()) {
      case json::value_t::null: out_ += "null"; return;
      case json::value_t::boolean: out_ += v.get<bool>() ? "true" : "false"; return;
      case json::value_t::number_integer: number(v.get<std::int64_t>()); return;
      case json::value_t::number_unsigned: number(v.get<std::uint64_t>()); return;
      case json::value_t::string:
        if (const auto& text = v.get_ref<const std::string&>(); plain_text(text)) {
          quoted(text);
          return;
        }
        break;
      default: break;
    }
    general().dump(v, false, false, 0);
  }

  void key(std::string_view key) {
    if (plain_text(key)) quoted(key);
    else general().dump(json(key), false, false, 0);
    out_ += ':';
  }

  void raw(char c) { out_ += c; }

 private:
  using Serializer = nlohmann::detail::serializer<json>;

  template <class Int>
  void number(Int n) {
    char digits[24];
    auto end = std::to_chars(digits, digits + sizeof digits, n).ptr;
    out_.append(digits, end);
  }
  void quoted(std::string_view text) {
    out_ += '"';
    out_ += text;
    out_ += '"';
  }
  Serializer& general() {
    // error_handler::replace: a service that puts invalid UTF-8 in a string must not crash us.
    if (!general_)
      general_.emplace(nlohmann::detail::output_adapter<char>(out_), ' ',
                       json::error_handler_t::replace);
    return *general_;
  }

  std::string& out_;
  std::optional<Serializer> general_;
};

// The head of a tagged frame (see encode_tagged) whose body is `body_len` bytes.
std::string tagged_head(const json& id, std::string_view tag, const json& tag_value,
                        const json& fields, std::size_t body_len) {
  std::string out;
  out.reserve(128);
  out.assign(kFrameHeaderSize, '\0');
  // Written straight into the frame: no temporary text, no merged object.
  HeadWriter writer(out);
  writer.raw('{');
  writer.key("id");
  writer.value(id);
  writer.raw(',');
  writer.key(tag);
  writer.value(tag_value);
  if (fields.is_object()) {
    for (auto it = fields.begin(); it != fields.end(); ++it) {
      if (it.key() == "id" || it.key() == tag) continue;
      writer.raw(',');
      writer.key(it.key());
      writer.value(it.value());
    }
  }
  writer.raw('}');
  std::size_t json_len = out.size() - kFrameHeaderSize;
  write_be32(out.data(), static_cast<std::uint32_t>(json_len));
  write_be32(out.data() + 4, static_cast<std::uint32_t>(body_len));
  return out;
}

}  // namespace

OutFrame encode_tagged(const json& id, std::string_view tag, const json& tag_value,
                       const json& fields, std::string body) {
  auto frame = std::make_shared<EncodedFrame>();
  frame->head = tagged_head(id, tag, tag_value, fields, body.size());
  frame->body = std::move(body);
  return frame;
}

OutFrame encode_tagged(const json& id, std::string_view tag, const json& tag_value,
                       const json& fields, FileSlice file) {
  auto frame = std::make_shared<EncodedFrame>();
  frame->head = tagged_head(id, tag, tag_value, fields, file.length);
  frame->file = std::move(file);
  return frame;
}

DecodeResult decode_whole_frame(std::string_view bytes, const FrameLimits& limits) {
  if (bytes.size() < kFrameHeaderSize)
    return DecodeError{errc::bad_frame, "message shorter than a frame header", nullptr};
  std::uint32_t json_len = read_be32(bytes.data());
  std::uint32_t body_len = read_be32(bytes.data() + 4);
  if (std::uint64_t(kFrameHeaderSize) + json_len + body_len != bytes.size())
    return DecodeError{errc::bad_frame, "frame lengths do not match the message size", nullptr};
  if (json_len > limits.max_json)
    return DecodeError{errc::too_large, "JSON part over the limit", nullptr};
  auto head = parse_head(bytes.substr(kFrameHeaderSize, json_len));
  if (auto* err = std::get_if<DecodeError>(&head)) return std::move(*err);
  auto& obj = std::get<json>(head);
  if (body_len > limits.max_body)
    return DecodeError{errc::too_large, "body over the limit", id_of(obj)};
  return Frame{std::move(obj), std::string(bytes.substr(kFrameHeaderSize + json_len)), nullptr,
               bytes.size()};
}

DecodeResult decode_json_only(std::string_view text, const FrameLimits& limits) {
  if (text.size() > limits.max_json)
    return DecodeError{errc::too_large, "JSON message over the limit", nullptr};
  auto head = parse_head(text);
  if (auto* err = std::get_if<DecodeError>(&head)) return std::move(*err);
  return Frame{std::move(std::get<json>(head)), {}, nullptr, text.size()};
}

std::span<char> FrameDecoder::prepare(std::size_t min_size) {
  if (pending_receiving()) {
    std::string& body = pending_->frame.body;
    if (pending_->filled == body.size()) grow_pending();
    return {body.data() + pending_->filled, body.size() - pending_->filled};
  }
  if (begin_ == end_) begin_ = end_ = 0;
  const std::size_t unread = end_ - begin_;
  min_size = std::max<std::size_t>(1, std::min(min_size, std::max(unread, kGrowStep)));
  if (capacity_ - end_ < min_size) {
    if (capacity_ - unread >= min_size) {
      // Compact: the unread bytes fit with the room asked for.
      if (unread > 0) std::memmove(buffer_.get(), buffer_.get() + begin_, unread);
    } else {
      // Doubling what has arrived keeps the copies of a growing frame linear in its size.
      const std::size_t capacity = std::max(unread + min_size, unread * 2);
      auto bigger = std::make_unique_for_overwrite<char[]>(capacity);
      if (unread > 0) std::memcpy(bigger.get(), buffer_.get() + begin_, unread);
      buffer_ = std::move(bigger);
      capacity_ = capacity;
    }
    begin_ = 0;
    end_ = unread;
  }
  return {buffer_.get() + end_, capacity_ - end_};
}

void FrameDecoder::commit(std::size_t n) noexcept {
  if (pending_receiving()) pending_->filled += n;
  else end_ += n;
}

void FrameDecoder::grow_pending() {
  Pending& p = *pending_;
  const std::size_t size = std::min(p.size, std::max(kGrowStep, 2 * p.filled));
  // A new string of exactly this size: std::string's own growth would at least double its
  // capacity, past the body's length on the last step.
  std::string bigger;
  bigger.reserve(size);
  bigger.append(p.frame.body.data(), std::min(p.filled, p.frame.body.size()));
  bigger.resize(size);
  p.frame.body = std::move(bigger);
}

void FrameDecoder::feed(std::string_view bytes) {
  // A large body takes only its own bytes; what follows it goes to the buffer.
  while (!bytes.empty()) {  // memcpy must not see the null buffer of an empty decoder
    auto space = prepare(bytes.size());
    const auto n = std::min(space.size(), bytes.size());
    std::memcpy(space.data(), bytes.data(), n);
    commit(n);
    bytes.remove_prefix(n);
  }
}

void FrameDecoder::shrink(std::size_t keep) noexcept {
  if (begin_ == end_ && capacity_ > keep) {
    buffer_.reset();
    capacity_ = begin_ = end_ = 0;
  }
}

std::optional<DecodeResult> FrameDecoder::next() {
  if (pending_) {
    if (pending_receiving()) return std::nullopt;
    Frame frame = std::move(pending_->frame);
    pending_.reset();
    return frame;
  }
  if (skip_ > 0) {
    auto n = static_cast<std::size_t>(std::min<std::uint64_t>(skip_, end_ - begin_));
    begin_ += n;
    skip_ -= n;
    if (skip_ > 0) return std::nullopt;
  }
  if (end_ - begin_ < kFrameHeaderSize) return std::nullopt;
  const char* p = buffer_.get() + begin_;
  std::uint32_t json_len = read_be32(p);
  std::uint32_t body_len = read_be32(p + 4);
  // A JSON part this large means the peer does not speak the protocol (the header of an HTTP
  // request reads as ~1 GB); nothing after it can be trusted, so the error is fatal.
  if (json_len > limits_.max_json) {
    begin_ = end_;
    return DecodeError{errc::too_large, "JSON part of " + std::to_string(json_len) +
                                            " bytes is over the limit of " +
                                            std::to_string(limits_.max_json),
                       nullptr, /*fatal=*/true};
  }
  if (end_ - begin_ < kFrameHeaderSize + json_len) return std::nullopt;
  std::string_view text(p + kFrameHeaderSize, json_len);
  if (body_len > limits_.max_body) {
    // The stream stays parseable: answer with the request's id and discard the body.
    auto head = parse_head(text);
    json id = std::holds_alternative<json>(head) ? id_of(std::get<json>(head)) : json(nullptr);
    begin_ += kFrameHeaderSize + json_len;
    skip_ = body_len;
    return DecodeError{errc::too_large,
                       "body of " + std::to_string(body_len) + " bytes is over the limit of " +
                           std::to_string(limits_.max_body),
                       std::move(id)};
  }
  std::size_t total = kFrameHeaderSize + json_len + body_len;
  if (end_ - begin_ < total) {
    // Below this a body is copied out of the buffer like the rest; from it on the body is read
    // straight into the frame, so a bulk transfer's bytes are copied once, by the kernel.
    constexpr std::size_t kInPlaceBody = 32 * 1024;
    if (body_len < kInPlaceBody) return std::nullopt;
    auto head = parse_head(text);
    if (auto* err = std::get_if<DecodeError>(&head)) {
      // The stream stays parseable: the body is discarded as it arrives.
      begin_ += kFrameHeaderSize + json_len;
      skip_ = body_len;
      return std::move(*err);
    }
    const std::size_t have = end_ - begin_ - kFrameHeaderSize - json_len;
    pending_ = std::make_unique<Pending>();
    pending_->frame.head = std::move(std::get<json>(head));
    pending_->frame.wire_size = total;
    pending_->size = body_len;
    pending_->filled = have;  // sizes the body by what has arrived; copied in just below
    grow_pending();
    std::memcpy(pending_->frame.body.data(), p + kFrameHeaderSize + json_len, have);
    begin_ = end_;
    return std::nullopt;
  }
  std::string body(p + kFrameHeaderSize + json_len, body_len);
  if (flat_heads_) {
    if (auto flat = FlatHead::parse(text)) {
      begin_ += total;
      return Frame{json(), std::move(body), std::move(flat), total};
    }
  }
  auto head = parse_head(text);
  begin_ += total;
  if (auto* err = std::get_if<DecodeError>(&head)) return std::move(*err);
  return Frame{std::move(std::get<json>(head)), std::move(body), nullptr, total};
}

}  // namespace coserve
