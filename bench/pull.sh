#!/usr/bin/env bash
# `pull` of a ~200 MB, 4-layer image from a loopback registry (`berth registry serve`):
# Berth's daemon against Debian's docker engine, same run, same registry, same image.
#
# The image is built offline from local files: a busybox layer and three layers of random
# (incompressible) data, gzip-compressed as registries serve them, pushed by skopeo.
# Berth pulls into a FRESH data root every run (a new daemon per run; only the pull is
# timed). Docker's image and layers are removed before every run (its daemon keeps running).
#
#   bench/pull.sh [BERTH_BINARY]   (default target/release/berth; RUNS=5)
set -euo pipefail
source "$(dirname "$0")/lib/engines.sh"
runs=${RUNS:-5}
berth=$(realpath "${1:-$here/target/release/berth}")
reg_pid=
cleanup() {
  [ -z "$reg_pid" ] || kill "$reg_pid" 2>/dev/null || true
  bench_cleanup
}
trap cleanup EXIT

echo "== building a 4-layer image from local files"
work="$bench_dir/image"
layout="$work/layout"
mkdir -p "$layout/blobs/sha256"
diff_ids=() layer_descs=()
add_layer() { # DIR: tar it, gzip it into the layout
  local dir=$1 tar="$work/layer.tar" h
  tar --numeric-owner --owner=0 --group=0 -C "$dir" -cf "$tar" .
  diff_ids+=("\"sha256:$(sha256sum "$tar" | cut -d' ' -f1)\"")
  gzip -1 -c "$tar" >"$tar.gz"
  h=$(sha256sum "$tar.gz" | cut -d' ' -f1)
  mv "$tar.gz" "$layout/blobs/sha256/$h"
  layer_descs+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$h\",\"size\":$(stat -c %s "$layout/blobs/sha256/$h")}")
  rm -rf "$dir" "$tar"
}
# Layer 1: busybox, plus a marker so it never matches a busybox layer an engine already has.
mkdir -p "$work/l1"
"$here/scripts/mkrootfs-busybox.sh" "$work/busybox.tar"
tar -C "$work/l1" -xf "$work/busybox.tar"
head -c 32 /dev/urandom | od -An -tx1 >"$work/l1/etc/bench-marker"
add_layer "$work/l1"
# Layers 2-4: ~65 MB of random data each, in 8 MB files.
for i in 2 3 4; do
  mkdir -p "$work/l$i/data$i"
  for f in 1 2 3 4 5 6 7 8; do head -c $((8 << 20)) /dev/urandom >"$work/l$i/data$i/r$f"; done
  head -c $((1 << 20)) /dev/urandom >"$work/l$i/data$i/tail"
  add_layer "$work/l$i"
done
join() { local IFS=,; echo "$*"; }
config="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"sh\"],\"Env\":[\"PATH=/bin\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$(join "${diff_ids[@]}")]}}"
ch=$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
printf '%s' "$config" >"$layout/blobs/sha256/$ch"
manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$ch\",\"size\":${#config}},\"layers\":[$(join "${layer_descs[@]}")]}"
mh=$(printf '%s' "$manifest" | sha256sum | cut -d' ' -f1)
printf '%s' "$manifest" >"$layout/blobs/sha256/$mh"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d}]}' "$mh" "${#manifest}" >"$layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
echo "compressed layers: $(du -shc "$layout"/blobs/sha256 | tail -1 | cut -f1), manifest sha256:$mh"

echo "== pushing it to berth registry serve"
"$berth" registry serve --addr 127.0.0.1:0 --root "$bench_dir/registry" 2>"$bench_dir/registry.log" &
reg_pid=$!
addr=
for _ in $(seq 100); do
  addr=$(sed -n 's/^berth registry listening on //p' "$bench_dir/registry.log")
  [ -n "$addr" ] && break
  sleep 0.05
done
[ -n "$addr" ] || { echo "registry did not start:" >&2; cat "$bench_dir/registry.log" >&2; exit 1; }
ref="$addr/bench/pull:latest"
skopeo --insecure-policy copy -q --preserve-digests --dest-tls-verify=false "oci:$layout" "docker://$ref"
rm -rf "$work"

# berth_pull_once RUN: a daemon on a fresh data root, then the timed pull; seconds in $last.
berth_pull_once() {
  local root="$bench_dir/berth-$1" sock="$bench_dir/b$1.sock" t0 t1
  "$berth" daemon -H "unix://$sock" --data-root "$root/data" --exec-root "$bench_dir/run$1" \
    --bridge none >"$bench_dir/daemon$1.log" 2>&1 &
  berth_pid=$!
  for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
  [ -S "$sock" ] || { echo "berth daemon did not start:" >&2; cat "$bench_dir/daemon$1.log" >&2; exit 1; }
  t0=$(date +%s.%N)
  DOCKER_HOST="unix://$sock" "$berth" pull -q "$ref" >/dev/null
  t1=$(date +%s.%N)
  kill "$berth_pid" && wait "$berth_pid" 2>/dev/null || true
  berth_pid=
  umount -R "$root"/data/* 2>/dev/null || true
  rm -rf "$root" "$bench_dir/run$1"
  last=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
}

docker_pull_once() {
  local t0 t1
  DOCKER_HOST=$docker_host docker rmi -f "$ref" >/dev/null 2>&1 || true
  t0=$(date +%s.%N)
  DOCKER_HOST=$docker_host docker pull -q "$ref" >/dev/null
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

stats() { # seconds... -> "mean min max"
  printf '%s\n' "$@" | awk '{ s += $1; if (NR == 1 || $1 < lo) lo = $1; if ($1 > hi) hi = $1 }
    END { printf "%.3f %.3f %.3f", s / NR, lo, hi }'
}

echo "== berth pull, $runs runs (fresh data root each)"
b_times=()
for i in $(seq "$runs"); do berth_pull_once "$i"; b_times+=("$last"); done
echo "   ${b_times[*]}"
read -r b_mean b_min b_max <<<"$(stats "${b_times[@]}")"

start_docker
d_mean=
if [ -n "$docker_host" ]; then
  echo "== docker pull, $runs runs (image and layers removed before each)"
  docker_pull_once >/dev/null # warm-up: the first pull after an engine start pays for its setup
  d_times=()
  for i in $(seq "$runs"); do d_times+=("$(docker_pull_once)"); done
  echo "   ${d_times[*]}"
  read -r d_mean d_min d_max <<<"$(stats "${d_times[@]}")"
  DOCKER_HOST=$docker_host docker rmi -f "$ref" >/dev/null 2>&1 || true
fi

printf '\n%-28s %10s %10s %10s\n' "pull ~200 MB, 4 layers" "mean s" "min s" "max s"
printf '%-28s %10s %10s %10s\n' "berth" "$b_mean" "$b_min" "$b_max"
if [ -n "$d_mean" ]; then
  printf '%-28s %10s %10s %10s\n' "docker (dockerd 20.10)" "$d_mean" "$d_min" "$d_max"
  awk -v b="$b_mean" -v d="$d_mean" 'BEGIN { printf "ratio berth/docker (mean): %.2f  (goal <= 0.5)\n", b / d }'
else
  echo "docker: no engine, skipped"
fi
