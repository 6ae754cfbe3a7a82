#!/usr/bin/env bash
# Runs every fuzz target (src/fuzz/mod.rs: the PROXY header, the HTTP request head, chat line
# framing, incremental UTF-8, sizes and durations, fault plans, listen URLs, the control
# protocol, WebSocket frames; src/fuzz/machines.rs: the echo connection, a chat member, the
# output buffer, the outbox and the deadline heap under random schedules; loadgen/src/fuzz.rs:
# a result's histogram, interval logs, result files through merge, compare and plot) for
# DURATION seconds each, in a release build, and prints the inputs tried per target. A failure
# prints the shrunk input and exits non-zero; keep it under fuzz/corpus/TARGET/ once fixed.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
RICOCHET_FUZZ_SECS="$secs" cargo test --release --locked --quiet --workspace --lib fuzz:: -- --nocapture --test-threads 1 \
  >"$out" 2>&1 || status=$?
grep -oE "fuzz [a-z0-9-]+: [0-9]+ inputs in [0-9.]+ s" "$out" | sed 's/^fuzz /  /' || true
if [ "$status" -ne 0 ]; then
  grep -E "panicked|fuzz .*fails|minimal failing input|Test failed" "$out" | head -20
  echo "fuzzing found a failure (above)"
  exit "$status"
fi
echo "fuzz: every target held for ${secs} s"
