#!/usr/bin/env python3
"""Memory per idle connection, user and kernel: starts ricochet, opens N connections from this
process (one 64 B echo each, then idle), and reports the server's RSS growth per connection and
the kernel's slab growth (both ends of each connection are on this host, so half of it is one
socket) and its TCP buffer pages (/proc/net/sockstat).

    python3 scripts/conn-memory.py [N] [RICOCHET]      (defaults: 5000, target/release/ricochet)

The open-file limit must allow N descriptors in this process and N in the server.
"""
import json, os, socket, subprocess, sys, time
N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
binary = sys.argv[2] if len(sys.argv) > 2 else "target/release/ricochet"
def meminfo():
    d = {}
    for l in open("/proc/meminfo"):
        k, v = l.split(":"); d[k] = int(v.split()[0])
    return d
def sockstat():
    for l in open("/proc/net/sockstat"):
        if l.startswith("TCP:"):
            f = l.split(); return int(f[f.index("mem") + 1])
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1])
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it too
p = subprocess.Popen([binary, "--tcp", "127.0.0.1:0"], stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL, text=True)
addr = json.loads(p.stdout.readline())["listeners"][0]["addr"]
host, port = addr.rsplit(":", 1)
time.sleep(0.3)
m0, s0, r0 = meminfo(), sockstat(), rss(p.pid)
conns = []
for i in range(N):
    c = socket.create_connection((host, int(port)))
    c.sendall(b"x" * 64); c.recv(64)
    conns.append(c)
time.sleep(1.0)
m1, s1, r1 = meminfo(), sockstat(), rss(p.pid)
slab = (m1["Slab"] - m0["Slab"]) * 1024
print(f"{N} idle connections (one 64 B echo each), both ends on this host:")
print(f"  server user RSS growth: {(r1 - r0) * 1024 / N:.0f} B per connection")
print(f"  kernel slab growth: {slab / N:.0f} B per connection pair, so about {slab / N / 2:.0f} B per socket")
print(f"  TCP buffer pages (sockstat mem): {(s1 - s0) * 4096 / N:.0f} B per connection pair")
p.terminate(); p.wait()
