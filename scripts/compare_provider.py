#!/usr/bin/env python3
"""ring against aws-lc-rs as rustls's crypto provider (and the TLS 1.3 records' AEAD), side by
side: full handshakes and resumed ones (50 connections reconnecting after every message; the
server's CPU per handshake read from /proc), ping-pong (50 connections x 64 B) and bulk (4 x 4 x
64 KiB). Each build's ricochet on CPU 0, its own loadgen on CPU 1, rounds alternating which goes
first; medians. Run through scripts/compare-provider.sh, which builds both."""
import argparse
import json
import statistics
import subprocess

SHAPES = [
    ("full handshakes", ["-c", "50", "-s", "64", "--reconnect-every", "1"], "handshakes/s"),
    ("resumed handshakes", ["-c", "50", "-s", "64", "--reconnect-every", "1", "--tls-resume"],
     "handshakes/s"),
    ("50 conns ping-pong", ["-c", "50", "-s", "64"], "msgs/s"),
    ("4 × 4 × 64 KiB bulk", ["-c", "4", "-d", "4", "-s", "64KiB"], "MB/s"),
]


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def run(bins, flags, unit, duration):
    server = subprocess.Popen(["taskset", "-c", "0", f"{bins}/ricochet", "--tls", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        addr = json.loads(server.stdout.readline())["listeners"][0]["addr"]
        before = cpu_ticks(server.pid)
        out = subprocess.run(["taskset", "-c", "1", f"{bins}/loadgen", f"tls://{addr}", *flags,
                              "--duration", duration, "--warmup", "0s", "--json", "--insecure"],
                             capture_output=True, text=True, check=True)
        ticks = cpu_ticks(server.pid) - before
    finally:
        server.terminate()
        server.wait()
    stopped = json.loads(server.stdout.read().decode().strip().splitlines()[-1])
    r = json.loads(out.stdout)
    seconds = r["duration_s"]
    if unit == "handshakes/s":
        cpu_us = ticks * 1e6 / 100 / max(r["connects"], 1)
        return r["connects"] / seconds, cpu_us, stopped["tls_resumed"], stopped["tls_handshakes"]
    figure = r["msgs_per_sec"] if unit == "msgs/s" else r["bytes_per_sec"] / 1e6
    return figure, None, None, None


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ring", required=True, help="directory of the ring build's binaries")
    ap.add_argument("--aws-lc", required=True, help="directory of the aws-lc-rs build's binaries")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--duration", default="3s")
    args = ap.parse_args()
    builds = {"ring": args.ring, "aws-lc-rs": args.aws_lc}
    results = {}
    for rnd in range(args.rounds):
        names = list(builds) if rnd % 2 == 0 else list(reversed(builds))
        for shape, flags, unit in SHAPES:
            for name in names:
                figure, cpu, resumed, handshakes = run(builds[name], flags, unit, args.duration)
                results.setdefault((shape, name), []).append((figure, cpu, resumed, handshakes))
                extra = f"  server CPU {cpu:.0f} µs/handshake, {resumed} of {handshakes} resumed" \
                    if cpu is not None else ""
                print(f"round {rnd + 1} {shape:22} {name:10} {figure:12.1f} {unit}{extra}",
                      flush=True)
    print()
    print("| shape | ring | aws-lc-rs | aws-lc-rs / ring | server CPU µs per handshake (ring, aws-lc-rs) |")
    print("|---|---:|---:|---:|---|")
    for shape, _, unit in SHAPES:
        med = {n: statistics.median(x[0] for x in results[(shape, n)]) for n in builds}
        cpus = [[x[1] for x in results[(shape, n)] if x[1] is not None] for n in builds]
        cpu = ", ".join(f"{statistics.median(c):.0f}" for c in cpus) if all(cpus) else "—"
        print(f"| {shape} | {med['ring']:,.1f} {unit} | {med['aws-lc-rs']:,.1f} {unit} | "
              f"{med['aws-lc-rs'] / med['ring']:.2f} | {cpu} |")


if __name__ == "__main__":
    main()
