#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine, offline: install what Berth needs, build it, make a
# busybox image from local files, and run a container through the daemon.
# Needs root. Leaves the daemon running (stop it with: kill "$(cat /run/berth/berth.pid)").
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --locked -p berth
install -m 0755 target/release/berth /usr/local/bin/berth

tarball=$(mktemp --suffix=.tar)
trap 'rm -f "$tarball"' EXIT
scripts/mkrootfs-busybox.sh "$tarball"

# The first CLI call starts the daemon in the background when none answers on /run/berth/berth.sock.
berth import --change 'CMD ["sh"]' "$tarball" busybox:latest
berth run --rm busybox echo "hello from a Berth container"
berth images
