#!/usr/bin/env python3
"""WebSocket side by side: ricochet --ws against the WebSocket echo servers people use
(tokio-tungstenite, fastwebsockets, Node's ws) and a minimal C epoll WebSocket echo (the floor,
baselines/c/ws_echo.c), all driven by the same loadgen ws:// (binary messages, masked frames,
every byte checked). Servers run on CPU 0, loadgen on CPU 1. Also: idle memory per WebSocket
connection, fan-out over WebSocket against ricochet's plain chat fan-out, and what loadgen's own
masking and framing cost against its plain TCP echo. Writes docs/BENCHMARKS-WS.md.

Run through scripts/compare-ws.sh, which builds every server.
"""

import argparse
import datetime
import json
import os
import resource
import socket
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (Server, machine)

SHAPES = [
    # name, loadgen flags, figure unit
    ("50 conns × 64 B ping-pong", ["-c", "50", "-s", "64"], "msgs/s"),
    ("4 × 4 × 64 KiB bulk", ["-c", "4", "-d", "4", "-s", "64KiB"], "MB/s"),
]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def servers(bins):
    """name -> compare.Server (each prints or announces its port)."""
    return {
        "ricochet": compare.Server("ricochet", [bins["ricochet"], "--ws", "127.0.0.1:0"],
                                   "ready-json"),
        "C floor": compare.Server("C floor", [bins["c_ws"], "0"], "stdout"),
        "fastwebsockets": compare.Server("fastwebsockets", [bins["fastwebsockets"], "0"], "stdout"),
        "tokio-tungstenite": compare.Server("tokio-tungstenite", [bins["tungstenite"], "0"],
                                            "stdout"),
        "node ws": compare.Server("node ws", [bins["node"], bins["node_ws"], "0"], "stdout"),
    }


def loadgen(bins, target, flags, duration, warmup):
    """Runs loadgen on CPU 1; returns its JSON report and its own user+system CPU seconds."""
    argv = ["taskset", "-c", "1", bins["loadgen"], target, "--json", "-t", duration,
            "--warmup", warmup] + flags
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not out.stdout.strip():
        raise RuntimeError(f"loadgen {target} failed: {out.stderr.strip()}")
    return json.loads(out.stdout), after.ru_utime - before.ru_utime


def figure(report, unit):
    return report["bytes_per_sec"] / 1e6 if unit == "MB/s" else report["msgs_per_sec"]


def measure(server, bins, target, flags, duration, warmup):
    """One run: the report, and the server's user CPU per message (µs) over the whole run."""
    u0, _ = server.cpu_ticks()
    report, _ = loadgen(bins, target, flags, duration, warmup)
    u1, _ = server.cpu_ticks()
    # Warm-up messages are not in the report; the CPU is: scale by the measured share.
    total = report["messages"] * (1 + parse_s(warmup) / report["duration_s"])
    return report, (u1 - u0) / CLK_TCK / max(total, 1) * 1e6


def parse_s(text):
    return float(text[:-2]) / 1000 if text.endswith("ms") else float(text.rstrip("s"))


def idle_ws(bins, conns=2000):
    """User memory (RSS growth) per idle WebSocket connection: upgraded, one echo, then quiet."""
    server = servers(bins)["ricochet"].start(0)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    request = (f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    hello = bytes([0x82, 0x85, 1, 2, 3, 4]) + bytes(b ^ k for b, k in zip(b"hello", b"\1\2\3\4\1"))

    def connect():
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(request)
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += s.recv(1)
        s.sendall(hello)
        got = b""
        while len(got) < 7:
            got += s.recv(7 - len(got))
        assert got == b"\x82\x05hello", got
        return s
    return compare.idle_growth(server, connect, conns)


def fanout(bins, scheme, duration, warmup):
    """ricochet's chat fan-out over `scheme` (chat or chat+ws): deliveries per second."""
    flag = "--chat" if scheme == "chat" else "--ws-chat"
    server = compare.Server("room", [bins["ricochet"], flag, "127.0.0.1:0"], "ready-json").start(0)
    try:
        r, _ = loadgen(bins, f"{scheme}://127.0.0.1:{server.port}",
                       ["-c", "50", "--publishers", "5", "-d", "4"], duration, warmup)
        assert r["errors"] == 0 and r["mismatches"] == 0, r
        return r["deliveries"] / r["duration_s"]
    finally:
        server.stop()


def loadgen_cost(bins, duration, warmup):
    """loadgen's own user CPU per message: ws:// against tcp://, both against ricochet."""
    out = {}
    for name, argv, target in [
        ("tcp", [bins["ricochet"], "--tcp", "127.0.0.1:0"], "tcp://127.0.0.1:{}"),
        ("ws", [bins["ricochet"], "--ws", "127.0.0.1:0"], "ws://127.0.0.1:{}"),
    ]:
        server = compare.Server(name, argv, "ready-json").start(0)
        try:
            r, cpu = loadgen(bins, target.format(server.port), ["-c", "50", "-s", "64"],
                             duration, warmup)
            total = r["messages"] * (1 + parse_s(warmup) / r["duration_s"])
            out[name] = cpu / total * 1e6
        finally:
            server.stop()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bins", required=True, help="JSON: name -> path")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", default="3s")
    ap.add_argument("--warmup", default="1s")
    ap.add_argument("--out", default="docs/BENCHMARKS-WS.md")
    args = ap.parse_args()
    bins = json.loads(args.bins)
    started = datetime.datetime.now(datetime.timezone.utc)
    table = servers(bins)
    results = {}  # (shape, server) -> [(figure, p50, p99, errors, cpu µs/msg)]
    for rnd in range(args.rounds):
        for shape, flags, unit in SHAPES:
            for name, server in table.items():
                server.start(0)
                try:
                    r, cpu = measure(server, bins, f"ws://127.0.0.1:{server.port}/", flags,
                                     args.duration, args.warmup)
                finally:
                    server.stop()
                lat = r["latency_us"]
                results.setdefault((shape, name), []).append(
                    (figure(r, unit), lat["p50"], lat["p99"], r["errors"] + r["mismatches"], cpu))
                print(f"round {rnd + 1} {shape:26} {name:18} {figure(r, unit):12.1f} {unit}"
                      f"  p50 {lat['p50']:.0f} µs  p99 {lat['p99']:.0f} µs  "
                      f"cpu {cpu:.2f} µs/msg  errors {r['errors']}", flush=True)
    idle = idle_ws(bins)
    fan = {s: statistics.median([fanout(bins, s, args.duration, args.warmup)
                                 for _ in range(args.rounds)]) for s in ("chat", "chat+ws")}
    cost = loadgen_cost(bins, args.duration, args.warmup)
    write(args, started, results, list(table), idle, fan, cost)


