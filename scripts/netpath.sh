#!/usr/bin/env bash
# Truth on a real network path: ricochet in one network namespace, loadgen in another, joined by
# a veth pair, with nftables dropping a random share of packets and counting exactly how many it
# dropped. Checks loadgen's figures against the kernel's counts:
#
# - UDP random drop on the server's veth, ingress (requests) and egress (replies) separately:
#   loadgen's `lost` must equal the number of datagrams nft dropped, exactly, with no mismatches,
#   duplicates or reorders.
# - TCP random drop of data segments both ways (1 % and 5 %): no mismatches, no errors, every byte
#   echoed (TCP retransmits), the server's counters balanced; the latency tail per profile.
# - A sudden blackhole (everything to the server dropped for 1.5 s) in an open-loop run: the stall
#   shows in a second of the intervals and in the tail, and nothing is lost.
# - A rate limit (tbf, 50 Mbit/s on the server's egress): bulk echo gets what the limit leaves
#   after headers (within 10 %), and the server's memory stays bounded while the echo backs up.
#
#   sudo bash scripts/netpath.sh [--short] [--out docs/NETPATH.md]
#
# Without root, `ip netns` or nft it says why and exits 0 with "skipped". Namespaces, links and
# processes are its own (unique names) and are removed on exit, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
short=0
out=docs/NETPATH.md
while [ $# -gt 0 ]; do
  case "$1" in
    --short) short=1 ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--short] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
skip() { echo "netpath: skipped: $*"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces, nftables)"
command -v ip >/dev/null || skip "no ip command (iproute2)"
command -v nft >/dev/null || skip "no nft command (Debian: apt-get install nftables)"
bin=target/release
[ -x "$bin/ricochet" ] && [ -x "$bin/loadgen" ] || cargo build --release --locked --quiet

tag="np$$"
srv="${tag}s"; cli="${tag}c"
work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  ip netns del "$srv" 2>/dev/null || true
  ip netns del "$cli" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$srv" || skip "cannot create network namespaces here"
ip netns add "$cli"
ip link add "${tag}a" type veth peer name "${tag}b"
ip link set "${tag}a" netns "$srv"
ip link set "${tag}b" netns "$cli"
ip -n "$srv" addr add 10.203.0.1/24 dev "${tag}a"
ip -n "$cli" addr add 10.203.0.2/24 dev "${tag}b"
for ns in "$srv" "$cli"; do ip -n "$ns" link set lo up; done
ip -n "$srv" link set "${tag}a" up
ip -n "$cli" link set "${tag}b" up

ip netns exec "$srv" "$bin/ricochet" --tcp 10.203.0.1:7007 --udp 10.203.0.1:7007 \
  --ready-file "$work/ready.json" >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 100); do [ -s "$work/ready.json" ] && break; sleep 0.05; done
[ -s "$work/ready.json" ] || { cat "$work/server.err"; exit 1; }

# nft: a netdev table on the server's veth; RULE is the match, K the drop share in 1/1000.
drop_rules() { # HOOK(ingress|egress) K|all MATCH...
  local hook=$1 k=$2 share; shift 2
  share=$([ "$k" = all ] && echo "" || echo "numgen random mod 1000 < $k")
  ip netns exec "$srv" nft -f - <<EOF
table netdev $tag {
  chain c {
    type filter hook $hook device ${tag}a priority 0;
    $* $share counter drop
  }
}
EOF
}
dropped() { ip netns exec "$srv" nft list table netdev "$tag" | sed -n 's/.*counter packets \([0-9]*\).*/\1/p' | head -n1; }
clear_rules() { ip netns exec "$srv" nft delete table netdev "$tag" 2>/dev/null || true; }
# TCP both ways: the server's ingress on its veth, the client's ingress on its own.
tcp_rules() { # K
  local k=$1
  for side in "$srv ${tag}a" "$cli ${tag}b"; do
    set -- $side
    ip netns exec "$1" nft -f - <<EOF
table netdev $tag {
  chain c {
    type filter hook ingress device $2 priority 0;
    tcp dport 7007 tcp flags & (syn|fin|rst) == 0 numgen random mod 1000 < $k counter drop
    tcp sport 7007 tcp flags & (syn|fin|rst) == 0 numgen random mod 1000 < $k counter drop
  }
}
EOF
  done
}
tcp_dropped() {
  local total=0 n
  for ns in "$srv" "$cli"; do
    for n in $(ip netns exec "$ns" nft list table netdev "$tag" | sed -n 's/.*counter packets \([0-9]*\).*/\1/p'); do
      total=$((total + n))
    done
    ip netns exec "$ns" nft delete table netdev "$tag"
  done
  echo "$total"
}

