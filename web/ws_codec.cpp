#include "ws_codec.hpp"

#include <openssl/evp.h>

#include <stdexcept>

namespace coserve::web::ws {
namespace {

constexpr std::string_view kAcceptGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

bool is_control(Opcode op) { return (static_cast<std::uint8_t>(op) & 0x8) != 0; }

bool known_opcode(std::uint8_t op) {
  return op <= 0x2 || (op >= 0x8 && op <= 0xA);
}

}  // namespace

std::string accept_key(std::string_view client_key) {
  std::string input(client_key);
  input += kAcceptGuid;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_size = 0;
  if (EVP_Digest(input.data(), input.size(), digest, &digest_size, EVP_sha1(), nullptr) != 1)
    throw std::runtime_error("SHA-1 failed");
  std::string out(4 * ((digest_size + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), digest,
                          static_cast<int>(digest_size));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

bool valid_client_key(std::string_view key) {
  if (key.size() != 24 || key.substr(22) != "==") return false;
  for (char c : key.substr(0, 22)) {
    bool base64 = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '+' || c == '/';
    if (!base64) return false;
  }
  return true;
}

bool valid_utf8(std::string_view text) {
  auto* p = reinterpret_cast<const unsigned char*>(text.data());
  auto* end = p + text.size();
  while (p < end) {
    unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    std::size_t extra;
    std::uint32_t code;
    if ((c & 0xE0) == 0xC0) {
      extra = 1;
      code = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2;
      code = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3;
      code = c & 0x07;
    } else {
      return false;
    }
    if (static_cast<std::size_t>(end - p) <= extra) return false;
    for (std::size_t i = 1; i <= extra; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      code = (code << 6) | (p[i] & 0x3F);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8.
    static constexpr std::uint32_t kMinimum[] = {0, 0x80, 0x800, 0x10000};
    if (code < kMinimum[extra] || (code >= 0xD800 && code <= 0xDFFF) || code > 0x10FFFF)
      return false;
    p += extra + 1;
  }
  return true;
}

FrameHead frame_head(Opcode op, std::uint64_t payload_size) {
  FrameHead head;
  head.bytes[0] = static_cast<unsigned char>(0x80 | static_cast<std::uint8_t>(op));
  if (payload_size < 126) {
    head.bytes[1] = static_cast<unsigned char>(payload_size);
    head.size = 2;
  } else if (payload_size <= 0xFFFF) {
    head.bytes[1] = 126;
    head.bytes[2] = static_cast<unsigned char>(payload_size >> 8);
    head.bytes[3] = static_cast<unsigned char>(payload_size);
    head.size = 4;
  } else {
    head.bytes[1] = 127;
    for (int i = 0; i < 8; ++i)
      head.bytes[2 + i] = static_cast<unsigned char>(payload_size >> (8 * (7 - i)));
    head.size = 10;
  }
  return head;
}

std::string control_frame(Opcode op, std::string_view payload) {
  if (payload.size() > 125) payload = payload.substr(0, 125);
  std::string out(frame_head(op, payload.size()).view());
  out += payload;
  return out;
}

std::string close_frame(CloseCode code, std::string_view reason) {
  auto value = static_cast<std::uint16_t>(code);
  std::string payload;
  payload += static_cast<char>(value >> 8);
  payload += static_cast<char>(value & 0xFF);
  payload += reason.substr(0, 123);
  return control_frame(Opcode::close, payload);
}

HeadResult parse_head(std::string_view bytes, std::uint64_t max_payload) {
  if (bytes.size() < 2) return {};
  auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  ClientFrame frame;
  frame.fin = (b[0] & 0x80) != 0;
  if ((b[0] & 0x70) != 0)
    return {std::nullopt, CloseCode::protocol_error, "reserved bits set (no extension was agreed)"};
  std::uint8_t op = b[0] & 0x0F;
  if (!known_opcode(op)) return {std::nullopt, CloseCode::protocol_error, "reserved opcode"};
  frame.op = static_cast<Opcode>(op);
  if ((b[1] & 0x80) == 0)
    return {std::nullopt, CloseCode::protocol_error, "a client frame without a mask"};
  std::uint64_t size = b[1] & 0x7F;
  std::size_t head_size = 2;
  if (size == 126) {
    head_size = 4;
    if (bytes.size() < head_size) return {};
    size = (std::uint64_t{b[2]} << 8) | b[3];
    if (size < 126) return {std::nullopt, CloseCode::protocol_error, "length not in its shortest form"};
  } else if (size == 127) {
    head_size = 10;
    if (bytes.size() < head_size) return {};
    size = 0;
    for (int i = 0; i < 8; ++i) size = (size << 8) | b[2 + i];
    if (size >> 63) return {std::nullopt, CloseCode::protocol_error, "length with the top bit set"};
    if (size <= 0xFFFF) return {std::nullopt, CloseCode::protocol_error, "length not in its shortest form"};
  }
  if (is_control(frame.op) && (!frame.fin || size > 125))
    return {std::nullopt, CloseCode::protocol_error, "a control frame fragmented or over 125 bytes"};
  if (!is_control(frame.op) && size > max_payload)
    return {std::nullopt, CloseCode::too_big, "message over the size limit"};
  if (bytes.size() < head_size + 4) return {};
  for (int i = 0; i < 4; ++i) frame.mask[i] = b[head_size + i];
  frame.head_size = head_size + 4;
  frame.payload_size = size;
  return {frame, std::nullopt, ""};
}

void unmask(char* data, std::size_t size, const unsigned char (&mask)[4], std::size_t offset) {
  std::size_t i = 0;
  // Byte by byte until the mask lines up with 8-byte words, then a word at a time.
  for (; i < size && (offset + i) % 4 != 0; ++i) data[i] ^= static_cast<char>(mask[(offset + i) % 4]);
  std::uint64_t word_mask = 0;
  for (int k = 0; k < 8; ++k) word_mask |= std::uint64_t{mask[k % 4]} << (8 * k);
  for (; i + 8 <= size; i += 8) {
    std::uint64_t word;
    __builtin_memcpy(&word, data + i, 8);
    word ^= word_mask;
    __builtin_memcpy(data + i, &word, 8);
  }
  for (; i < size; ++i) data[i] ^= static_cast<char>(mask[(offset + i) % 4]);
}

std::optional<CloseCode> check_close_payload(std::string_view payload) {
  if (payload.empty()) return std::nullopt;
  if (payload.size() == 1) return CloseCode::protocol_error;
  auto code = static_cast<std::uint16_t>((static_cast<unsigned char>(payload[0]) << 8) |
                                         static_cast<unsigned char>(payload[1]));
  // Codes a peer may send: 1000-1003, 1007-1014 and the registered/private 3000-4999.
  bool valid = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
               (code >= 3000 && code <= 4999);
  if (!valid) return CloseCode::protocol_error;
  if (!valid_utf8(payload.substr(2))) return CloseCode::invalid_data;
  return std::nullopt;
}

}  // namespace coserve::web::ws
