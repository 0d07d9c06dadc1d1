#include "coserve/frame.hpp"

#include <algorithm>
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
  json head = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (head.is_discarded()) return DecodeError{errc::bad_frame, "JSON part does not parse", nullptr};
  if (!head.is_object())
    return DecodeError{errc::bad_frame, "JSON part is not an object", nullptr};
  return head;
}

// The head of a frame: the 8-byte header for `head`'s text and a body of `body_len` bytes, then
// that text.
std::string frame_head(const json& head, std::size_t body_len) {
  // error_handler_t::replace: a service that puts invalid UTF-8 in a string must not crash us.
  const std::string text = head.dump(-1, ' ', false, json::error_handler_t::replace);
  std::string out;
  out.reserve(kFrameHeaderSize + text.size());
  out.resize(kFrameHeaderSize);
  write_be32(out.data(), static_cast<std::uint32_t>(text.size()));
  write_be32(out.data() + 4, static_cast<std::uint32_t>(body_len));
  out += text;
  return out;
}

// The head of a tagged frame (see encode_tagged): `fields` with the id and the tag set.
json tagged(const json& id, std::string_view tag, const json& tag_value, json fields) {
  if (!fields.is_object()) fields = json::object();
  fields["id"] = id;
  fields[std::string(tag)] = tag_value;
  return fields;
}

}  // namespace

OutFrame encode_frame(const json& head, std::string body) {
  auto frame = std::make_shared<EncodedFrame>();
  frame->head = frame_head(head, body.size());
  frame->body = std::move(body);
  return frame;
}

OutFrame encode_tagged(const json& id, std::string_view tag, const json& tag_value, json fields,
                       std::string body) {
  auto frame = std::make_shared<EncodedFrame>();
  frame->head = frame_head(tagged(id, tag, tag_value, std::move(fields)), body.size());
  frame->body = std::move(body);
  return frame;
}

OutFrame encode_tagged(const json& id, std::string_view tag, const json& tag_value, json fields,
                       FileSlice file) {
  auto frame = std::make_shared<EncodedFrame>();
  frame->head = frame_head(tagged(id, tag, tag_value, std::move(fields)), file.length);
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
  return Frame{std::move(obj), std::string(bytes.substr(kFrameHeaderSize + json_len)),
               bytes.size()};
}

DecodeResult decode_json_only(std::string_view text, const FrameLimits& limits) {
  if (text.size() > limits.max_json)
    return DecodeError{errc::too_large, "JSON message over the limit", nullptr};
  auto head = parse_head(text);
  if (auto* err = std::get_if<DecodeError>(&head)) return std::move(*err);
  return Frame{std::move(std::get<json>(head)), {}, text.size()};
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
  auto head = parse_head(text);
  if (auto* err = std::get_if<DecodeError>(&head)) {
    begin_ += total;
    return std::move(*err);
  }
  std::string body(p + kFrameHeaderSize + json_len, body_len);
  begin_ += total;
  return Frame{std::move(std::get<json>(head)), std::move(body), total};
}

}  // namespace coserve
