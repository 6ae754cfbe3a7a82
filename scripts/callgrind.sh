#!/usr/bin/env bash
# User-space instructions per message on the product's two hot paths, counted by valgrind's
# callgrind (deterministic, unlike CPU time on a shared machine):
#   server   ricochet's plain TCP echo, 50 connections, loadgen as the client
#   loadgen  loadgen's ping-pong (1 connection, depth 1, 64 bytes) against the minimal C server
#   ws       ricochet's WebSocket echo (--ws), 50 connections × 64 B, loadgen ws:// as the client
#   tls      ricochet's TLS echo (--tls, TLS 1.3), 50 connections × 64 B, loadgen tls:// as the client
#   loadgen tls  loadgen's TLS ping-pong (1 connection, depth 1, 64 bytes) against ricochet --tls
# Each figure is the marginal cost between a short and a long run, so start-up cancels out.
#
# Usage: scripts/callgrind.sh [BIN_DIR]      (default: target/release, built here if missing)
# Compare two builds side by side: scripts/callgrind.sh /tmp/before; scripts/callgrind.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bins=${1:-target/release}
if [ "$bins" = target/release ]; then cargo build --release --workspace --locked --quiet; fi
mkdir -p target/compare
[ -x target/compare/epoll_echo ] || cc -O2 -Wall -o target/compare/epoll_echo baselines/c/epoll_echo.c
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Total instructions callgrind counted in the file $1.
total() { awk '/^(summary|totals):/ { print $2; exit }' "$1"; }

server_run() { # $1: messages, $2: scheme (tcp or ws)
  local scheme=${2:-tcp}
  valgrind --tool=callgrind --callgrind-out-file="$work/server.out" \
    "$bins/ricochet" "--$scheme" 127.0.0.1:0 >"$work/server.stdout" 2>/dev/null &
  local pid=$!
  for _ in $(seq 600); do [ -s "$work/server.stdout" ] && break; sleep 0.1; done
  local addr
  addr=$(head -n1 "$work/server.stdout" | python3 -c 'import json,sys; print(json.load(sys.stdin)["listeners"][0]["addr"])')
  local trust=()
  [ "$scheme" = tls ] && trust=(--insecure)
  "$bins/loadgen" "$scheme://$addr" -c 50 -n "$1" --json "${trust[@]}" >/dev/null
  kill -TERM "$pid"; wait "$pid" || true
  total "$work/server.out"
}

loadgen_run() { # $1: messages
  target/compare/epoll_echo 0 >"$work/c.port" &
  local pid=$!
  for _ in $(seq 100); do [ -s "$work/c.port" ] && break; sleep 0.05; done
  valgrind --tool=callgrind --callgrind-out-file="$work/loadgen.out" "$bins/loadgen" \
    "127.0.0.1:$(cat "$work/c.port")" -n "$1" -c 1 -d 1 -s 64 --warmup 0s --threads 1 --json \
    >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  total "$work/loadgen.out"
}

loadgen_tls_run() { # $1: messages
  "$bins/ricochet" --tls 127.0.0.1:0 >"$work/tls.stdout" 2>/dev/null &
  local pid=$!
  for _ in $(seq 100); do [ -s "$work/tls.stdout" ] && break; sleep 0.05; done
  local addr
  addr=$(head -n1 "$work/tls.stdout" | python3 -c 'import json,sys; print(json.load(sys.stdin)["listeners"][0]["addr"])')
  valgrind --tool=callgrind --callgrind-out-file="$work/loadgen-tls.out" "$bins/loadgen" \
    "tls://$addr" --insecure -n "$1" -c 1 -d 1 -s 64 --warmup 0s --threads 1 --json \
    >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  total "$work/loadgen-tls.out"
}

a=$(server_run 20000); b=$(server_run 220000)
python3 -c "print(f'server   plain echo, 50 conns: {($b - $a) / 200000:.2f} instructions per message')"
a=$(loadgen_run 20000); b=$(loadgen_run 120000)
python3 -c "print(f'loadgen  ping-pong vs C:       {($b - $a) / 100000:.1f} instructions per message')"
if "$bins/ricochet" --help | grep -q -- '--ws '; then
  a=$(server_run 20000 ws); b=$(server_run 120000 ws)
  python3 -c "print(f'ws       echo, 50 conns:       {($b - $a) / 100000:.1f} instructions per message')"
fi
a=$(server_run 20000 tls); b=$(server_run 120000 tls)
python3 -c "print(f'tls      echo, 50 conns:       {($b - $a) / 100000:.1f} instructions per message')"
a=$(loadgen_tls_run 20000); b=$(loadgen_tls_run 120000)
python3 -c "print(f'loadgen  TLS ping-pong:        {($b - $a) / 100000:.1f} instructions per message')"
