#!/usr/bin/env bash
# Builds ricochet, loadgen and the WebSocket anchors (the C floor, tokio-tungstenite,
# fastwebsockets, Node's ws), then runs scripts/compare_ws.py (flags pass through, e.g.
# --rounds 5). Writes docs/BENCHMARKS-WS.md. Needs cargo, cc, python3, taskset, node and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/compare
mkdir -p "$out"
cargo build --release --workspace --locked
cc -O2 -Wall -o "$out/ws_echo" baselines/c/ws_echo.c
(cd baselines/ws-echo && cargo build --release --locked)
(cd baselines/node-ws && npm ci --silent --no-audit --no-fund)
ulimit -n "$(ulimit -Hn)"
bins=$(python3 -c 'import json,sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
  ricochet "$PWD/target/release/ricochet" loadgen "$PWD/target/release/loadgen" \
  c_ws "$PWD/$out/ws_echo" \
  tungstenite "$PWD/baselines/ws-echo/target/release/tungstenite-echo" \
  fastwebsockets "$PWD/baselines/ws-echo/target/release/fastwebsockets-echo" \
  node "$(command -v node)" node_ws "$PWD/baselines/node-ws/server.js")
exec python3 scripts/compare_ws.py --bins "$bins" "$@"
