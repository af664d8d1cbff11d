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

if [ "$#" -eq 0 ]; then set -- 'packages/*/dist/test/**/*.test.js' 'test/dist/**/*.test.js'; fi

# tap's own summary is "# { total: N, pass: P, fail: F }"; CI also gets the
# plain "P passed, F failed" line.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
npx tap "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
summary=$(grep -E '^# \{ total: [0-9]+' "$log" | tail -n 1)
pass=$(sed -nE 's/.*pass: ([0-9]+).*/\1/p' <<<"$summary")
fail=$(sed -nE 's/.*fail: ([0-9]+).*/\1/p' <<<"$summary")
if [ -n "$summary" ]; then
  echo "tests: ${pass:-0} passed, ${fail:-0} failed"
elif [ "$rc" = 0 ]; then
  echo "tap printed no summary" >&2
  rc=1
fi
exit "$rc"
