#!/usr/bin/env bash
# Installs what is missing, builds with AddressSanitizer + UBSan and runs the whole test suite.
# COSERVE_TEST_PRESET=release|debug|tsan picks another preset.
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${COSERVE_TEST_PRESET:-asan}"
scripts/install-deps.sh
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
ctest --preset "$preset" -j2
