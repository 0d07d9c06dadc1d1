#pragma once
// The wire format (docs/protocol.md): an 8-byte header (u32 json_len, u32 body_len, big-endian),
// then json_len bytes of a JSON object, then body_len raw bytes.
//
// FrameDecoder is a plain class with no I/O so it can be tested byte by byte: feed it bytes in
// any split, take complete frames or errors out. Not thread-safe; one per connection. Each JSON
// part is parsed once, by nlohmann's parser, into the document the frame carries.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

#include "coserve/error.hpp"

namespace coserve {

using json = nlohmann::json;

inline constexpr std::size_t kFrameHeaderSize = 8;

struct FrameLimits {
  std::size_t max_json = 64 * 1024;
  std::size_t max_body = 1024 * 1024;
};

// A decoded frame: its JSON object and its raw body.
struct Frame {
  json head;
  std::string body;
  // The frame's size on the wire (header, JSON text and body), set by the decoders: what a
  // frame kept waiting in a call's inbox is charged against the inbound budgets.
  std::size_t wire_size = 0;
};

// A body the kernel copies from a file to the socket (sendfile) instead of one held in memory.
// `owner` keeps `fd` open until the frame is written. Only a transport whose sends_files() is
// true is given such a frame (Call::can_send_file).
struct FileSlice {
  std::shared_ptr<const void> owner;
  int fd = -1;
  std::uint64_t offset = 0;
  std::size_t length = 0;  // 0: no file body
};

// An encoded frame ready for the wire, immutable and shared: a broadcast encodes once and hands
// every recipient the same bytes.
struct EncodedFrame {
  std::string head;  // 8-byte header + JSON text
  std::string body;  // empty when the body is `file`
  FileSlice file;
  std::size_t size() const noexcept { return head.size() + body.size() + file.length; }
  std::string_view json_text() const noexcept {
    return std::string_view(head).substr(kFrameHeaderSize);
  }
};
using OutFrame = std::shared_ptr<const EncodedFrame>;

OutFrame encode_frame(const json& head, std::string body = {});

// Encodes {"id": id, "<tag>": tag_value, ...fields} + body (replies are {"id", "ok", ...} and
// stream events {"id", "event", ...}). `fields` (an object, or null for none) becomes the head
// itself: pass it as an rvalue and no object is copied. Its own "id" or `tag` are replaced.
// Key order on the wire is nlohmann's (sorted); clients parse JSON, so it is free.
OutFrame encode_tagged(const json& id, std::string_view tag, const json& tag_value,
                       json fields, std::string body = {});
// The same with the body sent from a file.
OutFrame encode_tagged(const json& id, std::string_view tag, const json& tag_value,
                       json fields, FileSlice file);

// A frame the decoder could not deliver. `id` is the request id when it could be read (so the
// error reply can name the request), null otherwise. `fatal` means the byte stream can no
// longer be parsed and the connection must close after the error reply.
struct DecodeError {
  errc code;
  std::string message;
  json id;
  bool fatal = false;
};

using DecodeResult = std::variant<Frame, DecodeError>;

// Parses one complete message that must hold exactly one frame (a WebSocket binary message).
DecodeResult decode_whole_frame(std::string_view bytes, const FrameLimits& limits);

// Checks a JSON text as a frame head (a WebSocket text message is a JSON-only frame).
DecodeResult decode_json_only(std::string_view text, const FrameLimits& limits);

class FrameDecoder {
 public:
  explicit FrameDecoder(FrameLimits limits = {}) : limits_(limits) {}

  // Memory follows the bytes that have arrived, not the lengths a header claims (8 bytes can
  // claim a 1 MiB body): the buffer, or a large body being received, grows to at most twice
  // what has arrived or by kGrowStep, whichever is more.
  static constexpr std::size_t kGrowStep = 16 * 1024;

  // Space to read into: `min_size` bytes, or fewer when the growth rule above allows fewer
  // (never none). While a large body is being received it is the next part of that body, read
  // straight into the frame (the kernel's copy is the only one). Call commit() with what was
  // read.
  std::span<char> prepare(std::size_t min_size);
  void commit(std::size_t n) noexcept;
  void feed(std::string_view bytes);

  // The next frame or error, or nullopt when more bytes are needed.
  std::optional<DecodeResult> next();

  std::size_t buffered() const noexcept { return end_ - begin_; }
  // Bytes of memory the decoder holds for frames not yet delivered: its buffer and a large body
  // being received. Transports charge it against the server's inbound budget.
  std::size_t buffered_capacity() const noexcept {
    return capacity_ + (pending_ ? pending_->frame.body.capacity() : 0);
  }
  // True when no frame is partly received: a reader may wait with a small buffer.
  bool idle() const noexcept { return !pending_ && begin_ == end_; }
  // Releases the buffer when nothing is buffered and it has grown past `keep` bytes (0: always).
  // Never call it while a read into prepare()'s span is pending.
  void shrink(std::size_t keep) noexcept;

 private:
  FrameLimits limits_;
  std::unique_ptr<char[]> buffer_;  // not a string: growing it need not zero-fill
  std::size_t capacity_ = 0;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::uint64_t skip_ = 0;  // bytes of an oversized body still to discard
  // A frame whose large body is read in place (see prepare): the body's length as announced,
  // and how much of it has arrived. frame.body is the space received into so far; it grows as
  // bytes arrive. On the heap: it is rare, and every idle connection holds a decoder.
  struct Pending {
    Frame frame;
    std::size_t size = 0;
    std::size_t filled = 0;
  };
  std::unique_ptr<Pending> pending_;
  bool pending_receiving() const noexcept { return pending_ && pending_->filled < pending_->size; }
  // Gives the body being received room for more bytes (the growth rule of kGrowStep).
  void grow_pending();
};

}  // namespace coserve
