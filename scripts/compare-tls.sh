#!/usr/bin/env bash
# Builds ricochet, loadgen and the C epoll echo server, installs HAProxy, stunnel4 and socat (Debian)
# if they are missing, then runs the TLS side-by-side comparison (scripts/compare_tls.py; its
# flags pass through, e.g. --rounds 5).
# Writes docs/BENCHMARKS-TLS.md. Linux only; needs cargo, python3, openssl, taskset.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --locked
for pkg in stunnel:stunnel4 haproxy:haproxy socat:socat; do
  if ! command -v "${pkg%%:*}" >/dev/null; then
    (apt-get install -y "${pkg#*:}" || (apt-get update && apt-get install -y "${pkg#*:}")) >/dev/null
  fi
done
mkdir -p target/compare
cc -O2 -Wall -o target/compare/epoll_echo baselines/c/epoll_echo.c
socat_bin=$(command -v socat)
bins=$(python3 -c 'import json,sys; print(json.dumps({k: v for k, v in zip(sys.argv[1::2], sys.argv[2::2]) if v}))' \
  ricochet "$PWD/target/release/ricochet" loadgen "$PWD/target/release/loadgen" \
  stunnel "$(command -v stunnel)" socat "$socat_bin" haproxy "$(command -v haproxy)" \
  c_echo "$PWD/target/compare/epoll_echo")
exec python3 scripts/compare_tls.py --bins "$bins" "$@"
