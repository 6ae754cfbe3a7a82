#!/usr/bin/env bash
# Soak: mixed load against one ricochet for DURATION (default 10m; CI runs 60s), sampling the
# server's RSS and open descriptors every second.
#
# The load, all at once:
# - pipelined echo (20 connections × depth 16);
# - connection churn (--reconnect-every 20);
# - UDP (open loop);
# - a chat room (2 publishers, 10 members; a server of its own, so the echo's totals balance);
# - slow readers that write 1 MiB and stop reading for 3 s, then read it all back;
# - resets (SO_LINGER 0) every 2 s.
#
# Pass:
# - zero mismatches and zero errors in every loadgen;
# - every slow reader gets its bytes back exactly;
# - after the first fifth of the run, RSS grows by no more than 1 MiB;
# - the descriptor count returns to its baseline once the load stops;
# - the server's bytes_in − bytes_out is at most what the reset connections left unechoed.
#
# Writes samples.csv and rss.svg to OUT (default target/soak).
#
#   bash scripts/soak.sh [DURATION] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10m}
out=${2:-target/soak}
secs=$(python3 -c 'import sys; from datetime import timedelta; s=sys.argv[1]; u={"s":1,"m":60,"h":3600}[s[-1]] if s[-1] in "smh" else 1; print(int(float(s.rstrip("smh"))*u))' "$duration")
bin=target/release
[ -x "$bin/ricochet" ] && [ -x "$bin/loadgen" ] || cargo build --release --locked --quiet
mkdir -p "$out"
work=$(mktemp -d)
pids=()
server_pid=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/ricochet" --tcp 127.0.0.1:0 --udp 127.0.0.1:0 \
  --ready-file "$work/ready.json" >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
