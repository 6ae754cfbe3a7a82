#!/usr/bin/env bash
# rustls's crypto provider, chosen by measurement: builds ricochet and loadgen as shipped (the
# `ring` provider, and ring's AEAD for the TLS 1.3 records of src/tls13.rs) and a copy of the
# committed tree under target/provider-aws-lc with both switched to `aws-lc-rs`, then measures
# them side by side (scripts/compare_provider.py: full and resumed handshakes, ping-pong, bulk;
# server on CPU 0, each build's own loadgen on CPU 1). About 10 minutes the first time (aws-lc
# builds from C with cc), 3 after. Flags pass through, e.g. --rounds 6.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --locked
copy=target/provider-aws-lc
mkdir -p "$copy"
git archive HEAD | tar -x -C "$copy"
(
  cd "$copy"
  sed -i 's/features = \["ring", "std", "tls12"\] }/features = ["ring", "aws_lc_rs", "std", "tls12"] }\naws-lc-rs = "1"/' Cargo.toml
  sed -i '0,/^ring.workspace = true/s//ring.workspace = true\naws-lc-rs.workspace = true/' Cargo.toml
  sed -i 's/rustls::crypto::ring::default_provider()/rustls::crypto::aws_lc_rs::default_provider()/' \
    src/certificate.rs src/client/tls.rs
  sed -i 's/^use ring::aead::/use aws_lc_rs::aead::/' src/tls13.rs
  grep -q aws_lc_rs src/certificate.rs && grep -q aws_lc_rs src/tls13.rs
  cargo build --release --bin ricochet --bin loadgen
)
exec python3 scripts/compare_provider.py --ring target/release --aws-lc "$copy/target/release" "$@"
