#!/usr/bin/env bash
# Installs the Debian 12 packages coserve needs to build and test. Safe to rerun: it only
# installs what is missing. Uses sudo when not root.
set -euo pipefail

# bubblewrap: the command service's sandbox, needed at run time as well as by the tests.
packages=(
  build-essential cmake ninja-build pkg-config
  libboost1.81-dev nlohmann-json3-dev catch2 libsodium-dev libssl-dev
  libcli11-dev libspdlog-dev libedit-dev
  bubblewrap
  netcat-openbsd curl procps tmux
)
# Extra groups, asked for by the scripts that need them: `install-deps.sh browser` etc.
for group in "$@"; do
  case "$group" in
    browser)
      packages+=(chromium)
      # A machine may already have Node.js from elsewhere (with its own npm): keep it.
      command -v node >/dev/null || packages+=(nodejs)
      command -v npm >/dev/null || packages+=(npm)
      ;;
    bench)   packages+=(gcc vsftpd) ;;  # vsftpd: the files benchmark's FTP baseline
    *) echo "install-deps: unknown group '$group'" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