# The chat room is a server of its own: its fan-out sends more than it receives, and the echo
# server's totals must balance.
"$bin/ricochet" --chat 127.0.0.1:0 --ready-file "$work/chat-ready.json" >/dev/null 2>&1 &
chat_pid=$!
pids+=("$chat_pid")
for _ in $(seq 100); do [ -s "$work/ready.json" ] && [ -s "$work/chat-ready.json" ] && break; sleep 0.05; done
addr() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["listeners"][int(sys.argv[2])]["addr"])' "$1" "$2"; }
tcp=$(addr "$work/ready.json" 0); udp=$(addr "$work/ready.json" 1); chat=$(addr "$work/chat-ready.json" 0)
fds() { ls "/proc/$server_pid/fd" | wc -l; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$server_pid/status"; }
base_fds=$(fds)
echo "soak: $secs s against tcp $tcp, udp $udp, chat $chat (baseline $base_fds fds)"

"$bin/loadgen" "$tcp" -c 20 -d 16 -t "${secs}s" --warmup 0s --json >"$work/pipelined.json" & pids+=($!)
"$bin/loadgen" "$tcp" -c 10 --reconnect-every 20 -t "${secs}s" --warmup 0s --json >"$work/churn.json" & pids+=($!)
"$bin/loadgen" "udp://$udp" -c 4 -r 5000 -t "${secs}s" --warmup 0s --json >"$work/udp.json" & pids+=($!)
"$bin/loadgen" "chat://$chat" -c 10 --publishers 2 -r 500 -t "${secs}s" --warmup 0s --json >"$work/chat.json" & pids+=($!)
python3 - "$tcp" "$secs" >"$work/slow.txt" 2>&1 <<'PY' & pids+=($!)
import os, socket, sys, time, threading
host, port = sys.argv[1].rsplit(":", 1)
end = time.time() + float(sys.argv[2]) - 5
rounds = 0
while time.time() < end:
    conns = [socket.create_connection((host, int(port))) for _ in range(5)]
    data = [os.urandom(1 << 20) for _ in conns]
    for s, d in zip(conns, data):
        threading.Thread(target=s.sendall, args=(d,)).start()  # blocks once the server stops reading
    time.sleep(3)                                           # the slow part: nobody reads
    for s, d in zip(conns, data):
        got = bytearray()
        while len(got) < len(d):
            chunk = s.recv(1 << 16)
            assert chunk, "EOF before the whole echo"
            got.extend(chunk)
        assert bytes(got) == d, "the echo differs"
        s.close()
    rounds += 1
print("slow rounds", rounds)
PY
python3 - "$tcp" "$secs" >"$work/resets.txt" 2>&1 <<'PY' & pids+=($!)
import socket, struct, sys, time
host, port = sys.argv[1].rsplit(":", 1)
end = time.time() + float(sys.argv[2]) - 2
n = 0
while time.time() < end:
    s = socket.create_connection((host, int(port)))
    s.sendall(b"x" * 100_000)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()                                   # RST: whatever was not echoed is lost
    n += 1
    time.sleep(2)
print("resets", n)
PY

echo "t,rss_kib,fds" >"$out/samples.csv"
for t in $(seq 1 "$secs"); do
  sleep 1
  echo "$t,$(rss),$(fds)" >>"$out/samples.csv"
done
status=0
for p in "${pids[@]}"; do
  [ "$p" = "$chat_pid" ] && continue
  wait "$p" || status=1
done
kill -TERM "$chat_pid"; wait "$chat_pid" || true
pids=()
# The descriptors go back to the baseline once every client is gone.
for _ in $(seq 100); do [ "$(fds)" -le "$base_fds" ] && break; sleep 0.05; done
end_fds=$(fds)
kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
resets=$(sed -n 's/^resets //p' "$work/resets.txt")
python3 - "$work" "$out" "$secs" "$base_fds" "$end_fds" "${resets:-0}" "$status" <<'PY'
import csv, json, os, sys
work, out, secs, base_fds, end_fds, resets, status = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
fail = []
for name in ("pipelined", "churn", "udp", "chat"):
    r = json.load(open(os.path.join(work, name + ".json")))
    print(f"  {name:10} {r['messages']:>10} messages  errors {r['errors']}  mismatches {r['mismatches']}  lost {r['lost']}")
    if r["errors"] or r["mismatches"] or (name == "chat" and r["lost"]):
        fail.append(f"{name}: errors or mismatches")
print("  " + open(os.path.join(work, "slow.txt")).read().strip().replace("\n", "; "))
print(f"  resets done {resets}")
if status:
    fail.append("a client failed (see above)")
rows = list(csv.DictReader(open(os.path.join(out, "samples.csv"))))
rss = [int(r["rss_kib"]) for r in rows]
settled = rss[max(0, secs // 5 - 1)]
growth = max(rss[secs // 5:] or [settled]) - settled
print(f"  RSS after the warm-up {settled} KiB, grew by at most {growth} KiB; fds {base_fds} -> {end_fds}")
if growth > 1024:
    fail.append(f"RSS grew {growth} KiB after the warm-up")
if end_fds > base_fds:
    fail.append(f"{end_fds - base_fds} descriptors left open")
stopped = json.loads(open(os.path.join(work, "server.out")).read().strip().splitlines()[-1])
gap = stopped["bytes_in"] - stopped["bytes_out"]
print(f"  server: bytes_in - bytes_out = {gap} (resets may leave up to {resets * 100_000} unechoed), resets counted {stopped['resets']}")
if gap < 0 or gap > resets * 100_000:
    fail.append(f"the server's totals do not balance: {gap}")
# The samples, drawn.
w, h = 800, 300
top = max(rss) * 1.1
pts = " ".join(f"{60 + (i / max(1, len(rss) - 1)) * (w - 80):.1f},{h - 40 - v / top * (h - 70):.1f}" for i, v in enumerate(rss))
svg = f'''<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{w/2}" y="18" text-anchor="middle" font-size="15">ricochet RSS during the soak ({secs} s)</text>
<line x1="60" y1="{h-40}" x2="{w-20}" y2="{h-40}" stroke="black"/><line x1="60" y1="30" x2="60" y2="{h-40}" stroke="black"/>
<text x="{w/2}" y="{h-10}" text-anchor="middle">time (s)</text>
<text x="15" y="{h/2}" transform="rotate(-90 15 {h/2})" text-anchor="middle">RSS (KiB)</text>
<text x="55" y="{h-40}" text-anchor="end">0</text><text x="55" y="34" text-anchor="end">{int(top)}</text>
<text x="{w-20}" y="{h-26}" text-anchor="end">{secs}</text>
<polyline fill="none" stroke="#d62728" stroke-width="2" points="{pts}"/>
</svg>'''
open(os.path.join(out, "rss.svg"), "w").write(svg)
print(f"  wrote {out}/samples.csv and {out}/rss.svg")
if fail:
    print("soak: FAILED: " + "; ".join(fail))
    sys.exit(1)
print("soak: passed")
PY
