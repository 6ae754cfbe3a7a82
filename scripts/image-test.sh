#!/usr/bin/env bash
# Tests the image for real: starts it (podman, host network, a free port), waits for the ready
# line and reports how long that took, echoes through it with the host's loadgen and with the
# image's own `/loadgen probe`, stops it with `podman stop` (SIGTERM to ricochet as PID 1) and
# checks the exit code and the `stopped` line. Prints the image size.
#
#   bash scripts/image-test.sh [IMAGE]     # default: builds localhost/ricochet:latest first
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-}
[ -n "$image" ] || image=$(bash scripts/image.sh | tail -n 1)
work=$(mktemp -d)
name="ricochet-test-$$"
# podman on machines without systemd: runc, cgroupfs, no default ulimits, no healthcheck timers.
printf '[containers]\ndefault_ulimits = []\n' >"$work/containers.conf"
export CONTAINERS_CONF="$work/containers.conf"
pod() { podman --runtime runc --cgroup-manager=cgroupfs "$@"; }
cleanup() { pod rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
started=$(date +%s.%N)
pod run --name "$name" --no-healthcheck --network host "$image" \
  --tcp "127.0.0.1:$port" --udp "127.0.0.1:$port" >"$work/stdout" 2>"$work/stderr" &
runner=$!
for _ in $(seq 200); do
  [ -s "$work/stdout" ] && break
  kill -0 "$runner" 2>/dev/null || { cat "$work/stderr"; exit 1; }
  sleep 0.05
done
ready=$(date +%s.%N)
head -n 1 "$work/stdout"
python3 -c 'import sys; print(f"run to ready line: {(float(sys.argv[2]) - float(sys.argv[1])) * 1000:.0f} ms")' "$started" "$ready"
target/release/loadgen "127.0.0.1:$port" -c 4 -n 10000 --json >"$work/run.json"
target/release/loadgen "udp://127.0.0.1:$port" -c 2 -n 2000 --json >/dev/null
pod exec "$name" /loadgen probe "127.0.0.1:$port"
pod stop -t 10 "$name" >/dev/null
status=0
wait "$runner" || status=$?
[ "$status" -eq 0 ] || { echo "the container exited $status after podman stop"; cat "$work/stderr"; exit 1; }
tail -n 1 "$work/stdout" | python3 -c '
import json, sys
s = json.loads(sys.stdin.read())
assert s["event"] == "stopped" and s["accepted"] >= 5 and s["bytes_in"] == s["bytes_out"], s
assert s["datagrams_out"] >= 2000 and s["resets"] == 0, s
print("stopped:", {k: s[k] for k in ("accepted", "bytes_in", "datagrams_out", "resets")})
'
pod image inspect "$image" --format '{{.Size}}' | awk '{printf "image size: %.1f MB\n", $1/1e6}'
echo "image test passed"
