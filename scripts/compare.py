#!/usr/bin/env python3
"""Side-by-side comparison of ricochet with baseline echo servers, driven by loadgen.

Run through scripts/compare.sh, which builds everything first. For each load shape, every server
is run in turn (alternating, the order rotated each round) pinned to one CPU while loadgen runs
pinned to another; each figure is the median over the rounds:

- msgs/s and MB/s (echoed payload), p50 and p99 latency, from loadgen's JSON report;
- the server's CPU time per message, user and system, from /proc/PID/stat around the run;
- in extra profiled rounds (kept apart so tracing never slows the measured rounds), where perf
  works: the server's syscalls per message (`perf stat -e raw_syscalls:sys_enter`) and its user
  CPU per message sampled by `perf record -e cpu-clock` every 50 µs of its CPU time. /proc ticks
  are 10 ms: at 0.3 µs of user time per message, a 3 s round holds only a handful of them, so
  the ratios the targets are judged on come from the samples;
- user-space RSS per idle connection with N connections open;
- loadgen against a minimal C epoll client driving the same server (is loadgen the bottleneck?);
- fan-out: ricochet's chat room against a minimal C epoll chat room and tokio's chat example on
  raw lines, driven by `loadgen chat://`; there a "message" is a delivery (a line received by one
  member), and per-message figures are per delivery.

It writes docs/BENCHMARKS.md (or --out) and prints the tables. The `##` sections of the earlier file
that it does not write itself (an assessment, the many-cores table, the soak) are kept, after the targets.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")

SHAPES = [
    # name, description, loadgen flags
    ("ping-pong", "1 connection, 64 B, depth 1", ["-c", "1", "-d", "1", "-s", "64"]),
    ("50 conns", "50 connections, 64 B, depth 1", ["-c", "50", "-d", "1", "-s", "64"]),
    ("1000 conns", "1000 connections, 64 B, depth 1", ["-c", "1000", "-d", "1", "-s", "64"]),
    ("pipelined", "50 connections × depth 16, 64 B", ["-c", "50", "-d", "16", "-s", "64"]),
    ("bulk", "4 connections × depth 4, 64 KiB", ["-c", "4", "-d", "4", "-s", "64KiB"]),
    ("churn", "20 clients: connect → echo 64 B → close, again (per message = per connection)",
     ["-c", "20", "-d", "1", "-s", "64", "--reconnect-every", "1"]),
    ("fan-out 1-100", "chat room: 1 publisher → 100 members, 64 B lines, 16 in flight",
     ["-c", "100", "--publishers", "1", "-d", "16", "-s", "64"]),
    ("fan-out 50x50", "chat room: 50 members all publishing, 64 B lines, 1 in flight each",
     ["-c", "50", "-d", "1", "-s", "64"]),
]


def is_chat(shape):
    """Fan-out shapes run against chat rooms; figures there are per delivery."""
    return shape.startswith("fan-out")


def size_bytes(text):
    """A loadgen size ("64", "64KiB") in bytes, for the C client."""
    for suffix, factor in (("KiB", 1024), ("MiB", 1 << 20)):
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process under test."""

    def __init__(self, name, argv, port_from):
        self.name, self.argv, self.port_from = name, argv, port_from
        self.proc = None
        self.port = None

    def start(self, cpu):
        port = free_port() if self.port_from == "fixed" else 0
        argv = [a.replace("{port}", str(port)) for a in self.argv]
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(cpu)] + argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # its own process group: socat's forked children go with it
        )
        if self.port_from == "ready-json":
            line = self.proc.stdout.readline()
            self.port = int(json.loads(line)["listeners"][0]["addr"].rsplit(":", 1)[1])
        elif self.port_from == "stdout":
            self.port = int(self.proc.stdout.readline())
        else:
            self.port = port
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not start")

    def cpu_ticks(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]), int(fields[12])  # utime, stime

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            # Anything the server forked (socat's per-connection children) is in its group.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.proc = None


