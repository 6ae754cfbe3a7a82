#!/usr/bin/env bash
# Builds ricochet and loadgen, installs stunnel4 (Debian) if it is missing, then runs the TLS
# side-by-side comparison (scripts/compare_tls.py; its flags pass through, e.g. --rounds 5).
# Writes docs/BENCHMARKS-TLS.md. Linux only; needs cargo, python3, openssl, taskset.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --locked
if ! command -v stunnel >/dev/null; then
  (apt-get install -y stunnel4 || (apt-get update && apt-get install -y stunnel4)) >/dev/null
fi
socat_bin=$(command -v socat || true)
[ -n "$socat_bin" ] || echo "socat not installed: comparing without it" >&2
bins=$(python3 -c 'import json,sys; print(json.dumps({k: v for k, v in zip(sys.argv[1::2], sys.argv[2::2]) if v}))' \
  ricochet "$PWD/target/release/ricochet" loadgen "$PWD/target/release/loadgen" \
  stunnel "$(command -v stunnel)" socat "$socat_bin")
exec python3 scripts/compare_tls.py --bins "$bins" "$@"
