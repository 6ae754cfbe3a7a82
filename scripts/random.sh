#!/usr/bin/env bash
# The randomized model test of the live server (tests/random.rs) for COUNT seeds, in a release
# build: each seed is one server with echo, chat, TLS and faulty listeners and a control socket,
# a random mix of clients, and in one run of four a SIGTERM at a random moment; the invariants
# are checked after each. A failing seed is printed with the command that replays it.
#
#   scripts/random.sh [COUNT] [FIRST_SEED]      (default 100 seeds from the clock)
set -uo pipefail
cd "$(dirname "$0")/.."
count=${1:-100}
first=${2:-$(( $(date +%s%N) % 1000000000 ))}
echo "random: $count schedules from seed $first"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# Progress (every 500 seeds) and the result as they come; everything kept for a failure.
RICOCHET_SEEDS="$count" RICOCHET_SEED="$first" \
  cargo test --release --locked --quiet --test random -- --nocapture 2>&1 | tee "$out" \
  | grep --line-buffered -E "^random:"
status=${PIPESTATUS[0]}
grep -E "failed \(replay|panicked" "$out" | head -20
if [ "$status" -ne 0 ]; then
  echo "the randomized live test failed (above)"
  exit "$status"
fi