def loadgen(bins, port, flags, duration, warmup, cpu, chat=False):
    target = f"chat://127.0.0.1:{port}" if chat else f"127.0.0.1:{port}"
    # A load thread per client CPU (chat runs on one), unless the shape sets its own.
    threads = [] if chat or "--threads" in flags else ["--threads", "0"]
    argv = ["taskset", "-c", str(cpu), bins["loadgen"], target, "--json",
            "-t", duration, "--warmup", warmup] + threads + flags
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if not out.stdout.strip():
        raise RuntimeError(f"loadgen failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def perf_works():
    if not shutil.which("perf"):
        return False
    out = subprocess.run(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "true"],
                         capture_output=True, text=True)
    if out.returncode != 0 or "not supported" in out.stderr:
        return False
    probe = f"/tmp/ricochet-compare-{os.getpid()}.probe"
    rec = subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-o", probe, "true"],
                         capture_output=True, text=True)
    if os.path.exists(probe):
        os.unlink(probe)
    return rec.returncode == 0


SAMPLE_NS = 50_000  # perf record's cpu-clock period: one sample per 50 µs the server runs


def measure(server, bins, flags, args, profile=False, chat=False):
    """One measured run of loadgen against a started server; `profile` adds the perf counts.
    For a chat room (`chat`), rates and per-message figures are per delivery."""
    # Warm the server and its connections' code paths up, unmeasured.
    loadgen(bins, server.port, flags, args.warmup, "0s", args.load_cpu, chat)
    pid = str(server.proc.pid)
    stat = record = None
    samples = f"/tmp/ricochet-compare-{os.getpid()}.perf"
    if profile:
        stat = subprocess.Popen(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", pid],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        record = start_sampling(pid, samples)
        time.sleep(0.3)
    u0, s0 = server.cpu_ticks()
    report = loadgen(bins, server.port, flags, args.duration, "0s", args.load_cpu, chat)
    u1, s1 = server.cpu_ticks()
    if chat:
        # A delivery is the unit: a line received by one member.
        report["messages"] = report["deliveries"]
        report["msgs_per_sec"] = report["deliveries_per_sec"]
        report["bytes_per_sec"] = report["deliveries_per_sec"] * report["size"]
    syscalls = user_samples = None
    if profile:
        for p in (stat, record):
            p.send_signal(signal.SIGINT)
        err = stat.communicate(timeout=30)[1]
        record.wait(timeout=60)
        for line in err.splitlines():
            parts = line.split(",")
            if len(parts) > 2 and "raw_syscalls:sys_enter" in line and parts[0].isdigit():
                syscalls = int(parts[0])
        user_samples = count_user_samples(samples)
    msgs = max(report["messages"], 1)
    return {
        "msgs_per_sec": report["msgs_per_sec"],
        "mb_per_sec": report["bytes_per_sec"] / 1e6,
        "p50": report["latency_us"]["p50"],
        "p99": report["latency_us"]["p99"],
        "user_us": (u1 - u0) / TICK / msgs * 1e6,
        "sys_us": (s1 - s0) / TICK / msgs * 1e6,
        "errors": report["errors"] + report["mismatches"] + (report["lost"] if chat else 0),
        "syscalls": syscalls / msgs if syscalls is not None else None,
        "sampled_user_us": user_samples * SAMPLE_NS / 1e3 / msgs if user_samples is not None else None,
    }


def start_sampling(pid, path, seconds=None):
    """perf record's cpu-clock samples of process `pid` into `path`, one per SAMPLE_NS of its
    CPU time: until it is sent SIGINT, or for `seconds`."""
    argv = ["perf", "record", "-q", "-e", "cpu-clock", "-c", str(SAMPLE_NS), "-p", str(pid),
            "-o", path]
    if seconds is not None:
        argv += ["--", "sleep", str(seconds)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def count_user_samples(path):
    """Samples whose instruction pointer is in user space (below the kernel's half)."""
    try:
        out = subprocess.run(["perf", "script", "-i", path, "-F", "ip"], capture_output=True,
                             text=True, timeout=120)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    ips = [int(l, 16) for l in out.stdout.split() if l]
    return sum(1 for ip in ips if ip < 0xFFFF_8000_0000_0000) if ips else None


def callgrind_per_message(server, bins, small=20000, large=220000):
    """User-space instructions per message (valgrind's callgrind): deterministic, unlike CPU time.
    The marginal cost between two runs of `small` and `large` messages, so start-up cancels out."""
    counts = []
    for n in (small, large):
        out = f"/tmp/ricochet-compare-{os.getpid()}.callgrind"
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + server.argv
        argv = [a.replace("{port}", "0") for a in argv]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = proc.stdout.readline()
            port = int(json.loads(line)["listeners"][0]["addr"].rsplit(":", 1)[1]) if line.startswith("{") else int(line)
            subprocess.run([bins["loadgen"], f"127.0.0.1:{port}", "-c", "50", "-n", str(n), "--json"],
                           capture_output=True, timeout=600, check=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        with open(out) as f:
            total = next(int(l.split()[1]) for l in f if l.startswith(("summary:", "totals:")))
        os.unlink(out)
        counts.append(total)
    return (counts[1] - counts[0]) / (large - small)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def idle_rss(server, conns):
    """User-space RSS growth per idle connection, in bytes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, conns + 1000), hard))
    before = server.rss_kib()
    fds_before = server.fd_count()
    socks = []
    try:
        for _ in range(conns):
            socks.append(socket.create_connection(("127.0.0.1", server.port)))
        deadline = time.time() + 30
        while server.fd_count() < fds_before + conns and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        after = server.rss_kib()
        accepted = server.fd_count() - fds_before
    finally:
        for s in socks:
            s.close()
    return (after - before) * 1024 / max(accepted, 1), accepted


def idle_growth(server, connect, conns):
    """User-space RSS growth per connection, in bytes, of `conns` connections that `connect()`
    opened and left idle (each after whatever exchange it does). One warm-up connection first
    (the shared read buffer, caches), not counted; every socket is closed at the end, and the
    server stopped."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, conns + 1000), hard))
    socks = []
    try:
        socks.append(connect())
        time.sleep(0.3)
        before = server.rss_kib()
        for _ in range(conns):
            socks.append(connect())
        time.sleep(0.5)
        return (server.rss_kib() - before) * 1024 / conns
    finally:
        for s in socks:
            s.close()
        server.stop()


def fmt(value, digits=1):
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, Linux {platform.release()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", default="3s", help="measured loadgen run per server and round")
    ap.add_argument("--warmup", default="1s", help="unmeasured loadgen run before each measured one")
    ap.add_argument("--shapes", default=",".join(s[0] for s in SHAPES))
    ap.add_argument("--server-cpus", "--server-cpu", dest="server_cpu", default="0",
                    help="CPUs for the server under test (a taskset list: 0, 0-7, 0,2)")
    ap.add_argument("--client-cpus", "--load-cpu", dest="load_cpu", default="1",
                    help="CPUs for loadgen (a taskset list); loadgen runs a thread per CPU")
    ap.add_argument("--threads", type=int, default=1,
                    help="server threads: ricochet --threads N, tokio's multi-thread runtime with "
                         "N workers, N C epoll processes on SO_REUSEPORT (1: the single-threaded "
                         "servers)")
    ap.add_argument("--idle-conns", type=int, default=10000)
    ap.add_argument("--perf-rounds", type=int, default=5,
                    help="profiled rounds per shape and server (syscalls, sampled user CPU)")
    ap.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    ap.add_argument("--no-idle", action="store_true", help="skip the idle-memory part")
    ap.add_argument("--no-client", action="store_true", help="skip loadgen against the C client")
    ap.add_argument("--client-only", action="store_true",
                    help="only loadgen against the C client (print its table and targets; write a "
                         "report only with --out). Short rounds, many of them, best survive a noisy "
                         "machine: --rounds 20 --duration 1s")
    ap.add_argument("--out", default=None, help="the report to write (default docs/BENCHMARKS.md)")
    ap.add_argument("--bins", required=True, help="JSON map of built binaries (from compare.sh)")
    ap.add_argument("--before", default=None,
                    help="a directory holding another build's ricochet (e.g. a worktree's "
                         "target/release), run beside the others as 'ricochet (before)' in the echo "
                         "shapes: a change measured side by side with what it changed")
    args = ap.parse_args()
    bins = json.loads(args.bins)
    if args.client_only:
        args.no_idle = args.no_callgrind = True
    elif args.out is None:
        args.out = os.path.join(ROOT, "docs", "BENCHMARKS.md")

    n = args.threads
    servers = [
        Server("ricochet", [bins["ricochet"], "--tcp", "127.0.0.1:0", "--max-pending", "1MiB",
                            "--threads", str(n)], "ready-json"),
        # N processes sharing the port through SO_REUSEPORT: the C way to use N cores.
        Server("C epoll", [bins["c_echo"], "0"], "stdout") if n == 1 else
        Server("C epoll", ["sh", "-c", f'for i in $(seq {n}); do "$0" {{port}} reuseport & done; wait',
                           bins["c_echo"]], "fixed"),
        Server("tokio", [bins["tokio_echo"], "0"] + ([] if n == 1 else [str(n)]), "stdout"),
    ]
    if args.before:
        servers.insert(1, Server("ricochet (before)",
                                 [os.path.join(args.before, "ricochet"), "--tcp", "127.0.0.1:0",
                                  "--max-pending", "1MiB", "--threads", str(n)], "ready-json"))
    if bins.get("socat"):
        servers.append(Server("socat", [bins["socat"], "TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr", "EXEC:cat"], "fixed"))
    # The fan-out shapes' rooms, under the same names so that the tables and targets line up.
    rooms = [
        Server("ricochet", [bins["ricochet"], "--chat", "127.0.0.1:0", "--max-pending", "1MiB"], "ready-json"),
        Server("C epoll", [bins["c_chat"], "0"], "stdout"),
        Server("tokio", [bins["tokio_chat"], "0"], "stdout"),
    ]
    shapes = [s for s in SHAPES if s[0] in args.shapes.split(",")]
    perf_ok = perf_works()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = {}
    for shape, _, flags in shapes if not args.client_only else []:
        chat = is_chat(shape)
        those = rooms if chat else servers
        for rnd in range(args.rounds):
            order = those[rnd % len(those):] + those[: rnd % len(those)]
            for server in order:
                if server.name == "socat" and shape == "1000 conns":
                    continue  # a process pair per connection: not a fair fight, not worth 2000 forks
                server.start(args.server_cpu)
                try:
                    r = measure(server, bins, flags, args, chat=chat)
                finally:
                    server.stop()
                results.setdefault((shape, server.name), []).append(r)
                print(f"  {shape:<11} round {rnd + 1}/{args.rounds} {server.name:<9} "
                      f"{r['msgs_per_sec']:>12,.0f} msgs/s  user {r['user_us']:.2f} µs/msg  "
                      f"sys {r['sys_us']:.2f} µs/msg  errors {r['errors']}", flush=True)
        if perf_ok:
            profiled = [s for s in those if s.name != "socat"]  # perf -p misses socat's children
            for rnd in range(args.perf_rounds):
                for server in profiled[rnd % len(profiled):] + profiled[: rnd % len(profiled)]:
                    server.start(args.server_cpu)
                    try:
                        r = measure(server, bins, flags, args, profile=True, chat=chat)
                    finally:
                        server.stop()
                    results.setdefault((shape, server.name, "perf"), []).append(r)
                    print(f"  {shape:<11} profiled {rnd + 1}/{args.perf_rounds} {server.name:<9} "
                          f"syscalls {fmt(r['syscalls'], 2)}/msg  "
                          f"sampled user {fmt(r['sampled_user_us'], 3)} µs/msg", flush=True)

    idle = {}
    for server in servers if not args.no_idle else []:
        if server.name == "socat":
            continue
        server.start(args.server_cpu)
        try:
            idle[server.name] = idle_rss(server, args.idle_conns)
        finally:
            server.stop()

    instructions = {}
    if shutil.which("valgrind") and not args.no_callgrind:
        for server in servers:
            if server.name != "socat":
                instructions[server.name] = callgrind_per_message(server, bins)

    client = {}
    c_server = next(s for s in servers if s.name == "C epoll")
    for shape, _, flags in shapes if not args.no_client else []:
        if is_chat(shape) or "--reconnect-every" in flags:
            continue  # the C client speaks echo only, on connections it keeps
        conns, depth, size = flags[1], flags[3], str(size_bytes(flags[5]))
        for rnd in range(args.rounds):
            for which in (["loadgen", "C client"] if rnd % 2 == 0 else ["C client", "loadgen"]):
                c_server.start(args.server_cpu)
                try:
                    secs = float(args.duration.rstrip("s"))
                    t0 = os.times()
                    if which == "loadgen":
                        report = loadgen(bins, c_server.port, flags, args.duration, "0s", args.load_cpu)
                        rate, p50 = report["msgs_per_sec"], report["latency_us"]["p50"]
                    else:
                        out = subprocess.run(["taskset", "-c", str(args.load_cpu), bins["c_client"], "127.0.0.1",
                                              str(c_server.port), conns, depth, size, str(secs)],
                                             capture_output=True, text=True, timeout=300)
                        report = json.loads(out.stdout)
                        rate, p50 = report["msgs_per_sec"], report.get("p50_us")
                    t1 = os.times()
                    cpu = (t1.children_user - t0.children_user + t1.children_system - t0.children_system)
                finally:
                    c_server.stop()
                client.setdefault((shape, which), []).append((rate, cpu / max(rate * secs, 1) * 1e6, p50))
                print(f"  {shape:<11} round {rnd + 1}/{args.rounds} {which:<9} {rate:>12,.0f} msgs/s"
                      + (f"  p50 {p50:.2f} µs" if p50 is not None else ""), flush=True)

    write_report(args, shapes, servers, results, idle, client, perf_ok, started, instructions)


def figures(results, shape, name, perf_ok):
    """One server's medians for one shape (None if it was not run)."""
    rs = results.get((shape, name))
    if not rs:
        return None
    prof = results.get((shape, name, "perf")) or []
    sampled = median([r["sampled_user_us"] for r in prof])
    return {
        "rs": rs,
        "rate": median([r["msgs_per_sec"] for r in rs]),
        "user": median([r["user_us"] for r in rs]),
        "sampled": sampled,
        # socat works in forked children that neither /proc/PID/stat nor perf -p sees.
        "user_for_ratio": sampled if perf_ok else median([r["user_us"] for r in rs]),
        "syscalls": median([r["syscalls"] for r in prof]),
    }


def target_rows(shapes, results, idle, client, perf_ok):
    """DESIGN.md's performance targets, each with the measured value and whether it is met."""
    rows = []

    def check(what, value, limit, at_least, unit="", spread=""):
        if value is None:
            rows.append((what, "n/a", f"{'≥' if at_least else '≤'} {limit}{unit}", "not measured", spread))
            return
        ok = value >= limit if at_least else value <= limit
        rows.append((what, f"{value:.3g}{unit}", f"{'≥' if at_least else '≤'} {limit}{unit}",
                     "met" if ok else "**not met**", spread))

    def paired(mine, theirs):
        """Range of the per-round ratios (each round runs both once)."""
        ratios = [a / b for a, b in zip(mine, theirs) if b]
        return f"{min(ratios):.2f}–{max(ratios):.2f}" if ratios else ""

    for shape, _, _ in shapes:
        r = figures(results, shape, "ricochet", perf_ok)
        c = figures(results, shape, "C epoll", perf_ok)
        t = figures(results, shape, "tokio", perf_ok)
        if not (r and c):
            continue
        check(f"{shape}: throughput vs C", r["rate"] / c["rate"], 0.97, True,
              spread=paired([x["msgs_per_sec"] for x in r["rs"]], [x["msgs_per_sec"] for x in c["rs"]]))
        if r["user_for_ratio"] and c["user_for_ratio"]:
            check(f"{shape}: user CPU/msg vs C", r["user_for_ratio"] / c["user_for_ratio"], 1.25, False)
        if t and r["user_for_ratio"] and t["user_for_ratio"]:
            check(f"{shape}: user CPU/msg vs tokio", r["user_for_ratio"] / t["user_for_ratio"], 0.5, False)
        if r["syscalls"] is not None and c["syscalls"] is not None:
            # Compared as printed (two decimals): a stray accept or stats write is not a syscall
            # per message.
            mine, theirs = round(r["syscalls"], 2), round(c["syscalls"], 2)
            rows.append((f"{shape}: syscalls/msg vs C", f"{mine:.2f} vs {theirs:.2f}", "≤ C's",
                         "met" if mine <= theirs else f"**not met** (+{(mine / theirs - 1) * 100:.1f} %)", ""))
    if "ricochet" in idle:
        check("idle memory per connection", idle["ricochet"][0], 256, False, " B")
    for shape, _, _ in shapes:
        lg, cc = client.get((shape, "loadgen")), client.get((shape, "C client"))
        if lg and cc:
            check(f"{shape}: loadgen vs C client", median([r for r, *_ in lg]) / median([r for r, *_ in cc]),
                  0.97, True, spread=paired([r for r, *_ in lg], [r for r, *_ in cc]))
            p50s = [(a, b) for (*_, a), (*_, b) in zip(lg, cc) if a is not None and b is not None]
            if p50s and shape == "ping-pong":
                # The overhead loadgen adds to what it reports, against a client that does nothing
                # (with more connections both are throughput-bound: their p50s are queueing).
                diffs = [a - b for a, b in p50s]
                check(f"{shape}: loadgen p50 − C client p50", median(diffs), 1, False, " µs",
                      spread=f"{min(diffs):+.1f}–{max(diffs):+.1f} µs")
    return rows


def write_report(args, shapes, servers, results, idle, client, perf_ok, started, instructions):
    lines = []
    lines.append("# Benchmarks\n")
    lines.append(f"Measured {started} on {machine()} by `scripts/compare.sh` "
                 f"({args.rounds} rounds, {args.duration} measured after a {args.warmup} unmeasured warm-up run "
                 f"per server and round; server pinned to CPU {args.server_cpu} ({args.threads} thread(s)), loadgen to CPU {args.load_cpu}; "
                 "servers alternate within each round). Every figure is a median over the rounds.\n")
    lines.append("Columns: echoed messages per second and payload MB/s; loadgen's p50/p99 latency; the server's "
                 "own CPU time per message in user space and in the kernel from /proc/PID/stat (10 ms ticks: "
                 "coarse where user time is a few ticks per round); "
                 + (f"from {args.perf_rounds} separate profiled rounds per server, its user CPU per message "
                    "sampled by `perf record -e cpu-clock` every 50 µs of server CPU time (a sample counts as "
                    "user time when its instruction pointer is in user space), and its syscalls per message "
                    "(perf tracepoint `raw_syscalls:sys_enter`)" if perf_ok else
                    "perf was not usable on this machine, so there are no sampled user CPU or syscall counts")
                 + ". Ratios are to ricochet (throughput: higher is better for the other server; user CPU, "
                 "from the samples where there are any: lower is better for it).\n")
    for shape, desc, _ in shapes:
        if not any(key[0] == shape for key in results):
            continue  # not run (--client-only)
        lines.append(f"\n## {shape}: {desc}\n")
        if is_chat(shape):
            lines.append("Chat rooms (ricochet `--chat`, `baselines/c/epoll_chat.c`, tokio's chat example on raw "
                         "lines in `baselines/tokio-echo/src/bin/tokio-chat.rs`) driven by `loadgen chat://`. Here "
                         "msgs/s are **deliveries/s** (lines received by members), MB/s is delivered payload, and "
                         "every per-message figure is per delivery; errors include lost deliveries.\n")
        lines.append("| server | msgs/s | MB/s | p50 µs | p99 µs | user µs/msg (ticks) | sys µs/msg (ticks) | "
                     "user µs/msg (sampled) | syscalls/msg | throughput vs ricochet | user CPU vs ricochet |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

        base = figures(results, shape, "ricochet", perf_ok)
        for server in servers:
            f = figures(results, shape, server.name, perf_ok)
            if not f:
                continue
            rs = f["rs"]
            errors = sum(r["errors"] for r in rs)
            name = server.name + (f" ({errors} errors)" if errors else "")
            user_ratio = (f["user_for_ratio"] / base["user_for_ratio"]
                          if base and base["user_for_ratio"] and f["user_for_ratio"] is not None else None)
            lines.append(
                f"| {name} | {fmt(f['rate'], 0)} | {fmt(median([r['mb_per_sec'] for r in rs]))} | "
                f"{fmt(median([r['p50'] for r in rs]))} | {fmt(median([r['p99'] for r in rs]))} | "
                f"{fmt(f['user'], 2)} | {fmt(median([r['sys_us'] for r in rs]), 2)} | "
                f"{fmt(f['sampled'], 3)} | {fmt(f['syscalls'], 2)} | "
                f"{fmt(f['rate'] / base['rate'] if base and base['rate'] else None, 3)} | "
                f"{fmt(user_ratio, 2)} |")
    if idle:
        lines.append("\n## Memory per idle connection\n")
        lines.append(f"Growth of the server's resident set (user-space memory) with {args.idle_conns} idle "
                     "connections open, per connection. Kernel socket memory is not included.\n")
        lines.append("| server | bytes per idle connection | connections accepted |")
        lines.append("|---|---:|---:|")
        for name, (per_conn, accepted) in idle.items():
            lines.append(f"| {name} | {per_conn:.0f} | {accepted} |")
    if instructions:
        lines.append("\n## User-space instructions per message\n")
        lines.append("Counted by valgrind's callgrind (deterministic, unlike CPU time; the server runs far slower "
                     "under it, so each poll returns more events than natively): the marginal count per message "
                     "between runs of 20 000 and 220 000 messages over 50 connections, 64 B, depth 1.\n")
        lines.append("| server | instructions per message | vs ricochet |")
        lines.append("|---|---:|---:|")
        base = instructions.get("ricochet")
        for name, ir in instructions.items():
            lines.append(f"| {name} | {ir:.0f} | {ir / base:.2f} |" if base else f"| {name} | {ir:.0f} | n/a |")
    if client:
        lines.append("\n## Is loadgen the bottleneck?\n")
        lines.append("loadgen (verifying every byte, recording every latency) against a minimal C epoll client "
                     "(no verification, no histogram), both driving the C epoll server with the same closed-loop "
                     "load, alternating; client CPU time per message is user + system of the client process.\n")
        lines.append("At depth 1 (ping-pong) both also time every round trip, so the p50 columns show loadgen's own "
                     "overhead per message.\n")
        lines.append("| shape | loadgen msgs/s | C client msgs/s | loadgen / C client | loadgen CPU µs/msg | "
                     "C client CPU µs/msg | loadgen p50 µs | C client p50 µs |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for shape, _, _ in shapes:
            lg, cc = client.get((shape, "loadgen")), client.get((shape, "C client"))
            if not lg or not cc:
                continue
            lr, cr = median([r for r, *_ in lg]), median([r for r, *_ in cc])
            cc_p50 = median([p for *_, p in cc])
            lines.append(f"| {shape} | {fmt(lr, 0)} | {fmt(cr, 0)} | {lr / cr:.3f} | "
                         f"{fmt(median([c for _, c, _ in lg]), 2)} | {fmt(median([c for _, c, _ in cc]), 2)} | "
                         f"{fmt(median([p for *_, p in lg]), 1) if cc_p50 else 'n/a'} | {fmt(cc_p50, 1)} |")
    rows = target_rows(shapes, results, idle, client, perf_ok)
    if rows:
        lines.append("\n## Targets\n")
        lines.append("DESIGN.md's performance targets, computed from the medians above (ratios are ricochet's to the "
                     "other's; user CPU from the samples where perf works). Throughput ratios within 3 % of 1 are "
                     "noise on a shared machine, which is why the limit is 0.97; the same allowance is applied "
                     "to loadgen against the C client. For throughput, the last column is the range of the "
                     "per-round ratios (each round runs every server once): where it straddles the limit, the "
                     "machine's noise decides the status.\n")
        lines.append("| target | measured | limit | status | per-round range |")
        lines.append("|---|---:|---:|---|---:|")
        for what, value, limit, status, spread in rows:
            lines.append(f"| {what} | {value} | {limit} | {status} | {spread} |")
    carried = hand_written_sections(args.out) if args.out else []
    for section in carried:
        lines.append("\n" + section.rstrip("\n") + "\n")
    kept = {section.splitlines()[0][3:] for section in carried}
    placeholders = [
        ("Soak", "`bash scripts/soak.sh 2m` runs mixed load against one server and samples its memory and "
                 "descriptors (see the README)."),
        ("Container image", "`bash scripts/image.sh` and `bash scripts/image-test.sh` measure the image's size "
                            "and its time from `podman run` to the ready line (see the README's container section)."),
        ("TLS", "TLS runs against stunnel and socat, their targets and an assessment are in "
                "[BENCHMARKS-TLS.md](BENCHMARKS-TLS.md) (`bash scripts/compare-tls.sh`)."),
        ("WebSocket", "WebSocket runs against a C floor, fastwebsockets, tokio-tungstenite and Node's ws, "
                      "their targets and an assessment are in [BENCHMARKS-WS.md](BENCHMARKS-WS.md) "
                      "(`bash scripts/compare-ws.sh`); conformance is in [AUTOBAHN.md](AUTOBAHN.md)."),
    ]
    for title, text in placeholders if not args.client_only else []:
        if title not in kept:
            lines.append(f"\n## {title}\n")
            lines.append(text + "\n")
    if args.client_only:
        text = "\n".join(lines) + "\n"
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        print(text)
        return
    lines.append("\n## Reproduce\n")
    lines.append("```sh\nbash scripts/compare.sh                 # all shapes, 5 rounds (~45 minutes on 2 cores)\n"
                 "bash scripts/compare.sh --rounds 3 --shapes ping-pong,bulk\n"
                 "bash scripts/compare.sh --shapes 'fan-out 1-100,fan-out 50x50' --no-idle --no-callgrind --no-client\n"
                 "bash scripts/compare.sh --client-only --shapes ping-pong --rounds 20 --duration 1s   # loadgen vs the C client\n```\n")
    lines.append("It builds ricochet and loadgen (release), the C baselines in `baselines/c` (`cc -O2`), the tokio "
                 "baselines in `baselines/tokio-echo` (its own Cargo project: echo and chat), and uses `socat` if installed. "
                 "It needs `taskset` and, for syscall counts and sampled user CPU, `perf` (tracepoints and `perf record -e cpu-clock`); without perf those columns say n/a and user CPU ratios fall back to /proc ticks.\n")
    text = "\n".join(lines) + "\n"
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
    print(text)
    if carried:
        titles = ", ".join(s.splitlines()[0].lstrip("# ") for s in carried)
        print(f"kept the hand-written sections of the previous {args.out} ({titles}): "
              "bring their figures up to this run's", file=sys.stderr)


GENERATED = ("Memory per idle connection", "User-space instructions per message", "Is loadgen the bottleneck?",
             "Targets", "Reproduce")


def hand_written_sections(path, generated=None):
    """The `## ` sections of an earlier report that this script does not write (an assessment, a
    many-cores table, the soak's and the image's figures): kept, in their order, so that a new run
    does not erase them. `generated`: the titles another script writes itself (compare_tls.py,
    compare_ws.py); by default this script's, and its shapes'."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    sections = []
    for part in text.split("\n## ")[1:]:
        title = part.splitlines()[0]
        shape = title.split(":")[0]
        if generated is not None:
            if title in generated:
                continue
        elif title in GENERATED or any(shape == name for name, _, _ in SHAPES):
            continue
        sections.append("## " + part)
    return sections


if __name__ == "__main__":
    sys.exit(main())