n=$([ "$short" -eq 1 ] && echo 5000 || echo 50000)
secs=$([ "$short" -eq 1 ] && echo 3s || echo 10s)
rows=()
fail=0
lg() { ip netns exec "$cli" "$bin/loadgen" "$@"; }

echo "== UDP random drop (64-byte datagrams only: loadgen's start-up check passes untouched)"
for hook in ingress egress; do
  drop_rules "$hook" 20 "udp length 72"
  lg udp://10.203.0.1:7007 -c 4 -d 16 -s 64 -n "$n" --timeout 500ms --json >"$work/udp.json" || true
  nft_count=$(dropped)
  clear_rules
  read -r lost mism dup reord msgs < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["lost"], r["mismatches"], r["duplicated"], r["reordered"], r["messages"])' "$work/udp.json")
  ok=$([ "$lost" -eq "$nft_count" ] && [ "$mism" -eq 0 ] && [ "$dup" -eq 0 ] && echo pass || echo FAIL)
  [ "$ok" = pass ] || fail=1
  echo "  $hook 2 %: loadgen lost $lost, nft dropped $nft_count, mismatches $mism, duplicated $dup, reordered $reord: $ok"
  rows+=("| UDP drop 2 %, server $hook | $n datagrams | lost $lost | nft dropped $nft_count | mismatches $mism, duplicated $dup, reordered $reord | $ok |")
done

echo "== TCP random drop of data segments, both ways"
for k in 10 50; do
  before=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["listeners"][0]["addr"])' "$work/ready.json")
  tcp_rules "$k"
  lg "$before" -c 8 -d 4 -s 1KiB -t "$secs" --warmup 500ms --timeout 20s --json >"$work/tcp.json" || true
  nft_count=$(tcp_dropped)
  read -r errs mism msgs p50 p99 p999 < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); l=r["latency_us"]; print(r["errors"], r["mismatches"], r["messages"], l["p50"], l["p99"], l["p999"])' "$work/tcp.json")
  ok=$([ "$errs" -eq 0 ] && [ "$mism" -eq 0 ] && [ "$nft_count" -gt 0 ] && echo pass || echo FAIL)
  [ "$ok" = pass ] || fail=1
  pct=$(python3 -c "print($k/10)")
  echo "  $pct %: $msgs messages, errors $errs, mismatches $mism, nft dropped $nft_count segments; p50 $p50 µs p99 $p99 µs p99.9 $p999 µs: $ok"
  rows+=("| TCP drop $pct % both ways | $msgs messages | p50 $p50 µs, p99 $p99 µs, p99.9 $p999 µs | nft dropped $nft_count | errors $errs, mismatches $mism | $ok |")
done

