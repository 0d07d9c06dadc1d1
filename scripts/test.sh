#!/usr/bin/env bash
# Installs what is missing (Debian packages, Chromium and the e2e test's npm packages), builds
# with AddressSanitizer + UBSan and runs the whole test suite under ctest.
# COSERVE_TEST_PRESET=release|debug|tsan picks another preset.
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${COSERVE_TEST_PRESET:-asan}"
scripts/install-deps.sh browser
# The browser test's tools (playwright-core) come from the npm registry, pinned by the lock file.
(cd tests/web/e2e && npm ci --no-audit --no-fund --loglevel=error)
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
ctest --preset "$preset" -j2
