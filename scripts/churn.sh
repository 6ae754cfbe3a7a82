#!/usr/bin/env bash
# Connection churn, side by side: what CI clients and health checks do (connect, echo 64 B,
# close), against ricochet and the C epoll server (and a second ricochet build, to compare two
# versions). Each round runs every server in turn (the order rotates), pinned to CPU 0 with
# loadgen on CPU 1: `loadgen -c 20 --reconnect-every 1` for the measured time. Prints each
# round, then the medians: connections per second and the server's CPU per connection (user +
# system, from /proc). With strace installed, also the server's syscalls per connection over a
# fixed 5000 connections (strace -c -f; exact counts, at strace's slower pace).
#
#   bash scripts/churn.sh [--rounds 5] [--duration 3] [--before DIR]
#
# --before DIR: a directory with another build's `ricochet` (e.g. a worktree's target/release).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5 duration=3 before=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift ;;
    --duration) duration=$2; shift ;;
    --before) before=$2; shift ;;
    *) echo "usage: $0 [--rounds N] [--duration SECONDS] [--before DIR]" >&2; exit 2 ;;
  esac
  shift
done
cargo build --release --workspace --locked --quiet
mkdir -p target/compare
cc -O2 -Wall -o target/compare/epoll_echo baselines/c/epoll_echo.c
exec python3 - "$rounds" "$duration" "$before" <<'PY'
import json, os, shutil, statistics, subprocess, sys, tempfile

rounds, duration, before = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
loadgen = "target/release/loadgen"
servers = {"ricochet": ["target/release/ricochet", "--tcp", "127.0.0.1:0"]}
if before:
    servers["ricochet (before)"] = [os.path.join(before, "ricochet"), "--tcp", "127.0.0.1:0"]
servers["C epoll"] = ["target/compare/epoll_echo", "0"]
TICK = os.sysconf("SC_CLK_TCK")


def start(argv, prefix=()):
    p = subprocess.Popen(list(prefix) + argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    port = json.loads(line)["listeners"][0]["addr"].rsplit(":", 1)[1] if line.startswith("{") else line.strip()
    return p, port


def churn(port, args):
    out = subprocess.run(["taskset", "-c", "1", loadgen, f"127.0.0.1:{port}", "-c", "20",
                          "--reconnect-every", "1", "--warmup", "0s", "--json"] + args,
                         capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout)


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


rate, cpu = {n: [] for n in servers}, {n: [] for n in servers}
names = list(servers)
for rnd in range(rounds):
    for name in names[rnd % len(names):] + names[: rnd % len(names)]:
        p, port = start(servers[name], ["taskset", "-c", "0"])
        try:
            churn(port, ["-t", "1s"])  # warm-up, unmeasured
            t0 = cpu_ticks(p.pid)
            r = churn(port, ["-t", f"{duration}s"])
            t1 = cpu_ticks(p.pid)
        finally:
            p.terminate()
            p.wait()
        rate[name].append(r["connects"] / duration)
        cpu[name].append((t1 - t0) / TICK / max(r["connects"], 1) * 1e6)
        print(f"  round {rnd + 1}/{rounds} {name:<18} {rate[name][-1]:>9,.0f} connections/s  "
              f"server CPU {cpu[name][-1]:.1f} µs/connection  errors {r['errors']}", flush=True)

syscalls = {}
if shutil.which("strace"):
    for name, argv in servers.items():
        with tempfile.TemporaryDirectory() as tmp:
            counts = os.path.join(tmp, "strace")
            p, port = start(argv, ["strace", "-f", "-c", "-o", counts])
            r = churn(port, ["-n", "5000"])
            subprocess.run(["pkill", "-TERM", "-P", str(p.pid)])
            p.wait()
            total = [l.split() for l in open(counts) if l.split()[-1:] == ["total"]][0][3]
            syscalls[name] = int(total) / r["connects"]

print()
print(f"medians of {rounds} rounds, {duration:g} s each (20 connections, connect → echo 64 B → close):")
c = statistics.median(rate["C epoll"])
for name in servers:
    line = (f"  {name:<18} {statistics.median(rate[name]):>9,.0f} connections/s "
            f"({statistics.median(rate[name]) / c:.2f}× C)  server CPU {statistics.median(cpu[name]):.1f} µs/connection")
    if name in syscalls:
        line += f"  {syscalls[name]:.2f} syscalls/connection"
    print(line)
PY
