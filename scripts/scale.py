#!/usr/bin/env python3
"""The cost curve (see scripts/scale.sh, which builds and calls this)."""
import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import time

import compare  # its perf sampling (scripts/ is this script's directory)

TICK = os.sysconf("SC_CLK_TCK")
LOADGEN = "target/release/loadgen"
SERVERS = {
    "ricochet": ["target/release/ricochet", "--tcp", "127.0.0.1:0", "--max-pending", "1MiB"],
    "c": ["target/compare/epoll_echo", "0"],
    "tokio": ["baselines/tokio-echo/target/release/tokio-echo", "0"],
}
NAMES = {"ricochet": "ricochet", "c": "C epoll", "tokio": "tokio"}
# Descriptors each process keeps for itself beyond its connections.
MARGIN = 64


def slab_kib():
    for line in open("/proc/meminfo"):
        if line.startswith("Slab:"):
            return int(line.split()[1])
    return 0


class Server:
    def __init__(self, name):
        self.name = name
        argv = ["taskset", "-c", "0"] + SERVERS[name]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        self.port = json.loads(line)["listeners"][0]["addr"].rsplit(":", 1)[1] if line.startswith("{") else line.strip()

    def stat(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return int(fields[11]), int(fields[12])

    def rss_kib(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def loadgen_start(port, n, extra):
    argv = ["taskset", "-c", "1", LOADGEN, f"127.0.0.1:{port}", "-c", str(n), "--threads", "1",
            "-d", "1", "-s", "64", "--json"] + extra
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def loadgen_finish(proc):
    out, err = proc.communicate(timeout=600)
    if not out.strip():
        raise RuntimeError(f"loadgen {' '.join(proc.args)}: {err.strip()}")
    return json.loads(out)


def loadgen(port, n, extra):
    return loadgen_finish(loadgen_start(port, n, extra))


def perf_syscalls(pid, seconds):
    """The server's syscalls over `seconds` (perf's tracepoint), or None where perf cannot."""
    if not shutil.which("perf"):
        return None
    p = subprocess.Popen(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", str(pid),
                          "--", "sleep", str(seconds)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    return p


def perf_sample(pid, seconds):
    """perf record's cpu-clock samples of the server for `seconds` (compare.py's method: one
    sample per 50 µs of its CPU time), or None where perf cannot."""
    if not shutil.which("perf"):
        return None
    path = f"/tmp/ricochet-scale-{os.getpid()}.perf"
    return compare.start_sampling(pid, path, seconds), path


def perf_sample_user_us(handle, seconds, msgs_per_sec):
    """User CPU per message from the samples: user samples per second over messages per second."""
    if handle is None:
        return None
    p, path = handle
    p.wait(timeout=120)
    user = compare.count_user_samples(path)
    if user is None or msgs_per_sec <= 0:
        return None
    return user * compare.SAMPLE_NS / 1e3 / seconds / msgs_per_sec


def perf_result(p):
    if p is None:
        return None
    err = p.communicate(timeout=120)[1]
    for line in err.splitlines():
        parts = line.split(",")
        if "raw_syscalls:sys_enter" in line and parts[0].isdigit():
            return int(parts[0])
    return None


def measure(name, n, args):
    secs = float(args.duration.rstrip("s"))
    server = Server(name)
    try:
        rss0, slab0 = server.rss_kib(), slab_kib()
        # Opening them all at once, with time for SYNs the listen queue dropped (retried after
        # 1 s, 3 s, ...): the slowest connect is the time to open them all.
        opened = loadgen(server.port, n, ["-t", f"{1 + n / 2000:.1f}s", "--warmup", "0s"])
        # Every later run's warm-up covers its opening (and more), so that all N are measured.
        warmup = f"{1 + 2 * opened['connect_latency_us']['max'] / 1e6:.1f}s"
        # Saturation: the warm-up, then the measured period with the server's CPU read around it.
        sat_cmd = ["-t", args.duration, "--warmup", warmup]
        u0, s0 = server.stat()
        lead = float(warmup.rstrip("s"))
        perf = perf_syscalls(server.proc.pid, secs + lead)
        sat = loadgen(server.port, n, sat_cmd)
        u1, s1 = server.stat()
        syscalls = perf_result(perf)
        # Sampled user CPU, in a run of its own (sampling slows the server a little): the
        # samples span the measured period's length once the warm-up is over, and are read as
        # a rate against its rate. /proc's ticks above are 10 ms: a few per run at these costs.
        sampled_run = loadgen_start(server.port, n, sat_cmd)
        time.sleep(lead)
        handle = perf_sample(server.proc.pid, secs)
        sampled = loadgen_finish(sampled_run)
        sampled_user = perf_sample_user_us(handle, secs, sampled["msgs_per_sec"])
        # The fixed rate, with the memory read in its middle, every connection open and in use.
        fixed_run = loadgen_start(server.port, n, ["-t", args.duration, "--warmup", warmup,
                                                   "--rate", str(args.rate)])
        time.sleep(lead + secs / 2)
        rss1, slab1 = server.rss_kib(), slab_kib()
        fixed = loadgen_finish(fixed_run)
    finally:
        server.stop()
    # The CPU read spans the warm-up too: per message over everything the run sent (the
    # warm-up's messages estimated at the measured rate).
    total_msgs = max(sat["messages"] * (secs + lead) / secs, 1)
    return {
        "server": name, "connections": n,
        "open_ms": opened["connect_latency_us"]["max"] / 1e3,
        "connect_errors": opened["errors"],
        "msgs_per_sec": sat["msgs_per_sec"],
        "p50_us": sat["latency_us"]["p50"], "p99_us": sat["latency_us"]["p99"],
        "user_us_per_msg": (u1 - u0) / TICK / total_msgs * 1e6,
        "sampled_user_us_per_msg": sampled_user,
        "sys_us_per_msg": (s1 - s0) / TICK / total_msgs * 1e6,
        "syscalls_per_msg": syscalls / total_msgs if syscalls else None,
        "errors": sat["errors"] + sat["mismatches"] + fixed["errors"] + fixed["mismatches"],
        "fixed_rate": args.rate,
        "fixed_achieved": fixed["msgs_per_sec"],
        "fixed_p50_us": fixed["latency_us"]["p50"], "fixed_p99_us": fixed["latency_us"]["p99"],
        # Below a thousand connections the growth is lost in the process's and the system's
        # own noise (allocator arenas, other slab users): not said.
        "rss_bytes_per_conn": (rss1 - rss0) * 1024 / n if n >= 1000 else None,
        "slab_bytes_per_pair": (slab1 - slab0) * 1024 / n if n >= 1000 else None,
    }


def fmt(value):
    return "—" if value is None else f"{value:.0f}"


def fmt3(value):
    return "—" if value is None else f"{value:.3f}"


def svg(path, title, ylabel, series, log_y=False):
    """A small line chart: x = connections (log), one polyline per server."""
    w, h, left, right, top, bottom = 640, 400, 70, 120, 40, 50
    xs = sorted({x for pts in series.values() for x, _ in pts})
    ys = [y for pts in series.values() for _, y in pts if y is not None and y > 0]
    if not xs or not ys:
        return
    lx = lambda x: math.log10(x)
    x0, x1 = lx(xs[0]), lx(xs[-1]) if xs[-1] > xs[0] else lx(xs[0]) + 1
    fy = (lambda y: math.log10(y)) if log_y else (lambda y: y)
    y0, y1 = (fy(min(ys)) if log_y else 0.0), fy(max(ys)) * (1.0 if log_y else 1.1)
    if y1 <= y0:
        y1 = y0 + 1
    px = lambda x: left + (lx(x) - x0) / (x1 - x0) * (w - left - right)
    py = lambda y: h - bottom - (fy(y) - y0) / (y1 - y0) * (h - top - bottom)
    colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>',
           f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>',
           f'<text x="{(left + w - right) / 2}" y="{h - 12}" text-anchor="middle">connections</text>',
           f'<text x="16" y="{(top + h - bottom) / 2}" text-anchor="middle" transform="rotate(-90 16 {(top + h - bottom) / 2})">{ylabel}</text>']
    for x in xs:
        out.append(f'<text x="{px(x):.1f}" y="{h - bottom + 16}" text-anchor="middle">{x:,}</text>')
    for i in range(5):
        v = y0 + (y1 - y0) * i / 4
        label = 10 ** v if log_y else v
        y = h - bottom - (h - top - bottom) * i / 4
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label:.3g}</text>')
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - right}" y2="{y:.1f}" stroke="#eee"/>')
    for k, (name, pts) in enumerate(series.items()):
        pts = [(x, y) for x, y in pts if y is not None and y > 0]
        colour = colours[k % len(colours)]
        path_d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path_d}"/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')
        out.append(f'<text x="{w - right + 10}" y="{top + 16 * (k + 1)}" fill="{colour}">{name}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="10,100,1000,5000,10000,max")
    ap.add_argument("--duration", default="2s")
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--servers", default="ricochet,c,tokio")
    ap.add_argument("--out", default="target/scale")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    most = hard - MARGIN
    counts = [most if c == "max" else int(c) for c in args.counts.split(",")]
    print(f"open-file limit {hard} per process (hard): at most {most:,} connections per run")
    names = args.servers.split(",")
    runs = {}
    for rnd in range(args.rounds):
        for n in counts:
            for name in names[rnd % len(names):] + names[: rnd % len(names)]:
                r = measure(name, n, args)
                runs.setdefault((name, n), []).append(r)
                sys_calls = f"{r['syscalls_per_msg']:.2f}" if r["syscalls_per_msg"] else "—"
                print(f"  round {rnd + 1}/{args.rounds} {NAMES[name]:<8} {n:>6,} conns: open {r['open_ms']:.0f} ms, "
                      f"{r['msgs_per_sec']:>9,.0f} msgs/s, user {r['user_us_per_msg']:.3f} µs/msg "
                      f"(sampled {fmt3(r['sampled_user_us_per_msg'])}), "
                      f"sys {r['sys_us_per_msg']:.2f} µs/msg, syscalls {sys_calls}/msg, "
                      f"p99 {r['p99_us']:.0f} µs; at {args.rate:,}/s p99 {r['fixed_p99_us']:.0f} µs; "
                      f"RSS {fmt(r['rss_bytes_per_conn'])} B/conn, slab {fmt(r['slab_bytes_per_pair'])} B/pair, "
                      f"errors {r['errors']}", flush=True)
    # Medians of the rounds, per server and count (errors: the sum).
    rows = []
    for n in counts:
        for name in names:
            rs = runs[(name, n)]
            row = {"server": name, "connections": n, "rounds": len(rs)}
            for key in rs[0]:
                if key in ("server", "connections"):
                    continue
                values = [r[key] for r in rs if r[key] is not None]
                row[key] = (sum(values) if key == "errors" else statistics.median(values)) if values else None
            rows.append(row)
    with open(os.path.join(args.out, "scale.json"), "w") as f:
        json.dump({"open_file_limit": hard, "rate": args.rate, "duration": args.duration, "rows": rows}, f, indent=1)
    series = lambda key: {NAMES[s]: [(r["connections"], r[key]) for r in rows if r["server"] == s]
                          for s in args.servers.split(",")}
    figures = [
        ("user_us_per_msg", "Server user CPU per message (saturation, /proc ticks)", "µs", False),
        ("sampled_user_us_per_msg", "Server user CPU per message (saturation, sampled)", "µs", False),
        ("sys_us_per_msg", "Server system CPU per message (saturation)", "µs", False),
        ("p99_us", "p99 latency at saturation", "µs", True),
        ("fixed_p99_us", f"p99 latency at a fixed {args.rate:,} msgs/s", "µs", True),
        ("rss_bytes_per_conn", "Server user memory per connection", "bytes", False),
        ("slab_bytes_per_pair", "Kernel slab per connection pair", "bytes", False),
        ("open_ms", "Time to open them all", "ms", True),
    ]
    for key, title, unit, log_y in figures:
        svg(os.path.join(args.out, f"scale-{key.replace('_', '-')}.svg"), title, unit, series(key), log_y)
    with open(os.path.join(args.out, "scale.md"), "w") as f:
        f.write(f"Generated by `bash scripts/scale.sh --counts {args.counts} --duration {args.duration} "
                f"--rate {args.rate} --rounds {args.rounds}` (medians of the rounds) on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
                f"open-file limit {hard} per process.\n\n")
        f.write("| server | connections | open ms | msgs/s | user µs/msg | user µs/msg (sampled) | sys µs/msg "
                f"| syscalls/msg | p50 µs | p99 µs | p99 at {args.rate:,}/s | RSS B/conn | slab B/pair | errors |\n")
        f.write("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
        for r in rows:
            sc = f"{r['syscalls_per_msg']:.2f}" if r["syscalls_per_msg"] else "—"
            f.write(f"| {NAMES[r['server']]} | {r['connections']:,} | {r['open_ms']:.0f} | {r['msgs_per_sec']:,.0f} "
                    f"| {r['user_us_per_msg']:.3f} | {fmt3(r['sampled_user_us_per_msg'])} | {r['sys_us_per_msg']:.2f} | {sc} | {r['p50_us']:.0f} | {r['p99_us']:.0f} "
                    f"| {r['fixed_p99_us']:.0f} | {fmt(r['rss_bytes_per_conn'])} | {fmt(r['slab_bytes_per_pair'])} | {r['errors']} |\n")
    print(f"wrote {args.out}/scale.json, scale.md and scale-*.svg")


if __name__ == "__main__":
    main()