def write(args, started, results, names, idle, fan, cost):
    med = statistics.median
    lines = [
        "# WebSocket benchmarks",
        "",
        f"Generated by `scripts/compare-ws.sh` on {started:%Y-%m-%d %H:%M} UTC; "
        f"{compare.machine()}. {args.rounds} rounds of {args.duration} (after {args.warmup} "
        "of warm-up) per server and shape, medians; every server on CPU 0 (one core: the "
        "Rust peers on a single-threaded tokio runtime, Node on its one event loop), loadgen "
        "(`ws://`, binary messages, each a masked frame, every byte checked) on CPU 1. "
        "CPU per message: the server's user time over the run (warm-up included) over the "
        "messages echoed.",
        "",
        "The servers: ricochet `--ws`; the C floor (`baselines/c/ws_echo.c`: epoll, whole "
        "frames, word-at-a-time unmasking, no fragmentation, no checks); fastwebsockets 0.10 "
        "and tokio-tungstenite 0.28 (`baselines/ws-echo`, each as its own echo example writes "
        "it); Node's `ws` 8 (`baselines/node-ws`, its README's echo).",
        "",
        "| shape | server | figure | p50 µs | p99 µs | user CPU µs/msg | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    figs = {}
    for shape, _, unit in SHAPES:
        for name in names:
            rows = results[(shape, name)]
            fig = med([r[0] for r in rows])
            figs[(shape, name)] = (fig, med([r[4] for r in rows]))
            lines.append(
                f"| {shape} | {name} | {fig:,.1f} {unit} | {med([r[1] for r in rows]):,.0f} | "
                f"{med([r[2] for r in rows]):,.0f} | {figs[(shape, name)][1]:.2f} | "
                f"{sum(r[3] for r in rows)} |")
    targets = []
    peers = ["fastwebsockets", "tokio-tungstenite", "node ws"]
    for shape, _, _ in SHAPES:
        ours, ours_cpu = figs[(shape, "ricochet")]
        best = max(figs[(shape, p)][0] for p in peers)
        floor, floor_cpu = figs[(shape, "C floor")]
        tung_cpu = figs[(shape, "tokio-tungstenite")][1]
        targets += [
            (f"{shape}: throughput vs the fastest peer", ours / best, "≥ 1.0", ours / best >= 1.0),
            (f"{shape}: throughput vs the C floor", ours / floor, "≥ 0.95", ours / floor >= 0.95),
            (f"{shape}: CPU per message vs the C floor", ours_cpu / floor_cpu, "≤ 1.25",
             ours_cpu / floor_cpu <= 1.25),
            (f"{shape}: CPU per message vs tokio-tungstenite", ours_cpu / tung_cpu, "≤ 0.5",
             ours_cpu / tung_cpu <= 0.5),
        ]
    targets.append(("idle memory per WebSocket connection (bytes)", idle, "≤ 256", idle <= 256))
    ratio = fan["chat+ws"] / fan["chat"]
    targets.append(("fan-out over WebSocket vs plain chat fan-out", ratio, "≥ 0.9", ratio >= 0.9))
    lines += [
        "",
        f"Fan-out (ricochet, 50 members, 5 publishing, depth 4): chat:// {fan['chat']:,.0f} "
        f"deliveries/s, chat+ws:// {fan['chat+ws']:,.0f} deliveries/s.",
        "",
        f"Memory per idle WebSocket connection (2000 connections, each upgraded and one echo "
        f"done; RSS growth of the ricochet process): {idle:,.0f} bytes.",
        "",
        f"loadgen's own cost (user CPU per message, 50 connections × 64 B against ricochet): "
        f"tcp:// {cost['tcp']:.2f} µs, ws:// {cost['ws']:.2f} µs "
        f"({cost['ws'] / cost['tcp']:.2f}×: masking, framing and decoding).",
        "",
        "## Targets", "", "| target | measured | goal | status |", "|---|---:|---:|---|",
    ]
    for what, value, goal, ok in targets:
        lines.append(f"| {what} | {value:,.2f} | {goal} | {'met' if ok else '**not met**'} |")
    lines += ["", "## Reproduce", "", "```sh",
              "bash scripts/compare-ws.sh              # builds every server; about 4 minutes",
              "```", ""]
    # The assessment is written by hand after a run: kept as it is, to be brought up to date.
    for section in compare.hand_written_sections(args.out, generated=("Targets", "Reproduce")):
        lines += [section.rstrip("\n"), ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
