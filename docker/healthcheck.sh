#!/bin/bash
# Container healthcheck: GET /healthz on the HTTP listener must answer 200 with "status":"ok".
# bash's /dev/tcp instead of curl: bash is already in debian:bookworm-slim, curl would add
# libcurl and a dozen libraries to the image only for this probe.
# COSERVE_HEALTH_PORT: the HTTP listener's port inside the container when it is not 8080.
set -u
exec 3<>"/dev/tcp/127.0.0.1/${COSERVE_HEALTH_PORT:-8080}" || exit 1
# HTTP/1.0: the server closes the connection after the reply, so the read below ends.
# Host: a loopback name, which the server's Host check (DNS rebinding) always accepts.
printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
reply=$(timeout 2 cat <&3) || exit 1
[[ $reply == "HTTP/1."?" 200"* && $reply == *'"status":"ok"'* ]] || { printf '%s\n' "$reply" | head -n 1; exit 1; }
