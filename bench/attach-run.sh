#!/usr/bin/env bash
# `berth run --rm busybox true` latency through a daemon (attach + start + wait), with hyperfine.
#   bench/attach-run.sh [BERTH_BINARY]   (default target/release/berth)
set -euo pipefail
berth=$(realpath "${1:-target/release/berth}")
here=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  umount -R "$dir"/data/* 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
echo '{}' >"$dir/daemon.json"
"$berth" daemon -H "unix://$dir/d.sock" --data-root "$dir/data" --exec-root "$dir/run" \
  --config-file "$dir/daemon.json" >"$dir/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 200); do [ -S "$dir/d.sock" ] && break; sleep 0.05; done
export DOCKER_HOST="unix://$dir/d.sock"
"$here/scripts/mkrootfs-busybox.sh" "$dir/busybox.tar"
"$berth" import "$dir/busybox.tar" busybox:latest >/dev/null
hyperfine -N --warmup 5 --runs "${RUNS:-50}" "$berth run --rm busybox true"
