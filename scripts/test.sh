#!/usr/bin/env bash
# The one test command (README): installs what a fresh Debian 12 machine lacks,
# builds, checks, and runs the whole suite. Run as root: mounted tests need
# /dev/fuse and other users' identities.
#   --no-install   skip apt/npm (for a quick re-run on a prepared machine)
#   any other args are passed to tap (e.g. a test file)
set -euo pipefail
cd "$(dirname "$0")/.."

install=1
if [ "${1:-}" = "--no-install" ]; then install=0; shift; fi

if [ "$install" = 1 ]; then
  bash scripts/install-deps.sh
  npm ci --no-audit --no-fund
fi

npm run build
npm run check

# Every outstanding /dev/fuse read parks a libuv pool thread; tests that mount
# in-process need room for them (bins set this themselves).
export UV_THREADPOOL_SIZE=${UV_THREADPOOL_SIZE:-24}

if [ "$#" -gt 0 ]; then
  exec npx tap "$@"
fi
exec npx tap 'packages/*/dist/test/**/*.test.js'
