#!/usr/bin/env bash
# `berth cp` throughput through a daemon, with hyperfine: a 256 MB file and 2000 small files,
# into and out of a running container (its /proc/<pid>/root) and a stopped one (its rootfs
# view), with the berth CLI and, when present, the docker CLI against the same daemon.
#   bench/cp.sh [BERTH_BINARY]   (default target/release/berth)
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
  --config-file "$dir/daemon.json" --bridge none >"$dir/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 200); do [ -S "$dir/d.sock" ] && break; sleep 0.05; done
export DOCKER_HOST="unix://$dir/d.sock"
"$here/scripts/mkrootfs-busybox.sh" "$dir/busybox.tar"
"$berth" import "$dir/busybox.tar" busybox:latest >/dev/null
"$berth" run -d --name up busybox sleep 100000 >/dev/null
"$berth" create --name down busybox true >/dev/null
head -c 256M /dev/urandom >"$dir/big"
mkdir "$dir/small"
for i in $(seq 2000); do echo "file $i" >"$dir/small/f$i"; done
cmds=(
  "$berth cp $dir/big up:/big" "$berth cp up:/big $dir/out-big"
  "$berth cp $dir/big down:/big" "$berth cp down:/big $dir/out-big"
  "$berth cp $dir/small up:/" "$berth cp up:/small $dir/out-small"
)
if command -v docker >/dev/null; then
  cmds+=("docker cp $dir/big up:/big" "docker cp up:/big $dir/out-big")
fi
# Each run replaces what the previous one wrote.
hyperfine -N --warmup 1 --runs "${RUNS:-5}" --prepare "rm -rf $dir/out-big $dir/out-small" "${cmds[@]}"
