#!/usr/bin/env bash
# Builds the FROM-scratch image (Containerfile) with podman: static, stripped ricochet and loadgen
# (glibc linked statically: -C target-feature=+crt-static; no network needed beyond the crates
# already fetched). Prints the image reference it built as its last line.
#
#   bash scripts/image.sh [IMAGE]        # default localhost/ricochet:latest
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-localhost/ricochet:latest}
target=x86_64-unknown-linux-gnu
command -v podman >/dev/null || { echo "podman is not installed (Debian: apt-get install podman runc)" >&2; exit 1; }
RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build --release --locked --target "$target" --bin ricochet --bin loadgen >&2
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "target/$target/release/ricochet" "target/$target/release/loadgen" Containerfile "$context/"
# On machines without systemd or cgroup delegation (CI runners, these build hosts) podman needs
# runc and cgroupfs; both are harmless elsewhere.
podman_opts=(--runtime runc --cgroup-manager=cgroupfs)
podman "${podman_opts[@]}" build --format docker -t "$image" -f "$context/Containerfile" "$context" >&2
podman image inspect "$image" --format '{{.Size}}' | awk '{printf "image size: %.1f MB\n", $1/1e6}' >&2
echo "$image"
