#pragma once
// RFC 6455 framing, server side: the opening handshake's accept key, parsing of client frames
// (masked, possibly fragmented, with control frames in between) and encoding of server frames
// (unmasked, never fragmented). No extensions are negotiated, so the RSV bits must be zero.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace coserve::web::ws {

enum class Opcode : std::uint8_t {
  continuation = 0x0,
  text = 0x1,
  binary = 0x2,
  close = 0x8,
  ping = 0x9,
  pong = 0xA,
};

// Close codes the server sends (RFC 6455 §7.4.1).
enum class CloseCode : std::uint16_t {
  normal = 1000,
  going_away = 1001,
  protocol_error = 1002,
  invalid_data = 1007,  // a text message that is not UTF-8
  policy_violation = 1008,
  too_big = 1009,
};

// Sec-WebSocket-Accept for a client's Sec-WebSocket-Key: base64(SHA-1(key + RFC GUID)).
std::string accept_key(std::string_view client_key);
// A key is the base64 of 16 bytes: 24 characters ending in "==".
bool valid_client_key(std::string_view key);

bool valid_utf8(std::string_view text);

// The header of a server frame with FIN set and no mask: 2, 4 or 10 bytes.
struct FrameHead {
  unsigned char bytes[10];
  std::size_t size = 0;
  std::string_view view() const { return {reinterpret_cast<const char*>(bytes), size}; }
};
FrameHead frame_head(Opcode op, std::uint64_t payload_size);

// A whole control frame (ping, pong or close) with its payload (at most 125 bytes).
std::string control_frame(Opcode op, std::string_view payload);
std::string close_frame(CloseCode code, std::string_view reason);

// One client frame whose header has arrived.
struct ClientFrame {
  bool fin = false;
  Opcode op = Opcode::continuation;
  std::uint64_t payload_size = 0;
  std::size_t head_size = 0;  // bytes before the payload
  unsigned char mask[4] = {};
};

// What parse_head found at the start of the buffered bytes.
struct HeadResult {
  std::optional<ClientFrame> frame;        // the header, when complete and valid
  std::optional<CloseCode> error;          // a violation: close with this code
  const char* why = "";                    // for the log
};
// Reads the header at the start of `bytes`; neither frame nor error when more bytes are needed.
// Checks what the header alone shows: reserved bits and opcodes, the mask, control frames
// fragmented or over 125 bytes, and a data frame's payload over `max_payload` (too_big).
HeadResult parse_head(std::string_view bytes, std::uint64_t max_payload);

// XORs `data` with the mask, `offset` bytes into the frame's payload.
void unmask(char* data, std::size_t size, const unsigned char (&mask)[4], std::size_t offset = 0);

// Checks a close frame's payload (empty, or a code and a UTF-8 reason): nullopt when valid,
// else the code to close with.
std::optional<CloseCode> check_close_payload(std::string_view payload);

}  // namespace coserve::web::ws
