#!/usr/bin/env bash
# Writes the man pages of both binaries, ricochet.1 and loadgen.1, into DIR (default: target/man),
# generated from the same clap definitions as --help and the shell completions, so they never
# drift apart. View one with `man -l DIR/ricochet.1`.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-target/man}
mkdir -p "$dir"
cargo build --release --workspace --locked --quiet
target/release/ricochet --man-page >"$dir/ricochet.1"
target/release/loadgen man-page >"$dir/loadgen.1"
echo "wrote $dir/ricochet.1 and $dir/loadgen.1"