echo "== a sudden blackhole: everything to the server dropped for 1.5 s in an open-loop run"
tcp_addr=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["listeners"][0]["addr"])' "$work/ready.json")
lg "$tcp_addr" -c 4 -r 2000 -t 6s --warmup 500ms --timeout 10s --json >"$work/hole.json" &
lg_pid=$!
sleep 2.5 # into the measured period (a second of it has passed)
drop_rules ingress all "tcp dport 7007"
sleep 1.5
hole_count=$(dropped)
clear_rules
wait "$lg_pid" || true
read -r errs timeouts p99 maxl low < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
low = min(i["messages"] for i in r["intervals"])
print(r["errors"], r["error_causes"]["timeout"], r["latency_us"]["p99"], r["latency_us"]["max"], low)' "$work/hole.json")
# Open loop puts the stall in the tail (latency from each message's intended time), a second of
# the intervals shows it, and nothing is lost: TCP retransmits once the path is back.
ok=$([ "$errs" -eq 0 ] && python3 -c "import sys; sys.exit(0 if $maxl >= 1500000 and $low < 1000 else 1)" && echo pass || echo FAIL)
[ "$ok" = pass ] || fail=1
echo "  dropped $hole_count segments; max $maxl µs, p99 $p99 µs, the slowest second $low messages (of 2000), errors $errs: $ok"
rows+=("| blackhole 1.5 s, open loop 2000/s | 6 s | max $maxl µs, p99 $p99 µs, slowest second $low messages | nft dropped $hole_count | errors $errs (timeouts $timeouts) | $ok |")

echo "== rate limit: tbf at 50 Mbit/s on the server's egress, bulk echo"
rss() { awk '/VmRSS/ {print $2}' "/proc/$server_pid/status"; }
rss_before=$(rss)
tc -n "$srv" qdisc add dev "${tag}a" root tbf rate 50mbit burst 64kb latency 100ms
lg "$tcp_addr" -c 4 -d 4 -s 64KiB -t "$secs" --warmup 1s --timeout 20s --json >"$work/tbf.json" || true
rss_after=$(rss)
tc -n "$srv" qdisc del dev "${tag}a" root
read -r mbit errs mism < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(round(r["bytes_per_sec"]*8/1e6, 2), r["errors"], r["mismatches"])' "$work/tbf.json")
grown=$(( rss_after - rss_before ))
# What 50 Mbit/s leaves for payload: 1448 bytes of it in each 1514-byte frame (TCP timestamps).
ok=$([ "$errs" -eq 0 ] && [ "$mism" -eq 0 ] && [ "$grown" -lt 8192 ] && python3 -c "import sys; sys.exit(0 if abs($mbit - 50*1448/1514) <= 0.1 * 50*1448/1514 else 1)" && echo pass || echo FAIL)
[ "$ok" = pass ] || fail=1
echo "  echoed payload $mbit Mbit/s (the limit leaves 47.8), server RSS grew $grown KiB, errors $errs, mismatches $mism: $ok"
rows+=("| tbf 50 Mbit/s, server egress, bulk 4 × 4 × 64 KiB | $secs | $mbit Mbit/s of payload echoed (47.8 left by the limit) | server RSS +$grown KiB while the echo backed up | errors $errs, mismatches $mism | $ok |")

kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
balanced=$(tail -n 1 "$work/server.out" | python3 -c 'import json,sys; s=json.load(sys.stdin); print("pass" if s["bytes_in"] == s["bytes_out"] else "FAIL: %d in, %d out" % (s["bytes_in"], s["bytes_out"]))')
echo "== server counters balanced (bytes_in == bytes_out): $balanced"
[ "$balanced" = pass ] || fail=1

if [ "$short" -eq 0 ]; then
  {
    echo "# Network path truth"
    echo
    echo "Generated by \`sudo bash scripts/netpath.sh\` on $(date -u +'%Y-%m-%d %H:%M UTC'): ricochet and loadgen in two"
    echo "network namespaces joined by a veth pair; nftables drops a random share of packets"
    echo "(\`numgen random mod 1000 < K counter drop\`) and counts exactly how many it dropped."
    echo
    echo "| profile | load | loadgen | kernel (nft) | checks | result |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Server counters at the end: bytes_in == bytes_out: $balanced."
    echo
    echo "Not yet here: the soak."
  } >"$out"
  echo "wrote $out"
fi
[ "$fail" -eq 0 ] && echo "netpath: passed" || { echo "netpath: FAILED"; exit 1; }
