#!/usr/bin/env bash
# Installs what is missing, builds the release preset and runs the server in the foreground on
# the embedded defaults (listeners on 127.0.0.1) with its data under ./var/data.
# Extra arguments go to the server, e.g. `scripts/serve.sh --set listeners.framed=127.0.0.1:9000`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target coserve coserve-cli
mkdir -p var/data
exec build/release/bin/coserve --data-dir var/data "$@"
