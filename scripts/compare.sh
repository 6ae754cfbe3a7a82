#!/usr/bin/env bash
# Builds ricochet, loadgen and the baselines, then runs the side-by-side comparison
# (scripts/compare.py; its flags pass through, e.g. --rounds 3 --shapes ping-pong,bulk).
# Writes docs/BENCHMARKS.md. Linux only; needs cargo, cc, python3, taskset; perf optional.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/compare
mkdir -p "$out"

cargo build --release --workspace --locked
cc -O2 -Wall -o "$out/epoll_echo" baselines/c/epoll_echo.c
cc -O2 -Wall -o "$out/epoll_client" baselines/c/epoll_client.c
cc -O2 -Wall -o "$out/epoll_chat" baselines/c/epoll_chat.c
(cd baselines/tokio-echo && cargo build --release --locked)

socat_bin=$(command -v socat || true)
[ -n "$socat_bin" ] || echo "socat not installed: comparing without it" >&2
# Enough descriptors for 1000-connection runs and the 10 000 idle connections.
ulimit -n "$(ulimit -Hn)"

bins=$(python3 -c 'import json,sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
  ricochet "$PWD/target/release/ricochet" loadgen "$PWD/target/release/loadgen" \
  c_echo "$PWD/$out/epoll_echo" c_client "$PWD/$out/epoll_client" c_chat "$PWD/$out/epoll_chat" \
  tokio_echo "$PWD/baselines/tokio-echo/target/release/tokio-echo" \
  tokio_chat "$PWD/baselines/tokio-echo/target/release/tokio-chat" socat "$socat_bin")
exec python3 scripts/compare.py --bins "$bins" "$@"
