#!/usr/bin/env bash
# The cost curve: how each server's cost grows with its connections, from 10 to the most this
# machine allows. For each server (ricochet, the C epoll server, tokio) and each count N, with
# the server on CPU 0 and loadgen on CPU 1:
#   - opening: N connections at once (`loadgen -c N`, no warm-up); the slowest connect's
#     latency is the time to open them all (they start together);
#   - saturation: closed loop, 64 B, depth 1, for --duration after a 1 s warm-up: messages/s,
#     p50/p99, and the server's user and system CPU per message (/proc);
#   - the server's user CPU per message sampled by perf (cpu-clock every 50 µs of its CPU time,
#     as compare.py does), in a second saturation run of its own: /proc's 10 ms ticks are a
#     handful per run at these costs;
#   - a fixed rate (open loop, --rate, default 20 000 msgs/s in all): p50/p99 at the same load
#     whatever N is;
#   - memory, read in the middle of the fixed-rate run: the server's RSS growth per connection,
#     and the kernel's slab growth per connection pair (both ends are on this host);
#   - syscalls per message with perf's raw_syscalls tracepoint where it exists (not on every VM).
# "max" is the largest N the open-file limit leaves room for (the hard limit, less a margin for
# the processes' own descriptors); it is found and said.
#
#   bash scripts/scale.sh [--counts 10,100,1000,5000,10000,max] [--duration 2s] [--rate 20000]
#                         [--servers ricochet,c,tokio] [--rounds 3] [--out DIR]
#
# Each figure is the median of --rounds rounds (the servers' order rotating). Per-connection
# memory is system-wide noise below a thousand connections. Writes DIR/scale.json (every figure), DIR/scale.md (the tables) and an SVG per figure against
# connections (log scale), one line per server. Default DIR: target/scale.
set -euo pipefail
cd "$(dirname "$0")/.."
counts=10,100,1000,5000,10000,max duration=2s rate=20000 servers=ricochet,c,tokio out=target/scale rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --counts) counts=$2; shift ;;
    --duration) duration=$2; shift ;;
    --rate) rate=$2; shift ;;
    --servers) servers=$2; shift ;;
    --out) out=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    *) echo "usage: $0 [--counts LIST] [--duration DUR] [--rate N] [--servers LIST] [--rounds N] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
cargo build --release --workspace --locked --quiet
mkdir -p target/compare "$out"
cc -O2 -Wall -o target/compare/epoll_echo baselines/c/epoll_echo.c
case ",$servers," in *,tokio,*) (cd baselines/tokio-echo && cargo build --release --locked --quiet) ;; esac
ulimit -n "$(ulimit -Hn)"
exec python3 scripts/scale.py --counts "$counts" --duration "$duration" --rate "$rate" \
  --servers "$servers" --out "$out" --rounds "$rounds"
