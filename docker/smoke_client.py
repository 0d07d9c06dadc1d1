#!/usr/bin/env python3
"""Minimal coserve client for docker/smoke-test.sh (standard library only).

  smoke_client.py hello HOST PORT          core.hello over the framed protocol
  smoke_client.py login HOST PORT USER     auth.login over the framed protocol; the password
                                           comes from the environment variable COSERVE_PASSWORD
  smoke_client.py ws HOST PORT             echo.echo over WebSocket on /ws (a text message)

Exit status 0 when the server answered as expected, 1 otherwise (with the reason on stderr).
"""
import base64
import hashlib
import json
import os
import socket
import struct
import sys

TIMEOUT_S = 10


def fail(message):
    print(f"smoke_client: {message}", file=sys.stderr)
    sys.exit(1)


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            fail(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


# --- framed protocol: u32 json_len, u32 body_len (big-endian), JSON, body ---

def framed_call(host, port, request):
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        payload = json.dumps(request).encode()
        sock.sendall(struct.pack(">II", len(payload), 0) + payload)
        while True:  # skip pushes until the final reply to our id
            json_len, body_len = struct.unpack(">II", read_exact(sock, 8))
            message = json.loads(read_exact(sock, json_len))
            read_exact(sock, body_len)
            if message.get("id") == request["id"] and "ok" in message:
                return message


def expect_ok(reply, what):
    if reply.get("ok") is not True:
        fail(f"{what}: {json.dumps(reply)}")
    print(f"{what}: {json.dumps(reply)[:200]}")


# --- WebSocket (RFC 6455), just enough for one text message and its reply ---

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_send(sock, opcode, payload):
    mask = os.urandom(4)  # a client must mask every frame
    header = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        header += bytes([0x80 | n])
    elif n < 65536:
        header += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        header += bytes([0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(header + mask + masked)


def ws_receive(sock):
    """Returns (opcode, payload) of one unfragmented frame."""
    first, second = read_exact(sock, 2)
    opcode, n = first & 0x0F, second & 0x7F
    if n == 126:
        n = struct.unpack(">H", read_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack(">Q", read_exact(sock, 8))[0]
    mask = read_exact(sock, 4) if second & 0x80 else None
    payload = read_exact(sock, n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    if not first & 0x80:
        fail("fragmented WebSocket message (not expected for a small reply)")
    return opcode, payload


def ws_echo(host, port):
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)
            if not chunk:
                fail(f"connection closed during the handshake: {head!r}")
            head += chunk
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            fail(f"handshake refused: {lines[0]}")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        if headers.get("sec-websocket-accept") != accept:
            fail(f"bad Sec-WebSocket-Accept: {headers.get('sec-websocket-accept')}")

        request = {"id": 1, "service": "echo", "op": "echo", "text": "hi"}
        ws_send(sock, 0x1, json.dumps(request).encode())
        while True:
            opcode, payload = ws_receive(sock)
            if opcode == 0x8:
                fail(f"server closed the WebSocket: {payload!r}")
            if opcode == 0x9:  # ping: answer, keep reading
                ws_send(sock, 0xA, payload)
                continue
            if opcode == 0x1:
                message = json.loads(payload)
            elif opcode == 0x2:  # a binary message is one frame in the framed encoding
                json_len = struct.unpack(">I", payload[:4])[0]
                message = json.loads(payload[8:8 + json_len])
            else:
                continue
            if message.get("id") == 1:
                break
        ws_send(sock, 0x8, struct.pack(">H", 1000))
    if message.get("text") != "hi" or message.get("ok") is False:
        fail(f"ws echo: unexpected reply {json.dumps(message)}")
    print(f"ws echo: {json.dumps(message)[:200]}")


def main(argv):
    if len(argv) < 4:
        fail(__doc__)
    command, host, port = argv[1], argv[2], int(argv[3])
    try:
        if command == "hello":
            reply = framed_call(host, port, {"id": 1, "service": "core", "op": "hello"})
            expect_ok(reply, "core.hello")
        elif command == "login" and len(argv) == 5:
            password = os.environ.get("COSERVE_PASSWORD")
            if password is None:
                fail("login: set COSERVE_PASSWORD")
            reply = framed_call(host, port, {"id": 1, "service": "auth", "op": "login",
                                             "user": argv[4], "password": password})
            expect_ok(reply, f"auth.login as {argv[4]}")
        elif command == "ws":
            ws_echo(host, port)
        else:
            fail(__doc__)
    except (OSError, ValueError) as e:
        fail(f"{command}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main(sys.argv)
