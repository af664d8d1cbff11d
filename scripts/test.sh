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

# tap's own summary is "# { total: N, pass: P, fail: F }"; CI also gets the
# plain "P passed, F failed" line, summed over the runs below.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
rc=0
tap() {
  set +e
  npx tap "$@" 2>&1 | tee -a "$log"
  local r=${PIPESTATUS[0]}
  set -e
  [ "$r" = 0 ] || rc=$r
}

if [ "$#" -gt 0 ]; then
  tap "$@"
else
  # The whole suite in two runs: most files two at a time (2 cores; most
  # cluster tests wait on daemons more than they compute), then, one at a
  # time, the files that kill, stop or cut daemons under a writer and time
  # what it sees, or start many daemons at once: a second cluster beside them
  # would measure the machine, not dunixfs.
  serial='fault-durability|fault-failover|fault-min-insync|sigkill-writes|cross-pg-crash|rebalance|restart|startup-stress|netns|locks|coherence|launcher-stop'
  shopt -s globstar nullglob
  parallel=()
  alone=()
  for f in packages/*/dist/test/**/*.test.js test/dist/**/*.test.js; do
    if [[ "$f" =~ ^test/dist/cluster/($serial)\.test\.js$ ]]; then alone+=("$f"); else parallel+=("$f"); fi
  done
  tap --jobs 2 "${parallel[@]}"
  tap --jobs 1 "${alone[@]}"
fi

pass=0
fail=0
runs=0
while read -r summary; do
  runs=$((runs + 1))
  pass=$((pass + $(sed -nE 's/.*pass: ([0-9]+).*/\1/p' <<<"$summary" | grep . || echo 0)))
  fail=$((fail + $(sed -nE 's/.*fail: ([0-9]+).*/\1/p' <<<"$summary" | grep . || echo 0)))
done < <(grep -E '^# \{ total: [0-9]+' "$log")
# CI keeps only the tail of what we print: repeat each failure (with the file
# it is in and the first lines of tap's diagnosis) right above the summary.
if [ "$fail" -gt 0 ] || [ "$rc" != 0 ]; then
  echo "failures:"
  awk '/^# Subtest: /{file=$3} /^ *not ok /{print file ": " $0; n=14; next} n>0{print "    " $0; n--}' "$log" | head -200
fi
if [ "$runs" -gt 0 ]; then
  echo "tests: ${pass} passed, ${fail} failed"
elif [ "$rc" = 0 ]; then
  echo "tap printed no summary" >&2
  rc=1
fi
exit "$rc"
